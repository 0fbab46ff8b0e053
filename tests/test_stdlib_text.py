"""Tests of the stdlib docstring/comment corpus and classification-task builders (pure Python)."""

import csv
import os
import textwrap

import pytest

from tinybert_tf.data import stdlib_task, stdlib_text

# Evenly spaced subsets of the stdlib keep each build at ~1 s.
CORPUS_FILES = 60
MAX_FILES = 120


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("corpus"))
    stats = stdlib_text.build_corpus(out, heldout_fraction=0.2, seed=3, max_files=CORPUS_FILES)
    return out, stats


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("task"))
    stats = stdlib_task.build_task(
        out, min_examples_per_class=20, max_classes=6, seed=1, max_files=MAX_FILES
    )
    return out, stats


def test_prose_extraction_from_a_file(tmp_path):
    src = textwrap.dedent('''\
        """Tiny module docstring that is long enough to keep around.

        >>> print("doctest paragraphs are dropped")

            indented_code(block=True)  # dropped too
        """
        # First comment line of a block that
        # continues here and should be merged.
        #
        # A second paragraph after an empty comment line.
        x = {"a": 1}  # inline comment with five words here
        # y = compute(x["a"], z=[1, 2, 3])

        def f():
            """Short."""
        ''')
    (tmp_path / "mod.py").write_text(src)
    recs = stdlib_text.iter_file_texts("mod.py", root=str(tmp_path))
    texts = [r.text for r in recs]
    assert texts[0] == "Tiny module docstring that is long enough to keep around."
    assert recs[0].kind == "module" and recs[0].path == "mod.py"
    assert "First comment line of a block that continues here and should be merged." in texts
    assert "A second paragraph after an empty comment line." in texts
    assert "inline comment with five words here" in texts
    assert not any("compute" in t or "doctest" in t or "Short" in t for t in texts)


def test_near_duplicate_clusters():
    texts = [
        "Python Character Mapping Codec cp437 generated from 'VENDORS/MICSFT/PC/CP437.TXT'.",
        "A completely different sentence about event loops and futures.",
        "Python Character Mapping Codec cp850 generated from 'VENDORS/MICSFT/PC/CP850.TXT'.",
        "a completely DIFFERENT sentence, about event loops and futures!",
    ]
    assert stdlib_text.near_duplicate_clusters(texts) == [0, 1, 0, 1]


def test_corpus_split_is_by_file_and_clean(corpus_dir):
    out, stats = corpus_dir
    split = {}
    for name in ("train", "heldout"):
        docs, srcs = _lines(f"{out}/{name}.txt"), _lines(f"{out}/{name}.src")
        assert len(docs) == len(srcs) == stats[name]["docs"] > 0
        assert stats[name]["words"] == sum(len(d.split()) for d in docs)
        assert all(d.strip() and d == " ".join(d.split()) for d in docs)  # no empty lines
        assert not any(">>>" in d for d in docs)
        assert all(len(d.split()) >= 5 for d in docs)
        split[name] = (set(docs), set(srcs))
    assert not split["train"][0] & split["heldout"][0]  # no document in both
    assert not split["train"][1] & split["heldout"][1]  # no source file in both
    assert os.path.exists(f"{out}/stats.json")


def test_corpus_deterministic_and_max_docs(corpus_dir, tmp_path):
    out, _ = corpus_dir
    stdlib_text.build_corpus(str(tmp_path), heldout_fraction=0.2, seed=3, max_files=CORPUS_FILES)
    for name in ("train.txt", "heldout.txt", "train.src"):
        assert _read(f"{out}/{name}") == _read(f"{tmp_path}/{name}")
    small = stdlib_text.build_corpus(str(tmp_path / "s"), max_docs=30, max_files=20)
    assert small["train"]["docs"] + small["heldout"]["docs"] == 30


def test_task_tsvs_parse_and_splits_are_disjoint(task_dir):
    out, stats = task_dir
    labels = _lines(f"{out}/labels.txt")
    assert labels == stats["labels"] and 2 <= len(labels) <= 6
    texts, files = {}, {}
    for split in ("train", "dev", "test"):
        with open(f"{out}/{split}.tsv", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        assert rows[0] == ["text", "label"]
        rows = rows[1:]
        assert all(len(r) == 2 for r in rows) and len(rows) == stats["total"][split] > 0
        assert {r[1] for r in rows} <= set(labels)
        assert all(5 <= len(r[0].split()) <= 100 for r in rows)
        keys = [stdlib_text.dedupe_key(r[0]) for r in rows]
        assert len(set(keys)) == len(keys)  # no duplicates inside a split either
        texts[split] = set(keys)
        files[split] = set(_lines(f"{out}/{split}.src"))
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not texts[a] & texts[b], f"text in {a} and {b}"
        assert not files[a] & files[b], f"source file in {a} and {b}"


def test_task_deterministic_for_seed(task_dir, tmp_path):
    out, _ = task_dir
    kw = dict(min_examples_per_class=20, max_classes=6, max_files=MAX_FILES)
    stdlib_task.build_task(str(tmp_path / "a"), seed=1, **kw)
    stdlib_task.build_task(str(tmp_path / "b"), seed=2, **kw)
    for name in ("train.tsv", "dev.tsv", "test.tsv", "labels.txt"):
        assert _read(f"{out}/{name}") == _read(f"{tmp_path}/a/{name}")
    assert _read(f"{out}/train.tsv") != _read(f"{tmp_path}/b/train.tsv")


def test_labels():
    assert stdlib_task.module_label("email/mime/text.py") == "email"
    assert stdlib_task.module_label("_pydecimal.py") == "decimal"
    assert stdlib_task.module_label("_collections_abc.py") == "collections"
    assert stdlib_task.area_label("concurrent/futures/thread.py") == "concurrency"
    assert stdlib_task.area_label("antigravity.py") is None
    with pytest.raises(ValueError, match="label_by"):
        stdlib_task.build_task("/nonexistent", label_by="nope")
