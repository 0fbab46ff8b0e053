"""The launcher level of JAX data parallelism: `python -m tinybert_tf.main
--config.strategy=data_parallel` (main -> launch.modes -> launch.strategy -> launch.distribution),
with its workdir, checkpoints and resume (the library level, `launch/distribution.py` around a
hand-written `Distiller.fit`, is tests/test_launch_distribution.py).

Tiny general distillation (dropout as the tiny config has it) on one process with two host CPU
devices (XLA_FLAGS=--xla_force_host_platform_device_count=2), and on two processes joined by
jax.distributed on 127.0.0.1 (one CPU device each), ends with the student weights of the same
run on one device (strategy cpu), to 1e-5: the jitted step sees the global batch either way.
The two-process run writes the workdir once (config.json, metrics.jsonl, TensorBoard, presets:
process 0 only; orbax checkpoints: both processes together) and resumes after both are killed.

Every run is a fresh process (KERAS_BACKEND=jax) under `timeout`; a failing test kills what it
started.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf.launch import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 240  # seconds for one launcher process
CONFIG = "general_distill:tiny"


def _env(devices=1):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="jax")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _cmd(assets, workdir, *flags):
    return [sys.executable, "-m", "tinybert_tf.main",
            f"--config={CONFIG}", f"--workdir={workdir}", "--config.strategy=auto",
            f"--config.teacher={assets['teacher']}",
            f"--config.data.train={assets['corpus']}", *flags]


def _run(args, devices=1):
    """One launcher process, killed at LIMIT seconds (subprocess.run kills it on timeout)."""
    return subprocess.run(args, cwd=ROOT, env=_env(devices), capture_output=True, text=True,
                          timeout=LIMIT)


def _popen(args, devices=1):
    return subprocess.Popen(args, cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _weights(preset):
    return [w.numpy() for w in keras_hub.models.Backbone.from_preset(str(preset)).weights]


def _same_weights(got, want):
    got, want = _weights(got), _weights(want)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("dp_assets")
    return {"teacher": tiny.write_teacher(d / "teacher"),
            "corpus": tiny.write_corpus(d / "corpus.txt")}


# 60 steps: long enough for the resume test to kill its pair after two checkpoints.
FLAGS = ("--config.steps=60", "--config.checkpoint_every=10", "--config.log_every=10")
STEPS = list(range(10, 61, 10))  # the metrics records; the newest 3 checkpoints are kept


@pytest.fixture(scope="module")
def reference(assets, tmp_path_factory):
    """The one-device run (strategy cpu) every data-parallel run is compared with."""
    workdir = tmp_path_factory.mktemp("dp_reference") / "run"
    proc = _run(_cmd(assets, workdir, *FLAGS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("Devices: CPU; Keras backend jax, strategy one_device, 1 replica; batch 4 global, "
            "4 per replica.") in proc.stdout
    return workdir


@pytest.mark.slow
def test_launcher_two_devices_match_strategy_cpu(assets, reference, tmp_path):
    """strategy auto (the default) over 2 host devices: data_parallel, the one-device weights."""
    proc = _run(_cmd(assets, tmp_path, *FLAGS), devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("Devices: 2 × CPU; Keras backend jax, strategy data_parallel, 2 replicas; batch 4 "
            "global, 2 per replica.") in proc.stdout
    _same_weights(tmp_path / "student", reference / "student")
    assert tiny.orbax_steps(tmp_path / "checkpoints") == STEPS[-3:]
    assert [r["step"] for r in train.read_metrics(str(tmp_path))] == STEPS


def test_launcher_process_fields_need_jax_data_parallel(assets, tmp_path):
    """num_processes / coordinator_address with a one-device strategy: one line naming the fix,
    before the workdir is claimed."""
    proc = _run(_cmd(assets, tmp_path / "run", "--config.strategy=cpu", "--config.num_processes=2",
                     "--config.coordinator_address=127.0.0.1:1234"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--config.strategy=data_parallel" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def _pair(assets, workdir, port, *flags):
    """The two processes of a 2-process run (one CPU device each) on 127.0.0.1:`port`."""
    return [_popen(_cmd(assets, workdir, *flags, "--config.strategy=data_parallel",
                        "--config.num_processes=2", f"--config.process_id={i}",
                        f"--config.coordinator_address=127.0.0.1:{port}")) for i in range(2)]


def _kill(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.communicate()


def _finish(procs, limit=LIMIT):
    """(stdout, stderr) of each process once all ended; all are killed when one fails or the
    time runs out, and the test fails with the failing one's stderr."""
    deadline = time.time() + limit
    try:
        while any(p.poll() is None for p in procs) and time.time() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.1)
        if any(p.poll() != 0 for p in procs):
            _kill(procs)
            outs = [p.communicate() for p in procs]
            pytest.fail("\n".join(f"process {i} exit {p.returncode}: {err[-2500:]}"
                                   for i, (p, (_, err)) in enumerate(zip(procs, outs))))
        return [p.communicate() for p in procs]
    finally:
        _kill(procs)


