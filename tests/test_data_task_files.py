"""Task files never silently change a label (issue 17): every malformed row is an error naming the
file and line, or with skip_bad_rows a counted skip; the labels of a file with bad rows skipped
are those of the file without them. A .tsv is plain tab-separated by default (GLUE: a quote is
text), CSV-quoted with tsv_quoting="csv". Real files, the real reader, tf.data; nothing mocked."""

import json

import pytest

from tinybert_tf.data import task_files, tasks
from tinybert_tf.errors import LaunchError, UserError
from tinybert_tf.launch import config_lib, task_data, transfer_set

HINT = "pass --config.data.skip_bad_rows=True to skip such rows."
PLAIN_FIX = ("every tab separates fields in plain TSV (a tab inside a text must be a space; a file "
             "with CSV-quoted fields needs tsv_quoting=csv), or " + HINT)
CSV = {"tsv_quoting": "csv"}
# GLUE-style texts (SST-2 / MRPC lines): a leading quote, a lone quote, quotes at both ends, an
# apostrophe, a doubled quote; read plain they are every row, byte for byte.
GLUE_TEXTS = ['"Best film of the year," says everyone who saw it.', 'a 12" record', '"hi"',
              "it's the film's best", '""quoted twice""', "'single'", 'ends with "']
GLUE_TSV = "sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(GLUE_TEXTS))
ZERO = dict.fromkeys(task_files.SKIP_REASONS, 0)

