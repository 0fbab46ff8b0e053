"""tools/accelerator_check.py --tiny on this CPU, twice: with TensorFlow importable every mode runs
end to end through the launcher on the Keras JAX backend (its outputs loaded back here); with
TensorFlow hidden the modes are skipped and the step timing still writes finite figures for our
step, the bf16 matmul rate and (where torch is importable) the PyTorch peer.

TensorFlow is hidden from a subprocess (and the peer's child process) by a sitecustomize on
PYTHONPATH: every meta-path finder is wrapped so that nothing named tensorflow* is found, as on the
lent GPU machine where TensorFlow is not installed (`import tensorflow` raises
ModuleNotFoundError; `importlib.util.find_spec` returns None, which torch._dynamo relies on). No
timing is asserted: the CPU is shared.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap

import keras_hub
import pytest
import tiny

from tinybert_tf.launch import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "accelerator_check.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))
from accel import modes  # noqa: E402

SITECUSTOMIZE = textwrap.dedent('''
    import sys

    def _is_tf(name):
        return name.split(".")[0].startswith("tensorflow")

    class _Hide:
        def __init__(self, finder):
            self._finder = finder

        def find_spec(self, fullname, path=None, target=None):
            if _is_tf(fullname):
                return None
            find = getattr(self._finder, "find_spec", None)
            return None if find is None else find(fullname, path, target)

        def invalidate_caches(self):
            getattr(self._finder, "invalidate_caches", lambda: None)()

        def __getattr__(self, name):
            return getattr(self._finder, name)

    sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
''')

TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def _finite_positive(value, name):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (
        f"{name} = {value!r}")


def _env(pythonpath=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env["JAX_PLATFORMS"] = "cpu"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def _run(tmp, env, *flags):
    out = tmp / "report.json"
    proc = subprocess.run([sys.executable, TOOL, "--tiny", f"--json={out}", *flags], env=env,
                          capture_output=True, text=True, timeout=1800, cwd=str(tmp))
    assert out.exists(), (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("accelerator_check_no_tf")
    (tmp / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = _env(pythonpath=str(tmp))
    # Check the hiding itself: TensorFlow is installed in this venv, but not findable under it.
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; assert u.find_spec('tensorflow') is "
         "None\ntry:\n import tensorflow\nexcept ImportError: pass\nelse: raise SystemExit(1)"],
        env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr[-2000:]
    proc, results = _run(tmp, env)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return results, proc.stdout


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("accelerator_check")
    proc, results = _run(tmp, _env(), f"--workdir={tmp / 'work'}", "--no_timing")
    return proc, results, tmp / "work"


@pytest.mark.slow
def test_our_step_and_matmul_rate_without_tensorflow(hidden):
    results, stdout = hidden
    assert results["tensorflow_loaded"] is False and results["versions"]["tensorflow"] is None
    assert set(results["modes"]) == set(modes.ORDER)
    for record in (*results["modes"].values(), results["assets"]):
        assert record["status"] == "skipped" and "TensorFlow not installed" in record["reason"]
    timing = results["step_timing"]
    assert timing["status"] == "ok"
    ours = timing["ours"]
    for key in ("seq_per_s", "step_ms", "flops_per_s"):
        _finite_positive(ours[key], f"ours.{key}")
    assert ours["teacher_dtype"] == "bfloat16" and ours["student_dtype"] == "mixed_bfloat16"
    assert math.isfinite(ours["loss"])
    _finite_positive(timing["matmul"]["bf16_flops_per_s"], "matmul.bf16_flops_per_s")
    _finite_positive(timing["flops_per_step"]["total"], "flops_per_step.total")
    _finite_positive(timing["fraction"], "fraction")
    assert timing["shapes"]["recipe"] == "tinybert_general"
    assert results["device"]["platform"] == "cpu" and results["device"]["count"] >= 1
    assert results["versions"]["keras"]
    assert "general-distillation step" in stdout and "ours (Distiller, jax, bf16)" in stdout


@pytest.mark.slow
@pytest.mark.skipif(not TORCH, reason="torch / transformers not importable (CI's venv has no torch)")
def test_torch_peer_without_tensorflow(hidden):
    results, stdout = hidden
    timing = results["step_timing"]
    peer = timing["peer"]
    assert peer["skipped"] is None, peer["skipped"]
    assert set(peer["variants"]) == {"bf16_autocast", "bf16_teacher"}
    for name, v in peer["variants"].items():
        _finite_positive(v["seq_per_s"], f"peer.{name}.seq_per_s")
        assert math.isfinite(v["loss"])
        _finite_positive(timing["ratio_vs"][name], f"ratio_vs.{name}")
    _finite_positive(timing["ratio"], "ratio")
    assert results["versions"]["torch"] and "ratio (ours / fastest peer" in stdout


def _ok(results, mode):
    record = results["modes"][mode]
    assert record["status"] == "ok", record
    assert any("Keras backend jax" in line for line in record["console"]), record["console"]
    assert "--config.backend=jax" in record["command"]
    _finite_positive(record["wall_s"], f"{mode}.wall_s")
    return record["outputs"]


def _losses(record, name):
    _finite_positive(record["steps"], f"{name}.steps")
    for key in ("first_loss", "final_loss"):
        assert math.isfinite(record[key]), (name, record)


@pytest.mark.slow
def test_general_distill_finetune_and_task_distill_on_jax(checked):
    _, results, work = checked
    assert results["assets"]["status"] == "ok" and results["versions"]["tensorflow"]
    general = _ok(results, "general_distill")
    _losses(general, "general_distill")
    student = keras_hub.models.Backbone.from_preset(general["student"]["path"])
    assert (student.num_layers, student.hidden_dim) == (2, 32)

    finetune = _ok(results, "finetune")
    assert list(finetune["members"]) == ["member_0", "member_1"]
    for name, member in finetune["members"].items():
        _losses(member, name)
        assert member["best"]["metric"] == "accuracy" and 0 <= member["best"]["value"] <= 1
        model = keras_hub.models.TextClassifier.from_preset(member["preset"]["path"],
                                                            preprocessor=None)
        assert model.num_classes == 2

    distilled = _ok(results, "task_distill")
    assert distilled["transfer"]["used"] == modes.SIZES["tiny"].transfer_rows
    for stage in ("intermediate", "prediction"):
        _losses(distilled["stages"][stage], stage)
    assert distilled["stages"]["prediction"]["best"]["metric"] == "accuracy"
    assert distilled["student"]["path"] == str(work / "task_distill" / "prediction" / "student")
    model = keras_hub.models.TextClassifier.from_preset(distilled["student"]["path"],
                                                        preprocessor=None)
    assert model.num_classes == 2 and model.backbone.num_layers == 2


@pytest.mark.slow
def test_task_runs_on_jax_checkpoint_with_orbax_and_select_on_dev(checked):
    _, results, work = checked
    assert _ok(results, "task_distill")
    for stage in ("intermediate", "prediction"):
        assert tiny.orbax_steps(work / "task_distill" / stage / "checkpoints"), stage
        with open(work / "task_distill" / stage / "selection.json") as f:
            assert json.load(f)["best"] is not None, stage
    for member in ("member_0", "member_1"):
        assert tiny.orbax_steps(work / "finetune" / "finetune" / member / "checkpoints"), member


_READ_ON_TF = """
import sys
from tinybert_tf import main
workdir, teacher, *task = sys.argv[1:]
common = ["--config=task_distill:tiny", f"--workdir={workdir}", f"--config.teacher={teacher}",
          *task]
