"""Corpus pipeline: files -> sentences -> packed [CLS] ... [SEP] sequences, checked by content."""

import gzip
import math

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from tinybert_tf.data import corpus, corpus_scan, shards

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the quick brown fox dog jump lazy over a is good day hello world . , ! ? 。 "
    "café naïve über élan 中 文 很 好 我 们 \ufffd"
).split()
PIECES = ["##s", "##ed", "##ing", "##ly", "##\ufffd"]


def make_tokenizer(tmp_path, lowercase=True, extra=()):
    """A tiny BertTokenizer from a vocabulary file written here (no downloads)."""
    vocab = SPECIALS + WORDS + PIECES + list(extra)
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return keras_hub.tokenizers.BertTokenizer(vocabulary=str(path), lowercase=lowercase)


def detok(tokenizer, ids):
    """Detokenised text as str (keras-hub returns str, bytes or a tensor depending on input)."""
    out = tokenizer.detokenize(ids)
    out = out.numpy() if hasattr(out, "numpy") else out
    return out.decode() if isinstance(out, bytes) else out


def squash(text):
    return "".join(text.split())


def decoded_rows(tokenizer, token_ids, padding_mask):
    """Detokenised rows without [CLS]/[SEP]/[PAD]; checks the framing on the way."""
    out = []
    for ids, mask in zip(np.asarray(token_ids), np.asarray(padding_mask), strict=True):
        n = int(mask.sum())
        assert ids[0] == tokenizer.cls_token_id and ids[n - 1] == tokenizer.sep_token_id
        assert (ids[n:] == tokenizer.pad_token_id).all()
        out.append(detok(tokenizer, tf.constant(ids[1 : n - 1])))
    return out


def collect(ds):
    rows = {"token_ids": [], "segment_ids": [], "padding_mask": []}
    for batch in ds:
        for k in rows:
            rows[k].append(batch[k].numpy())
    return {k: np.concatenate(v) for k, v in rows.items()}


