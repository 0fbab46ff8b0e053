"""Transfer sets: reading / leakage / duplicate counting (data.transfer) and task_dataset's
labelled + transfer rows with sample weights (data.tasks)."""

import collections
import gzip
import json

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import tiny

from tinybert_tf.data import tasks, transfer

MARK = "teacher"  # a vocabulary word only transfer rows contain
NO_CASE = {"leaked_by_case": 0, "duplicate_by_case": 0}  # exact comparison: nothing added


@pytest.fixture(scope="module")
def tok():
    return tiny.tokenizer()


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_text_key_collapses_whitespace_and_keeps_case():
    assert transfer.text_key(" A  dog\t\n") == ("A dog",) == transfer.text_key(["A dog"])
    assert transfer.text_key(("a dog", b" the  cat ")) == ("a dog", "the cat")
    assert transfer.text_key("a dog") != transfer.text_key("A dog")


def test_read_transfer_counts_and_order(tmp_path):
    _write(tmp_path / "a" / "1.txt",
           "the model\n   \nthe  model\neval  text \ntrain text\na student\n")
    _write(tmp_path / "a" / "2.tsv",
           "text\tlabel\nthe teacher\tpos\na student\tneg\n\t\nsmall model\tx\n")
    _write(tmp_path / "a" / "3.jsonl",
           json.dumps({"text": "fast model", "id": 3}) + "\n" + json.dumps({"text": "the teacher"}))
    exclude, known = {("eval text",)}, {("train text",)}
    want = ["the model", "a student", "the teacher", "small model", "fast model"]
    counts_want = {"files": 3, "read": 12, "used": 5, "leaked": 1, "duplicate": 4, "empty": 2,
                  "bad_rows": 0, **NO_CASE}
    for paths in (f"{tmp_path}/a/*", f"{tmp_path}/a/*.txt, {tmp_path}/a/[23].*",
                  [f"{tmp_path}/a/1.txt", f"{tmp_path}/a/*.tsv", f"{tmp_path}/a/3.jsonl"]):
        cols, counts = transfer.read_transfer(paths, ("text",), exclude, known)
        assert cols == {"text": want}
        assert counts == counts_want
    # A file matched twice is read once; without exclude/known the leak and train rows are used.
    cols, counts = transfer.read_transfer([f"{tmp_path}/a/1.txt", f"{tmp_path}/a/*.txt"], "text")
    assert cols["text"] == ["the model", "eval  text ", "train text", "a student"]
    assert counts == {"files": 1, "read": 6, "used": 4, "leaked": 0, "duplicate": 1, "empty": 1,
                      "bad_rows": 0, **NO_CASE}
    with gzip.open(tmp_path / "g.txt.gz", "wt", encoding="utf-8") as f:
        f.write("one model\r\ntwo data\u2028kept in one line\n")
    cols, counts = transfer.read_transfer(str(tmp_path / "g.txt.gz"), ("text",))
    assert cols["text"] == ["one model", "two data\u2028kept in one line"]
    assert counts["read"] == 2


def test_read_transfer_pair_columns_and_errors(tmp_path):
    pair = ("sentence1", "sentence2")
    path = _write(tmp_path / "p.csv",
                  "sentence1,sentence2,label\nthe dog,a cat,1\n,,0\nthe dog,,1\n the dog ,a  cat,0\n")
    cols, counts = transfer.read_transfer(path, pair, exclude_keys={("the dog", "")})
    assert cols == {"sentence1": ["the dog"], "sentence2": ["a cat"]}
    assert counts == {"files": 1, "read": 4, "used": 1, "leaked": 1, "duplicate": 1, "empty": 1,
                      "bad_rows": 0, **NO_CASE}
    txt = _write(tmp_path / "p.txt", "the dog\n")
    with pytest.raises(ValueError, match=r"p.txt: a .txt transfer file .* use .tsv/.csv/.jsonl"):
        transfer.read_transfer(txt, pair)
    bad = _write(tmp_path / "bad.jsonl",
                 '{"sentence1": "a", "sentence2": "b"}\n{"sentence1": "a", "label": 1}\n')
    with pytest.raises(ValueError,
                       match=r"bad.jsonl:2: missing column 'sentence2'; found \['label', 'sentence1'\]"):
        transfer.read_transfer(bad, pair)
    tsv = _write(tmp_path / "t.tsv", "sentence\tlabel\nthe dog\t1\n")
    with pytest.raises(ValueError, match=r"t.tsv:1: missing column 'text'; found \['label', 'sentence'\]"):
        transfer.read_transfer(tsv, ("text",))
    with pytest.raises(ValueError, match=r"pattern '.*/nothing\*.txt' matches no file"):
        transfer.read_transfer(f"{txt},{tmp_path}/nothing*.txt", ("text",))
    with pytest.raises(ValueError, match=r"no usable rows: .*'leaked': 1"):
        transfer.read_transfer(txt, ("text",), exclude_keys={("the dog",)})
    with pytest.raises(ValueError, match="unknown transfer file type"):
        transfer.read_transfer(_write(tmp_path / "x.md", "the dog\n"), ("text",))


