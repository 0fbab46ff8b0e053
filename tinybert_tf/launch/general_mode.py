"""The `general_distill` mode: TinyBERT general distillation (or DistilBERT, MiniLM) on unlabelled
text, from one teacher preset into a student backbone; writes `<workdir>/student`.

The corpus scan the launch checks made (`validate.check_corpus`) is printed and written to
`<workdir>/corpus_scan.json` first; `train.StepLogger` copies it to the head of metrics.jsonl.
"""

from __future__ import annotations

import os

import keras_hub
import tensorflow as tf

from tinybert_tf.distill import dtypes, students
from tinybert_tf.launch import builders as b
from tinybert_tf.launch import distribution, teachers, train


def general_distill(c, workdir, launch):
    """Distil `c.teacher` into `c.student` with `c.recipe` for `c.steps` steps; returns the
    student preset dir. launch: the dispatcher's (strategy, teacher tokenizer, corpus scan)."""
    if launch.corpus_scan is not None and distribution.is_chief():
        record_scan(launch.corpus_scan, workdir)
    tokenizer, strategy = launch.tokenizer, launch.strategy
    recipe = b.config_recipe(c)
    masked = b.masked_lm(recipe)
    data = _corpus_data(c, tokenizer, masked)
    with strategy.scope():
        teacher, student = _models(c, teachers.one(c.teacher, "general_distill"), masked)
        distiller = b.make_distiller(teacher, student, recipe)
        b.compile_model(distiller, strategy, c, c.steps)
    print(f"teacher {students.count_params(teacher):,} params -> student "
          f"{students.count_params(student):,} params; layer map {distiller.layer_map}")
    backbone = student.backbone if masked else student
    fresh = not tf.io.gfile.exists(os.path.join(workdir, "checkpoints"))
    if c.save_initial and fresh:
        b.save_model(backbone, tokenizer, os.path.join(workdir, "student_init"),
                     distiller.projections)
    train.run_stage(distiller, data, workdir, c, c.steps, launch.callbacks,
                    label="general_distill")
    return b.save_model(backbone, tokenizer, os.path.join(workdir, "student"),
                        distiller.projections)


def _corpus_data(c, tokenizer, masked):
    """The training batches of `data.train` (`data.format` as checked by the launch: text or
    pretokenized shards), masked for a masked-LM recipe. drop_remainder on every strategy:
    static shapes for TPU, equal replica slices, exact resume."""
    from tinybert_tf.data import corpus, masking, shards

    common = dict(batch_size=c.batch_size, shuffle_buffer=c.data.shuffle_buffer, seed=c.seed,
                  repeat=True, drop_remainder=True, deterministic=True)
    if c.data.format == "pretokenized":
        data = shards.pretokenized_dataset(c.data.train, seq_len=c.data.seq_len, **common)
    else:
        data = corpus.corpus_dataset(c.data.train, tokenizer, seq_len=c.data.seq_len,
                                     doc_format=c.data.doc_format, **common)
    if masked:
        data = masking.mask_dataset(data, tokenizer, mask_rate=c.data.mask_rate,
                                    whole_word=c.data.whole_word, seed=c.seed)
    return data


def _models(c, teacher_dir, masked):
    """(teacher, student) under the current scope: masked-LM models for a masked-LM recipe, else
    backbones; the teacher frozen in `teacher_dtype`, the student's dropout `student_dropout`."""
    if masked:
        teacher = dtypes.load_preset(keras_hub.models.MaskedLM, teacher_dir, c.teacher_dtype,
                                     preprocessor=None)
        student = keras_hub.models.BertMaskedLM(b.student_backbone(c.student, teacher),
                                                preprocessor=None)
    else:
        teacher = dtypes.load_preset(keras_hub.models.Backbone, teacher_dir, c.teacher_dtype)
        student = b.student_backbone(c.student, teacher)
    return teacher, b.set_dropout(student, c.student_dropout)


def scan_line(scan):
    """The printed line of a scan record from `validate.check_corpus`."""
    if scan["format"] == "pretokenized":
        line = f"Corpus scan: {scan['shards']} pretokenized shard(s)"
        if "sequences" in scan:
            line += (f" of {scan['sequences']:,} sequences, {scan['tokens']:,} tokens packed from "
                     f"{scan['documents']:,} documents of {scan['files']:,} file(s) (corpus_meta."
                     f"json: {scan.get('empty_lines', 0):,} empty lines skipped, "
                     f"{scan.get('invalid_utf8_lines', 0):,} lines with invalid UTF-8 replaced, "
                     f"{scan.get('split_documents', 0):,} documents split)")
        return line + "."
    part = "" if scan["complete"] else (
        f" (the first {scan['lines']:,} lines only: the corpus is larger)")
    return (f"Corpus scan{part}: {scan['files']:,} file(s), {scan['documents']:,} documents, "
            f"{scan['empty_lines']:,} empty lines skipped, {scan['invalid_utf8_lines']:,} lines "
            f"with invalid UTF-8 replaced, {scan['tokens']:,} word pieces, "
            f"{scan['split_documents']:,} documents over {scan['seq_len'] - 2} pieces split "
            "into several sequences.")


def record_scan(scan, workdir):
    """Print the scan line and write the record to `workdir/corpus_scan.json`, the head of the
    run's metrics.jsonl (`train.write_head_record`)."""
    print(scan_line(scan))
    train.write_head_record(workdir, "corpus_scan", scan)
