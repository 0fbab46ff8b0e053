"""`benchmark.py --bench=task`: task-distillation training steps on real text lengths.

The examples are `--task_rows` rows of the stdlib docstring-classification task (16 classes;
`examples.stdlib.stdlib_task`, or `--task_file`), tokenised by the packaged MiniLM-L6 tokenizer.
Three steps, each over the same examples per pass, teacher MiniLM-L6 shape -> TinyBERT-4 shape
(random weights, same shapes both sides):

  intermediate  TinyBERT task step 1: frozen teacher + student, emb/att/hidden terms, AdamW;
  prediction    step 2 with cached teacher logits: student + soft cross-entropy, AdamW;
  finetune      teacher fine-tuning: teacher + cross-entropy, AdamW.

Sides: ours through the package's own data path (`tasks.task_dataset`, length buckets
`--task_buckets`) and the Distiller / keras-hub classifier under `fit`, in the precision the
launcher's `auto` picks on this machine and in float32; ours unbucketed (every batch padded to
`seq`); the PyTorch peer (HF transformers BERT) with `DataCollatorWithPadding` batches in random
order (dynamic padding) and with `LengthGroupedSampler` (the Trainer's `group_by_length`), in a
subprocess. Each side runs one untimed pass (tracing; one shape per bucket) then `--task_passes`
timed passes; examples/s = examples / seconds, and each side's padding fraction is the share of
the tokens it computes that are padding.
"""

from __future__ import annotations

import csv
import gc
import importlib.util
import math
import os
import random
import time

from .common import (
    POLICIES,
    auto_variant,
    build_backbones,
    keras_jit,
    parse_variant,
    quantize_if_int8,
)
from .options import FLAGS
from .report import print_table
from .spawn import peer_env, run_worker

STEPS = ("intermediate", "prediction", "finetune")
TEACHER = dict(num_layers=6, hidden_dim=384, num_heads=12, intermediate_dim=1536)  # MiniLM-L6
TINY_TEACHER = dict(num_layers=2, hidden_dim=64, num_heads=2, intermediate_dim=128)
LAYER_MAP = (1, 2, 4, 5)  # 6 teacher layers -> 4 student layers (the demo's map), 0-based
TINY_LAYER_MAP = (0, 1)


def task_rows(task_file, rows, seed, workdir):
    """`rows` seeded-random (text, label) rows of the task's train split; builds the stdlib task
    under `workdir` when no file is given."""
    if not task_file:
        from examples.stdlib import stdlib_task

        out = os.path.join(workdir, "stdlib_task")
        if not os.path.exists(os.path.join(out, "train.tsv")):
            stdlib_task.build_task(out)
        task_file = os.path.join(out, "train.tsv")
    with open(task_file, encoding="utf-8", newline="") as f:
        data = [(r["text"], r["label"]) for r in csv.DictReader(f, delimiter="\t")]
    random.Random(seed).shuffle(data)
    return data[:rows] if rows else data


def write_subset(rows, path):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def our_batches(spec, tokenizer, seq, batch, buckets, logits_classes):
    """The package's training batches of one pass (numpy; full batches, as training drops each
    bucket's remainder), with a cached-logits entry per batch."""
    import numpy as np

    from tinybert_tf.data import tasks
    from tinybert_tf.distill.distiller import CACHED_LOGITS

    ds = tasks.task_dataset(
        spec, "train", tokenizer,
        tasks.Batching(seq_len=seq, batch_size=batch, buckets=buckets, drop_remainder=True),
        tasks.Order(shuffle=True, seed=0))
    rng = np.random.default_rng(0)
    out = []
    for x, y in ds.as_numpy_iterator():
        x = dict(x)
        x[CACHED_LOGITS] = rng.normal(size=(len(y), logits_classes)).astype("float32")
        out.append((x, y))
    return out


def padding_fraction(masks):
    real = sum(int(m.sum()) for m in masks)
    total = sum(m.size for m in masks)
    return 1.0 - real / total


def token_lists(spec, tokenizer, seq):
    """Per example (in file order): its word-piece ids with [CLS]/[SEP], as our packer cuts them
    to `seq`, and its label; the peer gets exactly these ids."""
    from tinybert_tf.data import tasks

    ids, labels = [], []
    for x, y in tasks.task_dataset(spec, "train", tokenizer,
                                   tasks.Batching(seq_len=seq, batch_size=256)).as_numpy_iterator():
        for row, mask, label in zip(x["token_ids"], x["padding_mask"], y, strict=True):
            ids.append([int(t) for t in row[: int(mask.sum())]])
            labels.append(int(label))
    return ids, labels


