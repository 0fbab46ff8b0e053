"""Hardware-aware defaults: `precision`, `teacher_dtype` and `jit_compile` = "auto", and oneDNN.

bfloat16 only pays where the hardware computes it natively: CPUs with `avx512_bf16` or
`amx_bf16` (on AVX2-only CPUs a bf16 matmul runs at the fp32 rate plus casts), TPUs, and NVIDIA
GPUs of compute capability >= 8.0. NVIDIA GPUs of capability 7.x (Volta, Turing) have float16
tensor cores and no bf16 ones: auto = mixed_float16 there (Keras wraps the optimizer in a
LossScaleOptimizer; TensorFlow's mixed-precision guide: 7.0+ is where float16 pays); older GPUs
float32. XLA (`jit_compile`) measured faster for float32 CPU steps and
slower for bfloat16 ones (bench/RESULTS.md: XLA's CPU dot runs bf16 at a fifth of oneDNN's AMX
rate), so auto = on for float32 on CPU and for TPU/GPU. A bfloat16 CPU step instead gets
jit_compile = "fusible": TensorFlow's auto-clustering with only the element-wise ops XLA can fuse
(GELU, LayerNorm, casts, masks), the matmuls left to oneDNN (TensorFlow's own bf16 element-wise
kernels ran a GELU 3-4x slower than its XLA fusion; the bf16 step 1.15-1.2x faster, measured).
TF_XLA_FLAGS gains `--tf_xla_cpu_global_jit --tf_xla_ops_to_cluster=FUSIBLE` before TensorFlow
reads it (`allow_fusible_clusters`; those flags alone cluster nothing) and a run turns
auto-clustering on or off (`set_clustering`). TensorFlow turns its oneDNN
kernels on by default only on CPUs with AVX-512 VNNI/BF16 or AMX; on AVX2-only CPUs a training
step ran 1.45x faster with `TF_ENABLE_ONEDNN_OPTS=1` (a demo run on a 2-core AVX2 machine,
bench/RESULTS.md), so the launcher, the demo and the tools turn it on before TensorFlow is
imported unless the user set it.

On the JAX backend (`backend="jax"`) the device is JAX's default one; Keras' JAX trainer jits
every step, so `jit_compile` is always True there (an explicit False would run the step op by
op); on a JAX CPU everything is XLA, whose bf16 dot measured slower than fp32 (bench/RESULTS.md:
JAX fp32 11.2 vs bf16 9.75 seq/s), so auto precision is float32 on a JAX CPU whatever its flags.

Everything here is a pure function of given CPU flags / device kinds (tested; the kind is that of
the devices the run chose, `devices.Choice.kind`), plus a reader of this machine (`cpu_flags`)
and the console set-up done before
TensorFlow is imported (`quiet_tensorflow`, `native_start_up_filtered`: its C++ log lines off
unless --verbose).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (empty on systems without /proc/cpuinfo)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def enable_onednn(flags=None, environ=os.environ):
    """Set TF_ENABLE_ONEDNN_OPTS=1 unless the user set it, and let a run use XLA's element-wise
    clusters (`allow_fusible_clusters`); call before importing TensorFlow. Returns a one-line
    reason."""
    allow_fusible_clusters(environ)
    if "TF_ENABLE_ONEDNN_OPTS" in environ:
        return f"oneDNN as set by the user (TF_ENABLE_ONEDNN_OPTS={environ['TF_ENABLE_ONEDNN_OPTS']})"
    environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    flags = cpu_flags() if flags is None else flags
    native = "avx512_vnni" in flags or "amx_bf16" in flags or "avx512_bf16" in flags
    return "oneDNN on" + ("" if native else " (TensorFlow leaves it off on this CPU; 1.45x "
                          "faster measured on AVX2)")


FUSIBLE_FLAGS = ("--tf_xla_cpu_global_jit", "--tf_xla_ops_to_cluster=FUSIBLE")


def allow_fusible_clusters(environ=os.environ):
    """Add `FUSIBLE_FLAGS` to TF_XLA_FLAGS (keeping the user's, and their own choice of either
    flag): CPU graphs may then be auto-clustered, element-wise ops only, once a run turns
    auto-clustering on (`set_clustering`); until then nothing changes. TensorFlow reads the
    variable once, when its first function runs: call before that."""
    given = environ.get("TF_XLA_FLAGS", "").split()
    names = {flag.split("=")[0] for flag in given}
    added = [flag for flag in FUSIBLE_FLAGS if flag.split("=")[0] not in names]
    if added:
        environ["TF_XLA_FLAGS"] = " ".join(given + added)


def set_clustering(jit_compile):
    """TensorFlow's auto-clustering on for jit_compile "fusible", off otherwise (a whole-step
    XLA compile or none); `global_state.preserved` puts the caller's setting back."""
    import tensorflow as tf

    tf.config.optimizer.set_jit("autoclustering" if jit_compile == "fusible" else False)


