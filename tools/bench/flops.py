"""FLOP counts of the distillation step and the machine's measured dense-matmul FLOP/s."""

from __future__ import annotations

import time

from .common import POLICIES, median
from .report import print_table


def encoder_flops(arch, batch, seq):
    """Forward matmul FLOPs of a BERT encoder (2 per multiply-add; embeddings are lookups).

    Per layer and token: Q, K, V, output projections 4*H*H, feed-forward 2*H*F, attention
    scores and context 2*S*H multiply-adds.
    """
    h, f, layers = arch["hidden_dim"], arch["intermediate_dim"], arch["num_layers"]
    per_token = 2 * (4 * h * h + 2 * h * f + 2 * seq * h)
    pooler = 2 * h * h * batch
    return layers * per_token * batch * seq + pooler


def step_flops(cfg):
    """Teacher forward + (student forward + projections) x 3 (forward and backward)."""
    teacher = encoder_flops(cfg.teacher, cfg.batch, cfg.seq)
    student = encoder_flops(cfg.student, cfg.batch, cfg.seq)
    projections = (cfg.student["num_layers"] + 1) * 2 * cfg.batch * cfg.seq * (
        cfg.student["hidden_dim"] * cfg.teacher["hidden_dim"]
    )
    return {"teacher_forward": teacher, "student_forward": student,
            "projections_forward": projections, "total": teacher + 3 * (student + projections)}


def ideal_seconds(flops, precision, matmul):
    """Step time if every FLOP ran at the measured matmul rate of its precision (teacher and
    student may differ); `ideal / measured` is the step's fraction of matmul FLOP/s."""
    t_dtype, s_dtype = POLICIES[precision]
    # int8 teacher: against the bf16 rate (no int8 matmul rate is measured)
    peak = {"float32": matmul["fp32_peak"], "bfloat16": matmul["bf16_peak"],
            "mixed_bfloat16": matmul["bf16_peak"], "int8": matmul["bf16_peak"]}
    student = 3 * (flops["student_forward"] + flops["projections_forward"])
    return flops["teacher_forward"] / peak[t_dtype] + student / peak[s_dtype]


def matmul_flops(cfg, dtype, jit):
    import tensorflow as tf

    n = cfg.matmul_size
    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    fn = tf.function(lambda a, b: tf.linalg.matmul(a, b), jit_compile=jit)
    times = []
    for i in range(cfg.warmup + max(3, cfg.repeats)):
        start = time.perf_counter()
        fn(a, b).numpy()
        if i >= cfg.warmup:
            times.append(time.perf_counter() - start)
    return 2 * n**3 / median(times)


def bench_matmul(cfg):
    out = {}
    for dtype in ("float32", "bfloat16"):
        for jit in (False, True):
            out[f"{dtype}{'_xla' if jit else ''}"] = matmul_flops(cfg, dtype, jit)
    out["fp32_peak"] = max(out["float32"], out["float32_xla"])
    out["bf16_peak"] = max(out["bfloat16"], out["bfloat16_xla"])
    print_table("dense matmul FLOP/s (tf.linalg.matmul, "
                f"{cfg.matmul_size}x{cfg.matmul_size})", ["dtype", "GFLOP/s"],
                [[k, v / 1e9] for k, v in out.items()])
    return out
