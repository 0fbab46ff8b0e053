"""tinybert_tf.launch.distribution, the library level: `initialize` + `data_parallel()` around a
`Distiller.fit` written by hand, with no launcher, config or workdir (the launcher level, the
same parity through `python -m tinybert_tf.main --config.strategy=data_parallel`, is
tests/test_launch_data_parallel.py).

The Keras backend is fixed per process (this suite's is TensorFlow), so the distillation runs are
this file run as a script under `KERAS_BACKEND=jax` in fresh subprocesses, each bounded by a
timeout and killed on it. The same tiny TinyBERT general distillation (4-layer teacher, 2-layer
student, dropout on, seeded shuffled tf.data of global batches of 8 with uneven padding) runs

* on one device (the reference; it writes the initial weights the others load),
* under `DataParallel` over 2 CPU devices of one process (`--xla_force_host_platform_device_count`),
* under `DataParallel` over 2 processes joined by `initialize` on 127.0.0.1, one CPU device each,

and the student + projection weights agree to 1e-5 after AdamW `fit` steps with
global_clipnorm=1.0 (the gradient norm is ~24, so the clip acts, and moves these weights by ~3e-2)
and after one plain SGD step (linear in the gradient: a loss averaged per device instead of over
the global batch, or divided by the replicas, would show).
Each process checks that Keras gave it exactly its rows of every global batch.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5
BATCH, STEPS, SEQ = 8, 3, 12
TIMEOUT = 240  # per group of workers (2 shared cores: ~100 s for the two processes)
LR = 0.1


# ---- the worker (runs under KERAS_BACKEND=jax) ---------------------------------------------------


def _dataset():
    import tensorflow as tf

    from tests import tiny

    rows = [tiny.inputs(batch=BATCH, seq=SEQ, seed=i) for i in range(STEPS)]
    x = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    x["row"] = np.arange(BATCH * STEPS, dtype="int32")  # which example (dropped before the model)
    data = tf.data.Dataset.from_tensor_slices(x).shuffle(BATCH * STEPS, seed=7)
    return data.batch(BATCH, drop_remainder=True)


def _model_data(data):
    return data.map(lambda x: {k: v for k, v in x.items() if k != "row"})


def _variables(distiller):
    return (distiller.teacher.weights + distiller.student.weights
            + [w for p in distiller.projections for w in p.weights])


def _distiller(init_path, optimizer):
    import keras

    from tests import tiny
    from tinybert_tf import Distiller

    teacher = tiny.backbone(num_layers=4, seed=0)
    student = tiny.backbone(num_layers=2, hidden_dim=16, intermediate_dim=32, seed=1)
    distiller = Distiller(teacher, student, "tinybert_general")
    variables = _variables(distiller)
    if os.path.exists(init_path):
        init = np.load(init_path)
        for i, v in enumerate(variables):
            v.assign(init[f"w{i}"])
    else:
        np.savez(init_path, **{f"w{i}": keras.ops.convert_to_numpy(v)
                               for i, v in enumerate(variables)})
    distiller.compile(optimizer=optimizer)
    return distiller


def _trained(distiller, prefix):
    import keras

    variables = distiller.student.weights + [w for p in distiller.projections for w in p.weights]
    return {f"{prefix}_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(variables)}


def worker(spec):
    import keras

    from tinybert_tf.launch import distribution

    started = time.time()
    mode = distribution.initialize(spec["coordinator"], spec["num_processes"], spec["process_id"])
    context = distribution.data_parallel() if spec["parallel"] else None
    out = {"mode": np.array(mode), "replicas": context.num_replicas_in_sync if context else 1}
    if context:  # the rows Keras feeds this process: exactly its slice of every global batch
        # (fresh pipelines: a seeded shuffle's order is the same for the same iteration count)
        local = [b["row"].numpy() for b in context.distribution.distribute_dataset(_dataset())]
        whole = [b["row"].numpy() for b in _dataset()]
        piece = context.per_process_batch_size(BATCH)
        start = context.process_id * piece
        out["exact_shard"] = all(np.array_equal(got, want[start:start + piece])
                                 for got, want in zip(local, whole, strict=True))
        out["process_id"], out["num_processes"] = context.process_id, context.num_processes
    runs = [("adamw", STEPS, keras.optimizers.AdamW(
                learning_rate=1e-2, weight_decay=0.01, global_clipnorm=1.0)),
            ("sgd", 1, keras.optimizers.SGD(LR))]
    for name, steps, optimizer in runs:
        tick = time.time()
        distiller = _distiller(spec["init"], optimizer)
        history = distiller.fit(_model_data(_dataset()), epochs=1, steps_per_epoch=steps,
                                verbose=0)
        out[f"{name}_loss"] = np.float64(history.history["loss"][-1])
        out.update(_trained(distiller, name))
        out[f"{name}_seconds"] = time.time() - tick
    # The model is replicated on every device of the mesh (it was built under the distribution).
    out["variable_devices"] = len(distiller.student.weights[0].value.sharding.device_set)
    # The SGD step is -LR * g: its norm / LR is the first step's gradient norm (AdamW clipped it).
    init = np.load(spec["init"])
    offset = len(distiller.teacher.weights)
    count = len(_trained(distiller, ""))
    norm = sum(float(np.sum((out[f"sgd_{i}"] - init[f"w{offset + i}"]) ** 2))
               for i in range(count))
    out["grad_norm"] = np.sqrt(norm) / LR
    out["seconds"] = time.time() - started
    np.savez(spec["out"], **out)


# ---- the test side -------------------------------------------------------------------------------


def _env(devices=1):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _spawn(tmp_path, name, devices=1, parallel=False, coordinator="",
           num_processes=1, process_id=0):
    spec = dict(out=str(tmp_path / f"{name}.npz"), init=str(tmp_path.parent / "init.npz"),
                parallel=parallel, coordinator=coordinator,
                num_processes=num_processes, process_id=process_id)
    log = open(tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), json.dumps(spec)],
                            env=_env(devices), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, spec["out"], tmp_path / f"{name}.log"


def _wait(runs, timeout=TIMEOUT):
    """Wait for every (proc, out, log); kill them all on the first failure or the timeout."""
    deadline = time.time() + timeout
    try:
        for proc, _, log in runs:
            try:
                rc = proc.wait(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker timed out after {timeout}s:\n{log.read_text()[-3000:]}")
            assert rc == 0, f"worker failed ({rc}):\n{log.read_text()[-4000:]}"
    finally:
        for proc, _, _ in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [dict(np.load(out)) for _, out, _ in runs]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The one-device run; its initial weights (init.npz next to its folder) are everyone's."""
    path = tmp_path_factory.mktemp("one_device")
    (result,) = _wait([_spawn(path, "reference")])
    assert int(result["replicas"]) == 1 and str(result["mode"]) == "single"
    _clipping_acted(result)
    return result


