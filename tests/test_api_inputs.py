"""In-memory data given to the Python API becomes the files a run reads (`api/inputs.py`)."""

import json
import os

import pytest
import tensorflow as tf

from tinybert_tf.api import inputs
from tinybert_tf.errors import UserError


def test_task_rows_from_a_dataset_dicts_and_tuples_keep_order_and_values(tmp_path):
    columns = ["text", "label"]
    dataset = tf.data.Dataset.from_tensor_slices({"text": ["é a", "b"], "label": [1, 0]})
    path = inputs.task_file(dataset, str(tmp_path), "train", columns)
    assert path == str(tmp_path / "inputs" / "train.jsonl")
    with open(path, encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == [{"text": "é a", "label": 1},
                                                    {"text": "b", "label": 0}]
    pairs = [("q1", "a1", "yes"), {"question": "q2", "answer": "a2", "label": "no"}]
    path = inputs.task_file([("q1", "a1", "yes"), ("q2", "a2", "no")], str(tmp_path), "eval",
                            ["question", "answer", "label"])
    again = inputs.task_file(pairs, str(tmp_path), "eval", ["question", "answer", "label"])
    assert again == path
    with open(path) as f:
        assert json.loads(f.readline()) == {"question": "q1", "answer": "a1", "label": "yes"}
    assert inputs.task_file("some/file.tsv", str(tmp_path), "train", columns) == "some/file.tsv"
    assert inputs.task_file(None, str(tmp_path), "train", columns) == ""


def test_the_same_rows_leave_the_file_alone_and_other_rows_replace_it(tmp_path):
    path = inputs.task_file([("a", "x")], str(tmp_path), "train", ["text", "label"])
    os.utime(path, (0, 0))
    inputs.task_file([("a", "x")], str(tmp_path), "train", ["text", "label"])
    assert os.stat(path).st_mtime == 0  # a resumed call finds its config unchanged
    inputs.task_file([("b", "y")], str(tmp_path), "train", ["text", "label"])
    with open(path) as f:
        assert f.read() == '{"text": "b", "label": "y"}\n'
    (tmp_path / "config.json").write_text("{}")  # a run was started on those rows
    with pytest.raises(UserError, match=r"these rows differ from .*train.jsonl, which the run in "
                                        r".* trains on; pass a new workdir \(overwrite=True"):
        inputs.task_file([("c", "z")], str(tmp_path), "train", ["text", "label"])
    inputs.task_file([("b", "y")], str(tmp_path), "train", ["text", "label"])  # same: resumes
    inputs.task_file([("c", "z")], str(tmp_path), "train", ["text", "label"], overwrite=True)
    with open(path) as f:
        assert f.read() == '{"text": "c", "label": "z"}\n'


def test_texts_one_per_line_and_file_lists_pass_through(tmp_path):
    path = inputs.text_file(tf.data.Dataset.from_tensor_slices(["one\ntwo", "  ", "three"]),
                            str(tmp_path), "corpus")
    with open(path) as f:
        assert f.read() == "one two\nthree\n"  # a document per line; blank texts left out
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x\n")
    b.write_text("y\n")
    assert inputs.text_file([str(a), str(b)], str(tmp_path), "corpus") == f"{a},{b}"
    assert inputs.text_file(str(tmp_path / "*.txt"), str(tmp_path), "corpus") == \
        str(tmp_path / "*.txt")
    path = inputs.text_file(["a * b", str(a)], str(tmp_path), "transfer")  # texts, not files
    with open(path) as f:
        assert f.read() == f"a * b\n{a}\n"


def test_rows_that_do_not_fit_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"row 2 of the data has no 'text' key \(it has txt\)"):
        inputs.task_file([{"text": "a", "label": 1}, {"txt": "b"}], str(tmp_path), "train",
                         ["text", "label"])
    with pytest.raises(UserError, match="row 1 of the data is str 'abc'; give dicts"):
        inputs.task_file(["abc"], str(tmp_path), "train", ["text", "label"])
    with pytest.raises(UserError, match="the train data has no rows"):
        inputs.task_file([], str(tmp_path), "train", ["text", "label"])
    with pytest.raises(UserError, match="the corpus data has no texts"):
        inputs.text_file(["", " "], str(tmp_path), "corpus")
