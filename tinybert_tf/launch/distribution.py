"""Data parallelism on the Keras JAX backend: `keras.distribution.DataParallel` over every device.

The JAX counterpart of a `tf.distribute` strategy (`--config.strategy=data_parallel`), in two calls
made in this order, before any JAX computation and before any model is built:

1. `initialize(coordinator_address, num_processes, process_id)` joins the processes of a multi-host
   (or multi-process) run with `jax.distributed` (and nothing for one process);
2. `data_parallel()` sets a `DataParallel` distribution over all global devices
   (`keras.distribution.list_devices()`) and returns a `DataParallelContext`: what the launcher
   uses where it uses a strategy (`num_replicas_in_sync`, a no-op `scope()`).

How Keras feeds the devices (read from keras/src/distribution/distribution_lib.py and the JAX
trainer, and checked by tests/test_launch_distribution.py):

* variables created while the distribution is set are replicated on every device (so build the
  models after `data_parallel()`); the JAX trainer jits the step with the state's shardings;
* `fit`'s tf.data adapter calls `DataParallel.distribute_dataset`: with several processes it
  `rebatch`es each global batch to `batch_size // num_processes` rows and `shard`s those pieces by
  process, so process p reads rows `[p*b/P, (p+1)*b/P)` of every global batch; one process keeps
  the dataset as it is. Every process must therefore build the *same* global pipeline (seeded
  shuffles, deterministic order, batch = the config's global `batch_size`, drop_remainder) and
  pass it to `fit` unsharded: no `shard_for_process` is needed;
* each process's piece becomes one global array sharded over the batch axis
  (`jax.make_array_from_process_local_data`), so inside the jitted step the batch is the global
  batch: loss means are over the global batch, gradients are the global-batch gradients, and
  global-norm clipping sees the global gradient. `jax_step.num_replicas()` stays 1.

Keras-only: TensorFlow is imported lazily (by Keras' tf.data adapter), never here.
"""

from __future__ import annotations

import contextlib
import os

import keras

from tinybert_tf.errors import LaunchError

AUTO = "auto"  # coordinator_address that asks jax.distributed to find the cluster itself
_TPU_HOST_VARIABLES = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")
_state = {"mode": None}  # what initialize() did in this process (jax allows it once)


class DistributionError(LaunchError):
    """A data-parallel set-up mistake; the message is one line naming the flag to fix."""


def cloud_tpu_hosts(environ=None):
    """How many TPU VM hosts the environment names (0 when it names none).

    Conservative: only the variables Cloud TPU sets for multi-host slices (`TPU_PROCESS_ADDRESSES`
    or `TPU_WORKER_HOSTNAMES`, comma-separated hosts, times `MEGASCALE_NUM_SLICES`) count, and
    only with a TPU library or device present; no metadata-server query. On a TPU VM whose
    environment lacks them, pass `coordinator_address="auto"` instead.
    """
    environ = os.environ if environ is None else environ
    names = next((environ[v] for v in _TPU_HOST_VARIABLES if environ.get(v, "").strip()), "")
    hosts = [h for h in names.split(",") if h.strip()]
    if not hosts or not _tpu_present(environ):
        return 0
    try:
        slices = max(1, int(environ.get("MEGASCALE_NUM_SLICES", "1") or 1))
    except ValueError:
        slices = 1
    return len(hosts) * slices