# name, file name, content, load_file_task kwargs,
#   error (substring after "<path>:"; None = the file is valid),
#   counts with skip_bad_rows (nonzero ones; every other count is 0),
#   used rows with skip_bad_rows: [(texts..., label)], label_names,
#   the file's line numbers that are bad (dropping them gives the clean file).
CASES = [
    ("stray_tab_tsv", "train.tsv",
     "text\tlabel\ngood movie\tpos\ngood movie\tloved it\tneu\nbad film\tneg\n", {},
     "3: 3 fields, the header has 2 (text, label); " + PLAIN_FIX,
     {"read": 3, "used": 2, "bad_fields": 1},
     [("good movie", "pos"), ("bad film", "neg")], ("neg", "pos"), [3]),
    ("stray_tab_quoted_tsv", "train.tsv",
     "text\tlabel\ngood movie\tpos\ngood movie\tloved it\tneu\nbad film\tneg\n", CSV,
     "3: 3 fields, the header has 2 (text, label); quote a field that contains a tab, or " + HINT,
     {"read": 3, "used": 2, "bad_fields": 1},
     [("good movie", "pos"), ("bad film", "neg")], ("neg", "pos"), [3]),
    ("too_many_fields_csv", "train.csv",
     "text,label\ngood movie,pos\ngood, fun movie,pos\nbad film,neg\nok,neu,x\n", {},
     "3: 3 fields, the header has 2 (text, label); quote a field that contains a comma, or " + HINT,
     {"read": 4, "used": 2, "bad_fields": 2},
     [("good movie", "pos"), ("bad film", "neg")], ("neg", "pos"), [3, 5]),
    ("too_few_fields", "train.tsv", "text\tlabel\ngood movie\tpos\nbad film\nfun\tneg\n", {},
     "3: 1 field, the header has 2 (text, label); " + PLAIN_FIX,
     {"read": 3, "used": 2, "bad_fields": 1},
     [("good movie", "pos"), ("fun", "neg")], ("neg", "pos"), [3]),
    ("pair_stray_tab", "train.tsv",
     "a\tb\tlabel\nthe dog\ta cat\tyes\nthe dog\ta\tcat\tno\nhello\tworld\tno\n",
     {"text_column": "a", "text_b_column": "b"},
     "3: 4 fields, the header has 3 (a, b, label)",
     {"read": 3, "used": 2, "bad_fields": 1},
     [("the dog", "a cat", "yes"), ("hello", "world", "no")], ("no", "yes"), [3]),
    ("bom_header", "train.tsv", "\ufefftext\tlabel\r\ngood movie\tpos\r\nbad film\tneg\r\n", {},
     None, {"read": 2, "used": 2},
     [("good movie", "pos"), ("bad film", "neg")], ("neg", "pos"), []),
    ("bom_crlf_quoted_tsv", "train.tsv",
     '\ufefftext\tlabel\r\n"good ""movie"""\tpos\r\nbad film\tneg\r\n', CSV,
     None, {"read": 2, "used": 2},
     [('good "movie"', "pos"), ("bad film", "neg")], ("neg", "pos"), []),
    ("crlf_and_cr_plain", "train.tsv",
     '\ufefftext\tlabel\r\n"good" movie\tpos\r\nbad "film\tneg\rok\tpos\r\n', {},
     None, {"read": 3, "used": 3},
     [('"good" movie', "pos"), ('bad "film', "neg"), ("ok", "pos")], ("neg", "pos"), []),
    ("glue_quotes_plain", "train.tsv", GLUE_TSV, {"text_column": "sentence"},
     None, {"read": 7, "used": 7},
     [(t, str(i % 2)) for i, t in enumerate(GLUE_TEXTS)], ("0", "1"), []),
    ("glue_quotes_read_as_csv", "train.tsv", GLUE_TSV, {"text_column": "sentence", **CSV},
     "2: bad quoting (", {"read": 7, "used": 5, "bad_quoting": 2},
     [('a 12" record', "1"), ("hi", "0"), ("it's the film's best", "1"), ("'single'", "1"),
      ('ends with "', "0")], ("0", "1"), [2, 6]),
    ("bom_jsonl", "train.jsonl", "\ufeff" + json.dumps({"text": "a", "label": "x"}) + "\n", {},
     None, {"read": 1, "used": 1}, [("a", "x")], ("x",), []),
    ("empty_texts", "train.tsv",
     "text\tlabel\n  \tpos\ngood movie\tpos\n\tneg\nbad film\tneg\n\t\n", {},
     None, {"read": 5, "used": 2, "empty_text": 3},
     [("good movie", "pos"), ("bad film", "neg")], ("neg", "pos"), [2, 4, 6]),
    ("empty_text_b", "train.csv", "a,b,label\nthe dog,,yes\nthe dog,a cat,yes\n, ,no\nx,y,no\n",
     {"text_column": "a", "text_b_column": "b"},
     None, {"read": 4, "used": 2, "empty_text": 2},
     [("the dog", "a cat", "yes"), ("x", "y", "no")], ("no", "yes"), [2, 4]),
    ("empty_label", "train.tsv", "text\tlabel\ngood movie\tpos\nbad film\t \nfun\tneg\n", {},
     "3: empty label in column 'label'; fill it in, or " + HINT,
     {"read": 3, "used": 2, "empty_label": 1},
     [("good movie", "pos"), ("fun", "neg")], ("neg", "pos"), [3]),
    ("bad_jsonl_lines", "train.jsonl",
     "\n".join([json.dumps({"text": "good movie", "label": "pos"}), json.dumps(["good", "pos"]),
                json.dumps({"text": "fun"}), json.dumps({"label": "neu"}), "{oops",
                json.dumps({"text": "bad film", "label": "neg", "id": 7})]) + "\n", {},
     "2: expected a JSON object with ['text'], got a list; one object per line, or " + HINT,
     {"read": 6, "used": 2, "bad_json": 4},
     [("good movie", "pos"), ("bad film", "neg")], ("neg", "pos"), [2, 3, 4, 5]),
    ("quoted_tab_is_valid", "train.tsv",
     'text\tlabel\n"good\tmovie"\tpos\n"say ""hi"" twice"\tneg\n"two\nlines"\tpos\nb "x"\tneg\n',
     CSV, None, {"read": 4, "used": 4},
     [("good\tmovie", "pos"), ('say "hi" twice', "neg"), ("two\nlines", "pos"),
      ('b "x"', "neg")], ("neg", "pos"), []),
    # The same file read plain: quotes are text, so a quoted tab / line break is a bad row.
    ("quoted_tab_read_plain", "train.tsv",
     'text\tlabel\n"good\tmovie"\tpos\n"say ""hi"" twice"\tneg\n"two\nlines"\tpos\nb "x"\tneg\n',
     {}, "2: 3 fields, the header has 2 (text, label); " + PLAIN_FIX,
     {"read": 5, "used": 3, "bad_fields": 2},
     [('"say ""hi"" twice"', "neg"), ('lines"', "pos"), ('b "x"', "neg")], ("neg", "pos"),
     [2, 4]),
    ("bad_quoting", "train.tsv", 'text\tlabel\ngood movie\tpos\n"Great" movie\tneu\nbad\tneg\n',
     CSV, "3: bad quoting ('\\t' expected after '\"'); a field that starts with '\"' must end "
     "with '\"' (a quote inside it doubled: \"\"); with quotes as plain text use "
     "tsv_quoting=none, or " + HINT, {"read": 3, "used": 2, "bad_quoting": 1},
     [("good movie", "pos"), ("bad", "neg")], ("neg", "pos"), [3]),
    ("leading_quote_plain", "train.tsv",
     'text\tlabel\ngood movie\tpos\n"Great" movie\tneu\nbad\tneg\n', {},
     None, {"read": 3, "used": 3},
     [("good movie", "pos"), ('"Great" movie', "neu"), ("bad", "neg")], ("neg", "neu", "pos"), []),
    ("csv_keeps_quoting", "train.csv",
     'text,label\n"good, fun",pos\n"say ""hi""",neg\n"Great" movie,neu\n', {},
     "4: bad quoting (", {"read": 3, "used": 2, "bad_quoting": 1},
     [("good, fun", "pos"), ('say "hi"', "neg")], ("neg", "pos"), [4]),
]
IDS = [case[0] for case in CASES]


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8"))
    return str(path)


