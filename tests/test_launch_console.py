"""A console that tells the truth: the stage plan, the learning-rate schedule and the steps run
agree (length buckets included), evaluations fall at epoch ends, one progress display counts the
real steps, and a run of the launcher prints no Python warning and no TensorFlow C++ log line."""

import io
import json
import os
import re
import subprocess
import sys
import warnings

import h5py
import keras
import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf import main
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import builders, config_lib, hardware, progress, selection, train
from tinybert_tf.launch.modes import run as run_mode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- chunks end at log steps, at evaluation steps and at the schedule's last step ---------------


def test_chunk_ends_fall_on_logs_evaluations_and_the_last_step():
    model = tiny.dense_model()
    ends = train.chunk_ends(model, 504, 50, 100, eval_every=168)
    assert ends == sorted({*range(50, 504, 50), 168, 336, 504})
    assert train.chunk_ends(model, 36, 100, 1000) == [36]  # a run shorter than one log
    with pytest.raises(LaunchError, match="multiple of log_every"):
        train.chunk_ends(model, 36, 5, 12)


def test_segments_share_a_fit_per_chunk_length_and_finish_a_chunk_resumed_mid_way():
    ends = [5, 10, 12, 15, 20, 24]
    assert train._segments(0, ends) == [(0, 0, 2, 5), (10, 2, 3, 2), (12, 3, 4, 3),
                                        (15, 4, 5, 5), (20, 5, 6, 4)]
    # Resumed at step 8 (a signal mid-chunk): steps 9-10 end that chunk (and share a fit with
    # the next chunk, of 2 steps too); then as an uninterrupted run.
    assert train._segments(8, ends) == [(8, 1, 3, 2), (12, 3, 4, 3), (15, 4, 5, 5),
                                        (20, 5, 6, 4)]
    assert train._segments(24, ends) == []


# ---- the progress display -----------------------------------------------------------------------


def test_plain_progress_is_one_line_per_chunk_with_the_stage_counts():
    out = io.StringIO()
    shown = progress.Progress(10, start=4, per_epoch=4, label="finetune", stream=out)
    with shown:
        for epoch, steps in enumerate((4, 2)):
            shown.on_epoch_begin(epoch)
            for batch in range(steps):
                shown.on_train_batch_end(batch, {"loss": 0.5, "accuracy": 0.25})
            shown.on_epoch_end(epoch, {"loss": 0.5, "accuracy": 0.25, "val_accuracy": 1.0})
    lines = out.getvalue().splitlines()
    assert [line.split(" · loss")[0] for line in lines] == [
        "[finetune] epoch 2/3 · step 8/10", "[finetune] epoch 3/3 · step 10/10"]
    assert "accuracy 0.2500" in lines[0] and "val_" not in lines[0] and "\r" not in out.getvalue()


def test_live_bar_prints_lines_above_itself():
    out = io.StringIO()
    shown = progress.Progress(8, per_epoch=4, label="x", stream=out, live=True)
    with shown:
        shown.on_epoch_begin(0)
        for batch in range(4):
            shown.on_train_batch_end(batch, {"loss": 0.25})
        shown.on_epoch_end(0, {"loss": 0.25})
        print("eval at step 4: m 1.0000")
    text = out.getvalue()
    assert "[x] epoch 1/2" in text and "step 4/8" in text and "loss 0.2500" in text
    assert "\neval at step 4: m 1.0000\n" in text.replace("\r", "\n")  # a line of its own


# ---- the plan, the schedule and the steps run ---------------------------------------------------


def _task_file(path, short, long, seed=0):
    """Rows of 4-8 words (bucket 16) and of 20-26 words (bucket 32, at seq_len 32), mixed."""
    rng = np.random.default_rng(seed)
    lengths = [int(rng.integers(4, 9)) for _ in range(short)]
    lengths += [int(rng.integers(20, 27)) for _ in range(long)]
    rng.shuffle(lengths)
    with open(path, "w") as f:
        f.write("text\tlabel\n")
        for i, n in enumerate(lengths):
            words = list(rng.choice(tiny.WORDS[:30], size=n))
            if i % 2:
                words[int(rng.integers(0, n))] = "teacher"
            f.write(" ".join(words) + "\t" + ("pos" if i % 2 else "neg") + "\n")
    return str(path)


