"""Transfer sets: unlabelled in-domain text that the teacher labels for task distillation.

A transfer set is one or more local files of task-shaped text with no labels:

  * ``.txt`` / ``.txt.gz``: one example per line (single-sentence tasks only);
  * ``.tsv`` / ``.csv`` (header row) / ``.jsonl``: the task's text columns are read, every other
    column (e.g. the label column of ``tinybert-tf-augment`` output) is ignored. They are parsed by
    the task-file reader (``task_files.read_rows``: dialect, field counts, BOM; a .tsv is plain
    tab-separated unless ``tsv_quoting="csv"``): a malformed row (a stray tab, bad quoting, a
    bad JSONL line) is an error, or skipped and counted as ``bad_rows`` with
    ``skip_bad_rows=True``.

``read_transfer`` drops rows that would leak evaluation data into training (their key is one of
an eval / test split's, see ``split_keys``) and rows that add nothing (a key of the labelled train
split, or seen earlier in the transfer set), and counts why each row was dropped.
``transfer_examples`` does all of that for a task and returns the transfer columns for
``tasks.task_dataset``, whose transfer rows get label -1 / NaN and sample weight 0.

The checks compare what the teacher sees: with ``lowercase`` / ``strip_accents`` (the teacher's
WordPiece settings, `tokenizer_normalization`) texts are normalised as its tokenizer does before
they are compared (`normalize_text`), and the rows dropped only because of that are counted
(``leaked_by_case`` / ``duplicate_by_case``).
"""

from __future__ import annotations

import functools
import gzip
import io
import unicodedata

import tensorflow as tf

from tinybert_tf.data.task_files import (
    BAD_REASONS,
    check_tsv_quoting,
    parse_file,
    read_rows,
    split_path,
)
from tinybert_tf.data.task_spec import TaskFileError, check_transfer_kind, get_task

COUNT_NAMES = ("files", "read", "used", "leaked", "duplicate", "empty", "bad_rows",
               "leaked_by_case", "duplicate_by_case")
_TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")
_TEXT_SUFFIXES = (".txt", ".txt.gz")