def _rows(spec, split="train"):
    """[(texts..., label name)] of a split as `task_dataset` reads it (through tf.data)."""
    out = []
    for ex in task_files.file_split_dataset(spec, split).as_numpy_iterator():
        y = int(ex[spec.label_key])
        label = spec.label_names[y] if y >= 0 else None
        out.append((*(ex[k].decode("utf-8") for k in spec.text_keys), label))
    return out


@pytest.mark.parametrize(
    "name,file,content,kwargs,error,counts,rows,labels,bad_lines", CASES, ids=IDS)
def test_task_file_rows(tmp_path, capsys, name, file, content, kwargs, error, counts, rows,
                        labels, bad_lines):
    path = _write(tmp_path, file, content)
    want = {**ZERO, **counts}
    if error is None:
        spec = tasks.load_file_task(path, **kwargs)
        assert spec.counts("train") == want
        assert spec.label_names == labels and _rows(spec) == rows
    else:
        with pytest.raises(tasks.TaskFileError) as err:
            tasks.load_file_task(path, **kwargs)
        assert f"{path}:{error}" in str(err.value)
    capsys.readouterr()
    spec = tasks.load_file_task(path, skip_bad_rows=True, **kwargs)
    assert spec.counts("train") == want
    assert capsys.readouterr().out.strip() == task_files.summary(path, want)
    assert spec.label_names == labels and spec.num_classes == len(labels)
    assert _rows(spec) == rows
    # Never a changed label: the clean file (bad lines dropped) has the same labels and rows.
    kept = [line for i, line in enumerate(content.split("\n"), 1) if i not in bad_lines]
    clean = tasks.load_file_task(_write(tmp_path, "clean_" + file, "\n".join(kept)), **kwargs)
    assert clean.label_names == spec.label_names and _rows(clean) == rows


def test_summary_line_format():
    counts = {**ZERO, "read": 120, "used": 117, "empty_text": 2, "bad_fields": 1}
    assert task_files.summary("train.tsv", counts) == (
        "train.tsv: 120 rows read, 117 used, skipped: 2 empty text, 1 bad field count.")
    assert task_files.summary("d.jsonl", {**ZERO, "read": 1, "used": 1}) == (
        "d.jsonl: 1 row read, 1 used.")


def test_eval_and_test_splits_follow_the_same_rules(tmp_path):
    train = _write(tmp_path, "train.tsv", "text\tlabel\ngood\tpos\nbad\tneg\n")
    dev = _write(tmp_path, "dev.tsv", "text\tlabel\nfun\tpos\nfun\tno\tneg\n\tpos\ndull\tneg\n")
    test = _write(tmp_path, "test.csv", "text,label\nfun,\nsad,neg\n,pos\n")
    with pytest.raises(UserError, match=r"dev.tsv:3: 3 fields, the header has 2"):
        tasks.load_file_task(train, dev, test)
    spec = tasks.load_file_task(train, dev, test, skip_bad_rows=True)
    assert spec.counts("validation") == {**ZERO, "read": 4, "used": 2, "empty_text": 1,
                                         "bad_fields": 1}
    assert _rows(spec, "validation") == [("fun", "pos"), ("dull", "neg")]
    # A test split's blank label means "no label" (y = -1), not an error or a new class.
    assert spec.counts("test") == {**ZERO, "read": 3, "used": 2, "empty_text": 1}
    assert _rows(spec, "test") == [("fun", None), ("sad", "neg")]
    with pytest.raises(UserError, match=r"dev.jsonl: no usable rows \(1 row read, 0 used, "
                       r"skipped: 1 empty text\)"):
        tasks.load_file_task(train, _write(tmp_path, "dev.jsonl", '{"text": " ", "label": "x"}'))
    with pytest.raises(UserError, match=r"x.tsv:1: column 'text' appears twice"):
        tasks.load_file_task(_write(tmp_path, "x.tsv", "text\ttext\tlabel\na\tb\tc\n"))
    with pytest.raises(UserError, match=r"bin.tsv:2: not UTF-8 text"):
        (tmp_path / "bin.tsv").write_bytes(b"text\tlabel\n\xff\xfe\tpos\n")
        tasks.load_file_task(str(tmp_path / "bin.tsv"))
    assert issubclass(tasks.TaskFileError, UserError) and issubclass(UserError, ValueError)


