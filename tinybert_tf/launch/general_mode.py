"""The `general_distill` mode: TinyBERT general distillation (or DistilBERT, MiniLM) on unlabelled
text, from one teacher preset into a student backbone; writes `<workdir>/student`.

The corpus scan the launch checks made (`validate.check_corpus`) is printed and written to
`<workdir>/corpus_scan.json` first; it heads the run's metrics.jsonl too (`train.StepLogger`).
"""

from __future__ import annotations

import json
import os

import keras_hub
import tensorflow as tf

from tinybert_tf.distill import dtypes, students
from tinybert_tf.launch import builders, config_lib, distribution, train


def general_distill(config, workdir, launch):
    """Distil `config.teacher` into `config.student` with `config.recipe` for `config.steps`
    steps; returns the student preset dir. launch: the dispatcher's (strategy, the teacher's dir
    and tokenizer, the corpus scan)."""
    if launch.corpus_scan is not None and distribution.is_chief():
        record_scan(launch.corpus_scan, workdir)
    tokenizer, strategy = launch.tokenizer, launch.strategy
    recipe = config_lib.config_recipe(config)
    masked = config_lib.masked_lm(recipe)
    data = _corpus_data(config, tokenizer, masked)
    with strategy.scope():
        teacher, student = _models(config, launch.lead, masked)
        distiller = builders.make_distiller(teacher, student, recipe)
        builders.compile_model(distiller, strategy, config, config.steps,
                               config.optimizer.learning_rate)
    print(f"teacher {students.count_params(teacher):,} params -> student "
          f"{students.count_params(student):,} params; layer map {distiller.layer_map}")
    backbone = student.backbone if masked else student
    fresh = not tf.io.gfile.exists(os.path.join(workdir, "checkpoints"))
    if config.save_initial and fresh:
        builders.save_model(backbone, tokenizer, os.path.join(workdir, "student_init"),
                            distiller.projections)
    head = {"corpus_scan": launch.corpus_scan} if launch.corpus_scan is not None else {}
    train.run_stage(distiller, data, workdir, builders.train_settings(config, head),
                    config.steps, launch.callbacks, label="general_distill")
    return builders.save_model(backbone, tokenizer, os.path.join(workdir, "student"),
                               distiller.projections)


def _corpus_data(config, tokenizer, masked):
    """The training batches of `data.train` (`data.format` as checked by the launch: text or
    pretokenized shards), masked for a masked-LM recipe. drop_remainder on every strategy:
    static shapes for TPU, equal replica slices, exact resume."""
    from tinybert_tf.data import corpus, masking, shards

    d = config.data
    common = dict(batch_size=config.batch_size, shuffle_buffer=d.shuffle_buffer,
                  seed=config.seed, repeat=True, drop_remainder=True, deterministic=True)
    if d.format == "pretokenized":
        data = shards.pretokenized_dataset(d.train, seq_len=d.seq_len, **common)
    else:
        data = corpus.corpus_dataset(d.train, tokenizer, seq_len=d.seq_len,
                                     doc_format=d.doc_format, **common)
    if masked:
        data = masking.mask_dataset(data, tokenizer, mask_rate=d.mask_rate,
                                    whole_word=d.whole_word, seed=config.seed)
    return data


def _models(config, teacher_dir, masked):
    """(teacher, student) under the current scope: masked-LM models for a masked-LM recipe, else
    backbones; the teacher frozen in `teacher_dtype`, the student's dropout `student_dropout`."""
    if masked:
        teacher = dtypes.load_preset(keras_hub.models.MaskedLM, teacher_dir,
                                     config.teacher_dtype, preprocessor=None)
        student = keras_hub.models.BertMaskedLM(
            builders.student_backbone(config.student, teacher), preprocessor=None)
    else:
        teacher = dtypes.load_preset(keras_hub.models.Backbone, teacher_dir, config.teacher_dtype)
        student = builders.student_backbone(config.student, teacher)
    return teacher, builders.set_dropout(student, config.student_dropout)


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
    """Print the scan line and write the record to `workdir/corpus_scan.json` (the run's
    metrics.jsonl starts with it too: `train.StepLogger`'s head)."""
    print(scan_line(scan))
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, "corpus_scan.json"), "w") as f:
        json.dump(scan, f, indent=1)
