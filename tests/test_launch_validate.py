"""Every user mistake at the launcher (and prepare_corpus) is one line `Error: ...` with an exit
code, and nothing is written to the workdir, so the fixed command is accepted afterwards."""

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error

import pytest
import tensorflow as tf
import tiny

from tinybert_tf import cli, main
from tinybert_tf.errors import Interrupted, LaunchError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=general_distill:tiny"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_input")
    (d / "empty.txt").write_text("")
    (d / "empty.tfrecord").write_bytes(b"")
    (d / "train.tsv").write_text("text\tlabel\nthe dog\t1\na cat\t0\n")
    (d / "blank.txt").write_text("\n   \n\t\n\n")
    (d / "not_a_preset").mkdir()
    (d / "not_a_preset" / "weights.h5").write_text("")
    return {"dir": d, "teacher": tiny.write_teacher(d / "teacher"),
            "corpus": tiny.write_corpus(d / "corpus.txt", docs=40)}


def _args(assets, workdir, *extra):
    args = ["main", CONFIG, f"--workdir={workdir}", f"--config.teacher={assets['teacher']}",
            f"--config.data.train={assets['corpus']}", "--config.steps=2",
            "--config.checkpoint_every=2"]
    return args + [a.format(**assets) for a in extra]


def _error_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


# (case, extra launcher flags, expected substring of the one line, exit code)
CASES = [
    ("empty corpus", ["--config.data.train={dir}/empty.txt"],
     "empty.txt' has no documents: 1 file(s), 0 lines, all empty or whitespace-only", 1),
    ("all-blank corpus", ["--config.data.train={dir}/blank.txt"],
     "blank.txt' has no documents: 1 file(s), 4 lines", 1),
    ("missing corpus glob", ["--config.data.train={dir}/nope/*.txt"],
     "No file matches corpus pattern", 1),
    ("corpus glob of directories only", ["--config.data.train={dir}/not_a_*"],
     "matches only directories", 1),
    ("directory that is not a preset", ["--config.teacher={dir}/not_a_preset"],
     "is a directory but not a keras-hub preset (no config.json)", 1),
    ("unknown preset name", ["--config.teacher=bert_nonexistent_en"],
     "'bert_nonexistent_en' is neither a directory nor a keras-hub preset name", 1),
    ("missing teacher path", ["--config.teacher={dir}/no/such/teacher"],
     "teacher path", 1),
    ("student spec", ["--config.student=from_teacher:x"], "use from_teacher:<layers >= 1>", 1),
    ("batch_size=0", ["--config.batch_size=0"], "batch_size=0; pass --config.batch_size", 1),
    ("steps=0", ["--config.steps=0"], "steps=0: nothing to train", 1),
    ("checkpoint_every not a multiple", ["--config.checkpoint_every=3", "--config.steps=8"],
     "checkpoint_every (3) must be a multiple of log_every (2)", 1),
    ("unknown precision", ["--config.precision=fp8"], "Unknown precision 'fp8'", 1),
    ("tpu=my-tpu", ["--config.strategy=tpu", "--config.tpu=my-tpu"],
     "TPU 'my-tpu' not reachable", 1),
    ("workdir under a file", ["--workdir={dir}/empty.txt/run"], "is a file, not a directory", 1),
    ("unknown config key", ["--config.data.trian=x"], "unknown config key trian; did you mean train?", 2),
    ("empty pretokenized shards", ["--config.data.format=pretokenized",
                                   "--config.data.train={dir}/empty.tfrecord"],
     "hold no sequences; re-run tinybert-tf-prepare-corpus", 1),
    # The recipe against the presets' sizes (teacher: 4 layers, 2 heads, width 32).
    ("layer map that does not fit", ["--config.layer_map=0,1,9"],
     "layer_map [0, 1, 9] must list 2 teacher layers, each in 0..3.", 1),
    ("relation heads that do not divide the widths",
     ["--config.recipe=minilm_v2", "--config.relation_heads=5"],
     "relation_heads=5 must divide the attention widths", 1),
    ("MiniLM teacher layer beyond the teacher", ["--config.recipe=minilm_v2",
                                                  "--config.relation_heads=2",
                                                  "--config.teacher_layer=4"],
     "teacher_layer=4 is out of range for a 4-layer teacher; use 0..3 or -1", 1),
    ("student deeper than its teacher", ["--config.student=from_teacher:9"],
     "student 'from_teacher:9': A student initialised from the teacher needs 1..4 layers", 1),
    ("loss weight that is not a number", ["--config.loss_weights=att=x"],
     "loss_weights item 'att=x' is not term=number", 1),
]
TASK = ["--config=task_distill:tiny", "--config.teacher={teacher}", "--config.task=file",
        "--config.data.train_file={dir}/train.tsv"]