def test_packed_sequences_decode_back_to_source_any_language(tmp_path):
    docs = [
        "The quick brown fox jumped over a lazy dog. Hello world!",
        "我们很好。中文很好。",
        "Café naïve über élan, a good day.",
    ]
    (tmp_path / "c.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    tok = make_tokenizer(tmp_path)
    ds = corpus.corpus_dataset(str(tmp_path / "c.txt"), tok, seq_len=32, batch_size=2,
                               shuffle_buffer=0, repeat=False)
    assert ds.element_spec["token_ids"].dtype == tf.int32
    rows = collect(ds)
    assert rows["token_ids"].shape == (3, 32) and (rows["segment_ids"] == 0).all()
    decoded = decoded_rows(tok, rows["token_ids"], rows["padding_mask"])
    assert [squash(d) for d in decoded] == [squash(d.lower()) for d in docs]
    assert "[UNK]" not in " ".join(decoded)
    # CJK characters are split one per token, as BERT does.
    cjk = np.asarray(tok(tf.constant("我们很好"))).tolist()
    assert [tok.id_to_token(i) for i in cjk] == ["我", "们", "很", "好"]


def test_lowercase_follows_the_tokenizer(tmp_path):
    cased = make_tokenizer(tmp_path, lowercase=False, extra=["Hello", "Café"])
    uncased = make_tokenizer(tmp_path, lowercase=True, extra=["Hello", "Café"])
    assert detok(cased, cased(tf.constant("Hello Café"))) == "Hello Café"
    assert detok(uncased, uncased(tf.constant("HELLO CAFÉ"))) == "hello café"


def test_split_sentences_and_pack_document(tmp_path):
    sents = corpus.split_sentences(tf.constant("A dog. Is good!  中文很好。我们 hello"))
    assert [s.decode() for s in sents.numpy()] == ["A dog.", "Is good!", "中文很好。", "我们 hello"]
    tok = make_tokenizer(tmp_path)
    # 3 sentences of 3 tokens with room for 7 -> sentences 1+2 together, 3 alone.
    rows = corpus.pack_document(tf.constant("a dog. a dog. a dog."), tok, seq_len=9)
    assert rows.row_lengths().numpy().tolist() == [6, 3]
    empty = corpus.pack_document(tf.constant(""), tok, seq_len=9)
    assert empty.nrows().numpy() == 0


def test_long_document_split_without_losing_tokens(tmp_path):
    words = ("the quick brown fox jump lazy dog good " * 1250).split()  # 10,000 tokens, 1 sentence
    (tmp_path / "long.txt").write_text(" ".join(words) + "\nthe dog.\n", encoding="utf-8")
    tok = make_tokenizer(tmp_path)
    seq_len = 128
    seqs = list(corpus.sequences_dataset(
        corpus.documents_dataset(str(tmp_path / "long.txt")), tok, seq_len).as_numpy_iterator())
    expected = math.ceil(10_000 / (seq_len - 2))
    assert len(seqs) == expected + 1  # + the short second document, never merged with the first
    body = np.concatenate([s[1:-1] for s in seqs[:expected]])
    np.testing.assert_array_equal(body, np.asarray(tok(tf.constant(" ".join(words)))))
    assert all(len(s) <= seq_len for s in seqs)
    stats = corpus_scan.scan_corpus(str(tmp_path / "long.txt"), tokenizer=tok, seq_len=seq_len)
    assert (stats.documents, stats.tokens, stats.split_documents) == (2, 10_003, 1)
    out = tmp_path / "shards"
    written = shards.write_pretokenized_corpus(str(tmp_path / "long.txt"), str(out), tok,
                                               seq_len=seq_len, num_shards=2, progress=False)
    assert (written.sequences, written.tokens, written.split_documents) == (expected + 1, 10_003, 1)


def test_blank_line_documents_gz_and_tfrecord_inputs(tmp_path):
    text = "a dog.\nthe fox.\n\n\n  \nhello world\n"
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    with tf.io.TFRecordWriter(str(tmp_path / "b.tfrecord")) as w:
        for doc in ["good day", "   "]:
            feat = tf.train.Feature(bytes_list=tf.train.BytesList(value=[doc.encode()]))
            w.write(tf.train.Example(features=tf.train.Features(feature={"text": feat}))
                    .SerializeToString())
    patterns = [str(tmp_path / "*.gz"), str(tmp_path / "b.tfrecord")]
    docs = sorted(d.decode() for d in corpus.documents_dataset(patterns, "blank_line")
                  .as_numpy_iterator())
    assert docs == ["a dog. the fox.", "good day", "hello world"]
    line_docs = corpus.documents_dataset(f"{patterns[0]},{patterns[1]}", "line")
    assert len(list(line_docs)) == 4
    stats = corpus_scan.scan_corpus(patterns, doc_format="blank_line")
    assert (stats.files, stats.lines, stats.documents, stats.empty_lines) == (2, 8, 3, 4)
    assert "documents=3" in stats.summary()
    tok = make_tokenizer(tmp_path)  # "a dog . the fox ." has 6 pieces, over seq_len 6 - 2
    stats = corpus_scan.scan_corpus(patterns, "blank_line", tokenizer=tok, seq_len=6)
    assert (stats.documents, stats.tokens, stats.split_documents) == (3, 10, 1)
    stats = corpus_scan.scan_corpus(patterns, "line", tokenizer=tok, seq_len=6)
    assert (stats.documents, stats.tokens, stats.split_documents) == (4, 10, 0)


def test_bad_bytes_and_empty_lines_are_skipped_and_counted(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"hello \xff\xfe world\n\n   \n\t\nthe dog\n")
    tok = make_tokenizer(tmp_path)
    stats = corpus_scan.scan_corpus(str(tmp_path / "bad.txt"))
    assert (stats.lines, stats.documents, stats.empty_lines, stats.invalid_utf8_lines) == (
        5, 2, 3, 1)
    rows = collect(corpus.corpus_dataset(str(tmp_path / "bad.txt"), tok, seq_len=16,
                                         batch_size=8, shuffle_buffer=0, repeat=False))
    decoded = decoded_rows(tok, rows["token_ids"], rows["padding_mask"])
    assert decoded == ["hello \ufffd\ufffd world", "the dog"]  # each bad byte -> U+FFFD


def test_missing_inputs_raise_one_line_errors(tmp_path):
    tok = make_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope/\\*.txt") as e:
        corpus.corpus_dataset(str(tmp_path / "nope/*.txt"), tok)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="No corpus input"):
        corpus.expand_patterns("")
    with pytest.raises(ValueError, match="doc_format"):
        corpus.documents_dataset(str(tmp_path / "vocab.txt"), doc_format="para")