def test_transfer_and_augmented_files_use_the_task_file_reader(tmp_path):
    """A stray tab in a transfer / augmented train TSV is an error naming file and line, or with
    skip_bad_rows a `bad_rows` count, in both dialects: plain (default; a quote is text, so a
    "quoted" tab is a stray one) and tsv_quoting=csv (a quoted tab is text, a lone leading quote
    bad quoting). A BOM and CRLF read as in task files."""
    path = _write(tmp_path / "augmented.tsv", '\ufefftext\tlabel\r\nthe model\tpos\r\n'
                  'the data\tis\tneg\n"a\tteacher"\tneg\n"Great" model\tpos\n')
    with pytest.raises(tasks.TaskFileError,
                       match=r"augmented.tsv:3: 3 fields, the header has 2 \(text, label\)"):
        transfer.read_transfer(path, ("text",))
    cols, counts = transfer.read_transfer(path, ("text",), skip_bad_rows=True)
    assert cols == {"text": ["the model", '"Great" model']}
    assert counts == {"files": 1, "read": 4, "used": 2, "leaked": 0, "duplicate": 0, "empty": 0,
                      "bad_rows": 2, **NO_CASE}
    cols, counts = transfer.read_transfer(path, ("text",), skip_bad_rows=True, tsv_quoting="csv")
    assert cols == {"text": ["the model", "a\tteacher"]} and counts["bad_rows"] == 2
    lines = [{"text": "fast model"}, ["a list"], {"id": 3}, {"text": "the data"}]
    jsonl = _write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n{oops\n")
    with pytest.raises(tasks.TaskFileError, match=r"t.jsonl:2: expected a JSON object"):
        transfer.read_transfer(jsonl, "text")
    cols, counts = transfer.read_transfer([path, jsonl], "text", skip_bad_rows=True)
    assert cols["text"] == ["the model", '"Great" model', "fast model", "the data"]
    assert (counts["read"], counts["used"], counts["bad_rows"]) == (9, 4, 5)
    spec, _ = _file_task(tmp_path)
    with pytest.raises(tasks.TaskFileError, match="augmented.tsv:3: 3 fields"):
        transfer.transfer_examples(spec, path)
    extra, counts = transfer.transfer_examples(spec, path, skip_bad_rows=True)
    assert extra == {"text": ["the model", '"Great" model']} and counts["bad_rows"] == 2


def _file_task(tmp_path, n_train=5, regression=False):
    labels = ["0.5", "1.5", "2", "3", "4.5"] if regression else ["pos", "neg", "pos", "pos", "neg"]
    rows = [f"the model {w}\t{lab}" for w, lab in zip(["is", "was", "can", "has", "are"], labels)]
    train = _write(tmp_path / "train.tsv", "text\tlabel\n" + "\n".join(rows[:n_train]) + "\n")
    dev = _write(tmp_path / "dev.tsv", f"text\tlabel\nthe data\t{labels[0]}\n")
    test = _write(tmp_path / "test.tsv", "text\nthe test\n")
    spec = tasks.load_file_task(train, dev, test, regression=regression)
    return spec, labels[:n_train]


def _transfer_rows(n=7):
    return {"text": [f"{MARK} {w} small" for w in ["a", "of", "and", "to", "in", "it", "on"][:n]]}


def _epoch(ds):
    """All rows of one pass: (token_ids, x["row"], y, sample_weight) as numpy arrays."""
    parts = collections.defaultdict(list)
    for batch in ds:
        assert len(batch) == 3
        x, y, w = batch
        assert y.dtype in (tf.int32, tf.float32) and w.dtype == tf.float32
        for name, v in (("ids", x["token_ids"]), ("row", x["row"]), ("y", y), ("w", w)):
            parts[name].append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def test_transfer_rows_follow_the_labelled_rows_with_weight_zero(tok, tmp_path):
    spec, labels = _file_task(tmp_path)
    n, extra = len(labels), _transfer_rows()
    total = n + len(extra["text"])
    mark = tok.token_to_id(MARK)
    ds = tasks.task_dataset(spec, "train", tok, tasks.Batching(seq_len=8, batch_size=4),
                            tasks.Order(shuffle=True, seed=3, repeat=True),
                            tasks.Rows(extra={"row": np.arange(total)}, transfer=extra))
    assert total % 4 == 0
    per_epoch = total // 4
    batches = list(ds.take(2 * per_epoch))
    orders = []
    for epoch in range(2):  # two epochs: every example exactly once in each
        e = _epoch(batches[epoch * per_epoch:(epoch + 1) * per_epoch])
        assert sorted(e["row"].tolist()) == list(range(total))
        orders.append(e["row"].tolist())
        labelled = e["row"] < n
        np.testing.assert_array_equal(e["w"], labelled.astype("float32"))
        np.testing.assert_array_equal((e["ids"] == mark).any(1), ~labelled)  # transfer rows
        assert (e["y"][~labelled] == -1).all()
        names = [spec.label_names[i] for i in e["y"][labelled]]
        assert sorted(names) == sorted(labels)
        for row, y in zip(e["row"][labelled], e["y"][labelled]):  # aligned with the file's row
            assert spec.label_names[y] == labels[row]
    assert orders[0] != orders[1] and orders[0] != list(range(total))  # the shuffle mixes rows
    with pytest.raises(ValueError, match=r"\[5\] rows but split 'train' \+ transfer has 12"):
        tasks.task_dataset(spec, "train", tok,
                           rows=tasks.Rows(extra={"row": np.arange(n)}, transfer=extra))
    # Empty transfer rows: still (x, y, sample_weight), every row labelled.
    e = _epoch(tasks.task_dataset(spec, "train", tok, tasks.Batching(seq_len=8, batch_size=4),
                                  rows=tasks.Rows(extra={"row": np.arange(n)},
                                                  transfer={"text": []})))
    assert (e["w"] == 1).all() and [spec.label_names[i] for i in e["y"]] == labels


def test_transfer_only_mode_and_regression(tok, tmp_path):
    spec, _ = _file_task(tmp_path)
    extra = _transfer_rows()
    m = len(extra["text"])
    e = _epoch(tasks.task_dataset(spec, "train", tok, tasks.Batching(seq_len=8, batch_size=3),
                                  tasks.Order(shuffle=True),
                                  tasks.Rows(extra={"row": np.arange(m)}, transfer=extra,
                                             labelled=False)))
    assert sorted(e["row"].tolist()) == list(range(m))
    assert (e["w"] == 0).all() and (e["y"] == -1).all()
    assert (e["ids"] == tok.token_to_id(MARK)).any(1).all()
    with pytest.raises(ValueError, match=r"\[12\] rows but the transfer set has 7"):
        tasks.task_dataset(spec, "train", tok,
                           rows=tasks.Rows(extra={"row": np.arange(12)}, transfer=extra,
                                           labelled=False))
    with pytest.raises(ValueError, match="needs transfer rows"):
        tasks.task_dataset(spec, "train", tok, rows=tasks.Rows(labelled=False))
    with pytest.raises(ValueError, match=r"needs exactly \['text'\]"):
        tasks.task_dataset(spec, "train", tok, rows=tasks.Rows(transfer={"sentence": ["a"]}))
    with pytest.raises(ValueError, match="transfer sets are for sentence and sentence-pair tasks"):
        tasks.task_dataset("conll2003", "train", tok, rows=tasks.Rows(transfer={"tokens": []}))
    reg, labels = _file_task(tmp_path / "reg", regression=True)
    n = len(labels)
    e = _epoch(tasks.task_dataset(reg, "train", tok, tasks.Batching(seq_len=8, batch_size=4),
                                  rows=tasks.Rows(extra={"row": np.arange(n + m)},
                                                  transfer=extra)))
    assert e["y"].dtype == np.float32
    labelled = e["row"] < n
    np.testing.assert_array_equal(e["w"], labelled.astype("float32"))
    assert np.isnan(e["y"][~labelled]).all() and not np.isnan(e["y"][labelled]).any()
    np.testing.assert_allclose(e["y"][labelled], [float(v) for v in labels])


def test_pair_transfer_rows_pack_both_segments(tok, tmp_path):
    train = _write(tmp_path / "pairs.csv", "a,b,label\nthe model,is small,yes\nthe data,is fast,no\n")
    spec = tasks.load_file_task(train, text_column="a", text_b_column="b")
    x, y, w = next(iter(tasks.task_dataset(
        spec, "train", tok, tasks.Batching(seq_len=10, batch_size=4),
        rows=tasks.Rows(transfer={"a": ["the layer"], "b": [f"{MARK} text"]}))))
    ids, seg = x["token_ids"].numpy(), x["segment_ids"].numpy()
    assert w.numpy().tolist() == [1, 1, 0] and y.numpy().tolist()[2] == -1
    assert tok.token_to_id(MARK) in ids[2][seg[2] == 1]  # second segment of the transfer row


def _fixed_examples(examples):
    def as_dataset(self, split, **kwargs):
        del self, kwargs
        rows = examples[split]
        return tf.data.Dataset.from_tensor_slices({k: [r[k] for r in rows] for k in rows[0]})

    return as_dataset


def test_split_keys_and_transfer_examples(tok, tmp_path):
    spec, _ = _file_task(tmp_path)
    assert transfer.split_keys(spec, "train") == {(f"the model {w}",)
                                                  for w in ["is", "was", "can", "has", "are"]}
    assert transfer.split_keys(spec, "test") == {("the test",)}
    path = _write(tmp_path / "t.txt", "the  data\nthe model is\nthe test \nfast model\nfast model\n")
    extra, counts = transfer.transfer_examples(spec, path)
    assert extra == {"text": ["fast model"]}
    assert counts == {"files": 1, "read": 5, "used": 1, "leaked": 2, "duplicate": 2, "empty": 0,
                      "bad_rows": 0, **NO_CASE}
    # TFDS tasks: keys come from the real builder's split (download mocked), bytes decoded.
    rows = {"train": [{"sentence": "the model", "label": 1, "idx": 0}],
            "validation": [{"sentence": "a  layer", "label": 0, "idx": 0}],
            "test": [{"sentence": "the test", "label": -1, "idx": 0}]}
    use_code = tfds.testing.MockPolicy.USE_CODE
    with tfds.testing.mock_data(policy=use_code, as_dataset_fn=_fixed_examples(rows)):
        assert transfer.split_keys("sst2", "validation") == {("a layer",)}
        extra, counts = transfer.transfer_examples(
            "sst2", _write(tmp_path / "s.tsv", "text\nthe model\na layer\nsmall data\n"),
            text_columns=("text",))
        assert extra == {"sentence": ["small data"]}
        assert (counts["leaked"], counts["duplicate"], counts["used"]) == (1, 1, 1)
        x, y, w = next(iter(tasks.task_dataset("sst2", "train", tok,
                                               tasks.Batching(seq_len=8, batch_size=4),
                                               rows=tasks.Rows(transfer=extra))))
    assert y.numpy().tolist() == [1, -1] and w.numpy().tolist() == [1, 0]


# ---- case / accent normalisation as the teacher's tokenizer reads texts -------------------------

SETTINGS = ({"lowercase": True, "strip_accents": True}, {"lowercase": True, "strip_accents": False},
            {"lowercase": False, "strip_accents": True})
MIXED = ["Café au lait", "NAÏVE Straße", "Über-fine résumé!", "ÉCOLE ﬁne", "İstanbul, CAFÉ.",
         "Ａｂｃ dog", "co\u00adoperate de\u200bal", "Crème  BRÛLÉE\t"]


def _char_tokenizers(texts, **settings):
    """A keras-hub BertTokenizer with `settings` and a plain (cased, accent-keeping) one, both on
    a vocabulary of single characters ("c", "##c"): ids spell out every word of what the
    tokenizer read, character by character, so any difference in normalisation shows."""
    chars = set()
    for text in texts:
        for s in SETTINGS:
            chars |= set(transfer.normalize_text(text, **s)) | set(text.casefold())
        chars |= set(text)
    chars = sorted(c for c in chars if not c.isspace())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    make = keras_hub.tokenizers.BertTokenizer
    return make(vocabulary=vocab, **settings), make(vocabulary=vocab)


def _ids(tokenizer, texts):
    """Token ids of each text, eagerly (keras-hub's Python path) and in tf.data (the TF Text
    path that task_dataset runs); both must agree."""
    eager = [np.asarray(tokenizer(t)).tolist() for t in texts]
    in_graph = [ids.tolist() for ids in
                tf.data.Dataset.from_tensor_slices(texts).map(tokenizer).as_numpy_iterator()]
    assert eager == in_graph
    return eager


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_normalize_text_reads_texts_as_the_keras_hub_tokenizer_does(settings):
    """The tokenizer with lowercase / strip_accents on the raw text gives exactly the ids a plain
    tokenizer gives on `normalize_text`'s output (same vocabulary), and that differs from the
    plain tokenizer on the raw text: the normaliser is what the model sees."""
    uncased_tok, plain = _char_tokenizers(MIXED, **settings)
    normalised = [transfer.normalize_text(t, **settings) for t in MIXED]
    want = _ids(uncased_tok, MIXED)
    assert _ids(plain, normalised) == want
    assert all(plain.token_to_id("[UNK]") not in ids for ids in want)
    assert _ids(plain, MIXED) != want
    assert transfer.normalize_text("Café", lowercase=False, strip_accents=False) == "Café"


def test_normalisation_keys_and_its_limits():
    both = {"lowercase": True, "strip_accents": True}
    assert transfer.text_key(" Café  au\tLAIT ", **both) == ("cafe au lait",) == \
        transfer.text_key(["cafe AU lait"], **both)
    assert transfer.text_key("Café", lowercase=True) == ("café",) != transfer.text_key(
        "cafe", lowercase=True)  # keras-hub's lowercase alone keeps accents
    assert transfer.text_key("Café") != transfer.text_key("café")  # default: exact
    # "…" case-folds to "..." (one word) but "..." is three: the tokenizer tells them apart, so
    # the keys do too; a soft hyphen splits words, as in the tokenizer.
    uncased_tok, _ = _char_tokenizers(["a…", "a..."], **both)
    assert _ids(uncased_tok, ["a…"]) != _ids(uncased_tok, ["a..."])
    assert transfer.text_key("a…", **both) != transfer.text_key("a...", **both)
    assert transfer.text_key("co\u00adoperate", **both) == ("co operate",)


def test_tokenizer_normalization_and_uncased():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cafe"]
    lower = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab, lowercase=True)
    cased = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab, lowercase=False)
    stripping = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocab, lowercase=True,
                                                        strip_accents=True)
    assert transfer.uncased(lower) and transfer.uncased(stripping)
    assert not transfer.uncased(cased) and not transfer.uncased(None)
    assert transfer.tokenizer_normalization(lower) == {"lowercase": True, "strip_accents": False}
    assert transfer.tokenizer_normalization(stripping) == {"lowercase": True,
                                                          "strip_accents": True}
    assert transfer.tokenizer_normalization(cased) == {"lowercase": False,
                                                      "strip_accents": False}
    assert transfer.tokenizer_normalization(keras_hub.tokenizers.ByteTokenizer()) == {
        "lowercase": False, "strip_accents": False}