def jit_value(jit_compile):
    """A given jit_compile as True, False or "fusible" (absl passes text)."""
    return "fusible" if str(jit_compile).lower() == "fusible" else as_bool(jit_compile)


# A line of TensorFlow's C++ log (absl's format: severity, date, time, thread, file:line]), absl's
# note that it logs to stderr before its set-up, or the second line of TF's CPU-feature note.
TF_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\s\]]+:\d+\] |"
                         r"WARNING: All log messages before absl::InitializeLog\(\)|"
                         r"To enable the following instructions: .* rebuild TensorFlow with)")


def quiet_tensorflow(verbose=False, environ=os.environ):
    """Turn TensorFlow's C++ log off unless `verbose`; call before importing TensorFlow.

    TF_CPP_MIN_LOG_LEVEL=3 unless the user set it: its INFO/WARNING lines and the start-up
    lines it logs as errors that are none (`failed call to cuInit` on a machine without a GPU,
    oneDNN's `supports DT_INT64 only on platforms with AVX-512`) are off; a real failure still
    reaches Python as an exception, which the launcher prints. Returns True when TensorFlow is
    to be quiet (then `native_start_up_filtered` also drops the lines its libraries print while
    loading, which no setting reaches)."""
    if verbose:
        return False
    if not environ.get("TF_CPP_MIN_LOG_LEVEL"):
        environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


@contextlib.contextmanager
def native_start_up_filtered(quiet=True):
    """While the block runs (importing TensorFlow), file descriptor 2 goes to a temporary file;
    afterwards every line of it but TensorFlow's C++ log lines (`TF_LOG_LINE`: its libraries log
    `port.cc`, `cudart_stub.cc` INFO lines while loading, before TF_CPP_MIN_LOG_LEVEL is read)
    is written to stderr, so a Python warning or traceback of the import still shows. `quiet`
    False: no filter. (A crash inside the import loses what it printed: --verbose.)"""
    try:
        saved = os.dup(2) if quiet else None
    except OSError:  # no stderr to filter
        saved = None
    if saved is None:
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(True)
                    if not TF_LOG_LINE.match(line)]
            if kept:
                os.write(2, "".join(kept).encode())


def quiet_python_logs(verbose=False):
    """The console of a normal run: Python-side INFO lines off unless `verbose` (absl's, which
    TensorFlow's savers use: `functional_saver.py:440] Sharding callback duration`,
    `signature_serialization.py:156] ...`, and the `tensorflow` logger's `Assets written`);
    warnings and errors still show, but for TF's retracing warning about Keras predict
    (`PREDICT_RETRACING`). Every entry point (launcher, examples, tools) calls it."""
    filter_predict_retracing()
    if verbose:
        return
    import logging as py_logging

    from absl import logging

    logging.set_verbosity(logging.WARNING)
    py_logging.getLogger("tensorflow").setLevel(py_logging.WARNING)


def filter_predict_retracing():
    """Drops TF's retracing warning about Keras predict (`PREDICT_RETRACING`) from the
    `tensorflow` logger, whatever its handlers (absl's, a notebook's); other records pass."""
    import logging as py_logging

    tf_logger = py_logging.getLogger("tensorflow")
    if _not_predict_retracing not in tf_logger.filters:
        tf_logger.addFilter(_not_predict_retracing)


# Keras predict traces one function per model, all from one code object, and TF's retracing
# detector keys its count by code: a process that predicts with a 5th model (a run with five
# teachers, the task proof's stages) is warned that "5 out of the last 5 calls" retraced.
PREDICT_RETRACING = "make_predict_function.<locals>.one_step_on_data_distributed"


def _not_predict_retracing(record):
    """False for TF's retracing warning about Keras predict's per-model function (each model's
    own function is traced once; the warning counts every model's together)."""
    message = record.getMessage()
    return not ("triggered tf.function retracing" in message and PREDICT_RETRACING in message)


def import_tensorflow_quietly():
    """For scripts: `quiet_tensorflow` and import TensorFlow, Keras and keras-hub with their
    libraries' start-up lines dropped (`native_start_up_filtered`) and the garbage collector set
    for a run after them (`heap.settled_imports`), as the CLI does."""
    from tinybert_tf.launch import heap

    with native_start_up_filtered(quiet_tensorflow()):
        heap.import_settled(*heap.RUN_MODULES)


def keep_tf_on_cpu(tf=None):
    """On the JAX backend TensorFlow only runs the tf.data input pipeline: hide GPUs from it so
    it does not reserve their memory (Keras' advice). Call before TF's first op; later it is a
    no-op (TF refuses to change visible devices once initialised)."""
    if tf is None:
        import tensorflow as tf
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass


def native_bf16(kind, flags):
    """(bool, reason): does this device compute bfloat16 natively?"""
    if kind == "tpu":
        return True, "TPU"
    if kind.startswith("gpu:"):
        major = int(kind.split(":")[1].split(".")[0])
        return major >= 8, f"NVIDIA compute capability {kind[4:]}" + (
            "" if major >= 8 else " (< 8.0: no bf16 tensor cores)")
    found = [f for f in BF16_CPU_FLAGS if f in flags]
    if found:
        return True, f"CPU with {'/'.join(found)}"
    return False, "CPU without avx512_bf16/amx_bf16 (bf16 runs at the fp32 rate here)"