def _same_weights(got, want):
    keys = [k for k in want if k.startswith(("adamw_", "sgd_")) and k[-1].isdigit()]
    assert len(keys) > 10
    for key in keys:
        np.testing.assert_allclose(got[key], want[key], rtol=TOL, atol=TOL, err_msg=key)
    for key in ("adamw_loss", "sgd_loss", "grad_norm"):
        np.testing.assert_allclose(got[key], want[key], rtol=TOL, atol=TOL, err_msg=key)


def _clipping_acted(result):
    # The first AdamW step's gradient had a norm above global_clipnorm=1.0 (about 24 here), so the
    # clip scaled it (on these weights clipping moves the AdamW result by ~3e-2, far above TOL).
    assert float(result["grad_norm"]) > 2.0


@pytest.mark.slow
def test_distiller_fit_two_devices_matches_one_device(reference, tmp_path):
    (result,) = _wait([_spawn(tmp_path, "two_devices", devices=2, parallel=True)])
    assert int(result["replicas"]) == 2 and int(result["num_processes"]) == 1
    assert int(result["variable_devices"]) == 2
    assert bool(result["exact_shard"])  # one process: Keras leaves the dataset whole
    _clipping_acted(result)
    _same_weights(result, reference)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distiller_fit_two_processes_matches_one_device(reference, tmp_path):
    coordinator = f"127.0.0.1:{_free_port()}"
    runs = [_spawn(tmp_path, f"process_{i}", parallel=True, coordinator=coordinator,
                   num_processes=2, process_id=i) for i in range(2)]
    results = _wait(runs)
    for i, result in enumerate(results):
        assert str(result["mode"]) == "explicit"
        assert int(result["replicas"]) == 2 and int(result["process_id"]) == i
        assert int(result["variable_devices"]) == 2
        assert bool(result["exact_shard"]), f"process {i} did not get its rows of each batch"
        _clipping_acted(result)
        _same_weights(result, reference)