def test_skip_bad_rows_config_reaches_task_files_and_transfer_sets(tmp_path):
    train = _write(tmp_path, "train.tsv", "text\tlabel\ngood\tpos\ngood\tvery\tneu\nbad\tneg\n")
    extra = _write(tmp_path, "aug.tsv", "text\tlabel\nfun film\tpos\nfun\tfilm\tpos\nsad\tneg\n")

    def config(skip):
        return config_lib.load("task_distill", "tiny", **{
            "task": "file", "data.train_file": train, "data.skip_bad_rows": skip,
            "augmented_train_file": extra})

    assert config_lib.load("task_distill").data.skip_bad_rows is False
    with pytest.raises(UserError, match=r"train.tsv:3: 3 fields, the header has 2"):
        task_data.task_spec(config(False))
    spec = task_data.task_spec(config(True))
    assert spec.skip_bad_rows and spec.label_names == ("neg", "pos")
    assert spec.counts("train")["bad_fields"] == 1
    c = config(False)
    with pytest.raises(LaunchError, match=r"aug.tsv:3: 3 fields, the header has 2"):
        transfer_set.transfer_set(c, spec, str(tmp_path / "run"))
    columns, counts = transfer_set.transfer_set(config(True), spec, str(tmp_path / "run"))
    assert columns == {"text": ["fun film", "sad"]}
    saved = json.load(open(tmp_path / "run" / "transfer.json"))
    assert (saved["read"], saved["used"], saved["bad_rows"]) == (3, 2, 1) == (
        counts["read"], counts["used"], counts["bad_rows"])


# ---- data.metric: what a file task selects on and reports ------------------------------------------

METRIC_CASES = [
    ("pearson on classification", ["--config.data.metric=pearson"],
     "data.metric=pearson does not fit task 'file' (classification); use one of accuracy, "
     "macro_f1, f1, matthews_corr."),
    ("accuracy on regression", ["--config.data.metric=accuracy", "--config.data.regression=True"],
     "data.metric=accuracy does not fit task 'file' (regression); use one of pearson, spearman."),
    ("entity_f1 on classification", ["--config.data.metric=entity_f1"],
     "data.metric=entity_f1 does not fit task 'file' (classification)"),
    ("unknown metric", ["--config.data.metric=bleu"],
     "data.metric='bleu' is not a metric; use one of accuracy, macro_f1, f1, matthews_corr, "
     "pearson, spearman, entity_f1, or '' for the task's own."),
    ("f1 without its label", ["--config.data.metric=f1"],
     "data.metric=f1 is the F1 of one class; name it with --config.data.positive_label=<label>."),
    ("a positive label not among the labels",
     ["--config.data.metric=f1", "--config.data.positive_label=spam"],
     "data.positive_label='spam' is not a label of task 'file'; pass one of ['neg', 'pos']."),
    ("a positive label without f1", ["--config.data.positive_label=pos"],
     "data.positive_label='pos' names the class that data.metric=f1 scores; pass "
     "--config.data.metric=f1, or drop data.positive_label."),
    ("a metric that does not fit a TFDS task", ["--config.task=stsb", "--config.data.metric=f1"],
     "data.metric=f1 does not fit task 'stsb' (regression)"),
]


