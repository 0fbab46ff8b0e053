"""The benchmark's flags and its shape configuration (`Config`, passed to worker processes)."""

from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

BENCHES = ("step", "input", "serve", "memory", "jax", "task", "checkpoint")
FLAGS = flags.FLAGS
flags.DEFINE_list("bench", list(BENCHES), f"Benchmarks to run, from {BENCHES}.")
flags.DEFINE_string("json", None, "Write all figures to this JSON file.")
flags.DEFINE_integer("batch", 8, "Batch size of the distillation step.")
flags.DEFINE_integer("seq", 128, "Sequence length.")
flags.DEFINE_integer("teacher_layers", 12, "Teacher layers (BERT-base: 12).")
flags.DEFINE_integer("teacher_hidden", 768, "Teacher width.")
flags.DEFINE_integer("teacher_heads", 12, "Teacher attention heads.")
flags.DEFINE_integer("teacher_ffn", 3072, "Teacher feed-forward width.")
flags.DEFINE_integer("vocab", 30522, "Vocabulary size of teacher and student.")
flags.DEFINE_string("student", "tinybert_4l_312h", "Student preset (tinybert_tf.distill.students.PRESETS).")
flags.DEFINE_integer("repeats", 10, "Timed repetitions (median reported).")
flags.DEFINE_integer("warmup", 3, "Untimed warm-up repetitions (tracing/compilation included).")
flags.DEFINE_integer("threads", 0, "Intra-op threads for every framework; 0 = all cores.")
flags.DEFINE_integer("inter_op_threads", 1, "Inter-op threads (TF and torch).")
flags.DEFINE_list(
    "variants",
    ["fp32", "fp32_xla", "fp32_fus", "bf16t", "mixedt", "mixedt_xla", "bf16", "bf16_xla",
     "bf16_fus", "mixed_fus", "mixedt_spe4", "int8_xla", "int8t_xla"],
    "TF step variants: fp32 | bf16 (teacher policy bfloat16, student mixed_bfloat16) | "
    "mixed (both mixed_bfloat16) | bf16t (teacher bfloat16, student float32) | mixedt (teacher "
    "mixed_bfloat16, student float32) | int8 (teacher int8 kernels, student mixed_bfloat16) | "
    "int8t (teacher int8, student float32), with optional _xla (jit_compile), _fus (XLA "
    "clusters of element-wise ops, matmuls on oneDNN: jit_compile=fusible) and _speN "
    "(steps_per_execution=N).",
)
flags.DEFINE_list(
    "peer_variants", ["fp32", "bf16_autocast", "bf16_teacher"],
    "PyTorch peer variants: fp32 | bf16_autocast (teacher and student under torch.autocast) | "
    "bf16_teacher (teacher weights in bfloat16, student under autocast).",
)
flags.DEFINE_list("jax_variants", ["fp32", "bf16"], "Keras-JAX step variants (always jitted).")
flags.DEFINE_enum("peer", "auto", ["auto", "none"], "auto: run the PyTorch peer if importable.")
flags.DEFINE_string(
    "peer_omp_wait_policy", "PASSIVE",
    "OMP_WAIT_POLICY of the PyTorch peer process ('' = torch's default, spinning). PASSIVE keeps "
    "its OpenMP threads from spinning: on shared cores the default made the peer 3-10x slower "
    "(measured), so PASSIVE is the peer's faster setting there.",
)
flags.DEFINE_integer("serve_batch", 32, "Large serving batch (batch 1 is always measured).")
flags.DEFINE_integer("matmul_size", 4096, "Square matmul size for the machine's FLOP/s.")
flags.DEFINE_float("max_teacher_error", 0.02,
                   "Largest teacher-feature error a fast variant may have.")
flags.DEFINE_float("input_seconds", 10.0, "Minimum timed seconds of the input pipeline.")
flags.DEFINE_bool("cached_logits", True, "Also time the task-prediction step with cached logits.")
flags.DEFINE_bool("tiny", False, "Tiny shapes and few repeats (for tests).")
flags.DEFINE_string("task_file", "", "--bench=task: a task TSV (text, label); default: the "
                    "stdlib docstring task, built on first use under --task_cache_dir.")
flags.DEFINE_string("task_cache_dir", "bench/cache", "--bench=task: where the stdlib task is kept.")
flags.DEFINE_integer("task_rows", 512, "--bench=task: training rows per pass (seeded sample).")
flags.DEFINE_integer("task_batch", 32, "--bench=task: batch size.")
flags.DEFINE_list("task_seq_lens", ["64", "128"], "--bench=task: sequence lengths.")
flags.DEFINE_list("task_buckets", ["16", "32", "64", "128"], "--bench=task: our length buckets.")
flags.DEFINE_integer("task_passes", 2, "--bench=task: timed passes (after one untimed).")
flags.DEFINE_list("task_variants", ["auto", "fp32_xla"],
                  "--bench=task: our variants ('auto' = what the launcher picks here).")
flags.DEFINE_list("task_peer_variants", ["fp32", "bf16_autocast"],
                  "--bench=task: PyTorch peer variants.")
flags.DEFINE_string("worker", None, "Internal: run one subprocess job and print its result.")
flags.DEFINE_string("worker_args", "{}", "Internal: JSON arguments of --worker.")


@dataclasses.dataclass
class Config:
    batch: int
    seq: int
    teacher: dict  # num_layers, hidden_dim, num_heads, intermediate_dim
    student: dict
    vocab: int
    repeats: int
    warmup: int
    threads: int
    inter_op_threads: int
    serve_batch: int
    matmul_size: int
    input_seconds: float
    max_teacher_error: float
    tiny: bool


def config_from_flags():
    from tinybert_tf.distill.students import PRESETS  # light: keras_hub only

    threads = FLAGS.threads or os.cpu_count() or 1
    if FLAGS.tiny:
        return Config(
            batch=2, seq=16, vocab=500, repeats=2, warmup=1, threads=threads,
            inter_op_threads=FLAGS.inter_op_threads, serve_batch=4, matmul_size=256,
            input_seconds=0.5, max_teacher_error=FLAGS.max_teacher_error, tiny=True,
            teacher=dict(num_layers=4, hidden_dim=64, num_heads=2, intermediate_dim=128),
            student=dict(PRESETS["tiny_2l_32h"]),
        )
    student = PRESETS[FLAGS.student] if FLAGS.student in PRESETS else json.loads(FLAGS.student)
    return Config(
        batch=FLAGS.batch, seq=FLAGS.seq, vocab=FLAGS.vocab, repeats=FLAGS.repeats,
        warmup=FLAGS.warmup, threads=threads, inter_op_threads=FLAGS.inter_op_threads,
        serve_batch=FLAGS.serve_batch, matmul_size=FLAGS.matmul_size,
        input_seconds=FLAGS.input_seconds, max_teacher_error=FLAGS.max_teacher_error, tiny=False,
        teacher=dict(num_layers=FLAGS.teacher_layers, hidden_dim=FLAGS.teacher_hidden,
                     num_heads=FLAGS.teacher_heads, intermediate_dim=FLAGS.teacher_ffn),
        student=dict(student),
    )