def keras_models(cfg, teacher_arch, precision_name, num_classes):
    """(teacher classifier, student classifier) of one precision (a common.POLICIES name)."""
    import keras
    import keras_hub

    keras.backend.clear_session()
    gc.collect()
    backbone, s_backbone = build_backbones(cfg["vocab"], 512, teacher_arch, cfg["student"],
                                           precision_name)
    t_dtype, s_dtype = POLICIES[precision_name]
    teacher = keras_hub.models.BertTextClassifier(
        backbone, num_classes=num_classes, preprocessor=None,
        dtype="float32" if t_dtype == "int8" else t_dtype)
    quantize_if_int8(teacher, precision_name)
    student = keras_hub.models.BertTextClassifier(s_backbone, num_classes=num_classes,
                                                  preprocessor=None, dtype=s_dtype)
    return teacher, student


def keras_step_model(cfg, teacher_arch, step, precision_name, jit, num_classes):
    """The compiled model `fit` trains for one step kind."""
    import keras

    from tinybert_tf import Distiller
    from tinybert_tf.distill import recipes

    teacher, student = keras_models(
        cfg, teacher_arch, "fp32" if precision_name == "fp32" else
        ("mixed" if step == "finetune" else precision_name), num_classes)
    if step == "finetune":
        model = teacher
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=keras_jit(jit),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model
    name = "tinybert_task_intermediate" if step == "intermediate" else "tinybert_task_prediction"
    model = Distiller(teacher, student, recipes.get(name, layer_map=list(cfg["layer_map"])))
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=keras_jit(jit))
    return model


def time_keras(model, batches, step, passes):
    """Seconds per pass of `fit` over `batches` (after one untimed pass), from the first step's
    start to the last step's end: a training run is one long `fit`, so the ~2 s this Keras spends
    after `on_train_end` of each `fit` call (measured with these models; not with a one-layer
    one) is not a per-example cost."""
    import keras
    import tensorflow as tf

    class Span(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # the step is done
            self.end = time.perf_counter()

    from tinybert_tf.distill.distiller import CACHED_LOGITS

    def strip(x):
        return x if step == "prediction" else {k: v for k, v in x.items() if k != CACHED_LOGITS}

    def gen():
        for x, y in batches:
            yield strip(x), y

    x0, y0 = batches[0]
    spec = ({k: tf.TensorSpec((None, v.shape[1] if k == CACHED_LOGITS else None),
                              tf.as_dtype(v.dtype)) for k, v in strip(x0).items()},
            tf.TensorSpec((None,), tf.as_dtype(y0.dtype)))
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec).cache()
    for _ in ds:  # fill the cache: the timed passes read memory, not Python
        pass
    n = len(batches)
    model.fit(ds.repeat(), epochs=1, steps_per_epoch=n, verbose=0)  # tracing, one per shape
    span = Span()
    model.fit(ds.repeat(), epochs=1, steps_per_epoch=n * passes, verbose=0, callbacks=[span])
    return (span.end - span.start) / passes


def ours(cfg, teacher_arch, spec, tokenizer, seq, variants, log):
    """{variant: {step: result}} for our side at one sequence length."""
    out = {}
    for bucketed in (True, False):
        buckets = cfg["buckets"] if bucketed else None
        batches = our_batches(spec, tokenizer, seq, cfg["batch"], buckets, spec.num_classes)
        examples = sum(len(y) for _, y in batches)
        pad = padding_fraction([x["padding_mask"] for x, _ in batches])
        for name in variants:
            key = f"{'bucketed' if bucketed else 'padded'}:{name}"
            out[key] = {}
            for step in STEPS:
                # auto's fine-tuning step is its own choice (no teacher runs in it)
                step_variant = cfg.get("finetune_of", {}).get(name, name)
                precision, jit, _ = parse_variant(step_variant if step == "finetune" else name)
                model = keras_step_model(cfg, teacher_arch, step, precision, jit,
                                         spec.num_classes)
                seconds = time_keras(model, batches, step, cfg["passes"])
                out[key][step] = {"examples_per_s": examples / seconds, "examples": examples,
                                  "batches": len(batches), "padding_fraction": pad}
                log(f"  seq {seq} ours {key} {step}: {examples / seconds:.3g} ex/s "
                    f"(padding {pad:.0%})")
                del model
    return out


def summarise(results, seq_lens, log):
    """Ratios per step: ours bucketed (fastest variant) vs the peer's dynamic padding (fastest)
    and vs ours padded (same variant); tables printed by the caller."""
    summary = {}
    for seq in seq_lens:
        r = results[str(seq)]
        row = {}
        for step in STEPS:
            mine = {k: v[step]["examples_per_s"] for k, v in r["ours"].items()}
            best = max((k for k in mine if k.startswith("bucketed:")), key=mine.get)
            entry = {"ours_fastest": best, "ours_examples_per_s": mine[best],
                     "vs_unbucketed": mine[best] / mine["padded:" + best.split(":", 1)[1]]}
            peer = r.get("peer", {})
            if peer.get("variants"):
                dyn = {k: v[step]["examples_per_s"] for k, v in peer["variants"].items()
                       if k.startswith("dynamic:")}
                peer_best = max(dyn, key=dyn.get)
                entry.update(peer_fastest=peer_best, peer_examples_per_s=dyn[peer_best],
                             vs_peer=mine[best] / dyn[peer_best])
            row[step] = entry
            log(f"task ratio seq {seq} {step}: ours {best} {mine[best]:.3g} ex/s; "
                f"{entry['vs_unbucketed']:.2f}x our unbucketed"
                + (f"; {entry['vs_peer']:.2f}x torch {entry['peer_fastest']}"
                   if "vs_peer" in entry else "; peer skipped"))
        summary[str(seq)] = row
    return summary