TASK_CASES = [
    ("no train_file", ["--config.data.train_file="], "task=file needs --config.data.train_file", 1),
    ("empty train_file", ["--config.data.train_file={dir}/empty.txt"],
     "data.train_file: {dir}/empty.txt is empty", 1),
    ("missing eval_file", ["--config.data.eval_file={dir}/dev.tsv"],
     "data.eval_file: no file matches '{dir}/dev.tsv'", 1),
    ("missing transfer set", ["--config.transfer_file={dir}/aug*.tsv"],
     "transfer_file: no file matches", 1),
    ("unknown task", ["--config.task=sst3"], "Unknown task 'sst3'", 1),
    ("stages", ["--config.stages=all"], "stages must be intermediate, prediction or both", 1),
    ("epochs=0", ["--config.mode=finetune", "--config.finetune.epochs=0"],
     "finetune.epochs=0: nothing to train", 1),
    ("global learning rate in a task mode", ["--config.optimizer.learning_rate=1e-3"],
     "unknown config key optimizer.learning_rate; task modes set each stage's own rate", 2),
    ("step 1's relation heads", ["--config.intermediate.recipe=minilm_v2",
                                 "--config.intermediate.relation_heads=5"],
     "relation_heads=5 must divide the attention widths", 1),
    ("transfer_only without a transfer set", ["--config.transfer_only=True"],
     "transfer_only=True needs --config.transfer_file", 1),
]


