"""The step with a teacher run only as deep as the recipe reads it: MiniLMv2 distilling the
teacher's last layer (the whole teacher runs) vs an upper-middle layer at 2/3 of its depth
(MiniLMv2's choice for large teachers; the teacher's upper third is skipped). Both Distillers
are built first and timed in alternating rounds, so load on shared cores falls on both alike."""

from __future__ import annotations

import math

from .common import median
from .keras_step import build_distiller, random_batch, repeat_dataset, time_fit
from .report import print_table

ROUNDS = 3


def relation_heads(cfg):
    """The most relation heads (at most 12) dividing the teacher's and the student's widths."""
    common = math.gcd(int(cfg.teacher["hidden_dim"]), int(cfg.student["hidden_dim"]))
    return max(r for r in range(1, 13) if common % r == 0)


def bench_truncated(cfg, variant, precision, jit, spe):
    """seq/s of minilm_v2 with teacher_layer = last vs 2/3 depth, one variant, side by side."""
    import keras

    keras.backend.clear_session()
    layers = int(cfg.teacher["num_layers"])
    upper_middle = max(1, round(layers * 2 / 3)) - 1
    named = {"last layer": -1, f"layer {upper_middle + 1} of {layers}": upper_middle}
    from tinybert_tf.distill import recipes

    models = {k: build_distiller(cfg, precision, jit, spe, recipes.get(
        "minilm_v2", relation_heads=relation_heads(cfg), teacher_layer=layer))
        for k, layer in named.items()}
    data = repeat_dataset(random_batch(cfg))
    calls = max(1, math.ceil(cfg.repeats / spe))
    times = {k: [] for k in models}
    for model in models.values():  # warm-up: tracing and compilation
        time_fit(model, data, cfg.warmup, spe)
    for _ in range(ROUNDS):
        for k, model in models.items():
            times[k] += time_fit(model, data, calls + 1, spe)[1:]
    runs = {k: {"teacher_depth": models[k].teacher_depth, "step_ms": median(t) * 1e3,
                "seq_per_s": cfg.batch / median(t), "timed_steps": len(t) * spe}
            for k, t in times.items()}
    full, cut = runs.values()
    out = {"variant": variant, "runs": runs, "speedup": cut["seq_per_s"] / full["seq_per_s"]}
    print_table(f"minilm_v2 step ({variant}): the teacher as deep as the distilled layer "
                f"({ROUNDS} alternating rounds)",
                ["teacher layer", "teacher layers run", "seq/s", "ms/step"],
                [[k, v["teacher_depth"], v["seq_per_s"], v["step_ms"]] for k, v in runs.items()])
    print(f"truncated-teacher ratio: {out['speedup']:.2f}x")
    return out
