"""Distribution and precision set-up from a config (CPU, GPUs, multi-worker, Cloud TPU; JAX).

`make(config)` is the launcher's one entry: a backend-neutral distribution context with `.scope()`
(models, optimizers and projections are built under it), `num_replicas_in_sync` and a name
(`name_of`). On TensorFlow it is the `tf.distribute.Strategy` itself (`tf_strategy`); on JAX
there is no strategy: `JaxContext` (the default device, a no-op scope), or for `data_parallel`
the context of `tinybert_tf.launch.distribution` (keras.distribution.DataParallel +
jax.distributed), called from `_jax_data_parallel` only.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf
from absl import logging

from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import distribution

STRATEGIES = ("cpu", "one_device", "mirrored", "multi_worker", "tpu")
JAX_STRATEGIES = ("cpu", "one_device", "data_parallel")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def tf_strategy(name, tpu=""):
    """A `tf.distribute.Strategy` by name. `tpu` is a TPU name, `grpc://` address, or `local`."""
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
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
        text = str(getattr(err, "reason", None) or err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
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


def make(c):
    """The distribution context of config `c` for this process's Keras backend (see module
    doc); `c.backend` must be the backend Keras runs (tinybert_tf.main sees to it)."""
    backend = keras.backend.backend()
    if c.backend != backend:
        raise LaunchError(
            f"backend={c.backend} but Keras runs {backend} in this process (fixed when Keras is "
            f"imported); start a fresh process with KERAS_BACKEND={c.backend}, e.g. python -m "
            f"tinybert_tf.main --config.backend={c.backend} ...")
    _check_processes(c)
    if c.strategy == "auto":  # placeholder until launch.devices chooses
        c = dict(c.items(), strategy="cpu")
        c = type("C", (), c)
    if backend == "tensorflow":
        return tf_strategy(c.strategy, c.tpu)
    if backend != "jax":
        raise LaunchError(f"Keras backend {backend!r} is not supported; use KERAS_BACKEND=jax "
                          "or tensorflow.")
    if c.strategy == "data_parallel":
        return _jax_data_parallel(c)
    if c.strategy in ("cpu", "one_device"):
        if c.strategy == "cpu":
            import jax

            jax.config.update("jax_default_device", jax.devices("cpu")[0])
        return JaxContext(c.strategy)
    raise LaunchError(f"strategy={c.strategy} is not available on the JAX backend; use one of "
                      f"{', '.join(JAX_STRATEGIES)} (or --config.backend=tensorflow for "
                      f"{', '.join(s for s in STRATEGIES if s not in JAX_STRATEGIES)}).")


def _check_processes(c):
    """coordinator_address / num_processes / process_id (read on every launch) are the JAX
    data-parallel run's; anywhere else a value other than the one-process default is refused."""
    address, processes, index = c.coordinator_address, c.num_processes, c.process_id
    if c.backend == "jax" and c.strategy == "data_parallel":
        return
    if address or processes != 1 or index != 0:
        raise LaunchError(
            f"coordinator_address={address!r} num_processes={processes} process_id={index} are "
            "for multi-process JAX runs; add --config.backend=jax --config.strategy=data_parallel"
            " or leave them unset (one process).")


def _jax_data_parallel(c):
    """THE place where `strategy=data_parallel` on JAX is set up, by
    `tinybert_tf/launch/distribution.py`: `initialize(coordinator_address, num_processes,
    process_id)` (jax.distributed; the config's fields of those names, config_lib.base) then
    `data_parallel()` (keras.distribution.DataParallel over every device), whose
    context has `.scope()` and `num_replicas_in_sync` (the global device count, which batch_size
    is checked against). Called from `make`, so before any model is built."""
    distribution.initialize(c.coordinator_address, c.num_processes, c.process_id)
    return distribution.data_parallel()


def name_of(dist):
    """A distribution context's name for the launch line (a strategy's class name on TF)."""
    return getattr(dist, "name", None) or type(dist).__name__


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