@pytest.mark.parametrize("case, extra, message, code", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(assets, tmp_path, capsys, case, extra,
                                                  message, code):
    workdir = tmp_path / "run"
    assert main.launch(_args(assets, workdir, *extra)) == code
    line = _error_line(capsys.readouterr().err)
    assert message in line, line
    assert not workdir.exists(), os.listdir(workdir)


@pytest.mark.parametrize("case, extra, message, code", TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_bad_task_input_is_one_line_and_writes_nothing(assets, tmp_path, capsys, case, extra,
                                                       message, code):
    workdir = tmp_path / "run"
    argv = ["main", f"--workdir={workdir}", *(a.format(**assets) for a in TASK + extra)]
    assert main.launch(argv) == code
    line = _error_line(capsys.readouterr().err)
    assert message.format(**assets) in line, line
    assert not workdir.exists()


def test_fixed_typo_is_accepted_and_an_existing_run_is_kept(assets, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main.launch(_args(assets, workdir, "--config.data.train={dir}/corpus.tx")) == 1
    assert "No file matches" in _error_line(capsys.readouterr().err)
    assert not workdir.exists()
    assert main.launch(_args(assets, workdir)) == 0  # not "differs in: data"
    out = capsys.readouterr().out
    scan = [ln for ln in out.splitlines() if ln.startswith("Corpus scan")]
    pieces, split = _pieces(assets, cap=30)
    assert scan == ["Corpus scan: 1 file(s), 40 documents, 0 empty lines skipped, 0 lines with "
                    f"invalid UTF-8 replaced, {pieces:,} word pieces, {split} documents over 30 "
                    "pieces split into several sequences."], out[-2000:]
    assert (workdir / "student" / "config.json").exists()
    record = tf.io.gfile.GFile(str(workdir / "corpus_scan.json")).read()
    assert '"documents": 40' in record and '"complete": true' in record
    before = _snapshot(workdir)
    for extra in (["--config.data.train={dir}/blank.txt"], ["--config.batch_size=0"],
                  ["--config.teacher={dir}/not_a_preset"]):
        assert main.launch(_args(assets, workdir, *extra)) == 1
        _error_line(capsys.readouterr().err)
        assert _snapshot(workdir) == before


@pytest.mark.parametrize("mode, extra, message", [
    ("general_distill", ["--config.layer_map=0,1,9"], "must list 2 teacher layers, each in 0..3"),
    ("task_distill", ["--config.intermediate.recipe=minilm_v2",
                      "--config.intermediate.relation_heads=5"],
     "relation_heads=5 must divide the attention widths"),
], ids=["layer map", "relation heads"])
def test_a_distiller_that_cannot_be_built_after_the_claim_unclaims(assets, tmp_path, capsys,
                                                                    monkeypatch, mode, extra,
                                                                    message):
    """Presets whose sizes the checks cannot read (as a keras-hub preset name's, loaded only by
    the mode): the Distiller's own check fails after the claim, still in one line, and the
    workdir is un-claimed."""
    from tinybert_tf.launch import validate

    monkeypatch.setattr(validate, "_preset_shape", lambda path, head: None)
    workdir = tmp_path / "run"
    if mode == "general_distill":
        argv = _args(assets, workdir, *extra)
    else:  # a classifier teacher and full batches: the mode gets as far as the Distiller
        teacher = tiny.write_teacher(tmp_path / "teacher", num_classes=2)
        argv = ["main", f"--workdir={workdir}", "--config=task_distill:tiny",
                f"--config.teacher={teacher}", "--config.task=file", "--config.eval_every=-1",
                f"--config.data.train_file={tiny.write_task(tmp_path / 'train.tsv', 8, 0)}",
                *extra]
    assert main.launch(argv) == 1
    printed = capsys.readouterr()
    assert "Keras backend" in printed.out  # the mode started: the workdir had been claimed
    assert message in _error_line(printed.err)
    assert not workdir.exists()


def _pieces(assets, cap):
    """(word pieces, documents over `cap` pieces) of the corpus, counted line by line here."""
    tok = tiny.tokenizer()
    with open(assets["corpus"]) as f:
        sizes = [int(tf.size(tok(line.strip()))) for line in f if line.strip()]
    return sum(sizes), sum(n > cap for n in sizes)


def _snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            out[os.path.relpath(path, root)] = (os.path.getsize(path), os.path.getmtime(path))
    return out


def test_read_only_workdir(assets, tmp_path):
    """chmod means nothing to root: as root the launcher runs without CAP_DAC_OVERRIDE."""
    parent = tempfile.mkdtemp(dir=tmp_path)
    os.chmod(parent, 0o555)
    cmd = [sys.executable, "-m", "tinybert_tf.main", *_args(assets, f"{parent}/run")[1:]]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: chmod does not stop root")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    os.chmod(parent, 0o755)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"workdir {parent}/run is not writable" in _error_line(proc.stderr)
    assert os.listdir(parent) == []


def test_prepare_corpus_on_an_empty_file(assets, tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(tiny.VOCAB) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tinybert_tf.tools.prepare_corpus",
         f"--input={assets['dir']}/empty.txt,{assets['dir']}/blank.txt",
         f"--output_dir={tmp_path / 'out'}", f"--vocab={tmp_path / 'vocab.txt'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "has no documents: 2 file(s), 4 lines" in _error_line(proc.stderr)
    assert not (tmp_path / "out").exists()


def test_unknown_config_names_the_packaged_ones(tmp_path, capsys):
    assert main.launch(["main", "--config=configs/nope.py", f"--workdir={tmp_path / 'run'}"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "no config file configs/nope.py and no packaged config named nope" in line
    assert "use one of general_distill, task_distill (e.g. --config=task_distill:tiny)" in line
    assert not (tmp_path / "run").exists()


def test_config_file_that_fails_to_load(tmp_path, capsys):
    config = tmp_path / "my_config.py"
    config.write_text("open('no_such_vocab.txt')\n")
    assert main.launch(["main", f"--config={config}:tiny", f"--workdir={tmp_path / 'run'}"]) == 2
    assert "config file did not load: [Errno 2] No such file or directory: 'no_such_vocab.txt'" \
        in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_verbose_keeps_the_traceback(assets, tmp_path):
    with pytest.raises(LaunchError, match="batch_size=0"):
        main.launch(_args(assets, tmp_path / "run", "--config.batch_size=0", "--verbose"))


@pytest.mark.parametrize("err, message, code", [
    (Interrupted("Stopped by SIGTERM at step 4; checkpoint kept.", 143),
     "Stopped by SIGTERM at step 4", 143),
    (FloatingPointError("loss became nan at step 6"), "Error: loss became nan at step 6", 1),
    (tf.errors.PermissionDeniedError(None, None, "/ro/config.json; Permission denied"),
     "Error: permission denied: /ro/config.json", 1),
    (urllib.error.URLError("Name or service not known"), "Error: network lookup failed", 1),
    (FileNotFoundError("labels.json not found"), "Error: labels.json not found", 1),
])
def test_report_maps_user_errors_to_one_line(capsys, err, message, code):
    def fail():
        raise err

    with pytest.raises(SystemExit) as done:
        cli.report(fail)
    assert done.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_report_keeps_the_traceback_of_a_bug():
    def bug():
        raise KeyError("internal")

    with pytest.raises(KeyError):
        cli.report(bug)


def test_report_names_a_preset_keras_hub_cannot_load(assets, capsys):
    import keras_hub

    with pytest.raises(SystemExit) as done:
        cli.report(keras_hub.tokenizers.Tokenizer.from_preset, "no_such_preset_name")
    assert done.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("Error: keras-hub could not load a preset: Unknown preset identifier")
    assert "(Received: preset='no_such_preset_name'); pass a preset directory" in line
