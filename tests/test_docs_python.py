"""Every ```python block in README.md, docs/*.md and bench/RESULTS.md runs, on tiny models.

How a document runs: its Python blocks run in order in one namespace (a later block uses what an
earlier one made, as a reader pasting them into one notebook would), in a fresh working directory
that holds the files the examples name:

    train.tsv, dev.tsv, test.tsv    tiny.write_task: `text` and `label` columns, labels neg / pos
    corpus/wiki.txt                 tiny.write_corpus: one document per line
    unlabelled/reviews.txt          tiny.write_corpus: a transfer set, one text per line

A tiny teacher preset (tiny.write_teacher: 2 layers, hidden 32, 2 heads, max length 128, the
vocabulary of tests/tiny.py) is written once, outside that directory. Before a block runs, its
source changes in two visible ways, and in no other:

1. `SUBSTITUTIONS`: exact text -> replacement, each with its reason (the full-size teacher, the
   student architecture and the budgets the documents show). A substitution that no document
   uses fails `test_every_substitution_is_used`, so the table lists only what happens.
2. `TINY_CALL`: every call of a function in `API` (`tinybert_tf.finetune(...)`, a bare
   `finetune(...)` too) that passes no `variant=` gets `variant="tiny"` added as a keyword: the
   configs' test size (batch 4, one epoch per stage, 8 general-distillation steps, float32, no
   XLA, a log every 2 steps). It is an edit of the call's syntax tree; the function that runs is
   the package's own, and the keyword is one a user may pass.

Markers, as comments in a block:

* `# not run: REASON` as a block's first line: the block is not run (a later block cannot use its
  names). Such blocks are counted; more than `MAX_NOT_RUN` in all documents fail
  `test_few_blocks_opt_out`.
* `# stands in for: WHAT` at the end of a line: the line does what a test cannot do and says so to
  the reader too (`signal.raise_signal(signal.SIGINT)  # stands in for: pressing Ctrl-C`). It runs
  as written; `test_markers_say_what` checks that it names something.

A block's code is compiled with the markdown file's path and line numbers, so a traceback points
at the document's line; the failure message shows the block as it ran (after the changes above).
`test_checker_finds_mistakes` feeds the runner wrong blocks, so a runner that passes everything
fails here too. A document whose blocks take over a minute on two CPU cores is `slow` (`SLOW`:
the API page, about two minutes; README.md's quick start takes under one); the other tests here
read text or stop at a config check.
"""

import ast
import glob
import os
import re
import shutil
import sys
import textwrap
import traceback

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tiny  # noqa: E402

