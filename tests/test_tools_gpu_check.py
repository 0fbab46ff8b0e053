"""tools/gpu_check.py --tiny runs on the JAX backend with TensorFlow unimportable and writes finite
figures for our step, the bf16 matmul rate and (where torch is importable) the PyTorch peer.

TensorFlow is hidden from the subprocess (and the peer's child process) by a sitecustomize on
PYTHONPATH: every meta-path finder is wrapped so that nothing named tensorflow* is found, as on the
lent GPU machine where TensorFlow is not installed (`import tensorflow` raises
ModuleNotFoundError; `importlib.util.find_spec` returns None, which torch._dynamo relies on). No
timing is asserted: the CPU is shared.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SITECUSTOMIZE = textwrap.dedent('''
    import sys

    def _is_tf(name):
        return name.split(".")[0].startswith("tensorflow")

    class _Hide:
        def __init__(self, finder):
            self._finder = finder

        def find_spec(self, fullname, path=None, target=None):
            if _is_tf(fullname):
                return None
            find = getattr(self._finder, "find_spec", None)
            return None if find is None else find(fullname, path, target)

        def invalidate_caches(self):
            getattr(self._finder, "invalidate_caches", lambda: None)()

        def __getattr__(self, name):
            return getattr(self._finder, name)

    sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
''')

TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def _finite_positive(value, name):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (
        f"{name} = {value!r}")


@pytest.fixture(scope="module")
def gpu_check(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    (tmp / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp / "gpu.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KERAS_BACKEND="jax", PYTHONPATH=str(tmp), JAX_PLATFORMS="cpu")
    # Check the hiding itself: TensorFlow is installed in this venv, but not findable under it.
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; assert u.find_spec('tensorflow') is "
         "None\ntry:\n import tensorflow\nexcept ImportError: pass\nelse: raise SystemExit(1)"],
        env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr[-2000:]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py"), "--tiny",
                           f"--json={out}"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=str(tmp))
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_our_step_and_matmul_rate_without_tensorflow(gpu_check):
    results, stdout = gpu_check
    assert results["tensorflow_loaded"] is False
    ours = results["ours"]
    for key in ("seq_per_s", "step_ms", "flops_per_s"):
        _finite_positive(ours[key], f"ours.{key}")
    assert ours["teacher_dtype"] == "bfloat16" and ours["student_dtype"] == "mixed_bfloat16"
    assert math.isfinite(ours["loss"])
    _finite_positive(results["matmul"]["bf16_flops_per_s"], "matmul.bf16_flops_per_s")
    _finite_positive(results["flops_per_step"]["total"], "flops_per_step.total")
    _finite_positive(results["fraction"], "fraction")
    assert results["shapes"]["recipe"] == "tinybert_general"
    assert results["device"]["platform"] == "cpu" and results["versions"]["keras"]
    assert "general-distillation step" in stdout and "ours (Distiller, jax, bf16)" in stdout


@pytest.mark.slow
@pytest.mark.skipif(not TORCH, reason="torch / transformers not importable (CI's venv has no torch)")
def test_torch_peer_without_tensorflow(gpu_check):
    results, stdout = gpu_check
    peer = results["peer"]
    assert peer["skipped"] is None, peer["skipped"]
    assert set(peer["variants"]) == {"bf16_autocast", "bf16_teacher"}
    for name, v in peer["variants"].items():
        _finite_positive(v["seq_per_s"], f"peer.{name}.seq_per_s")
        assert math.isfinite(v["loss"])
        _finite_positive(results["ratio_vs"][name], f"ratio_vs.{name}")
    _finite_positive(results["ratio"], "ratio")
    assert results["versions"]["torch"] and "ratio (ours / fastest peer" in stdout
