"""The demo's time budget: measure this machine's distillation step, run as many steps as fit.

`make demo` must finish in 10 minutes on any 2-core x86-64 machine, and machines differ several
times in speed (AVX-512 with bf16 vs AVX2 only). So the demo times a few steps of the same
Distiller on a batch of the run's shape after warm-up, then plans the step count:

    steps = (budget - elapsed - RESERVE_S) / (step_s * (1 + MARGIN)) - RESERVE_STEPS

clipped to [MIN_STEPS, MAX_STEPS]. Measured on a 2-core avx512_bf16 machine: the timed step
took 0.56 s, the real run 273 s for 360 steps (0.76 s a step: the input pipeline shares the
cores, logging, checkpoints) of which ~20 s were fixed (loading, tracing, saving), then 24 s of
evaluation and export. So MARGIN = 0.4 covers the per-step overhead and RESERVE_STEPS steps plus
RESERVE_S seconds the fixed costs and the evaluation (both scale with the machine's speed).
MAX_STEPS is the run the README's table shows; at a given step count the result is
deterministic (`--steps` pins it and skips the measurement).
"""

from __future__ import annotations

import time

MAX_STEPS = 360
MIN_STEPS = 60
RESERVE_STEPS = 80
RESERVE_S = 20.0
MARGIN = 0.4
CALIBRATION_WARMUP = 2
CALIBRATION_STEPS = 4


def plan_steps(budget_s, elapsed_s, step_s, max_steps=MAX_STEPS, min_steps=MIN_STEPS):
    """(steps, fits): the planned step count and whether it fits the budget (False when even
    `min_steps` does not: the demo then runs `min_steps` and says so)."""
    left = budget_s - elapsed_s - RESERVE_S
    steps = int(left / (step_s * (1 + MARGIN))) - RESERVE_STEPS
    if steps < min_steps:
        return min_steps, False
    return min(steps, max_steps), True


def measure_step_seconds(teacher_dir, student, recipe, layer_map, loss_weights, batch_size,
                         seq_len, learning_rate):
    """Mean seconds of CALIBRATION_STEPS Distiller steps (float32, no XLA, as the
    demo runs) on one random full batch, after CALIBRATION_WARMUP untimed steps (tracing)."""
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from tinybert_tf.distill.distiller import Distiller
    from tinybert_tf.launch import builders, config_lib

    teacher = keras_hub.models.Backbone.from_preset(teacher_dir)
    distiller = Distiller(teacher, builders.student_backbone(student, teacher),
                          config_lib.make_recipe(recipe, layer_map, loss_weights))
    distiller.compile(optimizer=keras.optimizers.AdamW(learning_rate), jit_compile=False)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, teacher.vocabulary_size, (batch_size, seq_len)).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    data = tf.data.Dataset.from_tensors(x).repeat()
    distiller.fit(data, epochs=1, steps_per_epoch=CALIBRATION_WARMUP, verbose=0, shuffle=False)
    start = time.perf_counter()
    distiller.fit(data, epochs=1, steps_per_epoch=CALIBRATION_STEPS, verbose=0, shuffle=False)
    seconds = (time.perf_counter() - start) / CALIBRATION_STEPS
    del distiller, teacher
    keras.backend.clear_session()  # and one garbage collection
    return seconds


def cpu_line():
    """'AMD EPYC, 2 cores, avx512_bf16' : the CPU model, core count and its fastest matmul flag."""
    import os
    import platform

    from tinybert_tf.launch import hardware

    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    flags = hardware.cpu_flags()
    kind = next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags),
                "no AVX2")
    return f"{model}, {os.cpu_count()} cores, {kind}"
