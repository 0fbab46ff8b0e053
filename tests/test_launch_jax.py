"""The launcher on the Keras JAX backend: general distillation end to end, exact resume with orbax
checkpoints after SIGKILL (past a damaged newest checkpoint), one-line errors. The task modes on
JAX, and their presets read by evaluate / export under TensorFlow, are checked on the runs of
tools/accelerator_check.py (tests/test_tools_accelerator_check.py), which runs every mode so.

The backend is fixed when Keras is imported and this suite's process runs TensorFlow, so every
JAX run is a fresh `python -m tinybert_tf.main` process (KERAS_BACKEND=jax, or --config.backend=jax,
which re-executes the launcher once with KERAS_BACKEND set).
"""

import ast
import json
import math
import os
import signal
import subprocess
import sys
import time

import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf import main
from tinybert_tf.launch import config_lib, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 240  # seconds for one launcher process


def _env(backend="jax", **extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


def _cmd(config, workdir, *flags):
    return [sys.executable, "-m", "tinybert_tf.main", f"--config={config}",
            f"--workdir={workdir}", "--config.strategy=auto", *flags]  # tiny pins cpu


def _run(args, backend="jax", **extra):
    return subprocess.run(["timeout", str(LIMIT), *args], cwd=ROOT, env=_env(backend, **extra),
                          capture_output=True, text=True, timeout=LIMIT + 30)


def _popen(args, **extra):
    return subprocess.Popen(args, cwd=ROOT, env=_env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _weights(preset, cls=keras_hub.models.Backbone):
    return [w.numpy() for w in cls.from_preset(preset).weights]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("jax_assets")
    return {
        "teacher": tiny.write_teacher(d / "teacher"),
        "corpus": tiny.write_corpus(d / "corpus.txt"),
        "train": tiny.write_task(d / "train.tsv", 24, 0),
        "dev": tiny.write_task(d / "dev.tsv", 8, 1),
    }


def _general(assets, *flags):
    return [f"--config.teacher={assets['teacher']}", f"--config.data.train={assets['corpus']}",
            *flags]


@pytest.fixture(scope="module")
def full_run(assets, tmp_path_factory):
    """An uninterrupted general distillation of 200 steps: logs every 10, checkpoints every 20;
    launched from a TensorFlow environment with --config.backend=jax (the launcher re-executes
    itself on JAX), where the killed run below sets KERAS_BACKEND=jax."""
    flags = _general(assets, "--config.steps=200", "--config.log_every=10",
                     "--config.checkpoint_every=20")
    workdir = tmp_path_factory.mktemp("jax_full")
    proc = _run(_cmd("general_distill:tiny", workdir, *flags, "--config.backend=jax"),
                backend="tensorflow")
    return {"dir": workdir, "flags": flags, "proc": proc}


@pytest.mark.slow
def test_general_distill_on_jax(full_run):
    proc, workdir = full_run["proc"], full_run["dir"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("Devices: CPU; Keras backend jax, strategy one_device, 1 replica; batch 4 global, "
            "4 per replica.") in proc.stdout
    student = keras_hub.models.Backbone.from_preset(str(workdir / "student"))
    assert student.num_layers == 2 and student.hidden_dim == 32
    records = train.read_metrics(str(workdir))
    assert [r["step"] for r in records] == list(range(10, 201, 10))
    for record in records:
        for term in ("loss", "emb_loss", "att_loss", "hidden_loss", "learning_rate"):
            assert math.isfinite(record[term]), record
    with open(workdir / "config.json") as f:
        assert json.load(f)["backend"] == "jax"  # the backend that ran
    assert tiny.orbax_steps(workdir / "checkpoints") == [160, 180, 200]  # orbax, the newest 3 kept
    assert os.listdir(workdir / "tensorboard")


@pytest.mark.slow
def test_sigkill_and_damaged_checkpoint_resume_bit_identical(assets, full_run, tmp_path):
    """Killed after two checkpoints, the newest one then damaged: the same command skips it in
    one line, resumes from the older one and ends with the uninterrupted run's weights, bit for
    bit (XLA on CPU, deterministic input pipeline, dropout seed states in the checkpoint).
    The two processes share a JAX compilation cache of their own: the killed one fills it, the
    resumed one reads its programs back (their last-read times move) and compiles none anew."""
    flags = full_run["flags"]
    assert full_run["proc"].returncode == 0, full_run["proc"].stderr[-3000:]
    killed = tmp_path / "killed"
    cache = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache")}
    proc = _popen(_cmd("general_distill:tiny", killed, *flags), **cache)
    deadline = time.time() + LIMIT
    while len(tiny.orbax_steps(killed / "checkpoints")) < 2 and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "student").exists(), "run finished before the kill; raise steps"
    newest = tiny.orbax_steps(killed / "checkpoints")[-1]
    for root, _, files in os.walk(killed / "checkpoints" / str(newest) / "default"):
        for name in files:
            if os.sep + "d" == root[-2:]:  # the array data files
                os.truncate(os.path.join(root, name), 10)
    written = _cache_entries(tmp_path / "jax_cache")
    assert len(written) > 10, written  # every compile cached, not only those over 1 s
    again = _run(_cmd("general_distill:tiny", killed, *flags), **cache)
    assert again.returncode == 0, again.stderr[-3000:]
    read = _cache_entries(tmp_path / "jax_cache")
    assert set(read) == set(written)  # nothing compiled that the killed run had not
    assert sum(read[k] > written[k] for k in written) > len(written) // 2, (written, read)
    skipped = [line for line in again.stderr.splitlines() if line.startswith("Skipping")]
    assert len(skipped) == 1 and f"checkpoints/{newest}:" in skipped[0], again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert "Resuming from" in again.stdout
    for a, b in zip(_weights(str(full_run["dir"] / "student")),
                    _weights(str(killed / "student")), strict=True):
        np.testing.assert_array_equal(a, b)
    _assert_no_teacher(killed / "checkpoints", assets["teacher"])


def _cache_entries(path):
    """{entry: its last-read time} of a JAX compilation cache (JAX's `<key>-atime` files, kept
    where the cache is bounded, as the launcher makes it)."""
    return {p.name[:-len("-atime")]: int.from_bytes(p.read_bytes(), "little")
            for p in path.glob("*-atime")}


def test_jax_compilation_cache_keeps_what_the_user_gave_jax(tmp_path):
    """The launcher's JAX set-up turns the persistent cache on at a default directory, caching
    every compile, bounded; a directory, threshold or size given to JAX is kept; JAX's own
    switch turns it off."""
    import jax

    from tinybert_tf.launch import strategy

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_compilation_cache_max_size", "jax_enable_compilation_cache")
    before = {name: getattr(jax.config, name) for name in names}
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        jax.config.update("jax_compilation_cache_max_size", -1)
        got = strategy.jax_compilation_cache(jax, {"XDG_CACHE_HOME": str(tmp_path)})
        assert got == str(tmp_path / "tinybert_tf" / "jax") == jax.config.jax_compilation_cache_dir
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
        assert jax.config.jax_compilation_cache_max_size == strategy.CACHE_MAX_BYTES
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        jax.config.update("jax_compilation_cache_max_size", 123)
        env = {strategy.MIN_COMPILE_S_ENV: "1"}
        assert strategy.jax_compilation_cache(jax, env) == str(tmp_path / "mine")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1
        assert jax.config.jax_compilation_cache_max_size == 123
        jax.config.update("jax_enable_compilation_cache", False)
        assert strategy.jax_compilation_cache(jax, {}) is None
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", None)
        (tmp_path / "file").write_text("")  # a cache home that cannot hold a directory
        assert strategy.jax_compilation_cache(jax, {"XDG_CACHE_HOME": str(tmp_path / "file")}) \
            is None and not jax.config.jax_compilation_cache_dir
        assert strategy.default_jax_cache_dir({}) == os.path.join(
            os.path.expanduser("~"), ".cache", "tinybert_tf", "jax")
    finally:
        for name, value in before.items():
            jax.config.update(name, value)


def _assert_no_teacher(checkpoints, teacher):
    """The orbax checkpoints hold no teacher entry: their only non-trainable entries are the
    student's dropout seed states (the frozen teacher's weights would be non-trainable), and
    teacher.json beside them names the teacher."""
    for step in tiny.orbax_steps(checkpoints):
        with open(checkpoints / str(step) / "default" / "_METADATA") as f:
            keys = [ast.literal_eval(k) for k in json.load(f)["tree_metadata"]]
        frozen = [k for k in keys if k[:2] == ("state", "non_trainable_variables")]
        assert frozen and all(k[-1] == "seed_generator_state" for k in frozen), frozen
    with open(checkpoints / "teacher.json") as f:
        assert json.load(f)["teacher"] == teacher


@pytest.mark.slow
def test_bad_input_is_one_line_on_jax(assets, tmp_path):
    proc = _run(_cmd("general_distill:tiny", tmp_path / "run", *_general(assets),
                     "--config.strategy=mirrored"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: strategy=mirrored is not available on the JAX backend; use one of "
                      "auto, cpu, one_device, data_parallel (or --config.backend=tensorflow for "
                      "mirrored, multi_worker, tpu)."], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before the workdir was claimed


def test_another_backend_in_a_process_whose_keras_runs_tensorflow(assets, tmp_path, capsys):
    """In-process launches cannot switch Keras' backend: one line naming the fix; a config the
    launcher did not pass through main (backend=jax) is refused by the modes in one line too."""
    code = main.launch(["tinybert_tf", "--config=general_distill:tiny",
                        f"--workdir={tmp_path / 'run'}", "--config.backend=jax",
                        *_general(assets)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        "Error: Keras was already imported with the tensorflow backend in this process and "
        "cannot switch to jax; start a fresh process with KERAS_BACKEND=jax (python -m "
        "tinybert_tf.main ...)."]
    from tinybert_tf.errors import LaunchError
    from tinybert_tf.launch import strategy

    c = config_lib.load("general_distill", "tiny", backend="jax")
    with pytest.raises(LaunchError, match="KERAS_BACKEND=jax"):
        strategy.make(c)
    code = main.launch(["tinybert_tf", "--config=general_distill:tiny",
                        f"--workdir={tmp_path / 'run'}", "--config.backend=torch",
                        *_general(assets)])
    assert code == 1 and "Keras backends tensorflow and jax" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
