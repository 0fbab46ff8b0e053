"""Which devices a run uses: `strategy=auto` and the console line that names them.

`choose(backend, requested, devices, ...)` is a pure function of a device list (tested as plain
data: GPU and TPU machines too); `tf_devices` / `jax_devices` read this machine's list.

strategy auto:
* TensorFlow: `tpu` when `--config.tpu` is set or the process runs on a TPU VM; else every local
  GPU (`mirrored` over 2 or more, `one_device` on one); else `mirrored` over the logical CPU
  devices when the CPU was split into 2 or more; else `cpu`.
* JAX: `data_parallel` over every device of every process when the run is one of several
  processes (config num_processes > 1 or a coordinator address, or a cluster environment:
  `distribution.cluster_processes`), or over every local device when there are 2 or more; else
  `one_device` (JAX's default device).
An explicit strategy is honoured; an accelerator it leaves idle is named in one line.
Precision and XLA "auto" then follow the chosen devices (`Choice.kind`, `hardware.resolve`).
"""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass(frozen=True)
class Device:
    """One device. platform: cpu | gpu | tpu; address: TF's device name ("/device:GPU:0") or
    JAX's id; model: e.g. "NVIDIA H100 80GB HBM3"; capability: NVIDIA compute capability."""

    platform: str
    address: str = ""
    model: str = ""
    capability: str = ""


@dataclasses.dataclass(frozen=True)
class Choice:
    """The strategy a run uses (a name of strategy.STRATEGIES / JAX_STRATEGIES), the devices it
    trains on, the accelerators present but left idle, and the processes of the run."""

    strategy: str
    devices: tuple
    unused: tuple = ()
    processes: int = 1

    @property
    def kind(self):
        """"tpu", "gpu:<lowest compute capability>" or "cpu": what precision auto follows."""
        return kind_of(self.devices)


def kind_of(devices):
    """hardware.resolve's device kind of the devices a run uses."""
    platforms = {d.platform for d in devices}
    if "tpu" in platforms:
        return "tpu"
    gpus = [d for d in devices if d.platform == "gpu"]
    if gpus:
        caps = [_capability(d.capability) for d in gpus]
        major, minor = min(caps)
        return f"gpu:{major}.{minor}"
    return "cpu"


def _capability(text):
    major, _, minor = str(text or "0.0").partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return 0, 0


def _split(devices):
    by = collections.defaultdict(list)
    for d in devices:
        by[d.platform].append(d)
    return by.get("tpu", []), by.get("gpu", []), by.get("cpu", [])


def choose(backend, requested, devices, *, tpu="", tpu_vm=False, processes=1):
    """The `Choice` for strategy `requested` ("auto" or a name) over `devices` (this machine's,
    JAX: every process's). tpu: config.tpu; tpu_vm: a TPU VM (TF lists no TPU before the TPU
    system is initialised); processes: the run's processes (JAX; > 1: a multi-process run)."""
    devices = tuple(devices)
    tpus, gpus, cpus = _split(devices)
    cpu = cpus[:1] or (Device("cpu"),)
    accelerators = tuple(tpus + gpus)
    if backend == "jax":
        strategy = requested
        if requested == "auto":
            strategy = "data_parallel" if processes > 1 or len(devices) > 1 else "one_device"
        used = {"cpu": tuple(cpu), "one_device": devices[:1] or tuple(cpu)}.get(strategy, devices)
        return _choice(strategy, used, accelerators, processes)
    strategy = requested
    if requested == "auto":
        if tpu or tpu_vm or tpus:
            strategy = "tpu"
        elif gpus:
            strategy = "mirrored" if len(gpus) > 1 else "one_device"
        else:
            strategy = "mirrored" if len(cpus) > 1 else "cpu"
    if strategy == "tpu":
        used = tuple(tpus) or (Device("tpu"),)
    elif strategy == "one_device":
        used = tuple(gpus[:1] or cpu)
    elif strategy == "mirrored":
        used = tuple(gpus or cpus or cpu)
    else:
        used = tuple(cpu)
    return _choice(strategy, used, accelerators, processes)


def _choice(strategy, used, accelerators, processes):
    unused = tuple(d for d in accelerators if d not in used)
    return Choice(strategy, tuple(used), unused, processes)


def describe(devices):
    """"2 × GPU NVIDIA H100 80GB HBM3 (compute capability 9.0)", "CPU", "8 × TPU v4"."""
    groups = collections.Counter((d.platform, d.model, d.capability) for d in devices)
    parts = []
    for (platform, model, capability), count in groups.items():
        text = platform.upper() + (f" {model}" if model and model.lower() != platform else "")
        text += f" (compute capability {capability})" if capability else ""
        parts.append(f"{count} × {text}" if count > 1 else text)
    return " + ".join(parts) or "CPU"


def launch_line(choice, backend, replicas, batch_size=None):
    """The console line naming the devices, the replicas and the global / per-replica batch."""
    where = describe(choice.devices)
    if choice.processes > 1:
        where += f" in {choice.processes} processes"
    plural = "s" if replicas != 1 else ""
    line = (f"Devices: {where}; Keras backend {backend}, strategy {choice.strategy}, "
            f"{replicas} replica{plural}")
    if batch_size:
        line += f"; batch {batch_size} global, {batch_size // max(replicas, 1)} per replica"
        if choice.processes > 1:
            line += f", {batch_size // choice.processes} per process"
    return line + "."


def unused_line(choice):
    """One line naming accelerators present that the chosen strategy leaves idle, or None."""
    if not choice.unused:
        return None
    return (f"Unused: {describe(choice.unused)} present but strategy={choice.strategy} does not "
            "use it; leave --config.strategy unset (auto) to train on every local accelerator.")


# ---- this machine's devices ---------------------------------------------------------------------


def tf_devices(tf=None):
    """TensorFlow's logical devices as `Device`s (GPUs with their model and capability)."""
    if tf is None:
        import tensorflow as tf
    physical = tf.config.list_physical_devices("GPU")
    details = [tf.config.experimental.get_device_details(p) for p in physical]
    out = []
    for i, d in enumerate(tf.config.list_logical_devices("GPU")):
        info = details[min(i, len(details) - 1)] if details else {}
        cc = info.get("compute_capability")
        out.append(Device("gpu", d.name, info.get("device_name", ""),
                          f"{cc[0]}.{cc[1]}" if cc else ""))
    out += [Device("tpu", d.name) for d in tf.config.list_logical_devices("TPU")]
    out += [Device("cpu", d.name) for d in tf.config.list_logical_devices("CPU")]
    return out


def jax_devices(jax=None):
    """JAX's devices (every process's; its default backend: the accelerators where present)."""
    if jax is None:
        import jax
    return [jax_device(d) for d in jax.devices()]


def jax_device(d):
    """A JAX device as a `Device`."""
    platform = "gpu" if d.platform in ("gpu", "cuda", "rocm") else d.platform
    cc = str(getattr(d, "compute_capability", "") or "") if platform == "gpu" else ""
    model = "" if platform == "cpu" else str(getattr(d, "device_kind", "") or "")
    return Device(platform, str(d.id), model, cc if "." in cc or not cc else f"{cc}.0")
