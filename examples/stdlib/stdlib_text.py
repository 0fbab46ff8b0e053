"""Real English text that exists on every machine with Python: the standard library's prose.

No data can be downloaded in the demo/CI environment, so the package's real-data proof uses the
docstrings and comments of the Python standard library (written by CPython developers, not for
this project). Two builders:

* ``build_corpus`` -> an unlabelled corpus (``train.txt`` / ``heldout.txt``, one document per
  line) for general distillation / MLM evaluation. A document is one docstring (its prose
  paragraphs joined) or one comment paragraph (consecutive ``#`` lines merged).
* ``stdlib_task.build_task`` -> a labelled text-classification task: the first paragraph of a
  module/class/function docstring, labelled by its library area (``email``, ``asyncio`` ...).

Both split **by source file** (all texts of one ``.py`` file land in one split) and drop exact /
normalised duplicate texts across the whole set, so near-duplicates do not leak across splits.
Everything is deterministic for a seed. Files are plain TSV/text: a header row, tab separated, no
quoting (tabs/newlines become spaces, ``"`` becomes ``'``), readable by ``csv`` with or without
``quoting=csv.QUOTE_NONE`` and by a plain ``line.split("\\t")``.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import inspect
import io
import json
import os
import random
import re
import sysconfig
import tokenize
import warnings
from collections.abc import Iterator

SKIP_DIRS = frozenset({"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"})
_PRAGMA = re.compile(r"^(!|-\*-|\s*(noqa|type:|pragma|fmt:|pylint|mypy|nosec|XXX$))", re.I)
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")  # :func:`foo` -> foo
_PROSE_WORD = re.compile(r"^[(\"'`]*[A-Za-z][A-Za-z'-]*[.,;:!?)\"'`]*$")
_TABLE_ROW = re.compile(r"0x[0-9A-Fa-f]+\s*->|U\+[0-9A-Fa-f]{4}")  # codec / entity tables
_CODE_CHARS = set("=(){}[]<>;_\\|@$^~*#%&+/")


@dataclasses.dataclass(frozen=True)
class TextRecord:
    """One piece of prose: ``path`` is relative to the stdlib dir, ``kind`` is ``module``/
    ``class``/``function`` (docstrings) or ``comment``; ``text`` is one whitespace-normalised
    line; ``first_paragraph`` is the docstring's first prose paragraph ("" for comments)."""

    path: str
    kind: str
    text: str
    first_paragraph: str = ""


def stdlib_dir() -> str:
    """The directory of this interpreter's pure-Python standard library."""
    return sysconfig.get_paths()["stdlib"]


def list_source_files(root: str | None = None, max_files: int | None = None) -> list[str]:
    """Sorted relative paths of ``.py`` files under ``root`` (default: the stdlib), skipping
    ``SKIP_DIRS``; ``max_files`` keeps an evenly spaced subset (for fast tests)."""
    root = root or stdlib_dir()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                files.append(os.path.relpath(os.path.join(dirpath, name), root))
    files.sort()
    if max_files is not None and len(files) > max_files:
        step = len(files) / max_files
        files = [files[int(i * step)] for i in range(max_files)]
    return files


def normalize_space(text: str) -> str:
    """Collapse all whitespace (incl. tabs/newlines) to single spaces and strip."""
    return " ".join(text.split())


def dedupe_key(text: str) -> str:
    """Key under which two texts count as duplicates: lowercase letters only, so templated
    near-duplicates (``codec cp437 generated from ...`` / ``codec cp850 ...``) collapse too."""
    return re.sub(r"[^a-z]+", " ", text.lower()).strip()


