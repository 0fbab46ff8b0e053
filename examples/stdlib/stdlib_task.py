"""A real labelled task from the standard library's docstrings (see `stdlib_text` for the texts).

``build_task`` labels the first paragraph of module/class/function docstrings by library area
(``AREAS``, roughly the chapters of the Library Reference) or by top-level package, and splits
train/dev/test **by source file** with near-duplicates clustered, so none cross splits.
``build_transfer`` writes the task's transfer set: every prose paragraph of its train files only.
"""

from __future__ import annotations

import collections
import json
import os
import random

from examples.stdlib.stdlib_text import (
    _assign_groups,
    _docstrings,
    dedupe_key,
    docstring_paragraphs,
    iter_file_texts,
    iter_stdlib_texts,
    near_duplicate_clusters,
    normalize_space,
    parse_source,
    stdlib_dir,
)

# label_by="area": stdlib modules grouped roughly like the chapters of the Library Reference, so
# each class spans many files (clean file-grouped splits) and the task has more examples.
AREAS = {
    "gui": "tkinter turtle turtledemo curses",
    "build": "distutils ensurepip venv sysconfig site sitebuiltins compileall py_compile zipapp "
    "osx_support aix_support",
    "email": "email mailbox mimetypes mailcap quopri base64 uu",
    "internet": "http urllib wsgiref xmlrpc cgi cgitb ftplib smtplib smtpd imaplib nntplib poplib "
    "telnetlib socketserver webbrowser uuid socket ssl selectors nturl2path",
    "markup": "xml html markupbase",
    "concurrency": "multiprocessing threading threading_local concurrent queue sched subprocess",
    "asyncio": "asyncio asynchat asyncore",
    "imports": "importlib pkgutil modulefinder runpy zipimport imp",
    "devtools": "unittest doctest pdb bdb trace timeit profile cProfile pstats tracemalloc "
    "traceback pydoc",
    "numeric": "decimal fractions statistics numbers random",
    "files": "pathlib os shutil tempfile posixpath ntpath genericpath stat fileinput filecmp "
    "fnmatch glob linecache io",
    "archives": "tarfile zipfile gzip bz2 lzma compression",
    "text": "difflib textwrap string re codecs encodings locale gettext stringprep strptime shlex",
    "logging": "logging",
    "datatypes": "collections datetime calendar zoneinfo enum heapq bisect copy pprint reprlib "
    "weakref types graphlib",
    "language": "ast inspect dis tokenize symtable pyclbr typing dataclasses abc py_abc functools "
    "operator contextlib code codeop keyword pickletools tabnanny",
    "formats": "json csv configparser tomllib plistlib netrc pickle copyreg shelve dbm sqlite3 "
    "xdrlib wave chunk",
}
_AREA_OF = {mod: area for area, mods in AREAS.items() for mod in mods.split()}


def module_label(path: str) -> str:
    """Top-level package/module of a relative path: ``email/mime/text.py`` -> ``email``,
    ``_pydecimal.py`` -> ``decimal``, ``_collections_abc.py`` -> ``collections``."""
    top = path.split(os.sep)[0].split("/")[0]
    top = top[:-3] if top.endswith(".py") else top
    top = top.lstrip("_")
    top = top[2:] if top.startswith("py") and top[2:] in {"decimal", "io"} else top
    return top.split("_")[0] if top.startswith("collections") else top


def area_label(path: str) -> str | None:
    """Library area of a relative path (see ``AREAS``), or None for unmapped modules."""
    return _AREA_OF.get(module_label(path))


