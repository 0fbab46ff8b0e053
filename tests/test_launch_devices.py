"""strategy=auto: the device choice as plain data (CPU, GPU and TPU machines), the console lines,
precision following the chosen devices; on this machine's devices: TensorFlow split into two
logical CPUs (tests/conftest.py) picks MirroredStrategy and a distillation step there matches
the one-device step; JAX with two host devices picks data_parallel."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

from tinybert_tf.distill import recipes
from tinybert_tf.distill.distiller import Distiller
from tinybert_tf.launch import config_lib, devices, distribution, hardware, strategy
from tinybert_tf.launch.devices import Device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = Device("cpu", "/device:CPU:0")
CPUS = [CPU, Device("cpu", "/device:CPU:1")]
H100 = [Device("gpu", f"/device:GPU:{i}", "NVIDIA H100 80GB HBM3", "9.0") for i in range(2)]
T4 = Device("gpu", "/device:GPU:0", "Tesla T4", "7.5")
TPU = [Device("tpu", str(i), "TPU v4") for i in range(4)]
AVX2 = frozenset({"avx2"})


@pytest.mark.parametrize("found, kwargs, strategy_name, used, kind", [
    ([CPU], {}, "cpu", [CPU], "cpu"),
    (CPUS, {}, "mirrored", CPUS, "cpu"),
    (H100[:1] + [CPU], {}, "one_device", H100[:1], "gpu:9.0"),
    (H100 + [CPU], {}, "mirrored", H100, "gpu:9.0"),
    ([H100[0], T4, CPU], {}, "mirrored", [H100[0], T4], "gpu:7.5"),  # the slowest decides
    ([CPU], {"tpu_vm": True}, "tpu", [Device("tpu")], "tpu"),
    ([CPU], {"tpu": "my-tpu"}, "tpu", [Device("tpu")], "tpu"),
    (TPU + [CPU], {}, "tpu", TPU, "tpu"),
])
def test_tensorflow_auto_choice(found, kwargs, strategy_name, used, kind):
    choice = devices.choose("tensorflow", "auto", found, **kwargs)
    assert (choice.strategy, list(choice.devices), choice.kind) == (strategy_name, used, kind)
    assert choice.unused == () and devices.unused_line(choice) is None


@pytest.mark.parametrize("found, processes, strategy_name, used, kind", [
    ([CPU], 1, "one_device", [CPU], "cpu"),
    (CPUS, 1, "data_parallel", CPUS, "cpu"),
    (H100[:1], 1, "one_device", H100[:1], "gpu:9.0"),
    (H100, 1, "data_parallel", H100, "gpu:9.0"),
    (TPU, 1, "data_parallel", TPU, "tpu"),
    (H100[:1], 2, "data_parallel", H100[:1], "gpu:9.0"),  # one GPU a process, two processes
])
def test_jax_auto_choice(found, processes, strategy_name, used, kind):
    choice = devices.choose("jax", "auto", found, processes=processes)
    assert (choice.strategy, list(choice.devices), choice.kind) == (strategy_name, used, kind)


def test_explicit_strategy_names_the_accelerators_it_leaves_idle():
    choice = devices.choose("tensorflow", "cpu", H100 + [CPU])
    assert (choice.strategy, choice.devices, choice.unused, choice.kind) == (
        "cpu", (CPU,), tuple(H100), "cpu")
    assert devices.unused_line(choice) == (
        "Unused: 2 × GPU NVIDIA H100 80GB HBM3 (compute capability 9.0) present but "
        "strategy=cpu does not use it; leave --config.strategy unset (auto) to train on every "
        "local accelerator.")
    one = devices.choose("tensorflow", "one_device", H100 + [CPU])
    assert one.devices == (H100[0],) and one.unused == (H100[1],)
    jax_cpu = devices.choose("jax", "cpu", TPU)
    assert jax_cpu.devices == (Device("cpu"),) and jax_cpu.unused == tuple(TPU)


@pytest.mark.parametrize("choice, backend, replicas, batch, line", [
    (devices.choose("tensorflow", "auto", [CPU]), "tensorflow", 1, 32,
     "Devices: CPU; Keras backend tensorflow, strategy cpu, 1 replica; batch 32 global, "
     "32 per replica."),
    (devices.choose("tensorflow", "auto", H100 + [CPU]), "tensorflow", 2, 32,
     "Devices: 2 × GPU NVIDIA H100 80GB HBM3 (compute capability 9.0); Keras backend tensorflow, "
     "strategy mirrored, 2 replicas; batch 32 global, 16 per replica."),
    (devices.choose("jax", "auto", TPU * 2, processes=2), "jax", 8, 64,
     "Devices: 8 × TPU TPU v4 in 2 processes; Keras backend jax, strategy data_parallel, "
     "8 replicas; batch 64 global, 8 per replica, 32 per process."),
    (devices.choose("tensorflow", "auto", [CPU]), "tensorflow", 1, None,
     "Devices: CPU; Keras backend tensorflow, strategy cpu, 1 replica."),
])
def test_launch_line(choice, backend, replicas, batch, line):
    assert devices.launch_line(choice, backend, replicas, batch) == line


def test_precision_follows_the_chosen_devices():
    """The GPU machine's auto precision is the GPUs' (bf16), but strategy=cpu on it trains under
    the CPU's rules (float32 on an AVX2 CPU); a 7.x GPU falls back to float16 with loss scaling."""
    on_gpus = devices.choose("tensorflow", "auto", H100 + [CPU])
    on_cpu = devices.choose("tensorflow", "cpu", H100 + [CPU])
    on_t4 = devices.choose("tensorflow", "auto", [T4, CPU])
    assert hardware.resolve("auto", "auto", "auto", on_gpus.kind, AVX2)[:3] == (
        "mixed_bfloat16", "bfloat16", True)
    assert hardware.resolve("auto", "auto", "auto", on_cpu.kind, AVX2)[:3] == (
        "float32", "", True)
    assert hardware.resolve("auto", "auto", "auto", on_t4.kind, AVX2)[:3] == (
        "mixed_float16", "", True)


