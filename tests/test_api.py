"""The Python API (`tinybert_tf.api`): every mode from Python over the launcher's code path.

Each function writes the files the command line writes (the same config.json, the same trained
weights), reads its results back from them, takes in-memory data and Keras callbacks, raises
`UserError` in one line, can be interrupted and called again to resume in the same process, and
leaves the process's dtype policy and random state as it found them."""

import json
import os
import random
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

import tinybert_tf
from tinybert_tf import main
from tinybert_tf.launch import progress


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    return {"teacher": tiny.write_teacher(d / "pre"), "train": tiny.write_task(d / "train.tsv", 32, 0),
            "dev": tiny.write_task(d / "dev.tsv", 16, 1), "test": tiny.write_task(d / "test.tsv", 8, 2)}


def _rows(path):
    """(text, label) tuples of a task file: the same data in memory."""
    with open(path) as f:
        return [tuple(line.rstrip("\n").split("\t")) for line in list(f)[1:]]


def _selection(run_dir):
    with open(os.path.join(run_dir, "selection.json")) as f:
        return json.load(f)


def _weights(preset):
    import keras_hub

    return [w.numpy() for w in keras_hub.models.TextClassifier.from_preset(preset).weights]


def test_every_mode_from_python_with_in_memory_data(files, tmp_path):
    keras.mixed_precision.set_global_policy("float32")
    np.random.seed(7)
    random.seed(7)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    dataset = tf.data.Dataset.from_tensor_slices(
        {"text": [t for t, _ in _rows(files["train"])], "label": [y for _, y in _rows(files["train"])]})
    teacher = tinybert_tf.finetune(tmp_path / "ft", files["teacher"], train=dataset,
                                   eval=files["dev"], variant="tiny", precision="mixed_bfloat16",
                                   finetune={"epochs": 2, "learning_rate": 3e-3})
    assert teacher.preset == str(tmp_path / "ft" / "teacher") and os.path.isdir(teacher.preset)
    with open(tmp_path / "ft" / "inputs" / "train.jsonl") as f:  # the rows as given, in order
        assert [tuple(json.loads(line).values()) for line in f] == _rows(files["train"])
    best = _selection(tmp_path / "ft" / "finetune")["best"]
    assert teacher.best["finetune"] == tinybert_tf.Score("accuracy", best["value"], best["step"],
                                                         best["scores"], True)
    assert [s for s, _ in teacher.dev_curves["finetune"]] == [8, 16]
    assert len(teacher.loss_curves["finetune"]) == 8  # log_every 2 over 16 steps
    # the process as it was: the run's mixed_bfloat16 and seed 0 did not stay behind
    assert keras.mixed_precision.global_policy().name == "float32"
    assert (np.random.get_state()[1] == np_state).all() and random.getstate() == py_state

    student = tinybert_tf.distill_task(
        tmp_path / "td", [teacher.preset], "from_teacher:2", train=files["train"],
        eval=files["dev"], transfer=["teacher of the", "a b c"], variant="tiny")
    assert student.preset == str(tmp_path / "td" / "prediction" / "student")
    assert set(student.best) == {"intermediate", "prediction"}
    assert student.best["intermediate"].metric == "loss"
    assert not student.best["intermediate"].higher_is_better
    with open(tmp_path / "td" / "config.json") as f:
        assert json.load(f)["transfer_file"] == str(tmp_path / "td" / "inputs" / "transfer.txt")

    table = tinybert_tf.compare(tmp_path / "cmp", teacher.preset, {"tiny": student.preset},
                                train=files["train"], eval=files["dev"], test=files["test"],
                                split="test", variant="tiny", latency_runs=1)
    assert [r["name"] for r in table.rows] == ["teacher", "tiny"] and table.split == "test"
    assert "| tiny |" in table.markdown
    exported = tinybert_tf.export_model(tmp_path / "td", variant="tiny")
    assert exported.path == str(tmp_path / "td" / "export" / "student" / "1")
    assert os.path.isfile(os.path.join(exported.path, "saved_model.pb"))
    served = exported.load().signatures["serving_text"](text=tf.constant(["teacher of the"]))
    assert served["probabilities"].shape == (1, 2)


