"""The step with a teacher run only as deep as the recipe reads it: MiniLMv2 distilling the
teacher's last layer (the whole teacher runs) vs an upper-middle layer at 2/3 of its depth
(MiniLMv2's choice for large teachers; the teacher's upper third is skipped)."""

from __future__ import annotations

import math

from .keras_step import time_distiller_step
from .report import print_table


def relation_heads(cfg):
    """The most relation heads (at most 12) dividing the teacher's and the student's widths."""
    common = math.gcd(int(cfg.teacher["hidden_dim"]), int(cfg.student["hidden_dim"]))
    return max(r for r in range(1, 13) if common % r == 0)


def bench_truncated(cfg, variant, precision, jit, spe):
    """seq/s of minilm_v2 with teacher_layer = last vs 2/3 depth, one variant, side by side."""
    from tinybert_tf.distill import recipes

    layers = int(cfg.teacher["num_layers"])
    upper_middle = max(1, round(layers * 2 / 3)) - 1
    runs = {}
    for name, layer in (("last layer", -1), (f"layer {upper_middle + 1} of {layers}",
                                             upper_middle)):
        recipe = recipes.get("minilm_v2", relation_heads=relation_heads(cfg), teacher_layer=layer)
        runs[name] = time_distiller_step(cfg, precision, jit, spe, recipe=recipe)
    full, cut = runs.values()
    out = {"variant": variant, "runs": runs, "speedup": cut["seq_per_s"] / full["seq_per_s"]}
    print_table(f"minilm_v2 step ({variant}): the teacher as deep as the distilled layer",
                ["teacher layer", "teacher layers run", "seq/s", "ms/step"],
                [[k, v["teacher_depth"], v["seq_per_s"], v["step_ms"]] for k, v in runs.items()])
    print(f"truncated-teacher ratio: {out['speedup']:.2f}x")
    return out