# keras-hub's WordPiece pre-tokenizer (word_piece_tokenizer.py): ASCII symbols and Unicode P*
# are punctuation, each CJK ideograph is a word of its own, whitespace and C[cf] split words.
_ASCII_PUNCT = frozenset(chr(i) for lo, hi in ((33, 47), (58, 64), (91, 96), (123, 126))
                         for i in range(lo, hi + 1))
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# Default-ignorable code points that tf_text.case_fold_utf8 (NFKC_Casefold) drops.
_IGNORABLE = ((0xAD, 0xAD), (0x34F, 0x34F), (0x61C, 0x61C), (0x115F, 0x1160), (0x17B4, 0x17B5),
              (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F),
              (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0),
              (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
_ASCII_CONTROLS = {i: " " for i in (*range(32), 127)}


@functools.lru_cache(maxsize=1 << 16)
def _kind(char) -> str:
    """How the WordPiece pre-tokenizer treats a character: "space" (splits words, dropped),
    "punct" / "cjk" (a one-character word) or "word" (part of a word)."""
    category = unicodedata.category(char)
    if char.isspace() or category in ("Cc", "Cf"):
        return "space"
    if char in _ASCII_PUNCT or category.startswith("P"):
        return "punct"
    if any(lo <= ord(char) <= hi for lo, hi in _CJK):
        return "cjk"
    return "word"


def _casefold(word) -> str:
    """`tf_text.case_fold_utf8` (NFKC_Casefold) of one word, as keras-hub's Python path does."""
    word = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", word).casefold())
    return "".join(c for c in word if not any(lo <= ord(c) <= hi for lo, hi in _IGNORABLE))


@functools.lru_cache(maxsize=1 << 16)
def _fold_piece(piece, kind) -> str:
    """The case-folded word, or the word unchanged where folding would change how the text splits
    into words (e.g. "…" -> "..."): two texts then share a key only if the tokenizer gives
    them the same words, never more."""
    folded = _casefold(piece)
    if kind == "word":
        keeps = folded and all(_kind(c) == "word" for c in folded)
    else:
        keeps = len(folded) == 1 and _kind(folded) == kind
    return folded if keeps else piece


def normalize_text(text, lowercase=False, strip_accents=False) -> str:
    """`text` as a WordPiece tokenizer with these settings reads it (keras-hub's
    ``WordPieceTokenizer`` / ``BertTokenizer``, whose ``lowercase`` and ``strip_accents`` are
    separate): ``strip_accents`` decomposes (NFD) and drops the combining marks (Mn) of the
    whole text; ``lowercase`` case-folds each word (NFKC_Casefold, ``tf_text.case_fold_utf8``),
    words being split at whitespace and control / format characters (which become spaces) and
    punctuation and CJK characters being words of their own. Both off: `text` unchanged.
    (Special tokens written in the text, which the tokenizer never lower-cases, are folded.)
    """
    if strip_accents and not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFD", text)
                       if unicodedata.category(c) != "Mn")
    if not lowercase:
        return text
    if text.isascii():  # the common case, fast: case folding is lower-casing
        return text.translate(_ASCII_CONTROLS).lower()
    pieces, word = [], ""
    for char in text:
        kind = _kind(char)
        if kind == "word":
            word += char
            continue
        if word:
            pieces.append(_fold_piece(word, "word"))
            word = ""
        pieces.append(" " if kind == "space" else _fold_piece(char, kind))
    if word:
        pieces.append(_fold_piece(word, "word"))
    return "".join(pieces)


def text_key(texts, lowercase=False, strip_accents=False) -> tuple[str, ...]:
    """The identity of an example for leakage / duplicate checks.

    `texts` is the example's text fields in task order (a str is one field). The key is the tuple
    of those fields with every run of whitespace (spaces, tabs, newlines) collapsed to one space
    and the ends stripped; by default case and punctuation are kept, so ``"A  dog\\t"`` and
    ``"A dog"`` are the same example but ``"a dog"`` is not. With `lowercase` / `strip_accents`
    (an uncased teacher's tokenizer, see `tokenizer_normalization`) each field is first
    `normalize_text`-ed: texts the teacher cannot tell apart get one key.
    """
    if isinstance(texts, str | bytes):
        texts = (texts,)
    return tuple(
        " ".join(normalize_text(t.decode("utf-8") if isinstance(t, bytes) else str(t),
                                lowercase, strip_accents).split())
        for t in texts
    )


def tokenizer_normalization(tokenizer) -> dict:
    """``{"lowercase": bool, "strip_accents": bool}``: how `tokenizer` normalises text before it
    splits words, as keyword arguments for `text_key` / `read_transfer` / `transfer_examples`.

    keras-hub WordPiece tokenizers (``BertTokenizer`` and the other ``WordPieceTokenizer``
    subclasses) report their ``lowercase`` and ``strip_accents`` settings; any other tokenizer
    (SentencePiece, byte-pair, None) is treated as cased and accent-preserving, i.e. texts are
    compared exactly.
    """
    from keras_hub.tokenizers import WordPieceTokenizer

    if not isinstance(tokenizer, WordPieceTokenizer):
        return {"lowercase": False, "strip_accents": False}
    return {"lowercase": bool(tokenizer.lowercase),
            "strip_accents": bool(tokenizer.strip_accents)}


def uncased(tokenizer) -> bool:
    """Whether `tokenizer` is a keras-hub WordPiece tokenizer that lower-cases its input (an
    uncased vocabulary such as ``bert_*_uncased`` or MiniLM's), so case never reaches the model."""
    return tokenizer_normalization(tokenizer)["lowercase"]


def split_keys(spec, split, data_dir=None, lowercase=False, strip_accents=False) -> set:
    """The `text_key` of every example of one split of a task (a TaskSpec or a TASKS name),
    normalised with `lowercase` / `strip_accents` (see `text_key`; default: exact keys).

    Local-file tasks use the rows the spec's loader read (`spec.parsed`), else read the split's
    file with the same reader as `tasks.task_dataset`; TFDS tasks iterate
    ``tfds.load(spec.tfds_name, split=split, data_dir=data_dir)``.
    """
    norm = {"lowercase": lowercase, "strip_accents": strip_accents}
    spec = get_task(spec)
    check_transfer_kind(spec)
    if spec.files:
        held = dict(spec.parsed).get(split)
        columns = held.texts if held else parse_file(
            split_path(spec, split), spec.text_keys, spec.label_key, False, spec.skip_bad_rows,
            spec.tsv_quoting).texts
        return {text_key(texts, **norm) for texts in zip(*columns, strict=True)}
    import tensorflow_datasets as tfds

    ds = tfds.load(spec.tfds_name, split=split, data_dir=data_dir)
    return {text_key([ex[k] for k in spec.text_keys], **norm) for ex in tfds.as_numpy(ds)}


def _expand(paths) -> list[str]:
    """Files of a comma-separated string or a list of paths / globs, in order, each once."""
    patterns = paths.split(",") if isinstance(paths, str) else list(paths)
    patterns = [str(p).strip() for p in patterns if str(p).strip()]
    if not patterns:
        raise TaskFileError(f"transfer set {paths!r} names no file; pass paths or globs.")
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(tf.io.gfile.glob(pattern))
        if not matches:
            raise TaskFileError(f"transfer set pattern {pattern!r} matches no file.")
        files += [m for m in matches if m not in files]
    return files


def _text_rows(path):
    """(line_number, text) of a one-example-per-line .txt / .txt.gz file."""
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    if path.lower().endswith(".gz"):
        data = gzip.GzipFile(fileobj=io.BytesIO(data)).read()
    lines = data.decode("utf-8").split("\n")  # not splitlines(): U+2028 etc. stay in a text
    if lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines, 1):
        yield i, line.removesuffix("\r")