DOCS = [doc for doc in ["README.md",
                        *sorted(os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/docs/*.md")),
                        "bench/RESULTS.md"] if os.path.isfile(os.path.join(ROOT, doc))]
LANGUAGES = {"python", "py"}
API = ("finetune", "distill_task", "distill_general", "compare", "export_model")
TINY_CALL = ("variant", "tiny")
TEACHER = "{teacher}"  # in a replacement: the tiny teacher preset's path, quoted
# (text in a block, what it becomes, why)
SUBSTITUTIONS = (
    ('"bert_base_en_uncased"', TEACHER,
     "BERT-base (110 M parameters, a download) -> the tiny teacher preset (same files: backbone, "
     "tokenizer)"),
    ('"from_teacher:4"', '"from_teacher:2"',
     "a student from 4 of BERT-base's 12 layers -> from 2 of the tiny teacher's 2"),
    ('"tinybert_4l_312h"', '"tiny_2l_32h"',
     "TinyBERT-4 has BERT-base's 12 heads, the tiny teacher 2 (attention terms pair heads one "
     "to one); tiny_2l_32h is the tiny variant's student"),
    ("steps=20_000", "steps=8", "a general-distillation budget -> the tiny variant's 8 steps"),
    ('"epochs": 3', '"epochs": 1', "a stage's epochs -> the tiny variant's 1"),
)
NOT_RUN = "# not run:"
STANDS_IN = "# stands in for:"
MAX_NOT_RUN = 2
SLOW = {"docs/python_api.md"}  # documents whose blocks take over a minute on two CPU cores


# ---- reading the documents ------------------------------------------------------------------------


def python_blocks(text):
    """(line number of the block's first code line, source) of each ```python block of `text`."""
    out, lines, start, lang = [], None, 0, ""
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            if lines is None:
                lang, lines, start = stripped[3:].strip().lower(), [], number + 1
            else:
                if lang in LANGUAGES:
                    out.append((start, textwrap.dedent("\n".join(lines))))
                lines = None
            continue
        if lines is not None:
            lines.append(raw)
    return out


def read(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        return f.read()


BLOCKS = {doc: python_blocks(read(doc)) for doc in DOCS}
RUN_DOCS = [doc for doc, blocks in BLOCKS.items() if blocks]


def opted_out(source):
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return first.startswith(NOT_RUN)


# ---- changing a block (the two documented changes) ------------------------------------------------


def substitute(source, teacher):
    """`source` with every SUBSTITUTIONS entry applied where the text is not part of a longer
    name or number (`"epochs": 30` stays); the line count is unchanged."""
    for old, new, _ in SUBSTITUTIONS:
        replacement = new.replace(TEACHER, repr(teacher))
        source = re.sub(re.escape(old) + r"(?![\w.])", lambda _, r=replacement: r, source)
    return source


class _TinyCalls(ast.NodeTransformer):
    """Adds `variant="tiny"` to each call of an API function that passes no `variant`."""

    def visit_Call(self, node):
        self.generic_visit(node)
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in API and not any(k.arg == TINY_CALL[0] for k in node.keywords):
            node.keywords.append(ast.keyword(TINY_CALL[0], ast.Constant(TINY_CALL[1])))
        return node


def prepare(source, first_line, doc, teacher):
    """`source` after both changes, compiled under the document's path with the document's line
    numbers."""
    path = os.path.join(ROOT, doc)
    tree = ast.parse("\n" * (first_line - 1) + substitute(source, teacher), filename=path)
    return compile(ast.fix_missing_locations(_TinyCalls().visit(tree)), path, "exec")


def _failed_line(err, path, first_line):
    """The document line an error came from: the innermost frame in the document, else the
    block's first line."""
    if isinstance(err, SyntaxError) and err.filename == path and err.lineno:
        return err.lineno
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == path]
    return lines[-1] if lines else first_line


def run_document(doc, blocks, teacher):
    """Run `blocks` ((first line, source)) in order in one namespace, in the current directory.
    Returns the first lines of the blocks that opted out; raises AssertionError naming the
    document line that failed, with the block as it ran."""
    namespace = {"__name__": "__main__"}
    skipped = []
    for first_line, source in blocks:
        if opted_out(source):
            skipped.append(first_line)
            continue
        try:
            exec(prepare(source, first_line, doc, teacher), namespace)
        except Exception as err:
            line = _failed_line(err, os.path.join(ROOT, doc), first_line)
            shown = "\n".join(f"{first_line + i:4d}  {text}" for i, text
                              in enumerate(substitute(source, teacher).splitlines()))
            raise AssertionError(
                f"{doc}:{line}: {type(err).__name__}: {err}\n--- the block as run (after "
                f"SUBSTITUTIONS; API calls also get variant='tiny') ---\n{shown}") from err
    return skipped


# ---- the working directory ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """(the tiny teacher preset, a folder of the files the examples name)."""
    base = tmp_path_factory.mktemp("docs_python")
    teacher = tiny.write_teacher(base / "teacher_preset", num_layers=2, max_sequence_length=128)
    files = base / "files"
    (files / "corpus").mkdir(parents=True)
    (files / "unlabelled").mkdir()
    tiny.write_task(files / "train.tsv", 16, 0)
    tiny.write_task(files / "dev.tsv", 16, 1)
    tiny.write_task(files / "test.tsv", 16, 2)
    tiny.write_corpus(files / "corpus" / "wiki.txt", docs=64, seed=0)
    tiny.write_corpus(files / "unlabelled" / "reviews.txt", docs=16, seed=1)
    return teacher, files


@pytest.fixture
def teacher(workspace, tmp_path, monkeypatch):
    """The tiny teacher preset, with the working directory a fresh copy of the files."""
    teacher, files = workspace
    shutil.copytree(files, tmp_path / "cwd")
    monkeypatch.chdir(tmp_path / "cwd")
    return teacher


# ---- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [pytest.param(d, marks=[pytest.mark.slow] if d in SLOW else [])
                                 for d in RUN_DOCS])
def test_python_blocks_run(doc, teacher):
    run_document(doc, BLOCKS[doc], teacher)


def test_slow_names_documents_with_blocks():
    assert SLOW <= set(RUN_DOCS), SLOW - set(RUN_DOCS)


def test_the_api_page_shows_every_function():
    """The extraction finds the API page's examples (an extractor that finds nothing passes)."""
    source = "\n".join(s for _, s in BLOCKS["docs/python_api.md"])
    called = {node.func.attr for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert set(API) | {"Distiller", "build", "get", "load"} <= called, called
    assert "README.md" in RUN_DOCS


def test_every_substitution_is_used():
    text = "\n".join(s for blocks in BLOCKS.values() for _, s in blocks)
    unused = [old for old, _, _ in SUBSTITUTIONS if old not in text]
    assert not unused, f"SUBSTITUTIONS entries no block uses: {unused}"


def test_few_blocks_opt_out():
    out = [(doc, n, s) for doc, blocks in BLOCKS.items() for n, s in blocks if opted_out(s)]
    assert len(out) <= MAX_NOT_RUN, f"{len(out)} blocks say '{NOT_RUN}' (at most {MAX_NOT_RUN})"
    for doc, n, source in out:
        reason = source.strip().splitlines()[0].split(NOT_RUN, 1)[1]
        assert reason.strip(), f"{doc}:{n}: '{NOT_RUN}' gives no reason"


def test_markers_say_what():
    for doc, blocks in BLOCKS.items():
        for first, source in blocks:
            for i, line in enumerate(source.splitlines()):
                if STANDS_IN in line:
                    assert line.split(STANDS_IN, 1)[1].strip(), f"{doc}:{first + i}: says nothing"


def test_substitutions_match_whole_values():
    assert substitute('f(finetune={"epochs": 3}, steps=20_000)', "t") == \
        'f(finetune={"epochs": 1}, steps=8)'
    assert substitute('f(finetune={"epochs": 30}, steps=20_0000)', "t") == \
        'f(finetune={"epochs": 30}, steps=20_0000)'
    assert substitute('x = "bert_base_en_uncased"', "/tmp/t") == "x = '/tmp/t'"


def test_tiny_calls_edit_only_api_calls():
    tree = _TinyCalls().visit(ast.parse(
        "tinybert_tf.finetune('w', train='t.tsv')\nfinetune('w')\n"
        "tinybert_tf.compare('w', variant='distilbert')\nprint('w')\nx.fit(d)"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    variants = {ast.unparse(c.func): [ast.unparse(k.value) for k in c.keywords
                                      if k.arg == "variant"] for c in calls}
    assert variants == {"tinybert_tf.finetune": ["'tiny'"], "finetune": ["'tiny'"],
                        "tinybert_tf.compare": ["'distilbert'"], "print": [], "x.fit": []}


def test_python_blocks_reads_fences():
    text = ("# T\n```bash\nmake demo\n```\n```python\nx = 1\n```\ntext\n"
            "```py\n    y = x + 1\n```\n```text\nz\n```\n")
    assert python_blocks(text) == [(6, "x = 1"), (10, "y = x + 1")]


WRONG = [
    # the README's old snippet: a name no block defines
    ("```python\nimport keras\n\nkeras.Sequential().fit(dataset)\n```\n",
     "docs/wrong.md:4: NameError"),
    # a misspelt config key: the package's own UserError, at the call's line
    ("```python\nimport tinybert_tf\n\ntinybert_tf.finetune('w', \"bert_base_en_uncased\",\n"
     "    train='train.tsv', finetune={'epoch': 3})\n```\n", "docs/wrong.md:4: UserError"),
    # a name from an opted-out block does not exist later
    ("```python\n# not run: needs a TPU\nx = 1\n```\n```python\nprint(x)\n```\n",
     "docs/wrong.md:6: NameError"),
    ("```python\nx = 1\nprint('unclosed'\n```\n", "docs/wrong.md:3: SyntaxError"),
    ("```python\nimport tinybert_tf\n\ntinybert_tf.Distiller(1, 2, 'tinybert_genral')\n```\n",
     "docs/wrong.md:4: "),
]


@pytest.mark.parametrize("text, says", WRONG, ids=["undefined", "config-key", "opted-out-name",
                                                   "syntax", "recipe-name"])
def test_checker_finds_mistakes(text, says, teacher):
    with pytest.raises(AssertionError) as found:
        run_document("docs/wrong.md", python_blocks(text), teacher)
    assert says in str(found.value), str(found.value)


def test_checker_runs_blocks_in_one_namespace(teacher):
    text = ("```python\n# not run: needs a TPU\nraise SystemExit\n```\n"
            "```python\nx = \"bert_base_en_uncased\"\n```\n"
            "```python\nimport os\nassert os.path.isdir(x), x\n"
            "assert open('train.tsv').readline() == 'text\\tlabel\\n'\n```\n")
    assert run_document("docs/right.md", python_blocks(text), teacher) == [2]