def test_case_and_accent_variants_leak_and_duplicate_only_when_normalising(tmp_path):
    rows = ["Café au lait", "cafe AU lait", "the Model", "NEW text", "new TEXT", "NEW  text",
            "Naïve dog", "naive dog", "Nice cat", "nice cat", "nice  cat", "small data"]
    path = _write(tmp_path / "t.txt", "\n".join(rows) + "\n")
    exclude, known = {("cafe AU lait",)}, {("The MODEL",)}
    off_cols, off = transfer.read_transfer(path, "text", exclude, known)
    assert off_cols["text"] == [r for r in rows if r not in ("cafe AU lait", "NEW  text",
                                                             "nice  cat")]
    assert (off["leaked"], off["duplicate"]) == (1, 2) and off["leaked_by_case"] == 0
    on_cols, on = transfer.read_transfer(path, "text", exclude, known, lowercase=True,
                                         strip_accents=True)
    assert on_cols["text"] == ["NEW text", "Naïve dog", "Nice cat", "small data"]
    assert (on["leaked"], on["duplicate"], on["used"]) == (2, 6, 4)
    # Only the rows the exact check kept: "Café au lait" (leak); "the Model" (train),
    # "new TEXT", "naive dog", "nice cat" (duplicates). "nice  cat" was an exact duplicate.
    assert (on["leaked_by_case"], on["duplicate_by_case"]) == (1, 4)
    only_on = collections.Counter(off_cols["text"]) - collections.Counter(on_cols["text"])
    assert sum(only_on.values()) == on["leaked_by_case"] + on["duplicate_by_case"] == \
        off["used"] - on["used"]
    # lowercase alone (keras-hub's BertTokenizer(lowercase=True)): accents still count.
    cols, counts = transfer.read_transfer(path, "text", exclude, known, lowercase=True)
    assert cols["text"] == ["Café au lait", "NEW text", "Naïve dog", "naive dog", "Nice cat",
                            "small data"]
    assert (counts["leaked_by_case"], counts["duplicate_by_case"]) == (0, 3)


