"""Token tasks from the user's own CoNLL-format files (`--config.task=file
--config.data.format=conll`): the reader (columns, sentences, -DOCSTART-, the tag column, counts,
file:line errors and skip_bad_rows), the launcher's one-line errors before the claim, and a tiny
finetune -> task_distill -> evaluate run whose entity F1 is seqeval's on its own
predictions. Real files, the real reader and pipeline; nothing mocked."""

import json
import warnings

import numpy as np
import pytest
import tiny
from seqeval.metrics import f1_score as seqeval_f1

from tinybert_tf import main
from tinybert_tf.data import conll_files, metrics, tasks
from tinybert_tf.errors import UserError
from tinybert_tf.launch import config_lib, task_data
from tinybert_tf.launch.modes import run as run_mode

# CoNLL-2003's layout: token, POS, chunk, NER; a BOM, CRLF line ends, tabs and runs of spaces.
TRAIN = ("\ufeff-DOCSTART- -X- -X- O\r\n\r\n"
         "the DT B-NP O\r\nteacher NN I-NP B-PER\r\nsaid\tVBD\tB-VP\tO\r\n\r\n"
         "model  NN B-NP B-ORG\r\nlayer NN I-NP I-ORG\r\n\r\n\r\n"
         "-DOCSTART- -X- -X- O\r\n"
         "data NN B-NP B-LOC\r\n")
TRAIN_SENTENCES = [(["the", "teacher", "said"], ["O", "B-PER", "O"]),
                   (["model", "layer"], ["B-ORG", "I-ORG"]), (["data"], ["B-LOC"])]
# The train file's line of each sentence's first token.
TRAIN_LINES = [3, 7, 12]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def _sentences(spec, split="train"):
    """[(tokens, tag names)] of a split as `task_dataset` reads it (through tf.data)."""
    rows = conll_files.conll_split_dataset(spec, split).as_numpy_iterator()
    return [([w.decode() for w in ex["tokens"]], [spec.label_names[t] for t in ex["tags"]])
            for ex in rows]


def test_sentences_tags_and_counts(tmp_path, capsys):
    path = _write(tmp_path, "train.conll", TRAIN)
    spec = tasks.load_conll_task(path)
    assert spec.kind == "token_classification" and spec.metrics == ("entity_f1",)
    # Label names: the training tags, sorted.
    assert spec.label_names == ("B-LOC", "B-ORG", "B-PER", "I-ORG", "O") and spec.num_classes == 5
    assert _sentences(spec) == TRAIN_SENTENCES
    parsed = conll_files.parse_conll(path)
    assert parsed.lines == TRAIN_LINES
    assert spec.counts("train") == {"read": 3, "used": 3, "tokens": 6, "bad_lines": 0,
                                    "docstart": 2}
    assert capsys.readouterr().out.strip() == f"{path}: 3 sentences read, 3 used (6 tokens)."
    # label_column picks another column as the tags: the chunk tags (index 2, or -2).
    for column in ("2", "-2"):
        chunks = tasks.load_conll_task(path, label_column=column)
        assert chunks.label_names == ("B-NP", "B-VP", "I-NP")
        assert _sentences(chunks)[0] == (["the", "teacher", "said"], ["B-NP", "I-NP", "B-VP"])


@pytest.mark.parametrize("label_column, message", [
    ("ner", "data.label_column='ner' with data.format=conll: pass the tag column's index "
            "(0-based, -1 = the last), e.g. --config.data.label_column=3."),
    ("0", ":3: data.label_column=0 but the line has 4 columns, the token being column 0; pass "
          "--config.data.label_column=<1..3, or -1 for the last>."),
    ("4", ":3: data.label_column=4 but the line has 4 columns"),
    ("-5", ":3: data.label_column=-5 but the line has 4 columns"),
])
def test_a_tag_column_that_is_not_one_is_an_error(tmp_path, label_column, message):
    path = _write(tmp_path, "train.conll", TRAIN)
    with pytest.raises(UserError) as err:
        tasks.load_conll_task(path, label_column=label_column)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_malformed_line_is_an_error_or_its_sentence_skipped(tmp_path, capsys):
    text = "the O\nteacher B-PER\n\nmodel B-ORG\nlayer I ORG\nsaid O\n\ndata B-LOC\n"
    path = _write(tmp_path, "train.txt", text)
    with pytest.raises(UserError) as err:
        tasks.load_conll_task(path)
    assert str(err.value) == (
        f"{path}:5: 3 columns, the first token line (1) has 2; spaces and tabs separate columns, "
        "so a token or tag cannot hold one, or pass --config.data.skip_bad_rows=True to skip the "
        "sentences holding such lines.")
    spec = tasks.load_conll_task(path, skip_bad_rows=True)
    assert _sentences(spec) == [(["the", "teacher"], ["O", "B-PER"]), (["data"], ["B-LOC"])]
    assert spec.counts("train")["bad_lines"] == 1
    assert capsys.readouterr().out.strip() == (
        f"{path}: 3 sentences read, 2 used (3 tokens), skipped: 1 with a bad line.")
    one = _write(tmp_path, "one.conll", "the\nteacher\n")
    with pytest.raises(UserError, match=r"one.conll:1: one column; a CoNLL line holds a token"):
        tasks.load_conll_task(one)
    empty = _write(tmp_path, "empty.conll", "-DOCSTART- O\n\n\n")
    with pytest.raises(UserError, match=r"empty.conll: no usable sentences \(0 sentences read"):
        tasks.load_conll_task(empty)


