"""The dispatcher: one launch mode of a resolved config, from its checks to the mode's output.

`run` checks a training mode's config (`validate`: nothing is written when a check fails),
builds what the checks and the mode share, once (`Launch`: the distribution context, the
teacher's tokenizer, the corpus scan), claims the workdir (`claim_workdir` writes config.json)
and calls the mode's body from `MODES`. A user error after the claim but before training
started un-claims the workdir again, so the fixed command is not refused as a different run.
The bodies: `general_mode`, `task_modes` (finetune, task_distill), `evaluate_mode`,
`export_mode`; each is `fn(config, workdir, launch)`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import tensorflow as tf

from tinybert_tf.errors import LaunchError, UserError
from tinybert_tf.launch import (
    builders,
    devices,
    distribution,
    evaluate_mode,
    export_mode,
    general_mode,
    global_state,
    hardware,
    strategy,
    task_data,
    task_modes,
    teachers,
    validate,
    workdir_lock,
)

# mode name -> fn(config, workdir, launch); evaluate and export read a run's outputs.
MODES = {
    "general_distill": general_mode.general_distill,
    "task_distill": task_modes.task_distill,
    "finetune": task_modes.finetune,
    "evaluate": evaluate_mode.run_from_config,
    "export": export_mode.export_student,
}
_READ_ONLY = ("evaluate", "export")
# Fields a restart may change: how this process joins the run, not what the run is.
LAUNCH_ONLY = ("overwrite", "coordinator_address", "process_id")
# The modes whose training steps run a teacher (`hardware.resolve`'s teacher_steps).
_TEACHER_STEPS = ("general_distill", "task_distill")
# What a run writes once training started; a workdir holding any of them is not un-claimed.
_TRAINED = ("checkpoints", "tensorboard", "metrics.jsonl")


@dataclasses.dataclass
class Launch:
    """What the dispatcher built for a mode, each once: the distribution context
    (`strategy.make`; on JAX data-parallel runs it joins the processes) and the devices chosen
    for it; for training modes the teacher dirs, the lead teacher's tokenizer, general
    distillation's corpus scan record (`validate.check_corpus`) and the task."""

    strategy: object
    devices: devices.Choice
    tokenizer: object = None
    corpus_scan: dict | None = None
    spec: object = None  # the task (task modes), its files read once
    label_orders: dict | None = None  # task_distill: teacher dir -> class order
    callbacks: tuple = ()  # the caller's Keras callbacks, given to every training stage
    teacher_dirs: tuple = ()  # the run's teachers (`teachers.resolve`, once)
    lead: str = ""  # the one whose tokenizer the run reads (task_distill: step 1's teacher)


def run(config, workdir, callbacks=()):
    """Run one mode of a config. The process's dtype policy, seeds and distribution are as
    before when it returns or raises (`global_state.preserved`).

    Args:
        config: a ConfigDict with `mode` (a `MODES` name) and that mode's fields.
        workdir: the run directory (claimed for a training mode: `claim_workdir`).
        callbacks: Keras callbacks every training stage runs beside its own (`train.run`).
    Returns:
        What the mode returns: a preset dir (training modes), the report dict (evaluate) or
        the export path (export).
    Raises:
        UserError: a mistake to fix, in one line (before the claim nothing is written)."""
    with global_state.preserved():
        return _run(config, workdir, tuple(callbacks))


def _run(config, workdir, callbacks):
    if keras.backend.backend() == "jax":
        hardware.keep_tf_on_cpu()  # before TF's first op
    if config.mode not in MODES:
        raise LaunchError(f"Unknown mode {config.mode!r}; use one of {', '.join(MODES)}.")
    if config.mode in _READ_ONLY:  # read a run's outputs; leave its config alone
        tf.io.gfile.makedirs(workdir)
        return _start(config, workdir, Launch(*strategy.make(config)))
    launch = dataclasses.replace(_prepare(config, workdir), callbacks=callbacks)
    chief = distribution.is_chief()  # a multi-process run: process 0 writes the workdir's files
    created = not tf.io.gfile.exists(workdir)
    fresh = not tf.io.gfile.exists(os.path.join(workdir, "config.json"))
    lock = workdir_lock.acquire(workdir) if chief else None  # one run per workdir
    try:
        claim_workdir(workdir, config.to_dict(), overwrite=config.overwrite, write=chief)
        distribution.sync("tinybert_tf:workdir")  # config.json claimed before anything else
        return _start(config, workdir, launch)
    except Exception as err:
        if chief and fresh and isinstance(err, UserError):
            _unclaim(workdir, created, lock)
        raise
    finally:
        if lock is not None:
            lock.release()