def test_cluster_environments():
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    assert distribution.cluster_processes(slurm) == 2
    assert distribution.cluster_processes({**slurm, "SLURM_NTASKS": "1"}) == 1
    assert distribution.cluster_processes({"SLURM_NTASKS": "4"}) == 0  # not a job step
    mpi = {"OMPI_MCA_orte_hnp_uri": "1;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"}
    assert distribution.cluster_processes(mpi) == 4
    assert distribution.cluster_processes({}) == 0


def test_tensorflow_two_logical_cpus_auto_picks_mirrored():
    assert config_lib.load("general_distill").strategy == "auto"  # the default
    c = config_lib.load("general_distill", "tiny", strategy="auto")  # (tiny pins cpu)
    dist, choice = strategy.make(c)
    assert isinstance(dist, tf.distribute.MirroredStrategy) and dist.num_replicas_in_sync == 2
    assert choice.strategy == "mirrored" and choice.kind == "cpu"
    assert devices.launch_line(choice, "tensorflow", 2, c.batch_size) == (
        "Devices: 2 × CPU; Keras backend tensorflow, strategy mirrored, 2 replicas; batch 4 "
        "global, 2 per replica.")
    assert strategy.make(c)[0] is dist  # one strategy per device set in a process
    one, cpu_choice = strategy.make(config_lib.load("general_distill", "tiny", strategy="cpu"))
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and cpu_choice.unused == ()


def _one_step(dist, batch):
    """Fresh tiny teacher/student (fixed seeds, no dropout), one TinyBERT step under `dist`."""
    with dist.scope():
        teacher = tiny.backbone(num_layers=4, seed=1, dropout=0.0)
        student = tiny.backbone(num_layers=2, hidden_dim=16, seed=2, dropout=0.0)
        model = Distiller(teacher, student, recipes.get("tinybert_general"))
        model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    return [w.numpy() for w in student.weights]


def test_mirrored_auto_step_matches_one_device_step():
    batch = tiny.inputs(batch=4, seq=12, seed=3)
    dist, choice = strategy.make(config_lib.load("general_distill", "tiny", strategy="auto"))
    assert choice.strategy == "mirrored"
    mirrored = _one_step(dist, batch)
    single = _one_step(tf.distribute.OneDeviceStrategy("/cpu:0"), batch)
    before = tiny.backbone(num_layers=2, hidden_dim=16, seed=2, dropout=0.0).get_weights()
    changed = 0
    for a, b, w0 in zip(mirrored, single, before):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        changed += not np.allclose(a, w0)
    assert changed > len(before) // 2  # the step trained the student


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="suite runs TF")
def test_jax_two_host_devices_auto_picks_data_parallel():
    code = (
        "from tinybert_tf.launch import config_lib, devices, strategy\n"
        "c = config_lib.load('general_distill', 'tiny', backend='jax', strategy='auto')\n"
        "dist, choice = strategy.make(c)\n"
        "print(type(dist).__name__, choice.kind)\n"
        "print(devices.launch_line(choice, 'jax', dist.num_replicas_in_sync, c.batch_size))\n")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-2:] == [
        "DataParallelContext cpu",
        "Devices: 2 × CPU; Keras backend jax, strategy data_parallel, 2 replicas; batch 4 "
        "global, 2 per replica."]