def build_task(
    out_dir: str,
    min_examples_per_class: int = 50,
    max_classes: int = 16,
    seed: int = 0,
    label_by: str = "area",
    max_per_class: int = 600,
    min_files_per_class: int = 3,
    min_words: int = 5,
    max_words: int = 100,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    root: str | None = None,
    max_files: int | None = None,
    near_duplicate_threshold: float = 0.6,
) -> dict:
    """Write a docstring -> top-level-package classification task to ``out_dir``.

    Examples are first paragraphs (``min_words``..``max_words`` words) of module/class/function
    docstrings, labelled by top-level package (``label_by="package"``: ``email/mime/text.py`` ->
    ``email``) or by library area (``label_by="area"``, see ``AREAS``: more data, more files per
    class). Normalised-duplicate texts under two labels are dropped; of a cluster of near-
    duplicates (``near_duplicate_clusters``) one text per label is kept. Classes are the ``max_classes`` most frequent labels with at least
    ``min_examples_per_class`` examples in at least ``min_files_per_class`` files; each is capped
    at ``max_per_class`` (seeded sample). Per class, whole files go to train/dev/test by size so
    each split gets about its fraction. Writes ``train.tsv``/``dev.tsv``/``test.tsv``
    (``text\\tlabel``), ``*.src`` (source file per row), ``labels.txt`` and ``stats.json``.
    Returns the stats dict ``{"labels", "counts": {split: {label: n}}, "total": {split: n}}``.
    """
    if label_by not in ("package", "area"):
        raise ValueError(f"label_by={label_by!r} is unknown; use 'package' or 'area'")
    label_fn = module_label if label_by == "package" else area_label
    cands = []  # (path, label, text)
    for rec in iter_stdlib_texts(root, max_files, comments=False):
        text = rec.first_paragraph.replace('"', "'")
        label = label_fn(rec.path)
        if label and min_words <= len(text.split()) <= max_words:
            cands.append((rec.path, label, text))
    labels_of_key = collections.defaultdict(set)
    for _, label, text in cands:
        labels_of_key[dedupe_key(text)].add(label)
    clusters = near_duplicate_clusters([t for _, _, t in cands], near_duplicate_threshold)
    per_label: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    kept: set[tuple[int, str]] = set()
    for (path, label, text), cluster in zip(cands, clusters, strict=True):
        # Exact duplicates under two labels are dropped; near-duplicates: one per label.
        if len(labels_of_key[dedupe_key(text)]) == 1 and (cluster, label) not in kept:
            kept.add((cluster, label))
            per_label[label].append((path, text))
    eligible = [
        lab
        for lab, ex in per_label.items()
        if len(ex) >= min_examples_per_class and len({p for p, _ in ex}) >= min_files_per_class
    ]
    labels = sorted(sorted(eligible, key=lambda lab: (-len(per_label[lab]), lab))[:max_classes])
    if not labels:
        raise ValueError("no class has enough examples; lower min_examples_per_class/min_files")
    rng = random.Random(seed)
    fractions = {"train": 1 - dev_fraction - test_fraction, "dev": dev_fraction}
    fractions["test"] = test_fraction
    rows: dict[str, list[tuple[str, str, str]]] = {s: [] for s in fractions}
    for label in labels:
        ex = sorted(per_label[label])
        if len(ex) > max_per_class:
            ex = sorted(rng.sample(ex, max_per_class))
        sizes = collections.Counter(p for p, _ in ex)
        where = _assign_groups(dict(sizes), fractions, rng.randrange(2**31))
        for path, text in ex:
            rows[where[path]].append((text, label, path))
    os.makedirs(out_dir, exist_ok=True)
    stats = {"labels": labels, "label_by": label_by, "seed": seed, "counts": {}, "total": {}}
    for split, part in rows.items():
        random.Random(f"{seed}-{split}").shuffle(part)
        with open(os.path.join(out_dir, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("text\tlabel\n")
            f.writelines(f"{normalize_space(t)}\t{lab}\n" for t, lab, _ in part)
        with open(os.path.join(out_dir, f"{split}.src"), "w", encoding="utf-8") as f:
            f.writelines(p + "\n" for _, _, p in part)
        counts = collections.Counter(lab for _, lab, _ in part)
        stats["counts"][split] = {lab: counts.get(lab, 0) for lab in labels}
        stats["total"][split] = len(part)
    with open(os.path.join(out_dir, "labels.txt"), "w", encoding="utf-8") as f:
        f.writelines(lab + "\n" for lab in labels)
    with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    return stats


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line for line in f.read().split("\n") if line]


def _file_paragraphs(path: str, root: str, comments: bool) -> list[str]:
    """Every prose paragraph of one source file, in source order: each docstring paragraph
    (``docstring_paragraphs``), then each comment paragraph (``iter_file_texts``) if asked."""
    _, tree = parse_source(path, root)
    if tree is None:
        return []
    out = [par for _, doc in _docstrings(tree) for par in docstring_paragraphs(doc)]
    if comments:
        out += [r.text for r in iter_file_texts(path, root, comments=True) if r.kind == "comment"]
    return out


def build_transfer(
    task_dir: str,
    out_path: str,
    min_words: int = 5,
    max_words: int = 100,
    root: str | None = None,
    max_files: int | None = None,
    comments: bool = True,
    near_duplicate_threshold: float = 0.6,
) -> dict:
    """Write an unlabelled transfer set (one text per line) for the task ``build_task`` wrote
    to ``task_dir``: the teacher labels it, the student learns from the teacher's outputs.

    Texts are every docstring paragraph (and comment paragraph if ``comments``) of the source
    files in ``train.src`` only (a file also in ``dev.src``/``test.src`` is never read; the first
    ``max_files`` train files in path order if given, for fast tests), normalised like the task
    (whitespace collapsed, ``"`` -> ``'``), with ``min_words``..``max_words`` words. Dropped: a
    text whose ``dedupe_key`` is a task row's (train/dev/test), one in a near-duplicate cluster
    (``near_duplicate_clusters``) with a dev/test row, and repeats (same ``dedupe_key``). Files
    are read in sorted path order, paragraphs in source order, so the output is deterministic.
    Writes ``out_path``, ``<stem>.src`` (source file per line) and ``<stem>.stats.json``; returns
    the stats ``{"texts", "words", "files", "paragraphs", "too_short", "too_long", "task_row",
    "near_eval", "duplicate"}``.
    """
    root = root or stdlib_dir()
    srcs = {s: set(_lines(os.path.join(task_dir, f"{s}.src"))) for s in ("train", "dev", "test")}
    files = sorted(srcs["train"] - srcs["dev"] - srcs["test"])[:max_files]
    task_texts = {
        s: [row.split("\t")[0] for row in _lines(os.path.join(task_dir, f"{s}.tsv"))[1:]]
        for s in srcs
    }
    task_keys = {dedupe_key(t) for texts in task_texts.values() for t in texts}
    stats = dict.fromkeys(("texts", "words", "files", "paragraphs", "too_short", "too_long",
                           "task_row", "near_eval", "duplicate"), 0)
    stats["files"] = len(files)
    cands: list[tuple[str, str]] = []  # (path, text)
    seen: set[str] = set()
    for path in files:
        for par in _file_paragraphs(path, root, comments):
            stats["paragraphs"] += 1
            text = normalize_space(par.replace('"', "'"))
            n, key = len(text.split()), dedupe_key(text)
            if n < min_words:
                stats["too_short"] += 1
            elif n > max_words:
                stats["too_long"] += 1
            elif key in task_keys:
                stats["task_row"] += 1
            elif key in seen or not key:
                stats["duplicate"] += 1
            else:
                seen.add(key)
                cands.append((path, text))
    held = task_texts["dev"] + task_texts["test"]
    clusters = near_duplicate_clusters([t for _, t in cands] + held, near_duplicate_threshold)
    near = set(clusters[len(cands):])
    kept = [c for c, cluster in zip(cands, clusters, strict=False) if cluster not in near]
    stats["near_eval"] = len(cands) - len(kept)
    stats["texts"] = len(kept)
    stats["words"] = sum(len(t.split()) for _, t in kept)
    stem = os.path.splitext(out_path)[0]
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for _, t in kept)
    with open(f"{stem}.src", "w", encoding="utf-8") as f:
        f.writelines(p + "\n" for p, _ in kept)
    stats["config"] = {"min_words": min_words, "max_words": max_words, "comments": comments,
                       "max_files": max_files, "near_duplicate_threshold": near_duplicate_threshold}
    with open(f"{stem}.stats.json", "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    return stats