def near_duplicate_clusters(texts: list[str], threshold: float = 0.6) -> list[int]:
    """Cluster id (index of the cluster's first text) per text: texts with equal ``dedupe_key``
    or word-set Jaccard >= ``threshold`` are linked (single linkage). Pairs are only compared
    inside blocks sharing the first or last three key words, which catches templated texts
    (``Python Character Mapping Codec koi8_r generated from ...``) in ~linear time."""
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    words = [dedupe_key(t).split() for t in texts]
    sets = [frozenset(w) for w in words]
    blocks: dict[tuple, list[int]] = collections.defaultdict(list)
    for i, w in enumerate(words):
        blocks[("head", *w[:3])].append(i)
        blocks[("tail", *w[-3:])].append(i)
    for members in blocks.values():
        for a, i in enumerate(members):
            for j in members[a + 1 :]:
                if find(i) == find(j):
                    continue
                inter = len(sets[i] & sets[j])
                if words[i] == words[j] or inter >= threshold * len(sets[i] | sets[j]):
                    parent[max(find(i), find(j))] = min(find(i), find(j))
    return [find(i) for i in range(len(texts))]


def is_code_like(text: str) -> bool:
    """Heuristic: True for commented-out code, signatures, tables and separator lines, i.e. text
    where under 60% of tokens look like prose words or code punctuation is dense, and rows of
    codec / HTML-entity tables (``0x00d8 -> GREEK SMALL LETTER GAMMA``)."""
    words = text.split()
    if not words:
        return True
    if text.lstrip().startswith((">>>", "...")) or ">>>" in text or _TABLE_ROW.search(text):
        return True
    prose = sum(bool(_PROSE_WORD.match(w)) for w in words) / len(words)
    dense = sum(c in _CODE_CHARS for c in text) / max(1, len(text))
    return prose < 0.6 or dense > 0.06


def _clean_paragraph(par: str) -> str:
    par = _ROLE.sub(r"\1", par).replace("``", "")
    return normalize_space(par)


def docstring_paragraphs(doc: str) -> list[str]:
    """Prose paragraphs of a docstring (dedented, split at blank lines), without doctest
    paragraphs, indented code blocks and code-like paragraphs; each one whitespace-normalised."""
    out = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(doc)):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines or any(ln.lstrip().startswith((">>>", "...")) for ln in lines):
            continue
        if all(ln.startswith((" ", "\t")) for ln in lines):  # indented block = code / table
            continue
        par = _clean_paragraph(block)
        if par and not is_code_like(par):
            out.append(par)
    return out


