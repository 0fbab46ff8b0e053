"""Shared test set-up: quiet TF, one TF thread per pool, two logical CPU devices (for
MirroredStrategy tests), tiny models."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# One TensorFlow thread per op and one per graph, in the workers and every process they start
# (inherited): `make test`'s two workers already fill two cores, and on the suite's tiny models
# TF's default pools (a thread per core each) spend more on handing ops between threads than
# they gain (bench/RESULTS.md: the suite's CPU time).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

# One JAX compilation cache for the run (the launcher turns JAX's persistent cache on:
# strategy.jax_compilation_cache), made by the controlling process before it starts the workers,
# shared by them and every process they start, removed at exit: runs of the same tiny shapes load
# their programs; the user's ~/.cache is never written.
if "PYTEST_XDIST_WORKER" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="tinybert_tf_jax_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

from tinybert_tf.launch import hardware, heap  # noqa: E402  (imports no TensorFlow)

hardware.allow_fusible_clusters()  # as the launcher: jit_compile="fusible" can cluster

# The garbage collector as in the launcher's process: the imports' objects frozen out of its
# passes (`heap.settled_imports`).
heap.import_settled(*heap.RUN_MODULES)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # already initialised by an earlier import
    pass


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _float32_policy_after_each_test():
    """A test that runs a mode under a mixed precision leaves the global policy float32."""
    yield
    keras.mixed_precision.set_global_policy("float32")


# The longest files, longest first (`--durations` of a two-worker run on the 2-core machine: the
# task proof's smoke run ~10 min, the notebook ~7, every mode under mixed precision ~5.5, ...).
LONGEST = ("test_examples_task_proof.py", "test_example_notebook.py", "test_launch_precision.py",
           "test_tools_benchmark.py", "test_examples_demo.py", "test_launch_ensemble.py",
           "test_launch_data_parallel.py", "test_docs_python.py",
           "test_tools_accelerator_check.py", "test_launch_jax.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first (`LONGEST`), then the other files holding end-to-end (`slow`)
    tests, then the rest, each file's tests in their order: `make test`'s two workers
    (`--dist loadfile --no-loadscope-reorder`) take files in this order, so the long files
    start at once and the short ones fill in behind them."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item):
        name = item.path.name
        return (LONGEST.index(name) if name in LONGEST else len(LONGEST),
                item.path not in slow_files)

    items.sort(key=rank)