def _file_rows(path, text_columns, skip_bad_rows=False, counts=None, tsv_quoting="none"):
    """(line_number, (text, ...)) of one transfer file; a missing column is a one-line error, a
    malformed row too (or, with `skip_bad_rows`, skipped and counted in `counts`). `tsv_quoting`:
    how a .tsv is read (`task_files.TSV_QUOTING`)."""
    lower = path.lower()
    if lower.endswith(_TEXT_SUFFIXES):
        if len(text_columns) != 1:
            raise TaskFileError(
                f"{path}: a .txt transfer file holds one text per line, but this task needs "
                f"{len(text_columns)} columns {list(text_columns)}; use .tsv/.csv/.jsonl with "
                "both columns."
            )
        for line, text in _text_rows(path):
            yield line, (text,)
        return
    if not lower.endswith(_TABLE_SUFFIXES):
        raise TaskFileError(f"{path}: unknown transfer file type; use .txt, .tsv, .csv or .jsonl.")
    for line, texts, _ in read_rows(path, text_columns, skip_bad_rows=skip_bad_rows,
                                    counts=counts, tsv_quoting=tsv_quoting):
        yield line, texts


class _Checks:
    """Leak / duplicate verdicts for one way of keying rows (exact or normalised)."""

    def __init__(self, exclude_keys, known_keys, norm):
        self.norm = norm
        self.exclude = {self.key(k) for k in exclude_keys}
        self.known = {self.key(k) for k in known_keys}
        self.seen: set[tuple[str, ...]] = set()

    def key(self, texts):
        return text_key(texts, **self.norm)

    def verdict(self, key):
        """The row's fate: "leaked", "duplicate", or None when it is used (its key is then seen)."""
        if key in self.exclude:
            return "leaked"
        if key in self.known or key in self.seen:
            return "duplicate"
        self.seen.add(key)
        return None


