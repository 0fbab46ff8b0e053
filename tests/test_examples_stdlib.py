"""Tests of the stdlib docstring/comment corpus and classification-task builders (pure Python)."""

import csv
import json
import os
import textwrap

import pytest

from examples.stdlib import stdlib_task, stdlib_text

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


# --- build_transfer on a small fake stdlib ---------------------------------------------------

_POOL = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu amber basil "
    "cedar dune ember fjord grove harbor island jungle kettle lantern meadow nectar orchard "
    "pebble quarry river summit timber valley willow yarrow zephyr anchor beacon canyon"
).split()


def _prose(rng, n=9):
    return " ".join(rng.choice(_POOL) for _ in range(n)).capitalize() + "."


def _fake_stdlib(root, seed=0):
    """email/, asyncio/ and logging/ packages, 6 files each, 3 documented functions per file:
    a first docstring paragraph (task text), a second one and a comment (transfer-only text).
    Returns {relative path: [every prose text written in that file]}."""
    import random

    rng = random.Random(seed)
    texts = {}
    for pkg in ("email", "asyncio", "logging"):
        os.makedirs(root / pkg, exist_ok=True)
        for i in range(6):
            rel, body, written = f"{pkg}/mod{i}.py", [], []
            for j in range(3):
                first, second, comment = _prose(rng), _prose(rng, 12), _prose(rng, 7)
                written += [first, second, comment]
                body.append(f'def f{j}():\n    """{first}\n\n    {second}\n    """\n'
                            f"    # {comment}\n    return {j}\n")
            (root / rel).write_text("\n\n".join(body), encoding="utf-8")
            texts[rel] = written
    return texts


def test_build_transfer_uses_only_train_files_and_no_task_row(tmp_path):
    root = tmp_path / "lib"
    written = _fake_stdlib(root)
    out = tmp_path / "task"
    stdlib_task.build_task(str(out), min_examples_per_class=3, min_files_per_class=3,
                           max_classes=3, root=str(root))
    srcs = {s: set(_lines(f"{out}/{s}.src")) for s in ("train", "dev", "test")}
    assert srcs["dev"] and srcs["test"] and not srcs["train"] & (srcs["dev"] | srcs["test"])
    rows = {s: [r.split("\t")[0] for r in _lines(f"{out}/{s}.tsv")[1:]] for s in srcs}
    # Plant leaks in a train file: a dev row (re-spaced, with '"') and a near-copy of a test row.
    dev_row, test_row = rows["dev"][0], rows["test"][0]
    near = " ".join(test_row.split()[:-1] + ["zzz."])
    train_file = sorted(srcs["train"])[0]
    with open(root / train_file, "a", encoding="utf-8") as f:
        f.write(f'\n\ndef leak():\n    """Leak start here now.\n\n    {"  ".join(dev_row.split())}'
                f'\n\n    {near}\n\n    Planted "quoted"   words for a normalised check.\n    """\n')
    stats = stdlib_task.build_transfer(str(out), str(tmp_path / "transfer.txt"), root=str(root))
    texts = _lines(f"{tmp_path}/transfer.txt")
    src = _lines(f"{tmp_path}/transfer.src")
    assert len(texts) == len(src) == stats["texts"] > 0
    assert stats["files"] == len(srcs["train"])
    assert set(src) <= srcs["train"]
    held_out = {t for p in srcs["dev"] | srcs["test"] for t in written[p]}
    assert not set(texts) & held_out  # no text of a dev/test file
    task_keys = {stdlib_text.dedupe_key(t) for part in rows.values() for t in part}
    assert not {stdlib_text.dedupe_key(t) for t in texts} & task_keys
    assert stats["task_row"] >= 1 + len(rows["train"]) and stats["near_eval"] >= 1
    assert near not in texts and "Planted 'quoted' words for a normalised check." in texts
    # Every paragraph (second docstring paragraphs, comments) of every train file is used.
    expected = {t for p in srcs["train"] for t in written[p]} - {
        t for part in rows.values() for t in part}
    assert expected <= set(texts)
    assert all(5 <= len(t.split()) <= 100 and t == " ".join(t.split()) for t in texts)
    assert len({stdlib_text.dedupe_key(t) for t in texts}) == len(texts)
    stats_file = json.loads((tmp_path / "transfer.stats.json").read_text())
    assert stats_file["texts"] == stats["texts"]
    # Deterministic; comments=False keeps docstring paragraphs only.
    again = stdlib_task.build_transfer(str(out), str(tmp_path / "b" / "t.txt"), root=str(root))
    assert again == stats and _read(f"{tmp_path}/transfer.txt") == _read(f"{tmp_path}/b/t.txt")
    stdlib_task.build_transfer(str(out), str(tmp_path / "nc.txt"), root=str(root), comments=False)
    no_comments = set(_lines(f"{tmp_path}/nc.txt"))
    comments = {t for p in srcs["train"] for t in written[p][2::3]}
    assert no_comments and not no_comments & comments and comments <= set(texts)