def _docstrings(tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(kind, docstring) in source order for the module and every class / function in it."""
    doc = ast.get_docstring(tree, clean=False)
    if doc:
        yield "module", doc
    stack = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield ("class" if isinstance(node, ast.ClassDef) else "function"), doc
        for child in reversed(list(ast.iter_child_nodes(node))):
            if isinstance(child, ast.stmt):
                stack.append(child)


def _comment_paragraphs(source: str) -> Iterator[str]:
    """Comment paragraphs: consecutive full-line ``#`` comments merged, split at empty ``#``."""
    para: list[str] = []
    last_line = -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            full_line = tok.line[: tok.start[1]].strip() == ""
            body = tok.string.lstrip("#").strip()
            if not full_line or tok.start[0] != last_line + 1 or not body:
                if para:
                    yield " ".join(para)
                para = []
            last_line = tok.start[0]
            if body and not _PRAGMA.match(body):
                para.append(body)
            if not full_line:  # trailing comment: its own (usually tiny) paragraph
                if para:
                    yield " ".join(para)
                para, last_line = [], -2
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    if para:
        yield " ".join(para)


def parse_source(path: str, root: str | None = None):
    """(source text, ast.Module) of one source file (relative ``path`` under ``root``), or
    (None, None) if it cannot be read or parsed."""
    try:
        with tokenize.open(os.path.join(root or stdlib_dir(), path)) as f:
            source = f.read()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return source, ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return None, None


def iter_file_texts(path: str, root: str | None = None, comments: bool = True) -> list[TextRecord]:
    """All prose records of one source file (relative ``path`` under ``root``); [] if the file
    does not parse. Docstrings and comments with < 5 words or code-like are dropped."""
    root = root or stdlib_dir()
    source, tree = parse_source(path, root)
    if tree is None:
        return []
    records = []
    for kind, doc in _docstrings(tree):
        pars = docstring_paragraphs(doc)
        text = " ".join(pars)
        if pars and len(text.split()) >= 5:
            records.append(TextRecord(path, kind, text, pars[0]))
    if comments:
        for par in _comment_paragraphs(source):
            text = _clean_paragraph(par)
            if len(text.split()) >= 5 and not is_code_like(text):
                records.append(TextRecord(path, "comment", text))
    return records


def iter_stdlib_texts(
    root: str | None = None, max_files: int | None = None, comments: bool = True
) -> Iterator[TextRecord]:
    """Records of every source file in sorted path order (see ``iter_file_texts``)."""
    for path in list_source_files(root, max_files):
        yield from iter_file_texts(path, root, comments)


def build_corpus(
    out_dir: str,
    heldout_fraction: float = 0.05,
    seed: int = 0,
    max_docs: int | None = None,
    root: str | None = None,
    max_files: int | None = None,
    near_duplicate_threshold: float = 0.6,
) -> dict:
    """Write ``train.txt`` / ``heldout.txt`` (one document per line, source order), aligned
    ``train.src`` / ``heldout.src`` (the relative source file of each line) and ``stats.json``.

    Whole source files are held out until about ``heldout_fraction`` of the documents are. Of
    each cluster of (near-)duplicate documents (``near_duplicate_clusters``) only the first one
    is kept, so no near-duplicate crosses the split. ``max_docs`` caps the total number
    of documents (first ones in path order) and ``max_files`` subsamples files, for fast tests.
    Returns the counts ``{"train": {"docs", "words", "files"}, "heldout": {...}}``.
    """
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction={heldout_fraction} must be in [0, 1); pass e.g. 0.05")
    records = list(iter_stdlib_texts(root, max_files))
    clusters = near_duplicate_clusters([r.text for r in records], near_duplicate_threshold)
    docs = [r for i, r in enumerate(records) if clusters[i] == i][:max_docs]
    sizes = collections.Counter(d.path for d in docs)
    fractions = {"train": 1 - heldout_fraction, "heldout": heldout_fraction}
    where = _assign_groups(dict(sizes), fractions, seed, largest_first=False)
    heldout_files = {f for f, split in where.items() if split == "heldout"}
    os.makedirs(out_dir, exist_ok=True)
    stats = {}
    for split in ("train", "heldout"):
        part = [d for d in docs if (d.path in heldout_files) == (split == "heldout")]
        with open(os.path.join(out_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.writelines(d.text + "\n" for d in part)
        with open(os.path.join(out_dir, f"{split}.src"), "w", encoding="utf-8") as f:
            f.writelines(d.path + "\n" for d in part)
        stats[split] = {
            "docs": len(part),
            "words": sum(len(d.text.split()) for d in part),
            "files": len({d.path for d in part}),
        }
    stats["config"] = {"heldout_fraction": heldout_fraction, "seed": seed, "max_docs": max_docs}
    with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    return stats


def _assign_groups(
    sizes: dict[str, int], fractions: dict[str, float], seed: int, largest_first: bool = True
) -> dict:
    """Assign file groups (``sizes``: file -> #texts) to splits: each group, in seeded random
    order (largest first if ``largest_first``: tighter shares for few groups), goes to the split
    furthest below its target share. Returns {file: split}."""
    rng = random.Random(seed)
    files = sorted(sizes)
    rng.shuffle(files)
    if largest_first:
        files.sort(key=lambda f: -sizes[f])  # stable: random order among equal sizes
    total = sum(sizes.values())
    got = {s: 0 for s in fractions}
    where: dict[str, str] = {}
    for f in files:
        split = max(fractions, key=lambda s: fractions[s] * total - got[s])
        where[f] = split
        got[split] += sizes[f]
    # Every split with a positive share gets a group: the smallest one of the fullest split.
    for split in (s for s in fractions if fractions[s] > 0):
        if not any(v == split for v in where.values()):
            donor = max(got, key=got.get)
            candidates = [f for f in files if where[f] == donor]
            if len(candidates) > 1:
                f = min(candidates, key=lambda f: sizes[f])
                where[f] = split
                got[donor] -= sizes[f]
                got[split] += sizes[f]
    return where
