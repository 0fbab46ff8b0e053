"""`--bench=checkpoint`: what one checkpoint of a general-distillation run costs on disk and in
save time, written (a) whole, every Distiller variable (the frozen teacher's too) + the optimizer
in a plain `tf.train.Checkpoint` (what checkpoints held before the teacher was left out), and (b)
through `tinybert_tf.launch.checkpoints.Checkpointer` (the teacher left out), against the bytes of
what training changes: student, projections and optimizer state (in memory). The models are the
benchmark's shapes (random weights: `keras_step.build_backbones`), recipe `tinybert_general`
(layer map `last` where the uniform one does not divide: the map changes no variable), AdamW
with its variables built."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

from .common import median
from .keras_step import build_backbones
from .report import print_table

SAVES = 3  # timed saves of each kind (median reported)
TARGET_RATIO = 1.2  # (b) / trained state: a checkpoint is what training changes, little more
MB = 1e6


def bench_checkpoint(cfg):
    import keras
    import tensorflow as tf

    from tinybert_tf.distill import recipes
    from tinybert_tf.distill.distiller import Distiller
    from tinybert_tf.launch import checkpoints, teacher_record

    teacher, student = build_backbones(cfg)
    recipe = recipes.get("tinybert_general")
    if cfg.teacher["num_layers"] % cfg.student["num_layers"]:
        recipe = dataclasses.replace(recipe, layer_map="last")
    distiller = Distiller(teacher, student, recipe)
    distiller.compile(optimizer=keras.optimizers.AdamW(1e-4))
    distiller.optimizer.build(distiller.trainable_variables)
    in_teacher = {id(v) for v in teacher.variables}
    trained = [v for v in distiller.variables if id(v) not in in_teacher]
    trained += list(distiller.optimizer.variables)
    start = time.perf_counter()
    teacher_record.teacher_fingerprint(distiller)
    fingerprint_s = time.perf_counter() - start

    root = tempfile.mkdtemp(prefix="bench_checkpoint_")
    try:
        whole = tf.train.Checkpoint(model=list(distiller.variables),
                                    optimizer=list(distiller.optimizer.variables))
        ours = checkpoints.Checkpointer(os.path.join(root, "ours"), distiller,
                                        distiller.optimizer, max_to_keep=1, teacher_path="random")

        def save(i):
            ours.save(i + 1)
            return ours.manager.latest_checkpoint

        times, sizes = _saves({"whole": lambda i: whole.write(os.path.join(root, "whole", f"{i}")),
                               "checkpointer": save})
        record_bytes = os.path.getsize(os.path.join(root, "ours", teacher_record.TEACHER_FILE))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = {
        "teacher_mb": _bytes(teacher.variables) / MB,
        "trained_state_mb": _bytes(trained) / MB,
        "whole": {"mb": sizes["whole"] / MB, "save_s": median(times["whole"]),
                  "save_s_each": times["whole"]},
        "checkpointer": {"mb": sizes["checkpointer"] / MB,
                         "save_s": median(times["checkpointer"]),
                         "save_s_each": times["checkpointer"], "teacher_json_bytes": record_bytes},
        "fingerprint_s": fingerprint_s,
        "ratio": sizes["checkpointer"] / _bytes(trained),
        "target_ratio": TARGET_RATIO,
        "whole_over_checkpointer": sizes["whole"] / sizes["checkpointer"],
    }
    _print(out, cfg)
    return out


def _saves(writers):
    """({name: seconds of each save}, {name: bytes on disk of its last checkpoint}) of SAVES
    rounds, each calling every writer `write(i)` in turn (interleaved, so that both meet the same
    disk and page-cache state), which returns the prefix of the checkpoint it wrote. The whole
    checkpoints are deleted once measured but the last (a Checkpointer with max_to_keep=1 deletes
    its older ones itself), so that the disk holds few at a time."""
    times, sizes = {name: [] for name in writers}, {}
    for i in range(SAVES):
        for name, write in writers.items():
            start = time.perf_counter()
            prefix = write(i)
            times[name].append(time.perf_counter() - start)
            folder = os.path.dirname(prefix)
            files = [os.path.join(folder, n) for n in os.listdir(folder)
                     if n.startswith(os.path.basename(prefix) + ".")]
            sizes[name] = sum(os.path.getsize(f) for f in files)
            if name == "whole" and i < SAVES - 1:
                for f in files:
                    os.remove(f)
    return times, sizes


def _bytes(variables):
    import numpy as np

    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def _print(out, cfg):
    t, s = cfg.teacher, cfg.student
    shapes = (f"teacher {t['num_layers']}L/{t['hidden_dim']}H, student {s['num_layers']}L/"
              f"{s['hidden_dim']}H, vocab {cfg.vocab}")
    trained = out["trained_state_mb"]
    rows = [
        ["whole: tf.train.Checkpoint, teacher included", out["whole"]["mb"],
         out["whole"]["save_s"], out["whole"]["mb"] / trained],
        ["Checkpointer: teacher left out", out["checkpointer"]["mb"],
         out["checkpointer"]["save_s"], out["ratio"]],
        ["student + projections + optimizer (memory)", trained, None, 1.0],
        ["teacher weights (memory)", out["teacher_mb"], None, out["teacher_mb"] / trained],
    ]
    print_table(f"checkpoint: one Distiller checkpoint on disk ({shapes}; save: median of "
                f"{SAVES})", ["what", "MB", "save s", "vs trained state"], rows)
    print(f"checkpoint ratio: Checkpointer / trained state = {out['ratio']:.3f} (target <= "
          f"{TARGET_RATIO}); whole / Checkpointer = {out['whole_over_checkpointer']:.2f}; "
          f"teacher fingerprint (once per process, first save) {out['fingerprint_s']:.2f} s")