def _written_once(workdir, steps):
    """Process 0's files, each written once: config.json, metrics.jsonl (one corpus-scan line,
    one record per chunk end), one TensorBoard events file, the student preset."""
    with open(workdir / "config.json") as f:
        assert json.load(f)["num_processes"] == 2
    with open(workdir / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    assert "corpus_scan" in lines[0] and all("corpus_scan" not in r for r in lines[1:])
    assert [r["step"] for r in lines[1:]] == steps
    assert len(os.listdir(workdir / "tensorboard")) == 1
    assert os.path.isfile(workdir / "student" / "config.json")
    assert not [n for n in os.listdir(workdir / "checkpoints") if "tmp" in n]


@pytest.mark.slow
def test_launcher_two_processes_match_strategy_cpu_and_write_once(assets, reference, tmp_path):
    procs = _pair(assets, tmp_path, _free_port(), *FLAGS)
    (out0, _), (out1, _) = _finish(procs)
    assert ("Devices: 2 × CPU in 2 processes; Keras backend jax, strategy data_parallel, 2 "
            "replicas; batch 4 global, 2 per replica, 2 per process.") in out0
    _same_weights(tmp_path / "student", reference / "student")
    assert tiny.orbax_steps(tmp_path / "checkpoints") == STEPS[-3:]
    _written_once(tmp_path, STEPS)
    assert "Saved" in out0 and "Saved" not in out1  # the preset: process 0 only


@pytest.mark.slow
def test_launcher_two_processes_killed_and_restarted_resume(assets, reference, tmp_path):
    """Both processes SIGKILLed after two checkpoints; both restarted with the same commands:
    they resume from the newest checkpoint and end with the one-device run's weights."""
    workdir = tmp_path / "pair"
    procs = _pair(assets, workdir, _free_port(), *FLAGS)
    try:
        deadline = time.time() + LIMIT
        while len(tiny.orbax_steps(workdir / "checkpoints")) < 2 and time.time() < deadline and all(
                p.poll() is None for p in procs):
            time.sleep(0.02)
    finally:
        _kill(procs)
    assert all(p.returncode == -signal.SIGKILL for p in procs), [p.returncode for p in procs]
    assert not (workdir / "student").exists(), "run finished before the kill; raise steps"
    killed_at = tiny.orbax_steps(workdir / "checkpoints")[-1]
    (out0, _), (out1, _) = _finish(_pair(assets, workdir, _free_port(), *FLAGS))
    assert f"Resuming from {workdir / 'checkpoints' / str(killed_at)}" in out0, out0[-2000:]
    assert "Resuming from" in out1
    _same_weights(workdir / "student", reference / "student")
    assert [r["step"] for r in train.read_metrics(str(workdir))] == STEPS