def test_transfer_examples_normalise_the_splits_too(tmp_path):
    spec, _ = _file_task(tmp_path)
    path = _write(tmp_path / "t.txt", "The DATA\nTHE model IS\nthe TEST\nfast model\n")
    extra, counts = transfer.transfer_examples(spec, path)
    assert len(extra["text"]) == 4 and counts["leaked"] == counts["duplicate"] == 0
    extra, counts = transfer.transfer_examples(spec, path, lowercase=True)
    assert extra == {"text": ["fast model"]}
    assert {k: counts[k] for k in ("leaked", "duplicate", "leaked_by_case",
                                   "duplicate_by_case")} == {
        "leaked": 2, "duplicate": 1, "leaked_by_case": 2, "duplicate_by_case": 1}
    assert transfer.split_keys(spec, "test", lowercase=True) == {("the test",)}


def test_transfer_set_compares_as_the_teachers_tokenizer_reads(tmp_path, capsys):
    """task_distill's transfer set: the teacher preset's tokenizer (tiny's lower-cases) decides
    the normalisation; a cased tokenizer passed in compares exactly."""
    from tinybert_tf.launch import config_lib, task_data, transfer_set

    train = _write(tmp_path / "train.tsv", "text\tlabel\nthe model is\tpos\nthe data\tneg\n")
    dev = _write(tmp_path / "dev.tsv", "text\tlabel\na small layer\tpos\n")
    extra = _write(tmp_path / "t.txt", "A Small LAYER\nThe Model is\nfast text\nFAST text\n")
    c = config_lib.load("task_distill", "tiny", **{
        "task": "file", "data.train_file": train, "data.eval_file": dev, "transfer_file": extra,
        "teacher": tiny.write_teacher(tmp_path / "teacher", num_layers=1)})
    spec = task_data.task_spec(c)
    columns, counts = transfer_set.transfer_set(c, spec, str(tmp_path / "run"))
    assert columns == {"text": ["fast text"]}
    assert (counts["leaked_by_case"], counts["duplicate_by_case"]) == (1, 2)
    assert "1 of the leaked and 2 of the duplicate rows match only by case/accents: the " \
        "teacher's tokenizer lower-cases." in capsys.readouterr().out
    saved = json.load(open(tmp_path / "run" / "transfer.json"))
    assert (saved["lowercase"], saved["strip_accents"], saved["duplicate_by_case"]) == (
        True, False, 2)
    cased = keras_hub.tokenizers.BertTokenizer(vocabulary=list(tiny.VOCAB))
    columns, counts = transfer_set.transfer_set(c, spec, str(tmp_path / "run"), tokenizer=cased)
    assert len(columns["text"]) == 4 and counts["leaked"] == counts["duplicate"] == 0
    assert "only by case" not in capsys.readouterr().out