def _float16_gpu(kind):
    return kind.startswith("gpu:") and int(kind.split(":")[1].split(".")[0]) == 7


def as_bool(value):
    """A config flag given as a bool or as text ("True", "false", "1"): absl passes strings."""
    return value in (True, 1, "True", "true", "1")


def int8_teacher_fastest(kind, flags, backend="tensorflow", mirrored=False):
    """(bool, reason): is an int8 teacher under XLA the fastest distillation step here? Measured
    so on AMX CPUs (`amx_int8`; bench/RESULTS.md: int8 teacher + float32 student under XLA 18.0
    seq/s vs 15.4 for the bf16 teacher + mixed_bfloat16 student with element-wise clusters,
    teacher features 1.6 % mean error vs bf16's 1.0 %, within the benchmark's 2 % bound); level
    with bf16 on the avx512_vnni + avx512_bf16 CPUs measured, never on JAX, and not under a
    several-device MirroredStrategy, where the step cannot be jit-compiled (TensorFlow's own int8
    matmul is ~8x slower)."""
    if backend != "tensorflow" or kind != "cpu" or mirrored or "amx_int8" not in flags:
        return False, ""
    return True, ("int8 teacher under XLA with a float32 student: the fastest distillation step "
                  "measured on AMX")


def resolve(precision, teacher_dtype, jit_compile, kind, flags, backend="tensorflow",
            mirrored=False, teacher_steps=False):
    """Resolve "auto" settings. Returns (precision, teacher_dtype, jit_compile, one-line reason).

    precision auto -> mixed_bfloat16 where bf16 is native, mixed_float16 on NVIDIA 7.x GPUs,
    else float32; teacher_dtype auto -> bfloat16 where native, else "" (the precision's);
    jit_compile auto -> see module doc ("fusible" for a bf16 CPU step), and on for an int8
    teacher. Explicit values pass through unchanged (jit_compile as True, False or "fusible"),
    except jit_compile on JAX (always True) and XLA under a several-device MirroredStrategy.

    `teacher_steps`: the run's steps run a teacher (general and task distillation). Then, where
    `int8_teacher_fastest` (AMX CPUs), teacher_dtype auto -> "int8" (`distill.quantize`, its
    fidelity printed at load) and precision auto -> float32, jit on; elsewhere auto never picks
    int8 (level with bf16 on the avx512_vnni + avx512_bf16 CPUs measured, without XLA ~8x
    slower). Fine-tuning, evaluation and comparisons keep the float teacher. An int8 teacher
    turns jit_compile auto on (its matmuls then run as XLA int8 dots).
    """
    bf16, why = native_bf16(kind, flags)
    int8, int8_why = int8_teacher_fastest(kind, flags, backend, mirrored)
    if teacher_steps and teacher_dtype == "auto" and int8:
        teacher_dtype, why = "int8", f"{why}; {int8_why}"
        precision = "float32" if precision == "auto" else precision
    if backend == "jax":
        if kind == "cpu" and bf16:
            bf16, why = False, f"{why}, but JAX on CPU runs bf16 through XLA (slower than fp32)"
        if jit_value(jit_compile) is not True and jit_compile != "auto":
            why += f"; jit_compile={jit_compile} ignored: Keras' JAX trainer jits every step"
        jit_compile = True
    if precision == "auto":
        precision = "mixed_bfloat16" if bf16 else "float32"
        if not bf16 and _float16_gpu(kind):
            precision = "mixed_float16"
            why += "; float16 tensor cores: mixed_float16 with loss scaling"
    if teacher_dtype == "auto":
        teacher_dtype = "bfloat16" if bf16 else ""
    if jit_compile == "auto":
        uses_bf16 = precision == "mixed_bfloat16" or teacher_dtype == "bfloat16"
        jit_compile = kind != "cpu" or not uses_bf16 or teacher_dtype == "int8"
        if kind == "cpu" and uses_bf16 and teacher_dtype == "int8":
            why += "; XLA for the int8 teacher (TensorFlow's own int8 matmul is ~8x slower)"
        elif not jit_compile:
            jit_compile = "fusible"
            why += "; XLA fuses the element-wise ops, matmuls stay on oneDNN"
    jit_compile = jit_value(jit_compile)
    if mirrored and jit_compile is True:  # TF MirroredStrategy over several devices: no XLA step
        jit_compile = False
        why += ("; XLA off under MirroredStrategy (a jit-compiled Keras step cannot reach the "
                "other replicas' variables)")
    reason = (f"precision {precision}, teacher {teacher_dtype or 'as precision'}, "
              f"jit_compile {jit_compile}: {why}")
    return precision, teacher_dtype, jit_compile, reason
