"""Token-classification tasks from the user's own CoNLL-format files (`--config.task=file
--config.data.format=conll`), run as TFDS CoNLL-2003 is: first-word-piece labels, entity F1.

The format, as CoNLL-2003's `eng.train` writes it:
  * UTF-8 (a leading BOM dropped), read through `tf.io.gfile` (gs:// works);
  * one token per line, its columns separated by spaces or tabs: the token is column 0, the tag
    the column `data.label_column` names (an index, 0-based, negative from the end; the default
    "label", or "", is the last column); other columns (POS, chunk tags) are ignored;
  * a blank line between sentences; `-DOCSTART-` lines are skipped (and end a sentence);
  * every token line of a file has the column count of its first token line: a line with
    another count is a one-line `file:line` TaskFileError, or with `skip_bad_rows` the sentence
    holding it is skipped and counted.
Tags are read as written (IOB1 or IOB2, as `metrics.entity_f1` reads them). The task's label
names are the training file's tags in sorted order ("B-LOC" ... "I-PER", "O"); every tag of the
eval and test files must be one of them (else a `file:line` error naming the tag). Every split,
the test one included, needs its tags. `load_conll_task` prints one count line per file.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tinybert_tf.data.task_files import read_text, split_path
from tinybert_tf.data.task_spec import TaskFileError, TaskSpec

# data.format: "" = tables / JSONL by extension (task_files); "conll" = this module.
FORMATS = ("", "conll")
DOCSTART = "-DOCSTART-"
TOKENS, TAGS = "tokens", "tags"  # the spec's text key and label key


class Sentences(NamedTuple):
    """One CoNLL file as `parse_conll` read it: per used sentence its tokens, tags (str) and the
    line of its first token (token j is on line + j); counts: read, used, tokens, bad_lines
    (sentences skipped for a malformed line), docstart."""

    tokens: list
    tags: list
    lines: list
    counts: dict


def check_format(value, task):
    """`value` of data.format when it is one of FORMATS and fits `task` (conll reads
    --config.task=file files); else a one-line TaskFileError."""
    if value not in FORMATS:
        raise TaskFileError(f"data.format={value!r} is not a task file format; use '' (.tsv, "
                            ".csv or .jsonl, by extension) or 'conll' (tagged tokens).")
    if value and task != "file":
        raise TaskFileError(f"data.format={value} reads --config.task=file files, but task is "
                            f"{task!r}; pass --config.task=file or drop data.format.")
    return value


def file_kind(task, fmt="", regression=False, text_b_column=""):
    """The kind of task the config's data.* describe: None for a TASKS name, else
    token_classification (format conll: one text column, class tags), regression or
    classification. A conll format asked to be a regression or a pair task is an error."""
    check_format(fmt, task)
    if task != "file":
        return None
    if fmt != "conll":
        return "regression" if regression else "classification"
    if regression or text_b_column:
        key = "data.regression=True" if regression else f"data.text_b_column={text_b_column}"
        raise TaskFileError(f"data.format=conll is token classification (one token column, "
                            f"tags); drop {key}.")
    return "token_classification"


def tag_column(label_column):
    """data.label_column as a CoNLL tag column: an int (0-based, negative from the end);
    "label" (the default) or "" is -1, the last column."""
    value = str(label_column).strip()
    if value in ("", "label"):
        return -1
    try:
        return int(value)
    except ValueError:
        raise TaskFileError(f"data.label_column={value!r} with data.format=conll: pass the tag "
                            "column's index (0-based, -1 = the last), e.g. "
                            "--config.data.label_column=3.") from None


def _check_width(path, line, width, column):
    if width < 2:
        raise TaskFileError(f"{path}:{line}: one column; a CoNLL line holds a token and its tag, "
                            "separated by spaces or tabs.")
    if not -width <= column < width or column % width == 0:
        raise TaskFileError(f"{path}:{line}: data.label_column={column} but the line has {width} "
                            f"columns, the token being column 0; pass --config.data.label_column="
                            f"<1..{width - 1}, or -1 for the last>.")


def parse_conll(path, column=-1, skip_bad_rows=False):
    """Every sentence of a CoNLL file -> `Sentences` (see the module doc); `column`: the tag
    column. A line whose column count differs from the file's first token line: a one-line
    TaskFileError, or with `skip_bad_rows` its sentence skipped and counted."""
    counts = dict.fromkeys(("read", "used", "tokens", "bad_lines", "docstart"), 0)
    out = Sentences([], [], [], counts)
    width, start, bad, rows = None, None, False, []
    text = read_text(path).replace("\r\n", "\n").replace("\r", "\n")
    for i, line in enumerate([*text.split("\n"), ""], 1):
        fields = line.split()
        if fields and fields[0] == DOCSTART:
            counts["docstart"] += 1
            fields = []
        if not fields:
            if rows:
                counts["read"] += 1
                if not bad:
                    out.tokens.append([r[0] for r in rows])
                    out.tags.append([r[column] for r in rows])
                    out.lines.append(start)
                counts["bad_lines"] += bad
            start, bad, rows = None, False, []
            continue
        if width is None:
            _check_width(path, i, len(fields), column)
            width = (len(fields), i)
        if len(fields) != width[0]:
            if not skip_bad_rows:
                raise TaskFileError(
                    f"{path}:{i}: {len(fields)} columns, the first token line ({width[1]}) has "
                    f"{width[0]}; spaces and tabs separate columns, so a token or tag cannot "
                    "hold one, or pass --config.data.skip_bad_rows=True to skip the sentences "
                    "holding such lines.")
            bad = True
        start = i if start is None else start
        rows.append(fields)
    counts["used"] = len(out.tokens)
    counts["tokens"] = sum(len(t) for t in out.tokens)
    if not counts["used"]:
        raise TaskFileError(f"{path}: no usable sentences ({_count_text(counts)}); a CoNLL file "
                            "holds one token and its tag per line, a blank line between "
                            "sentences.")
    return out


def _count_text(counts):
    read = counts["read"]
    tail = f", skipped: {counts['bad_lines']} with a bad line" if counts["bad_lines"] else ""
    return (f"{read} sentence{'s' if read != 1 else ''} read, {counts['used']} used "
            f"({counts['tokens']} tokens){tail}")


def summary(path, counts):
    """The count line `load_conll_task` prints, e.g. ``train.conll: 120 sentences read, 119
    used (1530 tokens), skipped: 1 with a bad line.``"""
    return f"{path}: {_count_text(counts)}."


def encode_tags(path, sentences, names):
    """Tag ids per sentence; a tag not in `names` (the training file's) is a file:line error."""
    index = {name: i for i, name in enumerate(names)}
    for tags, start in zip(sentences.tags, sentences.lines, strict=True):
        for j, tag in enumerate(tags):
            if tag not in index:
                raise TaskFileError(f"{path}:{start + j}: tag {tag!r} is not one of the training "
                                    f"file's tags {list(names)}; fix the tag, or add sentences "
                                    "with it to the training file.")
    return [[index[t] for t in tags] for tags in sentences.tags]


def load_conll_task(train_file, eval_file=None, test_file=None, *, name="file",
                    label_column="label", skip_bad_rows=False):
    """Validates CoNLL files and returns a token-classification TaskSpec for `task_dataset`:
    label names the training file's tags, sorted; metric entity_f1. Prints one `summary` line
    per file; `spec.counts(split)` holds the counts."""
    column = tag_column(label_column)
    files = (("train", train_file),)
    files += (("validation", eval_file),) if eval_file else ()
    files += (("test", test_file),) if test_file else ()
    parsed = {split: parse_conll(path, column, skip_bad_rows) for split, path in files}
    names = tuple(sorted({tag for tags in parsed["train"].tags for tag in tags}))
    spec = TaskSpec(
        name=name, text_keys=(TOKENS,), label_key=TAGS, num_classes=len(names),
        kind="token_classification", metrics=("entity_f1",), train_split="train",
        eval_splits=("validation",) if eval_file else (), label_names=names,
        test_splits=("test",) if test_file else (), files=files, skip_bad_rows=skip_bad_rows,
        row_counts=tuple((s, tuple(p.counts.items())) for s, p in parsed.items()),
        file_format="conll", tag_column=column, parsed=tuple(parsed.items()),
    )
    for split, path in files:
        encode_tags(path, parsed[split], names)
        print(summary(path, parsed[split].counts))
    return spec


def conll_split_dataset(spec, split):
    """Dataset of one sentence per element, {"tokens": string [W], "tags": int32 [W]}, for one
    split of a CoNLL file task (what `task_batches.ner_example` reads)."""
    path = split_path(spec, split)  # the sentences the spec's loader read, else parsed now
    sentences = dict(spec.parsed).get(split) or parse_conll(path, spec.tag_column,
                                                            spec.skip_bad_rows)
    ids = encode_tags(path, sentences, spec.label_names)
    lengths = tf.constant([len(t) for t in sentences.tokens], tf.int64)
    tokens = tf.constant([w for words in sentences.tokens for w in words], tf.string)
    tags = tf.constant([t for row in ids for t in row], tf.int32)
    return tf.data.Dataset.from_tensor_slices({
        TOKENS: tf.RaggedTensor.from_row_lengths(tokens, lengths),
        TAGS: tf.RaggedTensor.from_row_lengths(tags, lengths)})