def _tpu_present(environ):
    import glob
    import importlib.util

    return bool(environ.get("TPU_LIBRARY_PATH") or importlib.util.find_spec("libtpu")
                or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def on_tpu_vm(environ=None):
    """Is this a Cloud TPU VM (strategy auto on TensorFlow: the local TPU)? Both a TPU library
    (libtpu, TPU_LIBRARY_PATH) and TPU device files (/dev/accel*, /dev/vfio/N): device files
    alone are other accelerators' too."""
    import glob
    import importlib.util

    environ = os.environ if environ is None else environ
    library = environ.get("TPU_LIBRARY_PATH") or importlib.util.find_spec("libtpu")
    return bool(library and (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")))


def _count(environ, name):
    try:
        return int(environ.get(name, "") or 0)
    except ValueError:
        return 0


# A cluster environment jax.distributed.initialize() reads by itself: the variables it checks.
_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def cluster_processes(environ=None):
    """How many processes the environment's cluster names (0 when none): a Cloud TPU slice of
    several hosts (`cloud_tpu_hosts`), a SLURM job step (`SLURM_NTASKS`), or an Open MPI launch
    (`OMPI_COMM_WORLD_SIZE`) - the environments jax.distributed.initialize() joins with no
    arguments. strategy=auto on JAX then runs data_parallel over every process."""
    environ = os.environ if environ is None else environ
    if all(v in environ for v in _SLURM):
        return _count(environ, "SLURM_NTASKS")
    if "OMPI_MCA_orte_hnp_uri" in environ:
        return _count(environ, "OMPI_COMM_WORLD_SIZE")
    return cloud_tpu_hosts(environ)


def _check(coordinator_address, num_processes, process_id):
    """The one-line errors of `initialize`'s argument combinations."""
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise DistributionError(
            f"num_processes must be a positive integer, got {num_processes!r}; "
            "use --config.num_processes=1 for one process.")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not (
            0 <= process_id < num_processes):
        raise DistributionError(
            f"process_id {process_id!r} is out of range for num_processes={num_processes}; "
            f"use --config.process_id=0..{num_processes - 1} (0 on the coordinator host).")
    if num_processes > 1:
        if not coordinator_address or coordinator_address == AUTO:
            raise DistributionError(
                f"num_processes={num_processes} needs --config.coordinator_address=HOST:PORT "
                "(process 0's address, the same on every process).")
        host, _, port = coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise DistributionError(
                f"coordinator_address {coordinator_address!r} is not HOST:PORT; "
                "use e.g. --config.coordinator_address=10.0.0.1:1234.")
    elif coordinator_address and coordinator_address != AUTO:
        raise DistributionError(
            f"coordinator_address {coordinator_address!r} is set but num_processes=1; pass "
            "--config.num_processes=<processes in the run> or leave coordinator_address empty.")


def initialize(coordinator_address="", num_processes=1, process_id=0, environ=None):
    """Join a multi-process JAX run; returns what it did: "single", "explicit" or "cluster".

    * `num_processes > 1`: `jax.distributed.initialize(coordinator_address, num_processes,
      process_id)` with the arguments given (every process passes the same coordinator
      `HOST:PORT` and count, and its own `process_id`);
    * one process and `coordinator_address="auto"`, or a cluster environment of several
      processes (`cluster_processes`: Cloud TPU hosts, SLURM, Open MPI):
      `jax.distributed.initialize()` with no arguments, which reads the cluster itself;
    * otherwise ("single"): nothing.

    Multi-process runs use gloo for cross-process collectives on CPU devices (it only affects the
    CPU client; GPUs and TPUs keep their own). Keras then agrees on one random seed across the
    processes unless `keras.utils.set_random_seed` was called, so that replicated variables start
    equal. Call it once, first: JAX refuses to join after a computation ran. A second call with
    the same outcome is a no-op.
    """
    _check(coordinator_address, num_processes, process_id)
    if num_processes > 1:
        mode = "explicit"
    elif coordinator_address == AUTO or cluster_processes(environ) > 1:
        mode = "cluster"
    else:
        return "single"
    if _state["mode"] is not None:
        if _state["mode"] != mode:
            raise DistributionError(f"jax.distributed is already initialised ({_state['mode']}); "
                                    "initialise once per process.")
        return mode
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if mode == "explicit":
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    else:
        jax.distributed.initialize()
    _state["mode"] = mode
    _agree_on_seed()
    return mode


def _agree_on_seed():
    """What `keras.distribution.initialize` does after joining: one seed on every process."""
    try:  # Keras-internal; without it the launcher's keras.utils.set_random_seed does the same
        from keras.src.backend.jax.distribution_lib import initialize_rng
    except ImportError:
        return
    initialize_rng()


def is_chief():
    """Does this process write the run's files (config.json, metrics, TensorBoard, presets)?
    True unless `initialize` joined a multi-process run in which this is not process 0; orbax
    checkpoints are the exception: every process saves and restores them together."""
    if _state["mode"] is None:
        return True
    import jax

    return jax.process_index() == 0


def sync(name):
    """Wait until every process of a multi-process run reaches this point (`name`: the same
    string on every process); nothing for one process."""
    if _state["mode"] is None:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


class DataParallelContext:
    """What the launcher needs of a strategy, for a `keras.distribution.DataParallel` run.

    num_replicas_in_sync: devices across all processes (the global batch is split over them);
    num_processes / process_id / is_chief: this process in the run (write files on the chief only);
    scope(): a no-op context (the distribution is global, set by `data_parallel`);
    distribution: the `keras.distribution.DataParallel`.
    """

    name = "data_parallel"  # the launch line's strategy name

    def __init__(self, distribution):
        import jax

        self.distribution = distribution
        self.num_replicas_in_sync = int(distribution.device_mesh.devices.size)
        self.num_processes = int(distribution.num_processes)
        self.process_id = int(jax.process_index())

    @property
    def is_chief(self):
        return self.process_id == 0

    def scope(self):
        return contextlib.nullcontext()

    def per_process_batch_size(self, batch_size):
        """Rows of each global batch this process reads (Keras' `rebatch` size)."""
        check_batch_size(self, batch_size)
        return batch_size // self.num_processes

    def __repr__(self):
        return (f"DataParallelContext({self.num_replicas_in_sync} devices, process "
                f"{self.process_id} of {self.num_processes})")


def check_batch_size(context, batch_size):
    """The global batch must split evenly over the replicas (a tf.distribute strategy's or this
    module's devices, hence over the processes too): the launcher's one batch check."""
    replicas = context.num_replicas_in_sync
    if batch_size % replicas:
        raise LaunchError(
            f"batch_size {batch_size} is not divisible by the {replicas} replicas; use a "
            f"multiple of {replicas}, e.g. --config.batch_size="
            f"{batch_size // replicas * replicas or replicas}.")


def data_parallel(devices=None):
    """Set a `keras.distribution.DataParallel` over `devices` (default: all global devices).

    Returns a `DataParallelContext`. Needs the JAX backend; call it after `initialize` and before
    building models. Keras shards `fit`'s tf.data input by process itself (auto_shard_dataset).
    """
    if keras.backend.backend() != "jax":
        raise DistributionError(
            f"strategy=data_parallel runs on the JAX backend, not {keras.backend.backend()!r}; "
            "set KERAS_BACKEND=jax (or use --config.strategy=mirrored on TensorFlow).")
    devices = list(devices) if devices else keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return DataParallelContext(distribution)