def test_an_eval_or_test_tag_unknown_to_training_is_a_file_line_error(tmp_path):
    train = _write(tmp_path, "train.conll", TRAIN)
    dev = _write(tmp_path, "dev.conll", "the x O\n\nteacher x B-PER\nsaid x B-MISC\n")
    with pytest.raises(UserError) as err:
        tasks.load_conll_task(train, dev)
    assert str(err.value) == (
        f"{dev}:4: tag 'B-MISC' is not one of the training file's tags ['B-LOC', 'B-ORG', "
        "'B-PER', 'I-ORG', 'O']; fix the tag, or add sentences with it to the training file.")
    test = _write(tmp_path, "test.conll", "the x O\nmodel x I-LOC\n")
    with pytest.raises(UserError, match=r"test.conll:2: tag 'I-LOC' is not one of"):
        tasks.load_conll_task(train, test_file=test)


def test_first_word_piece_labels_score_as_seqeval(tmp_path):
    """The pipeline's labels line up with the file's tags: entity F1 of predictions made on the
    pipeline's [B, S] labels (some corrupted) is seqeval's on the file's own tag sequences."""
    rng = np.random.default_rng(0)
    train = _write(tmp_path, "train.conll", _tagged_text(rng, 12))
    dev = _write(tmp_path, "dev.conll", _tagged_text(rng, 10))
    spec = tasks.load_conll_task(train, dev)
    data = tasks.task_dataset(spec, "validation", tiny.tokenizer(),
                              tasks.Batching(seq_len=32, batch_size=4))
    labels = np.concatenate([np.asarray(y) for _, y, _ in data])
    noisy = np.where(rng.random(labels.shape) < 0.3,
                     rng.integers(0, spec.num_classes, labels.shape), labels)
    preds = np.where(labels == metrics.IGNORE_LABEL, 0, noisy)
    got = metrics.compute(spec, np.eye(spec.num_classes)[preds], labels)["entity_f1"]
    true = [tags for _, tags in _sentences(spec, "validation")]
    pred, k = [], 0
    for row, gold in zip(preds, labels, strict=True):
        pred.append([spec.label_names[t] for t in row[gold != metrics.IGNORE_LABEL]])
        assert len(pred[-1]) == len(true[k])
        k += 1
    assert 0 < got < 1 and got == pytest.approx(_seqeval(pred, true))
    assert metrics.compute(spec, np.eye(spec.num_classes)[np.maximum(labels, 0)], labels) == {
        "entity_f1": 1.0}


def _seqeval(pred, true):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(seqeval_f1(true, pred, zero_division=0))


def _tagged_text(rng, n, noise=0.0):
    """n CoNLL sentences of vocabulary words: teacher/student are PER, "model layer" an ORG,
    data a LOC, the rest O (learnable from the word alone); each line's tag is replaced by a
    random one with probability `noise` (so that a model that learnt the rule is not perfect)."""
    out = []
    for _ in range(n):
        words = list(rng.choice(tiny.WORDS[:12] + ["teacher", "student", "data", "model"] * 3,
                                size=int(rng.integers(3, 9))))
        lines = []
        for w in words:
            if w == "model":
                lines += ["model NN B-ORG", "layer NN I-ORG"]
            else:
                tag = {"teacher": "B-PER", "student": "B-PER", "data": "B-LOC"}.get(w, "O")
                lines.append(f"{w} NN {tag}")
        lines = [line if rng.random() >= noise else line.rsplit(" ", 1)[0] + " " + str(
            rng.choice(["O", "B-PER", "B-LOC"])) for line in lines]
        out.append("\n".join(lines) + "\n")
    return "-DOCSTART- -X- O\n\n" + "\n".join(out)


