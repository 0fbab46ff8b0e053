"""Hardware-aware defaults: `precision`, `teacher_dtype` and `jit_compile` = "auto", and oneDNN.

bfloat16 only pays where the hardware computes it natively: CPUs with `avx512_bf16` or
`amx_bf16` (on AVX2-only CPUs a bf16 matmul runs at the fp32 rate plus casts), TPUs, and NVIDIA
GPUs of compute capability >= 8.0. XLA (`jit_compile`) measured faster for float32 CPU steps and
slower for bfloat16 ones (bench/RESULTS.md: XLA's CPU dot runs bf16 at half oneDNN's rate), so
auto = on for float32 and off for bfloat16 on CPU, on for TPU/GPU. TensorFlow turns its oneDNN
kernels on by default only on CPUs with AVX-512 VNNI/BF16 or AMX; on AVX2-only CPUs a training
step ran 1.45x faster with `TF_ENABLE_ONEDNN_OPTS=1` (issue 14), so the launcher, the demo and
the tools set it before TensorFlow is imported unless the user set it.

On the JAX backend (`backend="jax"`) the device is JAX's default one; Keras' JAX trainer jits
every step, so `jit_compile` is always True there (an explicit False would run the step op by
op); on a JAX CPU everything is XLA, whose bf16 dot measured slower than fp32 (bench/RESULTS.md:
JAX fp32 11.2 vs bf16 9.75 seq/s), so auto precision is float32 on a JAX CPU whatever its flags.

Everything here is a pure function of given CPU flags / device kinds (tested), plus two
readers of this machine (`cpu_flags`, `device_kind`).
"""

from __future__ import annotations

import os

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
    """Set TF_ENABLE_ONEDNN_OPTS=1 unless the user set it; call before importing TensorFlow.
    Returns a one-line reason."""
    if "TF_ENABLE_ONEDNN_OPTS" in environ:
        return f"oneDNN as set by the user (TF_ENABLE_ONEDNN_OPTS={environ['TF_ENABLE_ONEDNN_OPTS']})"
    environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    flags = cpu_flags() if flags is None else flags
    native = "avx512_vnni" in flags or "amx_bf16" in flags or "avx512_bf16" in flags
    return "oneDNN on" + ("" if native else " (TensorFlow leaves it off on this CPU; 1.45x "
                          "faster measured on AVX2)")


def device_kind(tf=None, backend="tensorflow"):
    """"tpu", "gpu:<major>.<minor>" (compute capability) or "cpu" for the visible devices (of
    JAX's default device with `backend="jax"`)."""
    if backend == "jax":
        return jax_device_kind()
    if tf is None:
        import tensorflow as tf
    if tf.config.list_logical_devices("TPU"):
        return "tpu"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return f"gpu:{cc[0]}.{cc[1]}" if cc else "gpu:0.0"
    return "cpu"


def jax_device_kind(device=None):
    """device_kind of a JAX device (default: JAX's default device)."""
    if device is None:
        import jax

        device = jax.devices()[0]
    if device.platform == "tpu":
        return "tpu"
    if device.platform in ("gpu", "cuda", "rocm"):
        cc = str(getattr(device, "compute_capability", "") or "0.0")
        return f"gpu:{cc}" if "." in cc else f"gpu:{cc}.0"
    return "cpu"


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


def as_bool(value):
    """A config flag given as a bool or as text ("True", "false", "1"): absl passes strings."""
    return value in (True, 1, "True", "true", "1")


def resolve(precision, teacher_dtype, jit_compile, kind, flags, backend="tensorflow"):
    """Resolve "auto" settings. Returns (precision, teacher_dtype, jit_compile, one-line reason).

    precision auto -> mixed_bfloat16 where bf16 is native, else float32; teacher_dtype auto ->
    bfloat16 where native, else "" (the precision's); jit_compile auto -> see module doc.
    Explicit values pass through unchanged, except jit_compile on JAX (always True).
    """
    bf16, why = native_bf16(kind, flags)
    if backend == "jax":
        if kind == "cpu" and bf16:
            bf16, why = False, f"{why}, but JAX on CPU runs bf16 through XLA (slower than fp32)"
        if not as_bool(jit_compile) and jit_compile != "auto":
            why += "; jit_compile=False ignored: Keras' JAX trainer jits every step"
        jit_compile = True
    if precision == "auto":
        precision = "mixed_bfloat16" if bf16 else "float32"
    if teacher_dtype == "auto":
        teacher_dtype = "bfloat16" if bf16 else ""
    if jit_compile == "auto":
        uses_bf16 = precision == "mixed_bfloat16" or teacher_dtype == "bfloat16"
        jit_compile = kind != "cpu" or not uses_bf16
    jit_compile = as_bool(jit_compile)
    reason = (f"precision {precision}, teacher {teacher_dtype or 'as precision'}, "
              f"jit_compile {jit_compile}: {why}")
    return precision, teacher_dtype, jit_compile, reason
