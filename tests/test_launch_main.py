"""The launcher: modes end to end on tiny configs, strategies, a checkpoint write cut short,
one-line errors (resume after SIGKILL: tests/test_launch_train_signals.py)."""

import json
import os
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tiny
from absl import flags

from tinybert_tf import main
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import checkpoints, config_lib, distribution, modes, strategy, train
from tinybert_tf.launch.modes import run as run_mode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, variant="tiny", **overrides):
    return config_lib.load(name, variant, **overrides)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("assets")
    return {
        "teacher": tiny.write_teacher(d / "teacher"),
        "corpus": tiny.write_corpus(d / "corpus.txt"),
    }


def _weights(preset):
    return [w.numpy() for w in keras_hub.models.Backbone.from_preset(preset).weights]


def test_general_distill_end_to_end(assets, tmp_path):
    c = _config("general_distill", teacher=assets["teacher"], **{"data.train": assets["corpus"]})
    out = run_mode(c, str(tmp_path))
    student = keras_hub.models.Backbone.from_preset(out)
    assert student.num_layers == 2 and student.hidden_dim == 32
    names = {r["step"]: r for r in train.read_metrics(str(tmp_path))}
    assert sorted(names) == [2, 4, 6, 8]  # the corpus scan is not a metrics record
    with open(tmp_path / "corpus_scan.json") as f:
        scan = json.load(f)
    assert (scan["files"], scan["documents"], scan["complete"]) == (1, 200, True)
    with open(tmp_path / "metrics.jsonl") as f:  # and heads metrics.jsonl, once
        lines = [json.loads(line) for line in f]
    assert lines[0] == {"corpus_scan": scan} and all("step" in r for r in lines[1:])
    assert {"loss", "emb_loss", "att_loss", "hidden_loss", "learning_rate"} <= set(names[8])
    tags = set()
    for root, _, files in os.walk(tmp_path / "tensorboard"):
        for f in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, f)):
                tags |= {v.tag for v in event.summary.value}
    assert {"train/loss", "train/att_loss", "train/learning_rate"} <= tags
    # Restarting a finished run is a no-op that keeps the weights.
    before = _weights(out)
    run_mode(c, str(tmp_path))
    for a, b in zip(before, _weights(out)):
        np.testing.assert_array_equal(a, b)


def _twenty_steps(strategy_name, teacher, corpus):
    return _config("general_distill", teacher=teacher, strategy=strategy_name, steps=20,
                   log_every=10, checkpoint_every=20, student_dropout=0.0,
                   **{"data.train": corpus})


_MIRRORED_SCRIPT = """
import sys, numpy as np, tensorflow as tf, keras_hub
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
from test_launch_main import _twenty_steps
from tinybert_tf.launch.modes import run
teacher, corpus, workdir = sys.argv[2:5]
out = run(_twenty_steps("mirrored", teacher, corpus), workdir)
weights = keras_hub.models.Backbone.from_preset(out).weights
np.savez(workdir + "/weights.npz", *[w.numpy() for w in weights])
"""