codes = [main.launch(["tinybert_tf", *common, "--config.mode=evaluate",
                      "--config.latency_runs=1"]),
         main.launch(["tinybert_tf", *common, "--config.mode=export"])]
sys.exit(max(codes))
"""


@pytest.mark.slow
def test_evaluate_and_export_on_tensorflow_read_the_jax_runs(checked):
    """The presets the JAX runs wrote (the ensemble's members, the task-distilled student), read
    by the evaluate and export modes on the TensorFlow backend."""
    _, results, work = checked
    td, assets = work / "task_distill", results["assets"]
    proc = subprocess.run(
        [sys.executable, "-c", _READ_ON_TF, str(td), str(work / "finetune" / "teacher"),
         "--config.task=file", f"--config.data.train_file={assets['train']}",
         f"--config.data.eval_file={assets['dev']}",
         f"--config.data.seq_len={modes.SIZES['tiny'].seq}"],
        cwd=ROOT, env=dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Keras backend tensorflow" in proc.stdout
    with open(td / "report.json") as f:
        rows = {row["name"]: row for row in json.load(f)["models"]}
    assert {"teacher 0", "teacher 1", "ensemble", "student"} <= set(rows)
    assert all(0 <= row["metrics"]["accuracy"] <= 1 for row in rows.values())
    with open(td / "export" / "student" / "1" / "assets.extra" / "labels.txt") as f:
        assert f.read().split() == ["neg", "pos"]


@pytest.mark.slow
def test_evaluate_on_jax(checked):
    _, results, _ = checked
    rows = {row["name"]: row for row in _ok(results, "evaluate")["rows"]}
    assert list(rows) == ["teacher 0", "teacher 1", "ensemble", "student"]
    for name, row in rows.items():
        assert 0 <= row["metrics"]["accuracy"] <= 1, name
        _finite_positive(row["params"], f"{name}.params")
        _finite_positive(row["latency_b1_s"], f"{name}.latency_b1_s")


@pytest.mark.slow
def test_exit_status_and_report(checked):
    proc, results, work = checked
    checks = {**results["modes"], "assets": results["assets"],
              "step_timing": results["step_timing"]}
    failed = sorted(name for name, r in checks.items() if r["status"] == "failed")
    assert failed == [] and proc.returncode == 0, (failed, proc.stderr[-2000:])
    assert all((work / f"{name}.out").exists() for name in results["modes"])
    # the step timing ran in `hidden`'s run: here only the modes
    assert results["step_timing"] == {"status": "skipped", "reason": "--no_timing"}
    assert "step timing skipped: --no_timing" in proc.stdout
    assert results["tensorflow_loaded"] is False  # the modes ran TensorFlow in their own processes


def test_every_command_line_key_is_in_its_config(tmp_path):
    """The launcher commands the tool builds (both sizes) name config files that exist and only
    keys those configs have (a renamed key fails here, before any run)."""
    assets = {k: str(tmp_path / k) for k in ("teacher", "corpus", "train", "dev", "transfer")}
    assets["config_dir"] = config_lib.CONFIG_DIR
    for sizes in modes.SIZES.values():
        commands = modes.plan(sizes, assets, str(tmp_path))
        assert list(commands) == list(modes.ORDER)
        for mode, argv in commands.items():
            config = next(a for a in argv if a.startswith("--config="))[len("--config="):]
            assert os.path.isfile(config), config
            c = config_lib.load(config)
            for arg in argv:
                if arg.startswith("--config."):
                    key, value = arg[len("--config."):].split("=", 1)
                    target = c
                    for part in key.split("."):
                        target = target[part]
                    if key == "mode":
                        assert value == mode