def read_transfer(paths, text_columns, exclude_keys=(), known_keys=(), skip_bad_rows=False,
                  lowercase=False, strip_accents=False, tsv_quoting="none"):
    """Reads a transfer set -> ``(columns, counts)``.

    paths: a comma-separated string or a list of paths / globs (``tf.io.gfile.glob``; a pattern
    matching nothing is an error); files are read in order (each pattern's matches sorted), rows
    in line order. text_columns: the column names to read, e.g. ``("text",)`` or
    ``("sentence1", "sentence2")``; ``.txt`` files only serve one-column tasks.
    skip_bad_rows: a malformed .tsv/.csv/.jsonl row is skipped and counted, not a TaskFileError.
    tsv_quoting: "none" reads .tsv files as plain tab-separated text, "csv" with CSV quoting.
    lowercase / strip_accents: compare `text_key`s normalised as the teacher's tokenizer does
    (`tokenizer_normalization`); `exclude_keys` / `known_keys` are exact keys (`split_keys`
    default) or texts, normalised here.

    Every row read is counted in exactly one of: ``bad_rows`` (malformed, with skip_bad_rows),
    ``empty`` (all text fields blank), ``leaked`` (its key is in `exclude_keys`, the eval / test
    splits' keys), ``duplicate`` (its key is in `known_keys`, the labelled train split's keys, or
    an earlier used transfer row had it) or ``used``. ``leaked_by_case`` / ``duplicate_by_case``
    count the leaked / duplicate rows that the exact comparison (no normalisation) would have
    used: what the normalisation adds (0 with it off). Returns ``columns = {column: [text, ...]}``
    (the used rows, texts as read) and ``counts`` (keys `COUNT_NAMES`). Zero used rows is an
    error naming the paths and the counts.
    """
    text_columns = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
    check_tsv_quoting(tsv_quoting)
    norm = {"lowercase": bool(lowercase), "strip_accents": bool(strip_accents)}
    exact = _Checks(exclude_keys, known_keys, {})
    normal = _Checks(exclude_keys, known_keys, norm) if any(norm.values()) else None
    files = _expand(paths)
    counts = dict.fromkeys(COUNT_NAMES, 0)
    counts["files"] = len(files)
    columns: dict[str, list[str]] = {c: [] for c in text_columns}
    for path in files:
        bad: dict[str, int] = {}
        for _, texts in _file_rows(path, text_columns, skip_bad_rows, bad, tsv_quoting):
            counts["read"] += 1
            verdict = _verdict(text_key(texts), exact, normal, counts)
            counts[verdict or "used"] += 1
            if not verdict:
                for col, text in zip(text_columns, texts, strict=True):
                    columns[col].append(text)
        skipped = sum(bad.get(reason, 0) for reason in BAD_REASONS)
        counts["bad_rows"] += skipped
        counts["read"] += skipped
    if not counts["used"]:
        raise TaskFileError(f"transfer set {paths!r} has no usable rows: {counts}.")
    return columns, counts


def _verdict(key, exact, normal, counts):
    """A row's fate: "empty", "leaked", "duplicate" or None (used). With a normalised
    comparison (`normal`), a fate the exact one would not give is also counted in
    ``counts["<fate>_by_case"]``."""
    if not any(key):
        return "empty"
    verdict = exact.verdict(key)  # what the exact comparison alone would do
    if normal is not None:
        exact_verdict, verdict = verdict, normal.verdict(normal.key(key))
        if verdict and not exact_verdict:
            counts[f"{verdict}_by_case"] += 1
    return verdict


def transfer_examples(task, paths, data_dir=None, text_columns=None, dedupe_train=True,
                      skip_bad_rows=False, lowercase=False, strip_accents=False,
                      tsv_quoting="none"):
    """`read_transfer` for a task: the eval and test splits' keys are excluded (leakage), the
    train split's keys count as duplicates (unless ``dedupe_train=False``). Returns
    ``(columns, counts)`` with the columns keyed by the task's text keys, ready for
    ``tasks.task_dataset(..., rows=tasks.Rows(transfer=...))``. text_columns: the transfer files' column
    names when they differ from the task's text keys (same number and order). skip_bad_rows:
    see `read_transfer` (a file task's own splits follow ``spec.skip_bad_rows``).
    tsv_quoting: how the transfer .tsv files are read (see `read_transfer`; a file task's own
    splits follow ``spec.tsv_quoting``).
    lowercase / strip_accents: normalise texts as the teacher's tokenizer does before comparing
    (pass ``**tokenizer_normalization(teacher_tokenizer)``); counts then include what that adds
    (``leaked_by_case``, ``duplicate_by_case``)."""
    spec = get_task(task)
    check_tsv_quoting(tsv_quoting)
    text_columns = tuple(text_columns or spec.text_keys)
    if len(text_columns) != len(spec.text_keys):
        raise TaskFileError(f"text_columns {list(text_columns)} must name {len(spec.text_keys)} "
                            f"columns, one per text key {list(spec.text_keys)}.")
    exclude: set = set()
    for split in (*spec.eval_splits, *spec.test_splits):
        exclude |= split_keys(spec, split, data_dir)
    known = split_keys(spec, spec.train_split, data_dir) if dedupe_train and spec.train_split \
        else set()
    columns, counts = read_transfer(paths, text_columns, exclude, known, skip_bad_rows,
                                    lowercase=lowercase, strip_accents=strip_accents,
                                    tsv_quoting=tsv_quoting)
    extra = {k: columns[c] for k, c in zip(spec.text_keys, text_columns, strict=True)}
    return extra, counts
