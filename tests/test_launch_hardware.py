"""Hardware-aware defaults: "auto" resolution from given CPU flags and device kinds, oneDNN."""

import pytest

from tinybert_tf.launch import hardware

AVX2 = frozenset({"avx", "avx2", "fma", "sse4_2"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16"}
AMX = AVX2 | {"avx512f", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize("kind, flags, expected", [
    ("cpu", AVX2, ("float32", "", True)),
    ("cpu", AVX512_BF16, ("mixed_bfloat16", "bfloat16", False)),
    ("cpu", AMX, ("mixed_bfloat16", "bfloat16", False)),
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
    # auto jit with an explicit bf16 teacher on CPU: off (XLA's CPU bf16 dot is slower).
    assert hardware.resolve("float32", "bfloat16", "auto", "cpu", AVX512_BF16)[2] is False


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