def bench_task(cfg, run_peer, log=print):
    """Everything `--bench=task` measures; `cfg` is a plain dict (see run_task_bench)."""
    import tempfile

    import keras_hub

    from tinybert_tf.data import tasks

    teacher_arch = TINY_TEACHER if cfg["tiny"] else TEACHER
    with tempfile.TemporaryDirectory() as tmp:
        rows = task_rows(cfg["task_file"], cfg["rows"], 0, cfg["cache_dir"] or tmp)
        spec = tasks.load_file_task(write_subset(rows, os.path.join(tmp, "train.tsv")))
        tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(cfg["tokenizer"])
        cfg = dict(cfg, vocab=tokenizer.vocabulary_size(),
                   layer_map=TINY_LAYER_MAP if cfg["tiny"] else LAYER_MAP)
        results = {"rows": len(rows), "classes": spec.num_classes, "teacher": teacher_arch,
                   "student": cfg["student"]}
        for seq in cfg["seq_lens"]:
            ids, labels = token_lists(spec, tokenizer, seq)
            lengths = sorted(len(t) for t in ids)
            entry = {"median_tokens": lengths[len(lengths) // 2],
                     "p90_tokens": lengths[math.ceil(0.9 * len(lengths)) - 1],
                     "ours": ours(cfg, teacher_arch, spec, tokenizer, seq, cfg["variants"], log)}
            if run_peer is not None:
                entry["peer"] = run_peer({"cfg": cfg, "teacher": teacher_arch, "ids": ids,
                                          "labels": labels, "seq": seq,
                                          "num_classes": spec.num_classes})
            results[str(seq)] = entry
    results["summary"] = summarise(results, cfg["seq_lens"], log)
    return results


def run_task_bench(cfg):
    """`--bench=task` (`bench_task`) with the flags' settings; the peer in a subprocess."""
    from examples.stdlib import demo
    from tinybert_tf.distill import students

    auto, reason = auto_variant()
    auto_finetune, _ = auto_variant(teacher_steps=False)
    variants = list(dict.fromkeys(auto if v == "auto" else v for v in FLAGS.task_variants))
    for name in variants:
        parse_variant(name)
    print(f"task: auto = {auto} ({reason}), for fine-tuning {auto_finetune}; variants {variants}")
    tokenizer = demo.minilm_dir()
    task_cfg = dict(
        tiny=cfg.tiny, task_file=FLAGS.task_file, rows=64 if cfg.tiny else FLAGS.task_rows,
        cache_dir=FLAGS.task_cache_dir, tokenizer=tokenizer,
        vocab_file=os.path.join(tokenizer, "vocab.txt"),
        student=dict(students.PRESETS["tiny_2l_32h" if cfg.tiny else "tinybert_4l_312h"]),
        batch=8 if cfg.tiny else FLAGS.task_batch, threads=cfg.threads,
        seq_lens=[32] if cfg.tiny else [int(s) for s in FLAGS.task_seq_lens],
        buckets=tuple(int(b) for b in FLAGS.task_buckets), passes=1 if cfg.tiny else
        FLAGS.task_passes, variants=variants[:1] if cfg.tiny else variants,
        peer_variants=FLAGS.task_peer_variants[:1] if cfg.tiny else FLAGS.task_peer_variants,
        finetune_of={auto: auto_finetune})
    peer = None
    if FLAGS.peer != "none" and all(importlib.util.find_spec(m) for m in ("torch", "transformers")):
        def peer(args):
            return run_worker("torch_task", args, extra_env=peer_env())
    else:
        print("task: PyTorch peer skipped (--peer=none or torch/transformers not importable)")
    results = bench_task(task_cfg, peer)
    results["auto"] = {"variant": auto, "reason": reason, "finetune_variant": auto_finetune}
    for seq in task_cfg["seq_lens"]:
        r = results[str(seq)]
        sides = {**r["ours"], **{f"torch {k}": v for k, v in
                                  (r.get("peer") or {}).get("variants", {}).items()}}
        print_table(f"task steps, seq {seq} ({results['rows']} rows, median {r['median_tokens']}"
                    f" / p90 {r['p90_tokens']} tokens), examples/s",
                    ["side", *STEPS, "padding"],
                    [[k, *(v[s]["examples_per_s"] for s in STEPS),
                      v["intermediate"]["padding_fraction"]] for k, v in sides.items()])
    return results
