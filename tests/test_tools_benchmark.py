"""tools/benchmark.py runs end to end at tiny shapes and writes the figures the issue asks for:
one run of every bench the tests read (step, input, serve, memory, task, checkpoint), each test
checking its benches' figures in that run's JSON and stdout.

No timing is asserted (the machine is shared); only that every figure exists and is finite. The
PyTorch peer is skipped by the benchmark itself when torch/transformers are not importable, which
the JSON records in `step.peer.skipped`; the ratios against it are then null.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _get(results, dotted):
    value = results
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"missing {dotted!r} in the JSON"
        value = value[part]
    return value


def _finite(value, name):
    assert isinstance(value, (int, float)) and math.isfinite(value), f"{name} = {value!r}"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """(process, JSON) of one --tiny run: step with float32 and the machine's `auto` variant (and
    two peer variants), input, serve, memory, task in float32 (its stdlib task cached in a
    temporary directory) and checkpoint. The variants' own code is one path (`parse_variant`):
    each XLA variant more would add compiles, not coverage."""
    d = tmp_path_factory.mktemp("bench")
    out = d / "bench.json"
    (d / "tmp").mkdir()  # the run's TMPDIR: what the benches write there, they remove
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow",
               TMPDIR=str(d / "tmp"))
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--tiny",
         "--bench=step,input,serve,memory,task,checkpoint", f"--json={out}",
         "--variants=fp32", "--task_variants=fp32", "--peer_variants=fp32,bf16_autocast",
         f"--task_cache_dir={d / 'cache'}"],
        env=env, capture_output=True, text=True, timeout=3600, cwd=ROOT,
    )
    return proc, json.loads(out.read_text()) if out.exists() else {}, d / "tmp"


@pytest.mark.slow
def test_benchmark_tiny_writes_finite_figures(bench):
    proc, results, tmp = bench
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [p.name for p in tmp.iterdir() if p.name.startswith("tinybert_")] == []
    for line in ("step ratio", "input ratio", "serve ratio"):
        if line == "step ratio" and "PyTorch peer skipped:" in proc.stdout:  # step's, not task's
            continue
        assert line in proc.stdout, proc.stdout[-3000:]

    peer_ran = (importlib.util.find_spec("torch") is not None
                and importlib.util.find_spec("transformers") is not None)
    skipped = _get(results, "step.peer.skipped")
    assert (skipped is None) == peer_ran, skipped
    peer_keys = ["step.fastest_ratio", "step.fp32_ratio"]
    keys = ["step.flops_fraction", "step.seq_per_s", "step.matmul_flops.fp32_peak",
            "step.matmul_flops.bf16_peak", "step.flops_per_step.total",
            "step.cached_logits.speedup", "step.truncated_teacher.speedup", "input.ratio", "input.examples_per_s",
            "serve.latency_ratio", "memory.tensorflow.fp32"]
    if peer_ran:
        keys += peer_keys + ["memory.torch.fp32", "step.peer.variants.fp32.seq_per_s"]
    else:
        for key in peer_keys:
            assert _get(results, key) is None
    for key in keys:
        _finite(_get(results, key), key)
    for name, variant in _get(results, "step.variants").items():
        for field in ("seq_per_s", "step_ms", "teacher_rel_err", "flops_fraction"):
            _finite(variant[field], f"step.variants.{name}.{field}")
    assert _get(results, "machine_start.uptime")
    assert set(results["bench_seconds"]) == {"step", "input", "serve", "memory", "task",
                                             "checkpoint"}
    for name, seconds in results["bench_seconds"].items():
        _finite(seconds, name)
        assert seconds > 0 and f"[{name}] {seconds:.0f} s" in proc.stdout
    depths = [run["teacher_depth"] for run in _get(results, "step.truncated_teacher.runs").values()]
    assert depths[0] == _get(results, "config.teacher.num_layers") > depths[1] > 0


@pytest.mark.slow
def test_task_bench_tiny(bench):
    """--bench=task on tiny models: every step of every side has a finite rate over all rows;
    length buckets leave less padding than padding every batch to seq_len."""
    proc, results, _ = bench
    assert proc.returncode == 0, proc.stderr[-4000:]
    task = results["task"]
    assert "task ratio seq 32 intermediate" in proc.stdout
    sides = _get(task, "32.ours")
    assert {k.split(":")[0] for k in sides} == {"bucketed", "padded"}
    for side in sides.values():
        for step in ("intermediate", "prediction", "finetune"):
            _finite(side[step]["examples_per_s"], step)
            # Training batches are full: each bucket drops its remainder (< 8 rows each).
            assert 64 - 8 * 4 < side[step]["examples"] <= task["rows"] == 64
    bucketed = next(v for k, v in sides.items() if k.startswith("bucketed"))
    padded = next(v for k, v in sides.items() if k.startswith("padded"))
    assert bucketed["finetune"]["padding_fraction"] < padded["finetune"]["padding_fraction"]
    for step in ("intermediate", "prediction", "finetune"):
        _finite(_get(task, f"summary.32.{step}.vs_unbucketed"), step)
    assert _get(task, "auto.variant").split("_")[0] in ("fp32", "bf16", "mixed", "int8t")
    assert _get(task, "auto.finetune_variant").split("_")[0] in ("fp32", "bf16")


@pytest.mark.slow
def test_checkpoint_bench_tiny(bench):
    """--bench=checkpoint on tiny models: a Checkpointer checkpoint is the trained state (student,
    projections, optimizer) and little more; the whole one (teacher included) is larger."""
    proc, results, _ = bench
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "checkpoint ratio: Checkpointer / trained state" in proc.stdout, proc.stdout[-3000:]
    result = results["checkpoint"]
    for key in ("teacher_mb", "trained_state_mb", "whole.mb", "whole.save_s", "checkpointer.mb",
                "checkpointer.save_s", "fingerprint_s", "ratio"):
        _finite(_get(result, key), key)
    assert 1.0 <= result["ratio"] <= result["target_ratio"]
    assert result["whole"]["mb"] > result["checkpointer"]["mb"] + 0.9 * result["teacher_mb"]
