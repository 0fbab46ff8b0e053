"""Runs one benchmark job in a fresh process: `tools/benchmark.py --worker=NAME
--worker_args=@FILE`, whose result comes back as one `RESULT_PREFIX` line on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from .options import FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tools", "benchmark.py")  # the one entry point, also of the workers
RESULT_PREFIX = "BENCHMARK_RESULT: "


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
    cmd = [sys.executable, SCRIPT, f"--worker={name}", f"--worker_args=@{f.name}"]
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
