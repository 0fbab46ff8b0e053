"""Tests of TinyBERT data augmentation on a tiny random BertMaskedLM (2 layers, hidden 32)."""

import collections
import json
import os

import keras
import keras_hub
import numpy as np
import pytest

from tinybert_tf.data import augment
from tinybert_tf.data.augment_shards import augment_file

WORDS = (
    "the a cat dog bird fish sat ran flew swam on under over near mat rug log tree red blue "
    "green big small old new quick slow happy sad walk jump play talk look sing read write "
    "house garden river road"
).split()
SUFFIXES = ["##s", "##ing", "##ed", "##er", "##ly"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"]
VOCAB = SPECIALS + WORDS + SUFFIXES + [".", ",", "7"]
SENTENCES = [
    "the cat sat on the mat .",
    "a quick dog ran under the old tree",
    "Happy birds walking near the river , singing slowly",  # birds/walking/...: several pieces
    "the small fish swam over 7 blue logs",
    "big green house",
    "the dog jumped quickly",
    "read walker talking",
    "sad old cat",
]
MULTI = {"birds", "walking", "singing", "slowly", "logs", "jumped", "quickly", "walker", "talking"}


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")  # the test writes its word list
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=str(vocab_file), lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB),
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=64,
    )
    return keras_hub.models.BertMaskedLM(backbone, preprocessor=None), tokenizer


def _aug(model_and_tokenizer, **kw):
    kw = {"num_candidates": 8, "batch_size": 16, "seq_len": 64, "verbose": False, **kw}
    return augment.Augmenter(*model_and_tokenizer, **kw)


def test_word_pieces_match_keras_hub(model_and_tokenizer):
    aug = _aug(model_and_tokenizer)
    tok = model_and_tokenizer[1]
    for sent in SENTENCES:
        ours = [i for w in aug.split_words(sent) for i in w.piece_ids]
        assert ours == np.asarray(tok(sent)).tolist(), sent
    multi = {w.text.lower() for s in SENTENCES for w in aug.split_words(s) if len(w.piece_ids) > 1}
    assert multi == MULTI


def test_originals_first_and_p0_copies_equal(model_and_tokenizer):
    out = _aug(model_and_tokenizer, p=0.0).augment_texts(SENTENCES, n_aug=3)
    assert [g[0] for g in out] == SENTENCES
    assert all(g == [s] * 4 for g, s in zip(out, SENTENCES, strict=True))


def _allowed(token):
    return token not in SPECIALS and not token.startswith("##") and any(c.isalpha() for c in token)


def test_candidates_match_independent_mlm_and_nearest_neighbours(model_and_tokenizer):
    masked_lm, _ = model_and_tokenizer
    aug = _aug(model_and_tokenizer)
    allowed = np.array([_allowed(t) for t in VOCAB])
    emb = np.asarray(masked_lm.backbone.token_embedding.embeddings)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    checked = collections.Counter()
    for sent, words in zip(SENTENCES, aug.sentence_candidates(SENTENCES), strict=True):
        ids = [i for w in words for i in w.piece_ids]
        k = 0
        for w in words:
            if not any(c.isalpha() for c in w.key):
                assert w.candidates == []
            elif len(w.piece_ids) == 1:  # MLM on "[CLS] masked [SEP] original [SEP]"
                masked = list(ids)
                masked[k] = VOCAB.index("[MASK]")
                tokens = [2, *masked, 3, *ids, 3]
                segs = [0] * (len(ids) + 2) + [1] * (len(ids) + 1)
                logits = masked_lm.predict_on_batch(
                    {
                        "token_ids": np.array([tokens]),
                        "segment_ids": np.array([segs]),
                        "padding_mask": np.ones((1, len(tokens)), "int32"),
                        "mask_positions": np.array([[k + 1]]),
                    }
                )[0, 0]
                want = np.argsort(-np.where(allowed, logits, -np.inf))[:8]
                assert set(w.candidates) == {VOCAB[i] for i in want}, (sent, w.text)
                checked["mlm"] += 1
            else:  # cosine neighbours of the mean piece embedding
                v = emb[w.piece_ids].mean(0)
                sims = np.where(allowed, unit @ (v / np.linalg.norm(v)), -np.inf)
                want = np.argsort(-sims)[:8]
                assert w.candidates == [VOCAB[i] for i in want], w.text
                checked["nn"] += 1
            k += len(w.piece_ids)
    assert checked["mlm"] >= 20 and checked["nn"] == 9