def _epoch_batches_by_hand(path, batch, buckets):
    """Full batches of one epoch, counted from the rows' token lengths: each length bucket drops
    its own remainder (no buckets: one bucket)."""
    tokenizer = tiny.tokenizer()
    texts = [line.split("\t")[0] for line in open(path).read().splitlines()[1:]]
    counts = {}
    for text in texts:
        length = min(32, len(tokenizer(text)) + 2)  # [CLS] ... [SEP]
        bucket = next(b for b in buckets if length <= b) if buckets else 0
        counts[bucket] = counts.get(bucket, 0) + 1
    return sum(n // batch for n in counts.values())


@pytest.mark.parametrize("buckets", ["16,32", ""], ids=["bucketed", "unbucketed"])
def test_plan_schedule_and_steps_run_agree(tmp_path, monkeypatch, capsys, buckets):
    rows = (31, 22)  # 53 rows: ceil(53 / 4) = 14 batches, fewer full ones per epoch
    train_file = _task_file(tmp_path / "train.tsv", *rows)
    expected = _epoch_batches_by_hand(train_file, 4, (16, 32) if buckets else ())
    assert expected < 14
    seen = {}
    real_run = train.run

    def recording_run(model, data, workdir, total_steps, **kwargs):
        seen["schedule"] = model.optimizer.get_config()["learning_rate"]["config"]["total_steps"]
        real_run(model, data, workdir, total_steps, **kwargs)
        seen["steps_run"] = selection.current_step(model)

    monkeypatch.setattr(train, "run", recording_run)
    c = config_lib.load("task_distill", "tiny", mode="finetune", teacher=tiny.write_teacher(
        tmp_path / "pre"), stall_intervals=0, log_every=5, checkpoint_every=10, **{
        "task": "file", "data.train_file": train_file, "data.buckets": buckets,
        "data.eval_file": tiny.write_task(tmp_path / "dev.tsv", 16, 1),
        "finetune.epochs": 3, "finetune.patience": 0})
    run_mode(c, str(tmp_path / "run"))
    out = capsys.readouterr().out
    total = 3 * expected
    assert f"[finetune] 3 epochs x {expected} steps = {total} steps" in out
    assert seen == {"schedule": total, "steps_run": total}
    run_dir = str(tmp_path / "run" / "finetune")
    records = train.read_metrics(run_dir)
    # Chunk ends: every log (5 steps), every epoch end, the last step; lr 0 only at the last.
    assert [r["step"] for r in records] == sorted({*range(5, total, 5), expected, 2 * expected,
                                                   total})
    assert records[-1]["learning_rate"] == 0.0
    assert all(r["learning_rate"] > 0 for r in records[:-1])
    with open(os.path.join(run_dir, "selection.json")) as f:
        assert [h["step"] for h in json.load(f)["history"]] == [expected, 2 * expected, total]
    assert f"epoch 1/3 · step {expected}/{total} ·" in out
    assert f"epoch 3/3 · step {total}/{total} ·" in out
    assert not re.search(r"^Epoch \d+/\d+", out, re.M)  # no Keras per-chunk lines


# ---- the launcher's console: no warnings, no TensorFlow C++ log lines ---------------------------


def test_verbose_is_read_from_the_command_line_before_absl():
    assert main.verbose_in(["m", "--verbose"]) and main.verbose_in(["m", "-verbose=true"])
    assert not main.verbose_in(["m", "--verbose", "--noverbose"])
    assert not main.verbose_in(["m", "--verbose=false"]) and not main.verbose_in(["m"])
    assert not main.verbose_in(["m", "--config.verbose=1"])


def test_tensorflow_log_level_unless_verbose_or_set():
    env = {}
    assert hardware.quiet_tensorflow(False, env) and env["TF_CPP_MIN_LOG_LEVEL"] == "3"
    env = {}
    assert not hardware.quiet_tensorflow(True, env) and env == {}
    env = {"TF_CPP_MIN_LOG_LEVEL": "1"}
    assert not hardware.quiet_tensorflow(False, env) and env["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_start_up_filter_drops_tensorflow_lines_only(capfd):
    lines = ["WARNING: All log messages before absl::InitializeLog() is called are written to "
             "STDERR\n",
             "I0000 00:00:1796285077.205964    8890 port.cc:153] oneDNN custom operations are on.\n",
             "E0000 00:00:1796284740.923195    4934 cuda_platform.cc:52] failed call to cuInit\n",
             "Traceback (most recent call last): a real one\n"]
    with hardware.native_start_up_filtered(True):
        for line in lines:
            os.write(2, line.encode())
    assert capfd.readouterr().err == lines[-1]
    with hardware.native_start_up_filtered(False):
        os.write(2, lines[1].encode())
    assert capfd.readouterr().err == lines[1]


def _shell_env():
    """This process's environment without TF_CPP_MIN_LOG_LEVEL, as a user's shell has it."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


@pytest.mark.parametrize("script", ["examples.stdlib.demo", "examples.stdlib.task_proof"])
def test_example_scripts_start_without_tensorflow_lines(script):
    out = subprocess.run([sys.executable, "-c", f"import {script}, tensorflow"], cwd=ROOT,
                         env=_shell_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]


def _launch(args):
    return subprocess.run([sys.executable, "-m", "tinybert_tf.main", *args], cwd=ROOT,
                          env=_shell_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("console")
    teacher = tiny.write_teacher(d / "pre")
    general = _launch(["--config=general_distill:tiny", f"--workdir={d / 'gd'}",
                       f"--config.teacher={teacher}",
                       f"--config.data.train={tiny.write_corpus(d / 'corpus.txt')}"])
    task = _launch(["--config=task_distill:tiny", f"--workdir={d / 'ft'}",
                    "--config.mode=finetune", f"--config.teacher={teacher}",
                    "--config.task=file", "--config.stall_intervals=0",
                    f"--config.data.train_file={tiny.write_task(d / 'train.tsv', 48, 0)}",
                    f"--config.data.eval_file={tiny.write_task(d / 'dev.tsv', 16, 1)}"])
    return {"dir": d, "general": general, "finetune": task}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["general", "finetune"])
def test_a_launcher_run_prints_no_warning_and_no_tensorflow_log_line(cli_runs, mode):
    done = cli_runs[mode]
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    noise = [line for line in text.splitlines()
             if "warning" in line.lower() or hardware.TF_LOG_LINE.match(line)
             or re.match(r"Epoch \d+/\d+", line)]
    assert noise == [], text[-3000:]
    label = "general_distill" if mode == "general" else "finetune"
    assert re.search(rf"^\[{label}\] .*step (\d+)/\1 · loss", done.stdout, re.M), done.stdout


@pytest.mark.slow
def test_a_written_preset_loads_without_an_optimizer_warning(cli_runs):
    script = ("import sys, keras_hub\n"
              "for path in sys.argv[1:]:\n"
              "    keras_hub.models.TextClassifier.from_preset(path)\n")
    ft = cli_runs["dir"] / "ft"
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script,
                           str(ft / "teacher"), str(ft / "teacher_last")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_save_model_writes_the_loaders_default_optimizer_and_never_a_trained_one(tmp_path):
    tokenizer = tiny.tokenizer()
    student = tiny.classifier(tiny.backbone(), 2)  # keras-hub's default compile, never trained
    builders.save_model(student, tokenizer, str(tmp_path / "student"))
    trained = tiny.classifier(tiny.backbone(), 2)
    trained.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="mse")
    trained.optimizer.build(trained.trainable_variables)
    builders.save_model(trained, tokenizer, str(tmp_path / "trained"))
    assert trained.optimizer.built  # its own optimizer is back after the save
    with h5py.File(tmp_path / "student" / "task.weights.h5") as f:
        assert sorted(f["optimizer/vars"]) == ["0", "1"]  # step, learning rate
    with h5py.File(tmp_path / "trained" / "task.weights.h5") as f:
        assert "optimizer" not in f
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras_hub.models.TextClassifier.from_preset(str(tmp_path / "student"))
    assert [str(w.message) for w in caught if "optimizer" in str(w.message)] == []
    assert int(loaded.optimizer.iterations.numpy()) == 0
