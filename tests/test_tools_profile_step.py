"""tools/bench/profile_step.py: the parts of one distillation step, and oneDNN's primitives."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from bench import profile_step  # noqa: E402

VERBOSE = """\
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,src:bf16::blocked:abc::f0,,,8x128x768:8x768x768,0.5
PROFILE-START
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,src:bf16::blocked:abc::f0,,,8x128x768:8x768x768,1.25
onednn_verbose,v1,primitive,exec,cpu,softmax,jit:avx10_1_512,forward_inference,src:f32,,,8x12x128x128,0.5
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,src:bf16,,,8x128x768,0.75
onednn_verbose,v1,primitive,create:cache_hit,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,,,,,0.01
PROFILE-END
onednn_verbose,v1,primitive,exec,cpu,matmul,gemm:jit,undef,src:f32,,,8x8,9.0
"""


def test_onednn_table_sums_exec_lines_between_the_markers_per_step():
    table = profile_step.onednn_table(VERBOSE, steps=2)
    assert table == {"matmul brg_matmul:avx10_1_512_amx": (1.0, 1.0),
                     "softmax jit:avx10_1_512": (0.5, 0.25)}
    assert list(table)[0].startswith("matmul")  # the largest first


def test_split_turns_cumulative_times_into_parts():
    cumulative = {"teacher": 10.0, "+s": 14.0, "+l": 15.0, "+b": 21.0, "step": 24.0}
    assert profile_step.split(cumulative) == {"teacher": 10.0, "student_forward": 4.0,
                                              "loss_terms": 1.0, "backward": 6.0,
                                              "optimizer_and_loop": 3.0, "step": 24.0}


@pytest.mark.slow
@pytest.mark.parametrize("jit, onednn_steps", [("none", 1), ("fusible", 0)])
def test_tiny_profile_runs_and_names_onednn_primitives(tmp_path, jit, onednn_steps):
    out = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench", "profile_step.py"),
                           "--tiny", "--repeats=2", f"--onednn_steps={onednn_steps}",
                           "--precision=fp32", f"--jit={jit}", f"--json={out}"],
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["jit"] == jit
    assert set(report["parts_ms"]) == {"teacher", "student_forward", "loss_terms", "backward",
                                       "optimizer_and_loop", "step"}
    assert all(v > 0 for v in report["cumulative_ms"].values())
    if not onednn_steps:
        assert report["onednn"] == {}
        return
    matmuls = {k: v for k, v in report["onednn"].items() if k.startswith("matmul ")}
    assert matmuls and all(v["calls_per_step"] > 0 for v in matmuls.values())