def test_p1_replaces_every_word_by_a_candidate_and_rate_is_p(model_and_tokenizer):
    aug = _aug(model_and_tokenizer, p=1.0, pair_context=False)
    words = aug.sentence_candidates(SENTENCES)
    out = aug.augment_texts(SENTENCES, n_aug=5)
    for sent_words, group in zip(words, out, strict=True):
        for copy in group[1:]:
            new = copy.split()
            assert len(new) == len(sent_words)
            for w, n in zip(sent_words, new, strict=True):
                if w.candidates:
                    assert n.lower() in w.candidates
                    if w.text[0].isupper():
                        assert n[0].isupper()
                else:
                    assert n == w.text
    aug = _aug(model_and_tokenizer, p=0.4, seed=1)
    texts = SENTENCES * 5
    out = aug.augment_texts(texts, n_aug=20)
    rate = aug.stats["replaced"] / aug.stats["word_slots"]
    assert aug.stats["word_slots"] > 2000 and abs(rate - 0.4) < 0.03
    distinct = collections.defaultdict(set)  # M respected: <= 8 distinct replacements per word
    for group in out:
        for copy in group[1:]:
            for pos, (o, n) in enumerate(zip(group[0].split(), copy.split(), strict=True)):
                if n != o:
                    distinct[(group[0], pos)].add(n.lower())
    assert max(len(v) for v in distinct.values()) == 8