# ---- the launcher ---------------------------------------------------------------------------------

LAUNCH_CASES = [
    ("unknown format", ["--config.data.format=xml"],
     "data.format='xml' is not a task file format; use '' (.tsv, .csv or .jsonl, by extension) "
     "or 'conll' (tagged tokens)."),
    ("conll as a regression", ["--config.data.format=conll", "--config.data.regression=True"],
     "data.format=conll is token classification (one token column, tags); drop "
     "data.regression=True."),
    ("conll as a pair task", ["--config.data.format=conll", "--config.data.text_b_column=b"],
     "drop data.text_b_column=b."),
    ("conll for a TFDS task", ["--config.data.format=conll", "--config.task=sst2"],
     "data.format=conll reads --config.task=file files, but task is 'sst2'; pass "
     "--config.task=file or drop data.format."),
    ("accuracy on a token task", ["--config.data.format=conll", "--config.data.metric=accuracy"],
     "data.metric=accuracy does not fit task 'file' (token_classification); use one of "
     "entity_f1."),
    ("a CoNLL file read as a table", [],
     "train.conll: unknown file type; use .tsv, .csv or .jsonl (a CoNLL file of tagged tokens: "
     "--config.data.format=conll)."),
]


@pytest.mark.parametrize("case, extra, message", LAUNCH_CASES, ids=[c[0] for c in LAUNCH_CASES])
def test_launcher_errors_are_one_line(tmp_path, capsys, case, extra, message):
    workdir = tmp_path / "run"
    argv = ["main", f"--workdir={workdir}", "--config=task_distill:tiny", "--config.mode=finetune",
            f"--config.teacher={tiny.write_teacher(tmp_path / 'pre')}", "--config.task=file",
            f"--config.data.train_file={_write(tmp_path, 'train.conll', TRAIN)}", *extra]
    assert main.launch(argv) == 1
    printed = capsys.readouterr()
    lines = [line for line in printed.err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], printed.err[-2000:]
    assert not workdir.exists()


@pytest.mark.slow
def test_finetune_distil_evaluate_export_a_conll_file_task(tmp_path):
    """A CoNLL train/dev pair through the task modes, as TFDS conll2003 runs: selection on
    entity F1; the report's entity F1 of each model is seqeval's on its dev predictions."""
    from tinybert_tf.distill import heads

    rng = np.random.default_rng(1)
    common = {"task": "file", "data.format": "conll",
              "data.train_file": _write(tmp_path, "train.conll", _tagged_text(rng, 48)),
              "data.eval_file": _write(tmp_path, "dev.conll", _tagged_text(rng, 16, 0.3))}

    def config(**overrides):
        return config_lib.load("task_distill", "tiny", **common, **overrides)

    teacher = run_mode(config(mode="finetune", teacher=tiny.write_teacher(tmp_path / "pre"), **{
        "finetune.epochs": 6, "finetune.learning_rate": 5e-3}), str(tmp_path / "ft"))
    state = json.load(open(tmp_path / "ft" / "finetune" / "selection.json"))
    assert state["metric"] == "entity_f1" and 0 < state["best"]["value"] < 1
    student = run_mode(config(mode="task_distill", teacher=teacher, **{
        "intermediate.epochs": 1, "prediction.epochs": 2, "prediction.learning_rate": 5e-3}),
        str(tmp_path / "td"))
    assert isinstance(heads.load_task_model(student), heads.TokenClassifier)
    assert json.load(open(tmp_path / "td" / "prediction" / "selection.json"))["metric"] == (
        "entity_f1")
    report = run_mode(config(mode="evaluate", teacher=teacher, student=student, latency_runs=1),
                      str(tmp_path / "eval"))
    c = config()
    spec = task_data.task_spec(c)
    data = task_data.TaskData(c, spec, tiny.tokenizer()).evaluation("validation")
    true = [tags for _, tags in _sentences(spec, "validation")]
    for row, path in zip(report["models"], (teacher, student), strict=True):
        model = heads.load_task_model(path)
        pred = []
        for x, y, _ in data:
            ids, gold = np.asarray(model(x, training=False)).argmax(-1), np.asarray(y)
            pred += [[spec.label_names[t] for t in p[g != metrics.IGNORE_LABEL]]
                     for p, g in zip(ids, gold, strict=True)]
        assert row["metrics"]["entity_f1"] == pytest.approx(_seqeval(pred, true), abs=1e-9)
    assert report["models"][0]["metrics"]["entity_f1"] == pytest.approx(state["best"]["value"])