# ---- initialize's one-line errors (no JAX set-up happens: they fail first) --------------------


@pytest.mark.parametrize("args, fix", [
    (("", 2, 0), "coordinator_address=HOST:PORT"),
    (("auto", 2, 1), "coordinator_address=HOST:PORT"),
    (("10.0.0.1", 2, 0), "is not HOST:PORT"),
    (("10.0.0.1:1234", 2, 2), "process_id=0..1"),
    (("10.0.0.1:1234", 2, -1), "out of range"),
    (("", 1, 1), "process_id=0..0"),
    (("10.0.0.1:1234", 1, 0), "num_processes=<processes"),
    (("", 0, 0), "positive integer"),
    (("", "2", 0), "positive integer"),
])
def test_initialize_errors_are_one_line(args, fix):
    from tinybert_tf.errors import UserError
    from tinybert_tf.launch import distribution

    with pytest.raises(UserError) as err:
        distribution.initialize(*args)
    assert fix in str(err.value) and "\n" not in str(err.value)


def test_one_process_does_nothing():
    from tinybert_tf.launch import distribution

    assert distribution.initialize("", 1, 0, environ={}) == "single"
    assert distribution.initialize(environ={}) == "single"


def test_cloud_tpu_detection_is_conservative(monkeypatch):
    from tinybert_tf.launch import distribution

    monkeypatch.setattr(distribution, "_tpu_present", lambda environ: True)
    assert distribution.cloud_tpu_hosts({}) == 0
    assert distribution.cloud_tpu_hosts({"TPU_WORKER_HOSTNAMES": "host-0"}) == 1
    hosts = {"TPU_WORKER_HOSTNAMES": "host-0,host-1", "MEGASCALE_NUM_SLICES": "2"}
    assert distribution.cloud_tpu_hosts(hosts) == 4
    monkeypatch.setattr(distribution, "_tpu_present", lambda environ: False)
    assert distribution.cloud_tpu_hosts(hosts) == 0  # the variables alone are not a TPU VM


def test_module_imports_no_tensorflow():
    """Keras-only (the package's __init__ may still load TF through keras-hub)."""
    import ast

    path = os.path.join(ROOT, "tinybert_tf", "launch", "distribution.py")
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert "tensorflow" not in names and names <= {"__future__", "contextlib", "os", "keras",
                                                  "tinybert_tf", "jax", "glob", "importlib"}


def test_data_parallel_needs_jax():
    import keras

    from tinybert_tf.errors import UserError
    from tinybert_tf.launch import distribution

    if keras.backend.backend() == "jax":
        pytest.skip("this suite process runs JAX")
    with pytest.raises(UserError, match="KERAS_BACKEND=jax"):
        distribution.data_parallel()


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    worker(json.loads(sys.argv[1]))
