"""A real labelled task from the standard library's docstrings (see `stdlib_text` for the texts).

``build_task`` labels the first paragraph of module/class/function docstrings by library area
(``AREAS``, roughly the chapters of the Library Reference) or by top-level package, and splits
train/dev/test **by source file** with near-duplicates clustered, so none cross splits.
"""

from __future__ import annotations

import collections
import json
import os
import random

from tinybert_tf.data.stdlib_text import (
    _assign_groups,
    dedupe_key,
    iter_stdlib_texts,
    near_duplicate_clusters,
    normalize_space,
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
