"""Distribution and precision set-up from a config (CPU, GPUs, multi-worker, Cloud TPU; JAX).

`make(config)` is the launcher's one entry: a backend-neutral distribution context with `.scope()`
(models, optimizers and projections are built under it) and `num_replicas_in_sync`, and the
`devices.Choice` behind it (`strategy=auto`: by the devices present). On TensorFlow it is the `tf.distribute.Strategy` itself (`tf_strategy`); on JAX
there is no strategy: `JaxContext` (the default device, a no-op scope), or for `data_parallel`
the context of `tinybert_tf.launch.distribution` (keras.distribution.DataParallel +
jax.distributed), called from `_jax_data_parallel` only. Every JAX run has JAX's persistent
compilation cache on (`jax_compilation_cache`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import keras
import tensorflow as tf
from absl import logging

from tinybert_tf.errors import LaunchError, first_line
from tinybert_tf.launch import devices, distribution

STRATEGIES = ("cpu", "one_device", "mirrored", "multi_worker", "tpu")
JAX_STRATEGIES = ("cpu", "one_device", "data_parallel")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def tf_strategy(name, tpu="", devices=()):
    """A `tf.distribute.Strategy` by name. `tpu` is a TPU name, `grpc://` address, or `local`;
    `devices` (`devices.Device`s, from `devices.choose`) are the ones `one_device` and
    `mirrored` use (default: the first GPU / every local GPU, else every logical CPU).

    One strategy object per (name, TPU, devices) and process: a second `MirroredStrategy` over
    devices an earlier one ran collectives on starts its collective keys afresh, and its
    all-reduces then meet the old ones' ("Shape mismatch in the collective instance 100"): a
    notebook's second run, or a test after another."""
    addresses = tuple(tf.DeviceSpec.from_string(d.address).to_string()
                      for d in devices if d.address)
    if name == "mirrored" and not addresses:
        local = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        addresses = tuple(d.name for d in local)
    key = (name, tpu, addresses)
    if key not in _TF_STRATEGIES:
        _TF_STRATEGIES[key] = _new_tf_strategy(name, tpu, list(addresses))
    return _TF_STRATEGIES[key]


_TF_STRATEGIES = {}


def _new_tf_strategy(name, tpu, addresses):
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        default = gpus[0].name if gpus else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(addresses[0] if addresses else default)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(addresses)
    if name == "multi_worker":
        # keras-team/keras#20585 and #20329: Keras 3 `fit` under MultiWorkerMirroredStrategy can
        # hang or diverge. Refuse loudly rather than ship a silent hang.
        raise LaunchError(
            "strategy=multi_worker: Keras 3 fit under MultiWorkerMirroredStrategy has open bugs "
            "(keras#20585, #20329); use --config.strategy=mirrored per host or "
            "--config.strategy=tpu for multi-host TPU pods."
        )
    if name == "tpu":
        return _tpu_strategy(tpu)
    if name == "data_parallel":
        raise LaunchError("strategy=data_parallel is the JAX backend's (keras.distribution); on "
                          "TensorFlow use --config.strategy=mirrored, or run with "
                          "--config.backend=jax.")
    raise LaunchError(f"Unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}.")


def _tpu_strategy(tpu):
    if not tpu:
        raise LaunchError(
            "strategy=tpu needs --config.tpu=<TPU name, grpc://host:port, or 'local' on a TPU VM>."
        )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as err:
        # OSError: urllib's URLError, when the GCE metadata server that resolves a TPU name
        # cannot be reached (off Cloud).
        first = first_line(getattr(err, "reason", None) or err, type(err).__name__)
        raise LaunchError(
            f"TPU {tpu!r} not reachable ({first}); a TPU name is looked up through the GCE "
            "metadata server: on a TPU VM use --config.tpu=local, elsewhere the TPU name from "
            "`gcloud compute tpus tpu-vm list` or grpc://host:port."
        ) from None


class JaxContext:
    """The JAX backend's single-process context: the default device (`cpu`: the host CPU even
    where an accelerator is present), one replica, a no-op `scope()` (Keras' JAX trainer places
    variables and jits the step itself)."""

    num_replicas_in_sync = 1

    def __init__(self, name):
        self.name = name

    def scope(self):
        return contextlib.nullcontext()


def make(config):
    """(distribution context, `devices.Choice`) of `config` for this process's Keras backend
    (see module doc); `config.backend` must be the backend Keras runs (tinybert_tf.main sees to it).
    `strategy=auto` chooses by the devices present (`devices.choose`)."""
    backend = keras.backend.backend()
    if config.backend != backend:
        raise LaunchError(
            f"backend={config.backend} but Keras runs {backend} in this process (fixed when "
            "Keras is "
            f"imported); start a fresh process with KERAS_BACKEND={config.backend}, e.g. python -m "
            f"tinybert_tf.main --config.backend={config.backend} ...")
    _check_processes(config)
    if backend == "tensorflow":
        return _tf(config)
    if backend != "jax":
        raise LaunchError(f"Keras backend {backend!r} is not supported; use KERAS_BACKEND=jax "
                          "or tensorflow.")
    return _jax(config)


def _tf(config):
    """TensorFlow: the strategy `devices.choose` picks from TF's devices (auto on a TPU VM:
    the local TPU)."""
    tpu_vm = config.strategy == "auto" and distribution.on_tpu_vm()
    choice = devices.choose("tensorflow", config.strategy, devices.tf_devices(tf), tpu=config.tpu,
                            tpu_vm=tpu_vm)
    tpu = config.tpu or ("local" if tpu_vm else "")
    return tf_strategy(choice.strategy, tpu, choice.devices), choice


