"""Hardware-aware defaults: "auto" resolution from given CPU flags and device kinds, oneDNN."""

import pytest

from tinybert_tf.launch import hardware

AVX2 = frozenset({"avx", "avx2", "fma", "sse4_2"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16"}
AMX = AVX2 | {"avx512f", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize("kind, flags, expected", [
    ("cpu", AVX2, ("float32", "", True)),
    ("cpu", AVX512_BF16, ("mixed_bfloat16", "bfloat16", "fusible")),
    ("cpu", AMX, ("mixed_bfloat16", "bfloat16", "fusible")),
    ("tpu", frozenset(), ("mixed_bfloat16", "bfloat16", True)),
    ("gpu:9.0", AVX2, ("mixed_bfloat16", "bfloat16", True)),
    ("gpu:8.0", AVX2, ("mixed_bfloat16", "bfloat16", True)),
    ("gpu:7.5", AVX512_BF16, ("mixed_float16", "", True)),
    ("gpu:7.0", AVX2, ("mixed_float16", "", True)),
    ("gpu:6.0", AVX2, ("float32", "", True)),
])
def test_auto_resolution(kind, flags, expected):
    *got, reason = hardware.resolve("auto", "auto", "auto", kind, flags)
    assert tuple(got) == expected
    assert reason.startswith(f"precision {expected[0]}")


def test_explicit_values_pass_through():
    assert hardware.resolve("float32", "bfloat16", "False", "cpu", AVX512_BF16)[:3] == (
        "float32", "bfloat16", False)
    assert hardware.resolve("mixed_float16", "", True, "gpu:7.0", AVX2)[:3] == (
        "mixed_float16", "", True)
    assert hardware.resolve("auto", "", "Fusible", "cpu", AVX2)[2] == "fusible"
    # auto jit with an explicit bf16 teacher on CPU: no whole-step XLA (XLA's CPU bf16 dot is
    # slower), element-wise clusters only.
    assert hardware.resolve("float32", "bfloat16", "auto", "cpu", AVX512_BF16)[2] == "fusible"
    # an int8 teacher needs XLA's int8 dots
    assert hardware.resolve("auto", "int8", "auto", "cpu", AMX)[2] is True


def test_an_int8_teacher_where_it_measured_fastest_and_only_for_teacher_steps():
    """AMX (amx_int8): distillation steps get the int8 teacher under XLA with a float32 student;
    fine-tuning/evaluation keep the bf16 choice; the avx512_bf16 kind, JAX and a several-device
    MirroredStrategy never get int8; explicit values win."""
    amx = AMX | {"amx_int8"}
    assert hardware.resolve("auto", "auto", "auto", "cpu", amx, teacher_steps=True)[:3] == (
        "float32", "int8", True)
    assert "int8 teacher" in hardware.resolve("auto", "auto", "auto", "cpu", amx,
                                              teacher_steps=True)[3]
    assert hardware.resolve("auto", "auto", "auto", "cpu", amx)[:3] == (
        "mixed_bfloat16", "bfloat16", "fusible")
    assert hardware.resolve("auto", "auto", "auto", "cpu", AVX512_BF16 | {"avx512_vnni"},
                            teacher_steps=True)[:3] == ("mixed_bfloat16", "bfloat16", "fusible")
    assert hardware.resolve("auto", "auto", "auto", "cpu", amx, backend="jax",
                            teacher_steps=True)[:3] == ("float32", "", True)
    assert hardware.resolve("auto", "auto", "auto", "cpu", amx, mirrored=True,
                            teacher_steps=True)[:3] == ("mixed_bfloat16", "bfloat16", "fusible")
    assert hardware.resolve("auto", "auto", "auto", "gpu:9.0", amx, teacher_steps=True)[:3] == (
        "mixed_bfloat16", "bfloat16", True)
    assert hardware.resolve("mixed_bfloat16", "auto", "auto", "cpu", amx,
                            teacher_steps=True)[:3] == ("mixed_bfloat16", "int8", True)
    assert hardware.resolve("auto", "bfloat16", "auto", "cpu", amx, teacher_steps=True)[:3] == (
        "mixed_bfloat16", "bfloat16", "fusible")


def test_fusible_clusters_are_allowed_beside_the_users_xla_flags():
    env = {}
    hardware.allow_fusible_clusters(env)
    assert env["TF_XLA_FLAGS"] == "--tf_xla_cpu_global_jit --tf_xla_ops_to_cluster=FUSIBLE"
    hardware.allow_fusible_clusters(env)  # idempotent
    assert env["TF_XLA_FLAGS"].split() == list(hardware.FUSIBLE_FLAGS)
    env = {"TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_ops_to_cluster=MatMul"}
    hardware.allow_fusible_clusters(env)  # the user's own choice of ops is kept
    assert env["TF_XLA_FLAGS"].split() == [
        "--tf_xla_auto_jit=2", "--tf_xla_ops_to_cluster=MatMul", "--tf_xla_cpu_global_jit"]
    env = {}
    hardware.enable_onednn(AVX2, env)
    assert env["TF_XLA_FLAGS"].split() == list(hardware.FUSIBLE_FLAGS)


def test_cpu_flags_reads_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor: 0\nflags\t\t: fpu avx2 avx512_bf16\n\n")
    assert hardware.cpu_flags(str(tmp_path / "cpuinfo")) == {"fpu", "avx2", "avx512_bf16"}
    assert hardware.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_onednn_is_set_unless_the_user_chose():
    env = {}
    assert "on" in hardware.enable_onednn(AVX2, env) and env["TF_ENABLE_ONEDNN_OPTS"] == "1"
    env = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert "set by the user" in hardware.enable_onednn(AVX2, env)
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_no_xla_under_mirrored_strategy():
    """A jit-compiled Keras step under MirroredStrategy over several devices cannot reach the
    other replicas' variables (it failed on two logical CPUs): auto and an explicit True are off."""
    for jit in ("auto", True):
        got = hardware.resolve("auto", "auto", jit, "gpu:9.0", AVX2, mirrored=True)
        assert got[:3] == ("mixed_bfloat16", "bfloat16", False)
        assert "XLA off under MirroredStrategy" in got[3]
    assert hardware.resolve("auto", "auto", "auto", "gpu:9.0", AVX2)[2] is True
    # element-wise clusters need no cross-replica access: they stay
    assert hardware.resolve("auto", "auto", "auto", "cpu", AMX, mirrored=True)[2] == "fusible"