def test_scan_with_max_lines_counts_a_prefix_and_says_so(tmp_path):
    for k in range(3):
        (tmp_path / f"p{k}.txt").write_text("the dog\n\n" * 50, encoding="utf-8")
    full = corpus_scan.scan_corpus(str(tmp_path / "p*.txt"))
    assert (full.files, full.lines, full.documents, full.empty_lines, full.complete) == (
        3, 300, 150, 150, True)
    part = corpus_scan.scan_corpus(str(tmp_path / "p*.txt"), max_lines=150)
    assert not part.complete and part.files == 3 and 150 <= part.lines < 300
    assert part.documents == part.lines // 2
    cut = corpus_scan.scan_corpus(str(tmp_path / "p0.txt"), max_lines=10)
    assert (cut.lines, cut.documents, cut.complete) == (10, 5, False)


def test_no_documents_is_one_line_error(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "blank.txt").write_text("\n  \n\t\n", encoding="utf-8")
    (tmp_path / "c" / "empty.txt").write_text("", encoding="utf-8")
    tok = make_tokenizer(tmp_path)
    stats = corpus_scan.scan_corpus(str(tmp_path / "c" / "*.txt"))
    assert (stats.files, stats.lines, stats.documents) == (2, 3, 0)
    with pytest.raises(corpus.CorpusError, match=r"has no documents: 2 file\(s\), 3 lines") as e:
        corpus_scan.require_documents(stats, str(tmp_path / "c" / "*.txt"))
    assert "\n" not in str(e.value)
    with pytest.raises(corpus.CorpusError, match="no sequences"):  # repeat: no endless loop
        corpus.corpus_dataset(str(tmp_path / "c" / "*.txt"), tok, seq_len=8, batch_size=2)
    (tmp_path / "d").mkdir()
    with pytest.raises(corpus.CorpusError, match="only directories"):
        corpus.expand_patterns(str(tmp_path / "d*"))
    with pytest.raises(corpus.CorpusError, match="has no documents"):
        shards.write_pretokenized_corpus(str(tmp_path / "c" / "blank.txt"), str(tmp_path / "out"), tok,
                                         progress=False)
    assert not (tmp_path / "out").exists()