def test_long_sentence_uses_a_window(model_and_tokenizer):
    aug = _aug(model_and_tokenizer, seq_len=16)
    long = " ".join(WORDS)  # 41 single-piece words > seq_len
    words = aug.sentence_candidates([long])[0]
    assert all(len(w.candidates) == 8 for w in words)
    ids = [w.piece_ids[0] for w in words]
    for k in (0, 20, 40):
        tokens, segs, pos = aug.mlm_inputs(ids, k)
        assert len(tokens) == len(segs) <= 16 and tokens[pos] == VOCAB.index("[MASK]")
        assert tokens[pos + (len(tokens) - 1) // 2] == ids[k]  # same word in the original copy


def test_seed_determinism(model_and_tokenizer):
    a = _aug(model_and_tokenizer, seed=3).augment_texts(SENTENCES, n_aug=4)
    b = _aug(model_and_tokenizer, seed=3).augment_texts(SENTENCES, n_aug=4)
    c = _aug(model_and_tokenizer, seed=4).augment_texts(SENTENCES, n_aug=4)
    assert a == b and a != c


def _write_tsv(path, n):
    rows = [f"{SENTENCES[i % len(SENTENCES)]}\t{SENTENCES[(i + 3) % 8]}\t{i % 3}" for i in range(n)]
    path.write_text("text\ttext_b\tlabel\n" + "\n".join(rows) + "\n")


def test_augment_file_pairs_and_resume(model_and_tokenizer, tmp_path):
    tsv = tmp_path / "in.tsv"
    _write_tsv(tsv, 14)
    kw = {"n_aug": 3, "num_shards": 4, "text_b_column": "text_b"}
    full = tmp_path / "full"
    stats = augment_file(_aug(model_and_tokenizer), str(tsv), str(full), **kw)
    assert stats["examples_in"] == 14 and stats["copies_written"] == 42
    assert stats["shards"] == 4 and stats["shards_skipped"] == 0
    lines = (full / "augmented.tsv").read_text().splitlines()
    assert lines[0] == "text\ttext_b\tlabel" and len(lines) == 1 + 14 * 4
    src = tsv.read_text().splitlines()
    for i in range(14):  # original first, label copied, both sides augmented
        group = [ln.split("\t") for ln in lines[1 + 4 * i : 5 + 4 * i]]
        assert "\t".join(group[0]) == src[1 + i]
        assert all(g[2] == str(i % 3) for g in group)
    assert any(g[0] != SENTENCES[0] for g in [ln.split("\t") for ln in lines[1:]])
    shards = sorted(f for f in os.listdir(full) if f.endswith(".tsv") and f.startswith("aug-"))
    assert shards == [f"aug-{s:05d}-of-00004.tsv" for s in range(4)]
    # Resume: drop shard 2 and its marker; the rerun skips 0, 1, 3 and reproduces shard 2.
    before = (full / "augmented.tsv").read_bytes()
    os.remove(full / shards[2])
    os.remove(full / (shards[2] + ".done"))
    again = augment_file(_aug(model_and_tokenizer), str(tsv), str(full), **kw)
    assert again["shards_skipped"] == 3 and again == stats | {"shards_skipped": 3}
    assert (full / "augmented.tsv").read_bytes() == before
    with pytest.raises(ValueError, match="other settings"):
        augment_file(_aug(model_and_tokenizer, seed=9), str(tsv), str(full), **kw)
    with pytest.raises(ValueError, match="column 'sentence'"):
        augment_file(_aug(model_and_tokenizer), str(tsv), str(tmp_path / "x"), text_column="sentence")


def test_augment_file_reads_and_writes_plain_tsv(model_and_tokenizer, tmp_path):
    """GLUE-style input (quotes are text) -> augmented.tsv in the same plain dialect: with p=0
    every copy equals its original, so the output is each input line three times, byte for
    byte, and the task-file reader gives back every text unchanged with its label."""
    from tinybert_tf.data import task_files

    texts = [f'"{SENTENCES[0]}," says all', f'a 12" {SENTENCES[1]}', f'"{SENTENCES[4]}"',
             f"it's {SENTENCES[3]}", f"{SENTENCES[5]} \"", '"']
    lines = [f"{t}\t{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(texts)]
    tsv = tmp_path / "in.tsv"
    tsv.write_bytes(("\ufefftext\tlabel\r\n" + "".join(ln.replace("\n", "\r\n") for ln in lines))
                    .encode("utf-8"))  # a BOM and CRLF in; plain LF lines out
    stats = augment_file(_aug(model_and_tokenizer, p=0.0), str(tsv), str(tmp_path / "out"),
                         n_aug=2)
    assert stats["copies_written"] == 12 and stats["flattened_fields"] == 0
    written = (tmp_path / "out" / "augmented.tsv").read_bytes().decode("utf-8")
    assert written == "text\tlabel\n" + "".join(ln * 3 for ln in lines)
    rows = list(task_files.read_rows(str(tmp_path / "out" / "augmented.tsv"), ["text"], "label"))
    assert [r[1][0] for r in rows] == [t for t in texts for _ in range(3)]
    assert [r[2] for r in rows] == [("pos" if i % 2 else "neg") for i in range(6) for _ in "abc"]


def test_augment_file_csv_quoted_input_and_stray_tabs(model_and_tokenizer, tmp_path):
    """tsv_quoting=csv input: a quoted tab / quote is text, written plain with the tab as a space
    (counted); a stray tab in plain input is a one-line error, not a shifted label."""
    from tinybert_tf.data import task_files
    from tinybert_tf.data.task_spec import TaskFileError

    tsv = tmp_path / "in.tsv"
    tsv.write_text('text\tlabel\n"the ""best"" movie\tever"\tpos\n'
                   f"{SENTENCES[1]}\tneg\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(TaskFileError, match=r"in.tsv:2: 3 fields, the header has 2 .*plain TSV"):
        augment_file(_aug(model_and_tokenizer, p=0.0), str(tsv), str(out), n_aug=2)
    stats = augment_file(_aug(model_and_tokenizer, p=0.0), str(tsv), str(out), n_aug=2,
                         tsv_quoting="csv")
    assert stats["copies_written"] == 4 and stats["flattened_fields"] == 1
    rows = list(task_files.read_rows(str(out / "augmented.tsv"), ["text"], "label"))
    assert [r[1][0] for r in rows[:3]] == ['the "best" movie ever'] * 3  # the tab: a space
    assert [r[2] for r in rows] == ["pos"] * 3 + ["neg"] * 3  # labels never move
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\ngood movie\tloved it\tneu\n", encoding="utf-8")
    with pytest.raises(TaskFileError, match=r"bad.tsv:2: 3 fields, the header has 2"):
        augment_file(_aug(model_and_tokenizer), str(bad), str(tmp_path / "o2"))


def test_augment_cli_writes_labelled_copies(model_and_tokenizer, tmp_path):
    """tinybert_tf.tools.augment end to end: a saved MaskedLM preset + a TSV -> augmented.tsv with every
    row's label kept; a preset without a masked-LM head is one `Error:` line, exit 1."""
    import subprocess
    import sys

    from tinybert_tf.data import task_files

    masked_lm, tokenizer = model_and_tokenizer
    preset = tmp_path / "mlm"
    masked_lm.save_to_preset(str(preset))
    tokenizer.save_to_preset(str(preset))
    tsv = tmp_path / "train.tsv"  # GLUE-style plain TSV: quotes are text
    texts = [f'"{SENTENCES[0]}," says all', f"it's {SENTENCES[1]}", f'{SENTENCES[2]} "']
    tsv.write_text("text\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(texts)))
    cmd = [sys.executable, "-m", "tinybert_tf.tools.augment", f"--input={tsv}",
           f"--masked_lm_preset={preset}", "--n_aug=2", "--num_candidates=4", "--seq_len=64"]
    done = subprocess.run([*cmd, f"--output_dir={tmp_path / 'out'}"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(task_files.read_rows(str(tmp_path / "out" / "augmented.tsv"), ["text"], "label"))
    assert [r[2] for r in rows] == ["0"] * 3 + ["1"] * 3 + ["0"] * 3
    assert [rows[i][1][0] for i in (0, 3, 6)] == texts  # each original first, byte for byte
    stats = json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("{")))
    assert stats["flattened_fields"] == 0 and stats["copies_written"] == 6
    backbone_only = tmp_path / "backbone"
    masked_lm.backbone.save_to_preset(str(backbone_only))
    tokenizer.save_to_preset(str(backbone_only))
    cmd[4] = f"--masked_lm_preset={backbone_only}"
    bad = subprocess.run([*cmd, f"--output_dir={tmp_path / 'o2'}"], capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith(f"Error: {backbone_only} has no masked-LM")