def test_mirrored_matches_one_device(assets, tmp_path):
    """20 AdamW steps with global-norm clipping on 2 replicas == 1 device (the mirrored run in a
    fresh process: TF reuses collective keys across MirroredStrategy objects in one process; the
    one-device run here, on the 2 logical CPUs tests/conftest.py sets up)."""
    workdir = tmp_path / "mirrored"
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT, os.path.join(ROOT, "tests"), assets["teacher"],
         assets["corpus"], str(workdir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "strategy mirrored, 2 replicas" in proc.stdout, proc.stdout[-2000:]
    with np.load(workdir / "weights.npz") as data:
        mirrored = [data[k] for k in sorted(data, key=lambda k: int(k.split("_")[1]))]
    one = _weights(run_mode(_twenty_steps("cpu", assets["teacher"], assets["corpus"]),
                            str(tmp_path / "cpu")))
    assert len(one) == len(mirrored)
    for a, b in zip(one, mirrored):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_general_distill_with_minilm_v2(assets, tmp_path):
    """Relation distillation from the launcher (--config.recipe=minilm_v2)."""
    c = _config("general_distill", teacher=assets["teacher"], recipe="minilm_v2",
                relation_heads=4, student="tiny_2l_32h", **{"data.train": assets["corpus"]})
    run_mode(c, str(tmp_path))
    assert {"qq_loss", "kk_loss", "vv_loss"} <= set(train.read_metrics(str(tmp_path))[-1])


def test_distilbert_variant_runs(tmp_path):
    teacher = keras_hub.models.BertMaskedLM(tiny.backbone(num_layers=4, max_sequence_length=32),
                                            preprocessor=None)
    teacher.save_to_preset(str(tmp_path / "mlm"))
    tiny.tokenizer().save_to_preset(str(tmp_path / "mlm"))
    # strategy cpu: the one device of a CPU machine (`auto` would mirror over the two logical
    # CPUs tests/conftest.py sets up; test_mirrored_matches_one_device covers that)
    c = _config("general_distill", "distilbert", teacher=str(tmp_path / "mlm"), steps=4,
                batch_size=4, log_every=2, checkpoint_every=4, student="from_teacher:2",
                strategy="cpu",
                **{"data.train": tiny.write_corpus(tmp_path / "c.txt"), "data.seq_len": 32})
    out = run_mode(c, str(tmp_path / "run"))
    assert keras_hub.models.Backbone.from_preset(out).num_layers == 2
    assert {"kd_loss", "mlm_loss", "cos_loss"} <= set(train.read_metrics(str(tmp_path / "run"))[-1])


def _launch(args, **kw):
    cmd = [sys.executable, "-m", "tinybert_tf.main", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def test_interrupted_checkpoint_write_keeps_previous(assets, tmp_path):
    model = tiny.backbone()
    opt = keras.optimizers.Adam()
    opt.build(model.trainable_variables)
    ck = checkpoints.Checkpointer(str(tmp_path), model, opt)
    ck.save(10)
    saved = model.weights[0].numpy().copy()
    model.weights[0].assign(saved + 1.0)
    # First half of a save (data + index files) without the atomic state-file update, truncated
    # as a kill mid-write would leave it.
    prefix = ck.checkpoint.write(str(tmp_path / "ckpt-20"))
    with open(prefix + ".index", "r+b") as f:
        f.truncate(10)
    restored = checkpoints.Checkpointer(str(tmp_path), model, opt).restore()
    assert restored.endswith("ckpt-10")
    np.testing.assert_array_equal(model.weights[0].numpy(), saved)


def test_nan_stops_with_step_and_term(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    x = np.ones((64, 2), "float32")
    x[10] = np.nan  # batch 5 (0-based), i.e. step 6
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2).repeat()
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 6.*ckpt-4\."):
        train.run(model, data, str(tmp_path), total_steps=10, log_every=2, checkpoint_every=2)
    ck = checkpoints.Checkpointer(str(tmp_path / "checkpoints"), model, model.optimizer)
    assert ck.manager.latest_checkpoint.endswith("ckpt-4")
    ck.restore()
    assert np.isfinite(model.weights[0].numpy()).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.nonexistent_key=1"], "nonexistent_key"),
        (["--config.teacher=/no/such/teacher"], "teacher path /no/such/teacher does not exist"),
        (["--config.strategy=tpu", "--config.tpu=local"], "TPU 'local' not reachable"),
        (["--config.strategy=multi_worker"], "keras#20585"),
        (["--config.precision=fp8"], "Unknown precision 'fp8'"),
    ],
)
def test_bad_flags_give_one_line_errors(assets, tmp_path, capsys, args, message):
    base = ["main", "--config=general_distill:tiny", f"--workdir={tmp_path / 'w'}",
            f"--config.data.train={assets['corpus']}"]
    if not any(a.startswith("--config.teacher") for a in args):
        base.append(f"--config.teacher={assets['teacher']}")
    assert main.launch([*base, *args]) != 0  # in this process (tests/test_launch_validate.py has more)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("Error:", "FATAL"))]
    assert len(lines) == 1 and message in lines[0], err[-1500:]
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("spec, mode, student", [
    ("task_distill", "task_distill", "tinybert_4l_312h"),
    ("task_distill:tiny", "task_distill", "tiny_2l_32h"),
    ("general_distill:distilbert", "general_distill", "from_teacher:6"),
    ("configs/general_distill.py:tiny", "general_distill", "tiny_2l_32h"),
    (os.path.join(config_lib.CONFIG_DIR, "task_distill.py") + ":tiny", "task_distill",
     "tiny_2l_32h"),
])
def test_config_flag_reads_names_and_paths_from_any_directory(spec, mode, student, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["main", f"--config={spec}", "--workdir=w", "--config.seed=7"]
    fv = flags.FlagValues()
    config, _, _ = main.define_flags(fv, argv)
    fv(argv)
    assert (config.value.mode, config.value.student, config.value.seed) == (mode, student, 7)


def test_workdir_with_other_config_is_refused(assets, tmp_path):
    c = _config("general_distill", teacher=assets["teacher"], **{"data.train": assets["corpus"]})
    modes.claim_workdir(str(tmp_path), c.to_dict())
    c.seed = 7
    with pytest.raises(LaunchError, match=r"differs in: seed.*--config.overwrite=True"):
        run_mode(c, str(tmp_path))


def test_strategy_factory_every_value():
    assert isinstance(strategy.tf_strategy("cpu"), tf.distribute.OneDeviceStrategy)
    assert isinstance(strategy.tf_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    mirrored = strategy.tf_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    assert strategy.steps_per_execution(mirrored, 4) == 1
    assert strategy.steps_per_execution(strategy.tf_strategy("cpu"), 4) == 4
    with pytest.raises(LaunchError, match="not divisible by the 2 replicas"):
        distribution.check_batch_size(mirrored, 3)
    with pytest.raises(LaunchError, match="needs --config.tpu"):
        strategy.tf_strategy("tpu", "")
    with pytest.raises(LaunchError, match="not reachable"):
        strategy.tf_strategy("tpu", "local")
    with pytest.raises(LaunchError, match="keras#20585"):
        strategy.tf_strategy("multi_worker")
    with pytest.raises(LaunchError, match="Unknown strategy"):
        strategy.tf_strategy("gpu")


def test_bfloat16_teacher_with_mixed_precision_student(assets, tmp_path):
    """The fastest measured CPU step (bench/RESULTS.md): a bfloat16 teacher, mixed_bfloat16 student."""
    c = _config("general_distill", teacher=assets["teacher"], teacher_dtype="bfloat16",
                precision="mixed_bfloat16", **{"data.train": assets["corpus"]})
    try:
        out = run_mode(c, str(tmp_path))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    records = train.read_metrics(str(tmp_path))
    assert all(np.isfinite(r["loss"]) for r in records)
    student = keras_hub.models.Backbone.from_preset(out)
    assert all(w.dtype == "float32" for w in student.weights)