def _jax(config):
    """JAX: `data_parallel` for a multi-process run (joined before JAX lists any device) or, with
    auto, over 2+ local devices; else one device (`cpu`: the host CPU even beside a GPU)."""
    if config.strategy not in (*JAX_STRATEGIES, "auto"):
        raise LaunchError(f"strategy={config.strategy} is not available on the JAX backend; "
                          "use one "
                          f"of auto, {', '.join(JAX_STRATEGIES)} (or --config.backend=tensorflow "
                          f"for {', '.join(s for s in STRATEGIES if s not in JAX_STRATEGIES)}).")
    import jax

    jax_compilation_cache(jax)
    cluster = config.strategy == "auto" and distribution.cluster_processes() > 1
    if config.strategy == "data_parallel" or cluster or _multi_process(config):
        context = _jax_data_parallel(config, cluster)
        found = devices.jax_devices(jax)
        return context, devices.choose("jax", "data_parallel", found,
                                       processes=jax.process_count())
    choice = devices.choose("jax", config.strategy, devices.jax_devices(jax))
    if choice.strategy == "data_parallel":
        return _jax_data_parallel(config, False), choice
    if choice.strategy == "cpu":
        jax.config.update("jax_default_device", jax.devices("cpu")[0])
    return JaxContext(choice.strategy), choice


MIN_COMPILE_S_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
CACHE_MAX_BYTES = 4 << 30


def jax_compilation_cache(jax, environ=None):
    """Turn on JAX's persistent compilation cache for this process; returns its directory, or
    None where JAX's own switch turned it off (`JAX_ENABLE_COMPILATION_CACHE=false`).

    What the user gave JAX (its `JAX_*` variables or `jax.config`) is kept; otherwise:
    - the directory is `default_jax_cache_dir()`;
    - every compile is cached, not only those over JAX's 1 s default: a Keras step compiles as
      many small programs;
    - the cache is bounded (`CACHE_MAX_BYTES`, least recently used out), which also makes JAX
      lock it, so two runs sharing it never read an entry half written (with `filelock`, which
      JAX needs for that, installed).
    A rerun, a resumed run or a data-parallel process with the same shapes then loads its
    programs instead of compiling them (bench/RESULTS.md). Called before the run compiles. A
    default directory that cannot be made (a read-only home) leaves the cache off."""
    environ = os.environ if environ is None else environ
    if not jax.config.jax_enable_compilation_cache:
        return None
    path = jax.config.jax_compilation_cache_dir
    if not path:
        path = default_jax_cache_dir(environ)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            return None
        jax.config.update("jax_compilation_cache_dir", path)
    if (MIN_COMPILE_S_ENV not in environ
            and jax.config.jax_persistent_cache_min_compile_time_secs == 1):
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    if jax.config.jax_compilation_cache_max_size == -1 and importlib.util.find_spec("filelock"):
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return path


def default_jax_cache_dir(environ=None):
    """`$XDG_CACHE_HOME/tinybert_tf/jax` (default `~/.cache/tinybert_tf/jax`)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tinybert_tf", "jax")


def _multi_process(config):
    return config.strategy == "auto" and (config.num_processes > 1
                                          or bool(config.coordinator_address))


def _check_processes(config):
    """coordinator_address / num_processes / process_id (read on every launch) are the JAX
    data-parallel run's; anywhere else a value other than the one-process default is refused."""
    address, processes, index = config.coordinator_address, config.num_processes, config.process_id
    if config.backend == "jax" and config.strategy in ("data_parallel", "auto"):
        return
    if address or processes != 1 or index != 0:
        raise LaunchError(
            f"coordinator_address={address!r} num_processes={processes} process_id={index} are "
            "for multi-process JAX runs; add --config.backend=jax and --config.strategy=auto or "
            "--config.strategy=data_parallel, or leave them unset (one process).")


def _jax_data_parallel(config, cluster=False):
    """THE place where `strategy=data_parallel` on JAX is set up, by
    `tinybert_tf/launch/distribution.py`: `initialize(coordinator_address, num_processes,
    process_id)` (jax.distributed; the config's fields of those names, config_lib.base) then
    `data_parallel()` (keras.distribution.DataParallel over every device), whose
    context has `.scope()` and `num_replicas_in_sync` (the global device count, which batch_size
    is checked against). Called from `make`, so before any model is built. `cluster`: auto found
    a cluster environment (Cloud TPU, SLURM, Open MPI): jax.distributed reads it itself."""
    address = config.coordinator_address
    if cluster and not address:
        address = distribution.AUTO
    distribution.initialize(address, config.num_processes, config.process_id)
    return distribution.data_parallel()


def check_precision(precision, auto=True):
    """`precision` names a policy of PRECISIONS (or, with `auto`, is "auto": resolved per
    machine by `hardware.resolve`); else a one-line error."""
    if not (precision in PRECISIONS or (auto and precision == "auto")):
        names = ", ".join((*(["auto"] if auto else []), *PRECISIONS))
        raise LaunchError(f"Unknown precision {precision!r}; use one of {names}.")


def set_precision(policy):
    """Set the global Keras dtype policy (float32 | mixed_bfloat16 | mixed_float16)."""
    check_precision(policy, auto=False)
    keras.mixed_precision.set_global_policy(policy)


def steps_per_execution(strategy, requested):
    """keras#19246: a custom train_step under MirroredStrategy fails with steps_per_execution>1."""
    if requested > 1 and isinstance(strategy, tf.distribute.MirroredStrategy):
        logging.warning(
            "steps_per_execution=%d is not supported with a custom train_step under "
            "MirroredStrategy (keras#19246); falling back to 1.", requested
        )
        return 1
    return requested
