"""Masked-LM masking: rate, 80/10/10, special tokens, whole words, seeding, keras-hub format."""

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from tinybert_tf.data import corpus, masking

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)] + [
    "jump", "walk", "talk", "##ed", "##ing", "##s", "the", "dog", "."
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return keras_hub.tokenizers.BertTokenizer(vocabulary=str(path), lowercase=True)


def random_batches(batch=256, length=64, n_batches=2, seed=0):
    """Batches of [CLS] w.. [SEP] [PAD].. with random real lengths, as corpus_dataset yields."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 45, size=(n_batches * batch, length)).astype(np.int32)
    lens = rng.integers(4, length + 1, size=n_batches * batch)
    pos = np.arange(length)[None, :]
    ids[:, 0] = 2
    ids[np.arange(len(ids)), lens - 1] = 3
    ids = np.where(pos < lens[:, None], ids, 0).astype(np.int32)
    mask = (pos < lens[:, None]).astype(np.int32)
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}
    return tf.data.Dataset.from_tensor_slices(x).batch(batch, drop_remainder=True)


def run(ds):
    xs, ys, ws = [], [], []
    for x, y, w in ds:
        xs.append({k: v.numpy() for k, v in x.items()})
        ys.append(y.numpy())
        ws.append(w.numpy())
    return xs, ys, ws


def test_rate_specials_and_80_10_10(tok):
    source = random_batches()
    ds = masking.mask_dataset(source, tok, seed=3)
    assert ds.element_spec[0]["mask_positions"].shape.as_list() == [256, 10]  # ceil(64 * .15)
    xs, ys, ws = run(ds)
    n_masked = n_real = 0
    kinds = np.zeros(3)
    for x, y, w, orig in zip(xs, ys, ws, source.as_numpy_iterator(), strict=True):
        ids, new = orig["token_ids"], x["token_ids"]
        real = (orig["padding_mask"] == 1) & (ids > 4)
        n_real += real.sum()
        n_masked += w.sum()
        pos = x["mask_positions"]
        sel = w == 1
        rows = np.nonzero(sel)[0]
        # Labels are the original ids; positions are real tokens, sorted and unique.
        np.testing.assert_array_equal(y[sel], ids[rows, pos[sel]])
        assert real[rows, pos[sel]].all()
        assert (y[~sel] == 0).all() and (pos[~sel] == 0).all()
        assert all(np.all(np.diff(p[s]) > 0) for p, s in zip(pos, sel, strict=True))
        # Nothing outside the masked positions changed ([CLS], [SEP], padding included).
        changed = np.zeros_like(ids, bool)
        changed[rows, pos[sel]] = True
        np.testing.assert_array_equal(new[~changed], ids[~changed])
        np.testing.assert_array_equal(x["padding_mask"], orig["padding_mask"])
        got = new[rows, pos[sel]]
        kinds += [(got == 4).sum(), ((got != 4) & (got != y[sel])).sum(), (got == y[sel]).sum()]
    assert abs(n_masked / n_real - 0.15) < 0.02
    frac = kinds / kinds.sum()
    assert abs(frac[0] - 0.8) < 0.04 and abs(frac[1] - 0.1) < 0.03 and abs(frac[2] - 0.1) < 0.03


def test_seed_determinism_and_max_predictions(tok):
    a = run(masking.mask_dataset(random_batches(), tok, seed=1))
    b = run(masking.mask_dataset(random_batches(), tok, seed=1))
    c = run(masking.mask_dataset(random_batches(), tok, seed=2))
    np.testing.assert_array_equal(a[0][1]["token_ids"], b[0][1]["token_ids"])
    assert not np.array_equal(a[0][1]["mask_positions"], c[0][1]["mask_positions"])
    # The two batches of one run get different masks (the seed includes the batch index).
    assert not np.array_equal(a[0][0]["mask_positions"], a[0][1]["mask_positions"])
    capped = run(masking.mask_dataset(random_batches(), tok, mask_rate=0.5, max_predictions=3))
    assert capped[2][0].shape == (256, 3) and capped[2][0].sum(1).max() == 3
    assert masking.default_max_predictions(128) == 20


def test_whole_word_masking_keeps_words_together(tok, tmp_path):
    lines = ["the dog jumped walking talks w1 w2 jumping walked ."] * 64
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = corpus.corpus_dataset(str(tmp_path / "c.txt"), tok, seq_len=32, batch_size=64,
                               shuffle_buffer=0, repeat=False)
    x, y, w = next(iter(masking.mask_dataset(ds, tok, whole_word=True, mask_rate=0.3, seed=0)))
    ids, sel = x["token_ids"].numpy()[0].copy(), w.numpy()[0] == 1
    ids[x["mask_positions"].numpy()[0][sel]] = y.numpy()[0][sel]  # undo the masking of row 0
    assert " ".join(VOCAB[i] for i in ids[1:16]) == (
        "the dog jump ##ed walk ##ing talk ##s w1 w2 jump ##ing walk ##ed .")
    cont = masking.continuation_table(tok).numpy()[ids]
    assert cont.sum() == 5  # jump ##ed walk ##ing talk ##s ... : 5 continuation pieces
    word = np.cumsum(~cont) - 1  # word index of every piece
    pos, w = x["mask_positions"].numpy(), w.numpy()
    n_words = 0
    for p, s in zip(pos, w, strict=True):
        chosen = p[s == 1]
        for k in np.unique(word[chosen]):
            members = np.nonzero(word == k)[0]
            assert set(members) <= set(chosen), "a word was only partly masked"
            n_words += 1
        assert 1 <= len(chosen) <= 4  # budget round(15 pieces * 0.3) = 4
    assert n_words > 64  # several words per row
    # Without whole-word masking, continuation pieces are sometimes masked alone.
    x2, _, w2 = next(iter(masking.mask_dataset(ds, tok, mask_rate=0.3, seed=0)))
    alone = [
        (set(np.nonzero(word == word[q])[0]) - set(p[s == 1]))
        for p, s in zip(x2["mask_positions"].numpy(), w2.numpy(), strict=True)
        for q in p[s == 1]
    ]
    assert any(alone)


def test_mask_batch_direct_and_errors(tok):
    x = {"token_ids": tf.constant([[2, 10, 11, 3, 0]]), "segment_ids": tf.zeros([1, 5], tf.int32),
         "padding_mask": tf.constant([[1, 1, 1, 1, 0]])}
    out, y, w = masking.mask_batch(
        x, tf.constant([0, 0]), vocab_size=len(VOCAB), mask_token_id=4, special_ids=[0, 2, 3],
        max_predictions=2, mask_rate=1.0, mask_token_rate=1.0, random_token_rate=0.0,
    )
    np.testing.assert_array_equal(out["token_ids"].numpy(), [[2, 4, 4, 3, 0]])
    np.testing.assert_array_equal(out["mask_positions"].numpy(), [[1, 2]])
    np.testing.assert_array_equal(y.numpy(), [[10, 11]])
    assert w.dtype == tf.float32
    unbatched = random_batches().unbatch().padded_batch(4, padded_shapes={
        "token_ids": [None], "segment_ids": [None], "padding_mask": [None]})
    with pytest.raises(ValueError, match="max_predictions"):
        masking.mask_dataset(unbatched, tok)
    with pytest.raises(ValueError, match="mask_rate"):
        masking.mask_dataset(random_batches(), tok, mask_rate=0.0)
