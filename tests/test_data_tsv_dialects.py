"""TSV dialects (data.tsv_quoting): plain tab-separated by default, as GLUE and most exports write
it (a quote is text), CSV-quoted on request; the package's TSV writer (`task_files.tsv_text`)
writes the default dialect, so whatever it writes every reader gives back byte for byte. Real
files, the real readers (task files, transfer sets, tf.data); nothing mocked."""

import pytest

from tinybert_tf.data import task_files, tasks, transfer
from tinybert_tf.errors import UserError
from tinybert_tf.launch import config_lib
from tinybert_tf.launch.task_data import task_spec

# Texts a plain TSV holds as they are: GLUE-style quotes (leading, lone, both ends, doubled),
# apostrophes, backslashes, spaces at the ends, non-ASCII, and line-break-like characters that
# are not \n / \r (U+2028, form feed, NEL) and so stay inside one line.
TEXTS = ['"Best film of the year," says everyone who saw it.', 'a 12" record', '"hi"',
         "it's the film's best", '""twice""', "'single'", 'ends with "', ' padded  ',
         "back\\slash \\t \\n", "café – naïve 東京", "para\u2028graph", "form\x0cfeed",
         "next\x85line", '"', "''"]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def test_tsv_text_writes_plain_lines_and_counts_flattened_fields():
    text, flattened = task_files.tsv_text([["text", "label"], ['"a" b', "x"], ["c's", "y"]])
    assert text == 'text\tlabel\n"a" b\tx\nc\'s\ty\n' and flattened == 0
    text, flattened = task_files.tsv_text([["a\tb", "x"], ["two\nlines\r\n", "y\r"], ["ok", "z"]])
    assert text == "a b\tx\ntwo lines  \ty \nok\tz\n" and flattened == 3


def test_written_rows_read_back_byte_identical(tmp_path, capsys):
    """write (tsv_text) -> read: task file through tf.data, read_rows, read_table, transfer."""
    rows = [["sentence", "label"]] + [[t, str(i % 3)] for i, t in enumerate(TEXTS)]
    text, flattened = task_files.tsv_text(rows)
    assert flattened == 0
    path = _write(tmp_path, "train.tsv", text)
    got = [(texts[0], label) for _, texts, label in
           task_files.read_rows(path, ["sentence"], "label", True)]
    assert got == [tuple(r) for r in rows[1:]]
    assert task_files.read_table(path) == (rows[0], rows[1:])
    spec = tasks.load_file_task(path, text_column="sentence")
    assert spec.counts("train")["used"] == len(TEXTS) and spec.tsv_quoting == "none"
    data = list(task_files.file_split_dataset(spec, "train").as_numpy_iterator())
    assert [ex["sentence"].decode("utf-8") for ex in data] == TEXTS
    assert [spec.label_names[int(ex["label"])] for ex in data] == [r[1] for r in rows[1:]]
    columns, counts = transfer.read_transfer(path, ("sentence",))
    assert columns == {"sentence": TEXTS} and counts["used"] == len(TEXTS)
    capsys.readouterr()


def test_flattened_texts_read_back_as_written(tmp_path):
    rows = [["a", "b", "label"], ["x\ty", "two\nlines", "p"], ["\r\n", "z", "q"]]
    text, flattened = task_files.tsv_text(rows)
    assert flattened == 3
    header, back = task_files.read_table(_write(tmp_path, "t.tsv", text))
    assert header == rows[0] and back == [["x y", "two lines", "p"], ["  ", "z", "q"]]