def test_the_same_config_from_python_and_the_command_line_writes_the_same_run(files, tmp_path):
    keys = {"finetune.learning_rate": 3e-3, "seed": 3, "deterministic": True}
    run = tinybert_tf.finetune(tmp_path / "py", files["teacher"], train=files["train"],
                               eval=files["dev"], config="task_distill:tiny", **keys)
    argv = ["tinybert_tf.main", "--config=task_distill:tiny", f"--workdir={tmp_path / 'cli'}",
            "--config.mode=finetune", f"--config.teacher={files['teacher']}",
            "--config.task=file", f"--config.data.train_file={files['train']}",
            f"--config.data.eval_file={files['dev']}",
            *[f"--config.{k}={v}" for k, v in keys.items()]]
    assert main.launch(argv) == 0
    configs = []
    for name in ("py", "cli"):
        with open(tmp_path / name / "config.json") as f:
            configs.append(json.load(f))
    assert configs[0] == configs[1]
    assert _selection(tmp_path / "py" / "finetune") == _selection(tmp_path / "cli" / "finetune")
    for a, b in zip(_weights(run.preset), _weights(str(tmp_path / "cli" / "teacher"))):
        np.testing.assert_allclose(a, b, atol=1e-6)


class _InterruptAt(keras.callbacks.Callback):
    """Ctrl-C (SIGINT to this process) once the run reaches `step`; records every chunk's logs."""

    def __init__(self, step):
        super().__init__()
        self.step, self.logs = step, []

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.step and step == self.step:
            self.step = 0
            os.kill(os.getpid(), signal.SIGINT)

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs or {}))


def test_an_interrupted_run_resumes_when_called_again(files, tmp_path, capsys):
    kwargs = dict(train=files["train"], eval=files["dev"], variant="tiny",
                  finetune={"epochs": 2})
    stop = _InterruptAt(6)
    with pytest.raises(tinybert_tf.Interrupted, match="stopped at step 6, checkpoint written"):
        tinybert_tf.finetune(tmp_path / "run", files["teacher"], callbacks=[stop], **kwargs)
    assert not (tmp_path / "run" / "workdir.lock").exists()
    assert keras.mixed_precision.global_policy().name == "float32"
    seen = _InterruptAt(0)
    run = tinybert_tf.finetune(tmp_path / "run", files["teacher"], callbacks=[seen], **kwargs)
    assert "Resuming from" in capsys.readouterr().out
    steps = [s for s, _ in run.loss_curves["finetune"]]
    assert steps == [2, 4, 6, 8, 10, 12, 14, 16]
    # the caller's callback ran in every chunk after the resume, evaluations' scores included
    assert len(seen.logs) == 5 and "val_accuracy" in seen.logs[0]  # chunk 6-8 ends epoch 1


def test_a_mistake_is_one_user_error(files, tmp_path):
    cases = [
        (dict(finetune={"epoch": 2}), "unknown config key finetune.epoch;"),
        (dict(data={"seq_len": "long"}), "config key data.seq_len:"),
        (dict(train=[("a text",)] * 2 + [{"x": 1}]), "row 3 of the data has no 'text' key"),
    ]
    for kwargs, message in cases:
        kwargs = {"train": files["train"], "eval": files["dev"], **kwargs}
        with pytest.raises(tinybert_tf.UserError, match=message) as err:
            tinybert_tf.finetune(tmp_path / "bad", files["teacher"], variant="tiny", **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(tinybert_tf.UserError, match="in use|no preset|does not exist|not a") as err:
        tinybert_tf.finetune(tmp_path / "bad", str(tmp_path / "missing"), train=files["train"],
                             eval=files["dev"], variant="tiny")
    assert "\n" not in str(err.value) and not (tmp_path / "bad").exists()
    with pytest.raises(tinybert_tf.UserError, match="already imported with the tensorflow"):
        tinybert_tf.finetune(tmp_path / "bad", files["teacher"], train=files["train"],
                             variant="tiny", backend="jax")


def test_progress_is_a_widget_in_a_jupyter_kernel(monkeypatch):
    class ZMQInteractiveShell:  # what IPython's get_ipython() returns in a Jupyter kernel
        pass

    ipython = type(os)("IPython")
    ipython.get_ipython = lambda: None
    monkeypatch.setitem(__import__("sys").modules, "IPython", ipython)
    assert not progress.in_notebook()  # IPython imported, no kernel (a terminal, a script)
    ipython.get_ipython = ZMQInteractiveShell
    assert progress.in_notebook()
    with progress.Progress(4, label="stage") as shown:
        assert shown.notebook and shown.bar is not None
        assert type(shown.bar).__module__.startswith("tqdm")
    assert shown.bar is None
