"""TinyBERT data augmentation (Jiao et al. 2020, Algorithm 1) with a keras-hub masked LM.

Every example is kept and followed by ``n_aug`` copies. In each copy every eligible word (a
BERT-basic word, i.e. a whitespace/punctuation-split run containing a letter, that has
candidates) is, with probability ``p``, replaced by one of its ``num_candidates`` (M) candidates
chosen uniformly; otherwise it is kept. Candidates:

* a word that is a **single word piece**: the masked LM's top-M tokens at that word, masked in
  the sentence. As in the official script the MLM sees ``[CLS] masked [SEP] original [SEP]``
  (``pair_context=True``), so predictions stay close to the original word.
* a word of **several pieces**: the M nearest (cosine) whole-word vocabulary tokens to the mean
  of its pieces' input embeddings (the paper uses GloVe; we use the teacher's own embeddings).

Candidates never include special tokens, ``##`` pieces, ``[unusedN]`` tokens or tokens without a
letter; nearest neighbours also exclude the word itself. Words mapping to ``[UNK]`` and words
without a letter are never replaced. The output keeps the original text's surface: only the
replaced spans change (case of the original word is copied when the tokenizer lowercases), so
with ``p=0`` every copy equals the original. Copies are not deduplicated (exactly ``n_aug``).

Work is batched: all masked variants of a chunk of sentences go through one ``tf.function``
(backbone + MLM head evaluated only at ``mask_positions``, then ``tf.math.top_k``) in batches
of ``batch_size`` padded to a few length buckets; nearest neighbours of all new multi-piece
words of a chunk are one matmul against the row-normalised embedding matrix + ``top_k``. MLM
candidates live only inside one sentence; nearest-neighbour candidates are cached per word.
Randomness: example ``i`` (global row index) uses ``np.random.default_rng([seed, i])``, so any
sharding / resuming gives the same copies. Pair tasks (``text_b``) augment both sides
independently, each with its own sentence context.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

import numpy as np
import regex
import tensorflow as tf
from tqdm.auto import tqdm

_PUNCT = r"!-/:-@\[-`{-~\p{P}"
_CJK = "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002fa1f"
# A BERT-basic word: one punctuation / CJK character, or a run of anything else but whitespace.
_WORD = regex.compile(rf"[{_PUNCT}]|[{_CJK}]|[^\s{_PUNCT}{_CJK}\p{{Cc}}\p{{Cf}}]+")


@dataclasses.dataclass
class Word:
    """One BERT-basic word of a sentence: character span ``[start, end)``, its normalised form,
    its word-piece ids and (filled in later) its replacement candidates."""

    start: int
    end: int
    text: str
    key: str
    piece_ids: list[int]
    source: str = "none"  # "mlm" | "nn" | "none"
    candidates: list[str] = dataclasses.field(default_factory=list)


class Augmenter:
    """TinyBERT augmentation with a keras-hub ``MaskedLM`` (e.g. ``BertMaskedLM``, built with
    ``preprocessor=None`` or not) and its WordPiece tokenizer (e.g. ``BertTokenizer``).

    Args: ``p`` replacement probability per word, ``num_candidates`` M, ``seed`` global seed,
    ``batch_size`` MLM batch (masked variants per forward pass), ``seq_len`` longest MLM input
    (longer sentences use a window around the masked word), ``pair_context`` feed
    ``[CLS] masked [SEP] original [SEP]`` (else ``[CLS] masked [SEP]``), ``stopwords`` words never
    replaced, ``verbose`` show tqdm progress bars.
    """

    def __init__(
        self,
        masked_lm,
        tokenizer,
        p: float = 0.4,
        num_candidates: int = 15,
        seed: int = 0,
        batch_size: int = 64,
        seq_len: int = 128,
        pair_context: bool = True,
        stopwords=(),
        verbose: bool = True,
    ):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p} must be a probability in [0, 1]")
        if not hasattr(tokenizer, "suffix_indicator"):
            raise ValueError("Augmenter needs a WordPiece tokenizer (BERT family); got "
                             f"{type(tokenizer).__name__}")
        if "mask_positions" not in masked_lm.input:
            raise ValueError("masked_lm has no 'mask_positions' input; pass a keras_hub MaskedLM")
        self.masked_lm, self.tokenizer = masked_lm, tokenizer
        self.p, self.m, self.seed = float(p), int(num_candidates), int(seed)
        max_len = getattr(masked_lm.backbone, "max_sequence_length", None) or seq_len
        self.batch_size, self.seq_len = int(batch_size), min(int(seq_len), max_len)
        self.pair_context, self.verbose = pair_context, verbose
        self.stopwords = frozenset(stopwords)
        self.vocab = list(tokenizer.get_vocabulary())
        self.token_to_id = {t: i for i, t in enumerate(self.vocab)}
        self.suffix = tokenizer.suffix_indicator
        self.lowercase = bool(getattr(tokenizer, "lowercase", False))
        self.strip_accents = bool(getattr(tokenizer, "strip_accents", False)) or self.lowercase
        self.unk_id = self.token_to_id.get(getattr(tokenizer, "oov_token", "[UNK]"), -1)
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad_id, self.mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id
        self._uses_segments = "segment_ids" in masked_lm.input
        allowed = self._candidate_tokens()
        if allowed.sum() < self.m + 1:
            raise ValueError(f"only {allowed.sum()} candidate tokens; lower num_candidates")
        self.allowed = allowed
        self._bias = tf.constant(np.where(allowed, 0.0, -np.inf), tf.float32)
        emb = np.asarray(masked_lm.backbone.token_embedding.embeddings, np.float32)
        self.embeddings = emb
        unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self._unit_allowed = tf.constant(np.where(allowed[:, None], unit, 0.0), tf.float32)
        self._nn_cache: dict[str, list[str]] = {}
        self._piece_cache: dict[str, list[int]] = {}
        self.stats = {"examples": 0, "copies": 0, "word_slots": 0, "replaced": 0}
        self._mlm_fn = tf.function(self._mlm_topk, reduce_retracing=True)
        self._nn_fn = tf.function(self._nn_topk, reduce_retracing=True)

    def _candidate_tokens(self):
        """Bool ``[vocab]``: tokens that may replace a word (whole words with a letter; not
        special, ``[...]`` / ``<...>`` or continuation pieces)."""
        specials = set(self.tokenizer.special_tokens) | {self.vocab[self.unk_id]}
        return np.array([
            t not in specials and not t.startswith(self.suffix)
            and not re.fullmatch(r"\[.*\]|<.*>", t) and any(c.isalpha() for c in t)
            for t in self.vocab
        ])

    # ---- tokenisation (pure Python, mirrors keras-hub's WordPiece) ----
    def normalize(self, word: str) -> str:
        """Lowercase / strip accents like the tokenizer does before the WordPiece lookup."""
        if self.strip_accents:
            word = "".join(c for c in unicodedata.normalize("NFD", word)
                           if unicodedata.category(c) != "Mn")
        return word.casefold() if self.lowercase else word

    def word_pieces(self, key: str) -> list[int]:
        """Greedy longest-match-first WordPiece ids of a normalised word ([UNK] if impossible)."""
        if key in self._piece_cache:
            return self._piece_cache[key]
        ids, start = [], 0
        while start < len(key) and len(key.encode()) <= 100:
            for end in range(len(key), start, -1):
                piece = key[start:end] if start == 0 else self.suffix + key[start:end]
                if piece in self.token_to_id:
                    ids.append(self.token_to_id[piece])
                    start = end
                    break
            else:
                ids = [self.unk_id]
                break
        ids = ids or [self.unk_id]
        self._piece_cache[key] = ids
        return ids

    def split_words(self, text: str) -> list[Word]:
        """BERT-basic words of ``text`` with their character spans and word-piece ids."""
        out = []
        for mt in _WORD.finditer(text):
            key = self.normalize(mt.group())
            if key:
                out.append(Word(mt.start(), mt.end(), mt.group(), key, self.word_pieces(key)))
        return out

    def _eligible(self, w: Word) -> bool:
        return (any(c.isalpha() for c in w.key) and w.key not in self.stopwords
                and self.unk_id not in w.piece_ids)

    # ---- candidates ----
    def _mlm_topk(self, token_ids, segment_ids, padding_mask, mask_positions):
        """(B, L) ids -> (B, M) top-M allowed token ids at each row's single mask position."""
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask,
                  "mask_positions": mask_positions}
        if self._uses_segments:
            inputs["segment_ids"] = segment_ids
        logits = self.masked_lm(inputs, training=False)[:, 0, :]
        return tf.math.top_k(tf.cast(logits, tf.float32) + self._bias, k=self.m).indices

    def _nn_topk(self, vectors, exclude):
        """(W, d) mean piece embeddings, (W,) vocab id to exclude (-1: none) -> (W, M) ids."""
        unit = tf.math.l2_normalize(vectors, axis=-1)
        sims = tf.matmul(unit, self._unit_allowed, transpose_b=True) + self._bias
        sims += tf.one_hot(exclude, tf.shape(sims)[1], on_value=-np.inf, off_value=0.0)
        return tf.math.top_k(sims, k=self.m).indices

    def mlm_inputs(self, piece_ids: list[int], k: int) -> tuple[list[int], list[int], int]:
        """MLM input for the sentence ``piece_ids`` with piece ``k`` masked: (token ids,
        segment ids, mask position). Long sentences use a window centred on ``k``."""
        budget = (self.seq_len - 3) // 2 if self.pair_context else self.seq_len - 2
        lo = min(max(0, k - budget // 2), max(0, len(piece_ids) - budget))
        window = piece_ids[lo : lo + budget]
        masked = list(window)
        masked[k - lo] = self.mask_id
        ids = [self.cls_id, *masked, self.sep_id]
        segs = [0] * len(ids)
        if self.pair_context:
            ids += [*window, self.sep_id]
            segs += [1] * (len(window) + 1)
        return ids, segs, 1 + k - lo

    def _run_mlm(self, requests: list[tuple[list[int], list[int], int]]) -> np.ndarray:
        """Top-M ids (R, M) for MLM requests: sorted by length, batched, padded to a multiple of
        16 (few distinct shapes -> few traces) and the batch padded to ``batch_size``."""
        out = np.zeros((len(requests), self.m), np.int32)
        order = sorted(range(len(requests)), key=lambda r: len(requests[r][0]))
        for b in range(0, len(order), self.batch_size):
            rows = order[b : b + self.batch_size]
            longest = max(len(requests[r][0]) for r in rows)
            length = min(-(-longest // 16) * 16, max(longest, self.seq_len))
            ids = np.full((self.batch_size, length), self.pad_id, np.int32)
            segs = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            pos = np.zeros((self.batch_size, 1), np.int32)
            for i, r in enumerate(rows):
                t, s, k = requests[r]
                ids[i, : len(t)], segs[i, : len(s)], mask[i, : len(t)], pos[i, 0] = t, s, 1, k
            top = self._mlm_fn(ids, segs, mask, pos).numpy()
            out[rows] = top[: len(rows)]
        return out

    def _fill_nn(self, words: list[Word]) -> None:
        """Nearest-neighbour candidates for uncached multi-piece words (one matmul for all)."""
        new = sorted({w.key for w in words} - self._nn_cache.keys())
        if new:
            vecs = np.stack([self.embeddings[self.word_pieces(k)].mean(0) for k in new])
            excl = np.array([self.token_to_id.get(k, -1) for k in new], np.int32)
            top = self._nn_fn(tf.constant(vecs), tf.constant(excl)).numpy()
            for key, ids in zip(new, top, strict=True):
                self._nn_cache[key] = [self.vocab[i] for i in ids]
        for w in words:
            w.source, w.candidates = "nn", self._nn_cache[w.key]

    def sentence_candidates(self, texts: list[str]) -> list[list[Word]]:
        """Words of each text with their candidates filled in (one batched pass for all)."""
        sents = [self.split_words(t) for t in texts]
        requests, slots, multi = [], [], []
        for words in sents:
            flat = [i for w in words for i in w.piece_ids]
            k = 0
            for w in words:
                if self._eligible(w) and len(w.piece_ids) == 1:
                    requests.append(self.mlm_inputs(flat, k))
                    slots.append(w)
                elif self._eligible(w):
                    multi.append(w)
                k += len(w.piece_ids)
        if requests:
            for w, ids in zip(slots, self._run_mlm(requests), strict=True):
                w.source, w.candidates = "mlm", [self.vocab[i] for i in ids]
        self._fill_nn(multi)
        return sents

    # ---- sampling ----
    def _surface(self, cand: str, original: str) -> str:
        if self.lowercase and original[:1].isupper():
            return cand.upper() if len(original) > 1 and original.isupper() else cand.title()
        return cand

    def _copies(self, text: str, words: list[Word], n_aug: int, rng) -> list[str]:
        """``n_aug`` copies of ``text``: each candidate word replaced with probability p."""
        words = [w for w in words if w.candidates]
        self.stats["word_slots"] += n_aug * len(words)
        replace = rng.random((n_aug, len(words))) < self.p
        pick = rng.random((n_aug, len(words)))
        copies = []
        for j in range(n_aug):
            parts, last = [], 0
            for i, w in enumerate(words):
                if replace[j, i]:
                    cand = w.candidates[int(pick[j, i] * len(w.candidates))]
                    parts += [text[last : w.start], self._surface(cand, w.text)]
                    last = w.end
            self.stats["replaced"] += int(replace[j].sum())
            copies.append("".join(parts) + text[last:])
        return copies

    def augment_examples(self, examples, n_aug: int, start_index: int = 0) -> list[list[tuple]]:
        """``examples``: list of tuples of texts (e.g. ``(text,)`` or ``(text_a, text_b)``; None
        entries stay None). Returns per example ``[original, copy_1, ..., copy_n_aug]``, each a
        tuple like the input. Example ``i`` is seeded with ``[seed, start_index + i]``."""
        examples = [tuple(e) for e in examples]
        chunk = max(1, self.batch_size // 2)
        out = []
        bar = tqdm(total=len(examples), desc="augment", unit="ex", disable=not self.verbose)
        for c in range(0, len(examples), chunk):
            part = examples[c : c + chunk]
            flat = [t for e in part for t in e if t is not None]
            cands = iter(self.sentence_candidates(flat))
            for i, ex in enumerate(part):
                rng = np.random.default_rng([self.seed, start_index + c + i])
                sides = [self._copies(t, next(cands), n_aug, rng) if t is not None
                         else [None] * n_aug for t in ex]
                out.append([ex, *zip(*sides, strict=True)])
            self.stats["examples"] += len(part)
            self.stats["copies"] += len(part) * n_aug
            bar.update(len(part))
        bar.close()
        return out

    def augment_texts(self, texts: list[str], n_aug: int, start_index: int = 0) -> list[list[str]]:
        """Per text ``[original, copy_1, ..., copy_n_aug]`` (see ``augment_examples``)."""
        groups = self.augment_examples([(t,) for t in texts], n_aug, start_index)
        return [[ex[0] for ex in g] for g in groups]