def test_quoting_csv_reads_what_the_csv_module_wrote(tmp_path, capsys):
    """tsv_quoting=csv: a tab / line break inside a quoted field is text, "" is a quote; the
    same file read plain is a field-count error at its line, never a shifted column."""
    content = 'text\tlabel\n"a\tb"\tpos\n"say ""hi"""\tneg\n"two\r\nlines"\tpos\n'
    path = _write(tmp_path, "q.tsv", content)
    spec = tasks.load_file_task(path, tsv_quoting="csv")
    assert spec.tsv_quoting == "csv"
    data = list(task_files.file_split_dataset(spec, "train").as_numpy_iterator())
    assert [ex["text"].decode("utf-8") for ex in data] == ["a\tb", 'say "hi"', "two\r\nlines"]
    assert task_files.read_table(path, "csv")[1][2] == ["two\r\nlines", "pos"]
    with pytest.raises(UserError, match=r"q.tsv:2: 3 fields, the header has 2 \(text, label\); "
                       r"every tab separates fields in plain TSV"):
        tasks.load_file_task(path)
    with pytest.raises(UserError, match=r"q.tsv:2: 3 fields, the header has 2 \(text, label\); "
                       r"every tab separates fields in plain TSV .*\)\.$"):
        task_files.read_table(path)
    columns, counts = transfer.read_transfer(path, "text", tsv_quoting="csv")
    assert columns["text"] == ["a\tb", 'say "hi"', "two\r\nlines"]
    columns, counts = transfer.read_transfer(path, "text", skip_bad_rows=True)
    assert columns["text"] == ['"say ""hi"""', 'lines"'] and counts["bad_rows"] == 2
    capsys.readouterr()


def test_csv_files_keep_csv_quoting_whatever_tsv_quoting_says(tmp_path, capsys):
    path = _write(tmp_path, "t.csv", 'text,label\n"good, fun",pos\n"say ""hi""",neg\n')
    for quoting in ("none", "csv"):
        spec = tasks.load_file_task(path, tsv_quoting=quoting)
        data = list(task_files.file_split_dataset(spec, "train").as_numpy_iterator())
        assert [ex["text"].decode("utf-8") for ex in data] == ["good, fun", 'say "hi"']
    capsys.readouterr()


@pytest.mark.parametrize("value", ["", "plain", "CSV", None])
def test_unknown_tsv_quoting_is_one_line_naming_the_values(tmp_path, value):
    path = _write(tmp_path, "train.tsv", "text\tlabel\na\tx\n")
    want = r"tsv_quoting=.* is not one of 'none', 'csv'"
    for call in (lambda: tasks.load_file_task(path, tsv_quoting=value),
                 lambda: list(task_files.read_rows(path, ["text"], tsv_quoting=value)),
                 lambda: task_files.read_table(path, value),
                 lambda: transfer.read_transfer(path, "text", tsv_quoting=value),
                 lambda: transfer.transfer_examples("sst2", path, tsv_quoting=value)):
        with pytest.raises(UserError, match=want) as err:
            call()
        assert "\n" not in str(err.value)


def test_tsv_quoting_config_reaches_the_task_files(tmp_path, capsys):
    train = _write(tmp_path, "train.tsv", 'text\tlabel\n"a\tb"\tpos\nc\tneg\n')
    plain = _write(tmp_path, "plain.tsv", 'text\tlabel\n"Best," says all\tpos\nc\tneg\n')

    def config(path, quoting=None):
        fields = {"task": "file", "data.train_file": path}
        return config_lib.load("task_distill", "tiny", **fields, **(
            {} if quoting is None else {"data.tsv_quoting": quoting}))

    assert config_lib.load("task_distill").data.tsv_quoting == "none"
    spec = task_spec(config(plain))
    data = list(task_files.file_split_dataset(spec, "train").as_numpy_iterator())
    assert data[0]["text"].decode("utf-8") == '"Best," says all'
    with pytest.raises(UserError, match=r"train.tsv:2: 3 fields"):
        task_spec(config(train))
    spec = task_spec(config(train, "csv"))
    assert spec.tsv_quoting == "csv"
    data = list(task_files.file_split_dataset(spec, "train").as_numpy_iterator())
    assert data[0]["text"].decode("utf-8") == "a\tb"
    extra, _ = transfer.transfer_examples(spec, train, dedupe_train=False, tsv_quoting="csv")
    assert extra == {"text": ["a\tb", "c"]}
    with pytest.raises(UserError, match=r"train.tsv:2: 3 fields, the header has 2 \(text, "
                       r"label\); every tab separates fields in plain TSV"):
        transfer.transfer_examples(spec, train, dedupe_train=False)
    for task in ("file", "sst2"):  # a typo is caught whether or not a file task reads it
        c = config(plain, "quoted")
        c.task = task
        with pytest.raises(UserError, match=r"tsv_quoting='quoted' is not one of 'none', 'csv'"):
            task_spec(c)
    capsys.readouterr()