def _prepare(config, workdir):
    """A training mode's checks, then what the mode needs from before the claim, each built
    once: the teacher dirs, the lead teacher's tokenizer (the corpus scan reads it too), the
    corpus scan, the task (its files read once; task_distill's teachers' label names checked
    against it by name), and last the distribution context, whose replicas the batch must split
    over."""
    teacher_dirs, lead = validate.check_launch(config, workdir)
    tokenizer = builders.load_tokenizer(lead)
    scan = validate.check_corpus(config, tokenizer) if config.mode == "general_distill" else None
    spec = orders = None
    if config.mode != "general_distill":  # the task's files read once, its labels checked
        spec = task_data.task_spec(config)
        if config.mode == "task_distill":
            orders = teachers.label_orders(teacher_dirs, spec.label_names)
    dist, choice = strategy.make(config)
    distribution.check_batch_size(dist, config.batch_size)
    return Launch(dist, choice, tokenizer, scan, spec, orders, teacher_dirs=tuple(teacher_dirs),
                  lead=lead)


def _start(config, workdir, launch):
    """Seed, determinism, the hardware's "auto" settings and the precision; then the mode."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:  # TF's ops (on JAX: the tf.data pipeline's)
        tf.config.experimental.enable_op_determinism()
    choice = launch.devices
    batch = None if config.mode in _READ_ONLY else config.batch_size
    print(devices.launch_line(choice, keras.backend.backend(),
                              launch.strategy.num_replicas_in_sync, batch))
    unused = devices.unused_line(choice)
    if unused:
        print(unused)
    config = resolve_auto(config, choice)
    strategy.set_precision(config.precision)
    if keras.backend.backend() == "tensorflow":
        hardware.set_clustering(config.jit_compile)
    return MODES[config.mode](config, workdir, launch)


def _teacher_steps(config):
    """Do the run's steps run a frozen teacher that may be int8 (`hardware.resolve`)? Not when
    the student starts as a copy of the teacher's layers (`validate.check_teacher_dtype`)."""
    return (config.mode in _TEACHER_STEPS
            and not str(config.get("student", "")).startswith("from_teacher:"))


def resolve_auto(config, choice):
    """A copy of `config` for the devices `choice` (a `devices.Choice`): its strategy by name,
    and precision / teacher_dtype / jit_compile "auto" resolved for those devices
    (`hardware.resolve`), printed in one line; the workdir keeps the config as given."""
    import ml_collections

    backend = keras.backend.backend()
    precision, teacher_dtype, jit, reason = hardware.resolve(
        config.precision, config.teacher_dtype, config.jit_compile,
        choice.kind, hardware.cpu_flags(), backend=backend,
        mirrored=backend == "tensorflow" and choice.strategy == "mirrored"
        and len(choice.devices) > 1, teacher_steps=_teacher_steps(config))
    resolved = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    ignored = jit != hardware.jit_value(config.jit_compile) and config.jit_compile != "auto"
    resolved.precision, resolved.teacher_dtype, resolved.jit_compile = precision, teacher_dtype, jit
    resolved.strategy = choice.strategy
    resolved.device_kind = choice.kind  # what task_data.buckets reads: one shape on a TPU
    if "auto" in (config.precision, config.teacher_dtype, config.jit_compile) or ignored:
        print(f"Hardware: {reason}")
    return resolved


# ---- the workdir ----------------------------------------------------------------------------------


def claim_workdir(workdir, config, overwrite=False, write=True):
    """Create `workdir` and write the run's `config.json` (`config`: a plain dict); the same
    config again (a restart) leaves the workdir as it is. A workdir holding another run's config
    is refused, or with `overwrite` that run's training outputs are removed. `write=False` (a
    multi-process run's other processes): only the refusal, nothing written."""
    path = os.path.join(workdir, "config.json")
    differ = None  # no earlier run
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            differ = _differ(json.load(f), config)
        if differ and not overwrite:
            raise LaunchError(
                f"workdir {workdir} holds a run with a different config (differs in: "
                f"{', '.join(differ)}); use a new --workdir or pass --config.overwrite=True.")
    if not write or differ == []:
        return
    tf.io.gfile.makedirs(workdir)
    for sub in _TRAINED if differ else ():
        target = os.path.join(workdir, sub)
        if tf.io.gfile.isdir(target):
            tf.io.gfile.rmtree(target)
        elif tf.io.gfile.exists(target):
            tf.io.gfile.remove(target)
    tmp = path + ".tmp"  # written whole, then renamed into place
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True, default=str))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _differ(old, new):
    """The fields two run configs differ in, except LAUNCH_ONLY ones."""
    return sorted(k for k in set(old) | set(new) if k not in LAUNCH_ONLY and json.dumps(
        old.get(k), sort_keys=True, default=str) != json.dumps(new.get(k), sort_keys=True,
                                                                default=str))


def _unclaim(workdir, created, lock=None):
    """Remove the config.json this launch wrote (and the workdir it made, when empty again)
    unless training started: a checkpoint, TensorBoard logs or metrics.jsonl under workdir.
    `lock` (this launch's `workdir_lock.WorkdirLock`) is released before the emptiness check."""
    for _, dirs, files in tf.io.gfile.walk(workdir):
        if set(_TRAINED) & (set(dirs) | set(files)):
            return
    for name in ("config.json", "corpus_scan.json"):
        path = os.path.join(workdir, name)
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    if lock is not None:
        lock.release()
    if created and not tf.io.gfile.listdir(workdir):
        tf.io.gfile.rmtree(workdir)