@pytest.mark.parametrize("case, extra, message", METRIC_CASES, ids=[c[0] for c in METRIC_CASES])
def test_a_metric_that_does_not_fit_is_one_line_before_the_claim(tmp_path, capsys, case, extra,
                                                                  message):
    import tiny

    from tinybert_tf import main

    workdir = tmp_path / "run"
    argv = ["main", f"--workdir={workdir}", "--config=task_distill:tiny", "--config.mode=finetune",
            f"--config.teacher={tiny.write_teacher(tmp_path / 'pre')}", "--config.task=file",
            f"--config.data.train_file={tiny.write_task(tmp_path / 'train.tsv', 8, 0)}", *extra]
    assert main.launch(argv) == 1
    printed = capsys.readouterr()
    lines = [line for line in printed.err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], printed.err[-2000:]
    assert "Keras backend" not in printed.out  # the mode never started: nothing was claimed
    assert not workdir.exists()


def _write_three_class(path, n, seed):
    """Label 't' iff the text says 'teacher', 's' iff 'student', else 'o' (unbalanced: the
    'o' rows are half), so macro-F1 and accuracy rank models differently."""
    import numpy as np
    import tiny

    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("text\tlabel\n")
        for i in range(n):
            words = list(rng.choice(tiny.WORDS[:30], size=int(rng.integers(3, 8))))
            label = ("o", "o", "t", "s")[i % 4]
            if label != "o":
                words.insert(int(rng.integers(0, len(words))),
                             "teacher" if label == "t" else "student")
            f.write(" ".join(words) + "\t" + label + "\n")
    return str(path)


@pytest.mark.slow
def test_finetune_selects_and_reports_on_the_chosen_metric(tmp_path):
    """data.metric=macro_f1: selection.json and metrics.jsonl name it, the selected step is the
    first best macro-F1, its value is sklearn's on the output model's dev predictions, and the
    evaluate report leads with it; f1 with a positive label names that label in the report."""
    import keras_hub
    import numpy as np
    import tiny
    from sklearn.metrics import f1_score

    from tinybert_tf.launch import train
    from tinybert_tf.launch.modes import run as run_mode

    common = {"task": "file", "data.metric": "macro_f1",
              "data.train_file": _write_three_class(tmp_path / "train.tsv", 48, 0),
              "data.eval_file": _write_three_class(tmp_path / "dev.tsv", 24, 1)}
    c = config_lib.load("task_distill", "tiny", mode="finetune", eval_every=4,
                        teacher=tiny.write_teacher(tmp_path / "pre"), **common, **{
                            "finetune.epochs": 2, "finetune.learning_rate": 3e-3,
                            "finetune.patience": 0})
    out = run_mode(c, str(tmp_path / "ft"))
    state = json.load(open(tmp_path / "ft" / "finetune" / "selection.json"))
    assert state["metric"] == "macro_f1" and state["higher_is_better"]
    scores = [h["macro_f1"] for h in state["history"]]
    assert state["best"]["step"] == state["history"][int(np.argmax(scores))]["step"]
    records = {r["step"]: r for r in train.read_metrics(str(tmp_path / "ft" / "finetune"))}
    assert [records[h["step"]]["val_macro_f1"] for h in state["history"]] == scores

    spec = task_data.task_spec(c)
    assert spec.metrics == ("macro_f1", "accuracy")
    data = task_data.TaskData(c, spec, tiny.tokenizer()).evaluation("validation")
    model = keras_hub.models.TextClassifier.from_preset(out, preprocessor=None)
    pred = np.concatenate([np.asarray(model(x, training=False)).argmax(-1) for x, _ in data])
    gold = np.concatenate([np.asarray(y) for _, y in data])
    assert state["best"]["value"] == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-9)

    report = run_mode(config_lib.load("task_distill", "tiny", mode="evaluate", teacher=out,
                                      student=out, latency_runs=1, **common),
                      str(tmp_path / "eval"))
    assert report["share_metric"] == report["metric_names"][0] == "macro_f1"
    assert report["models"][0]["metrics"]["macro_f1"] == pytest.approx(state["best"]["value"])
    assert "| model | macro_f1 | accuracy |" in open(tmp_path / "eval" / "report.md").read()
    report = run_mode(config_lib.load("task_distill", "tiny", mode="evaluate", teacher=out,
                                      student=out, latency_runs=1, **{
                                          **common, "data.metric": "f1",
                                          "data.positive_label": "t"}), str(tmp_path / "eval_t"))
    t = spec.label_names.index("t")
    assert report["share_metric"] == "f1" and report["positive_label"] == "t"
    assert report["models"][0]["metrics"]["f1"] == pytest.approx(
        f1_score(gold == t, pred == t), abs=1e-9)
    assert "| model | f1 (t) | accuracy |" in open(tmp_path / "eval_t" / "report.md").read()