def test_epoch_order_does_not_depend_on_earlier_iterators(tmp_path):
    """Keras' fit peeks a batch and starts a new iterator; a resumed run skips past epoch ends.
    Both must see the batches of one uninterrupted iterator (epochs seeded by (seed, epoch))."""
    (tmp_path / "c").mkdir()
    lines = [f"{WORDS[i % 12]} {WORDS[(i // 12) % 12]}" for i in range(30)]
    (tmp_path / "c" / "a.txt").write_text("\n".join(lines[:15]) + "\n", encoding="utf-8")
    (tmp_path / "c" / "b.txt").write_text("\n".join(lines[15:]) + "\n", encoding="utf-8")
    tok = make_tokenizer(tmp_path)
    ds = corpus.corpus_dataset(str(tmp_path / "c" / "*.txt"), tok, seq_len=8, batch_size=4,
                               shuffle_buffer=16, seed=3, drop_remainder=True)
    full = [b["token_ids"].numpy() for b in ds.take(20)]  # 80 sequences: 2 epoch ends
    next(iter(ds))  # a peek
    resumed = [b["token_ids"].numpy() for b in ds.skip(12).take(8)]
    for a, b in zip(full[12:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    epochs = np.concatenate(full)[:60].reshape(2, 30, 8)  # 30 sequences a pass
    assert sorted(map(bytes, epochs[0])) == sorted(map(bytes, epochs[1]))
    assert not np.array_equal(epochs[0], epochs[1])  # each epoch its own order


def test_same_seed_same_order_different_seed_different_order(tmp_path):
    words = WORDS[:12]
    for k in range(2):
        lines = [f"{words[i % 12]} {words[(i // 12) % 12]} {words[k]}" for i in range(60)]
        (tmp_path / f"part{k}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = make_tokenizer(tmp_path)

    def order(seed):
        ds = corpus.corpus_dataset(str(tmp_path / "part*.txt"), tok, seq_len=8, batch_size=16,
                                   shuffle_buffer=64, seed=seed, repeat=True)
        return np.concatenate([b["token_ids"].numpy() for b in ds.take(10)])

    a, b, c = order(0), order(0), order(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # repeat=True: 160 sequences from 120 documents, each document once in the first epoch.
    assert len(a) == 160 and len({r.tobytes() for r in a[:120]}) == 120


def test_drop_remainder_static_shapes_and_bucketing(tmp_path):
    lines = ["the dog", "the quick brown fox jump over a lazy dog", "hello world ."] * 5
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = make_tokenizer(tmp_path)
    ds = corpus.corpus_dataset(str(tmp_path / "c.txt"), tok, seq_len=16, batch_size=4,
                               shuffle_buffer=0, repeat=False, drop_remainder=True)
    assert ds.element_spec["padding_mask"].shape.as_list() == [4, 16]
    assert sum(1 for _ in ds) == 3
    buck = corpus.corpus_dataset(str(tmp_path / "c.txt"), tok, seq_len=16, batch_size=5,
                                 shuffle_buffer=0, repeat=False, bucket_boundaries=[5, 8])
    widths = sorted(b["token_ids"].shape[1] for b in buck)
    assert widths == [4, 5, 11]  # each batch padded to its own longest sequence
    for b in buck:
        np.testing.assert_array_equal(b["padding_mask"].numpy(),
                                      (b["token_ids"].numpy() != tok.pad_token_id).astype(int))
    with pytest.raises(ValueError, match="bucket_boundaries"):
        corpus.finish_sequences(tf.data.Dataset.range(1), 16, 2, bucket_boundaries=[32])


def test_pretokenized_shards_round_trip(tmp_path):
    docs = ["the quick brown fox.", "hello world!", "中文很好。", "a dog is good."] * 3
    (tmp_path / "c.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    tok = make_tokenizer(tmp_path)
    out = tmp_path / "shards"
    stats = shards.write_pretokenized_corpus(str(tmp_path / "c.txt"), str(out), tok, seq_len=12,
                                             num_shards=3, progress=False)
    assert (stats.documents, stats.sequences) == (12, 12)
    assert len(tf.io.gfile.glob(str(out / "corpus-*-of-00003.tfrecord"))) == 3
    meta = shards.read_corpus_meta(str(out))
    assert meta["seq_len"] == 12 and meta["stats"]["tokens"] == stats.tokens
    direct = collect(corpus.corpus_dataset(str(tmp_path / "c.txt"), tok, seq_len=12,
                                           batch_size=5, shuffle_buffer=0, repeat=False))
    from_shards = collect(shards.pretokenized_dataset(str(out / "*.tfrecord"), batch_size=5,
                                                      shuffle_buffer=0, repeat=False))
    for k in direct:
        assert sorted(map(bytes, direct[k])) == sorted(map(bytes, from_shards[k]))
    with pytest.raises(ValueError, match="seq_len=12 > 8"):
        shards.pretokenized_dataset(str(out / "*.tfrecord"), seq_len=8)
