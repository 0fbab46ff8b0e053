"""Distribution strategy and precision set-up from a config (CPU, GPUs, multi-worker, Cloud TPU)."""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from tinybert_tf.errors import UserError

STRATEGIES = ("cpu", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


class LaunchError(UserError):
    """A launch problem a user fixes with a flag; the message is one line naming the fix."""


def make_strategy(name, tpu=""):
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
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LaunchError(
            f"TPU {tpu!r} not reachable ({first}); on a TPU VM use --config.tpu=local, "
            "otherwise pass the TPU name from `gcloud compute tpus tpu-vm list`."
        ) from None


def set_precision(policy):
    """Set the global Keras dtype policy (float32 | mixed_bfloat16 | mixed_float16)."""
    if policy not in PRECISIONS:
        raise LaunchError(f"Unknown precision {policy!r}; use one of {', '.join(PRECISIONS)}.")
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


def check_batch_size(strategy, batch_size):
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise LaunchError(
            f"batch_size {batch_size} is not divisible by the {replicas} replicas; "
            f"use a multiple of {replicas}, e.g. --config.batch_size={batch_size // replicas * replicas or replicas}."
        )
