"""`--bench=serve`: SavedModel latency of the teacher vs the student at batch 1 and --serve_batch."""

from __future__ import annotations

import gc
import os
import tempfile
import time

from .common import median
from .keras_step import build_backbones, random_batch
from .report import print_table


def export_encoder(backbone, path):
    """SavedModel with a `serving_default(token_ids, segment_ids, padding_mask)` tf.function."""
    import tensorflow as tf

    specs = [tf.TensorSpec([None, None], tf.int32, name=n)
             for n in ("token_ids", "segment_ids", "padding_mask")]

    class Encoder(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=specs)
        def serve(self, token_ids, segment_ids, padding_mask):
            out = self.model({"token_ids": token_ids, "segment_ids": segment_ids,
                              "padding_mask": padding_mask}, training=False)
            return {"sequence_output": out["sequence_output"],
                    "pooled_output": out["pooled_output"]}

    module = Encoder(backbone)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def serve_latency(fn, inputs, warmup, repeats):
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        out = fn(**inputs)
        out["sequence_output"].numpy()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return median(times)


def bench_serve(cfg):
    """Teacher and student encoders exported as SavedModels (in a temporary directory, removed
    afterwards), loaded back with plain TensorFlow and timed at batch 1 and `serve_batch`."""
    with tempfile.TemporaryDirectory(prefix="tinybert_serve_") as tmp:
        out = {"models": _served_latencies(cfg, tmp)}
    t, s = out["models"]["teacher"], out["models"]["student"]
    out["latency_ratio"] = t["batch1_ms"] / s["batch1_ms"]
    out[f"latency_ratio_batch{cfg.serve_batch}"] = (
        t[f"batch{cfg.serve_batch}_ms"] / s[f"batch{cfg.serve_batch}_ms"])
    print_table(f"serve: SavedModel, fp32, seq {cfg.seq}",
                ["model", "batch 1 ms", f"batch {cfg.serve_batch} ms",
                 f"batch {cfg.serve_batch} seq/s"],
                [[n, e["batch1_ms"], e[f"batch{cfg.serve_batch}_ms"],
                  e[f"batch{cfg.serve_batch}_seq_per_s"]] for n, e in out["models"].items()])
    print(f"serve ratio: teacher/student latency at batch 1 = {out['latency_ratio']:.2f}x "
          f"(batch {cfg.serve_batch}: {out[f'latency_ratio_batch{cfg.serve_batch}']:.2f}x)")
    return out


def _served_latencies(cfg, tmp):
    """{model: {batchN_ms, batchN_seq_per_s}} of the two encoders exported under `tmp`."""
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    teacher, student = build_backbones(cfg, "fp32")
    paths = {"teacher": export_encoder(teacher, os.path.join(tmp, "teacher")),
             "student": export_encoder(student, os.path.join(tmp, "student"))}
    del teacher, student
    gc.collect()
    models = {}
    for name, path in paths.items():
        fn = tf.saved_model.load(path).signatures["serving_default"]
        entry = {}
        for batch in (1, cfg.serve_batch):
            inputs = {k: tf.constant(v) for k, v in random_batch(cfg, batch, seed=1).items()}
            repeats = cfg.repeats if batch == 1 else max(3, cfg.repeats // 2)
            entry[f"batch{batch}_ms"] = serve_latency(fn, inputs, cfg.warmup, repeats) * 1e3
            entry[f"batch{batch}_seq_per_s"] = batch / (entry[f"batch{batch}_ms"] / 1e3)
        models[name] = entry
    return models
