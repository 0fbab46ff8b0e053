"""The documentation names only what exists (README.md, docs/*.md, bench/RESULTS.md, tests/README.md).

* Repository paths: `tinybert_tf/launch/train.py`, `launch/distribution.py`, `distill/terms.py`,
  `tools/benchmark.py`, `configs/task_distill.py`, `examples/stdlib/demo.py`, `tests/test_layout.py`,
  `bench/results.json`, folders such as `tools/bench/`, and bare `name.py` file names. A path
  under tinybert_tf/ may be written from its subpackage (`launch/x.py`). Flag values
  (`--json=bench/new.json`: a file a command writes) are not paths to check.
* Dotted module names (`tinybert_tf.distill.optim`, `examples.stdlib.demo`) and the name after
  the module (`tinybert_tf.launch.modes.run`): the module exists and defines it.
* Relative links and images, and their `#anchors` (GitHub's heading slugs).
* Every `--config.key` is a key of the packaged configs general_distill or task_distill.
* docs/ARCHITECTURE.md names every user-error class (the subclasses of errors.UserError).
* tests/README.md's table lists every module of tinybert_tf/ without a test file of its own name,
  and names only modules and test files that exist.
* No history or narration (sessions, issue and stop numbers, what "was lent").

Each check is a function of the text, written generically (modules may move); the
`test_checks_find_wrong_names` cases feed each a wrong name, so a check that passes everything fails.
"""

import ast
import functools
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tinybert_tf")
DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/docs/*.md")),
        "bench/RESULTS.md", "tests/README.md"]
ROOTS = ("tinybert_tf", "launch", "distill", "data", "export", "tools", "configs", "examples",
         "tests", "bench", "docs")
PATH = re.compile(r"(?<![\w/.<>$*{=-])((?:" + "|".join(ROOTS) + r")/(?:[\w.-]+/)*"
                  r"(?:[\w-]+\.(?:py|md|json|png))?)(?![\w/*{<-])")
BARE_PY = re.compile(r"(?<![\w/.=<>-])([A-Za-z_]\w*\.py)\b")  # not in `<name>_x.py`
DOTTED = re.compile(r"(?<![\w/.])((?:tinybert_tf|examples)(?:\.[A-Za-z_]\w*)+)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CONFIG_KEY = re.compile(r"--config\.([a-z_]\w*(?:\.[a-z_]\w*)*)")
HISTORY = re.compile(r"(?i)\b(?:this session|sessions?|was lent|none lent|lent to|issue \d+|"
                     r"stop \d+)\b")
MAX_README_LINES = 250


def read(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        return f.read()


# ---- the checks (text -> problems) --------------------------------------------------------------


def _exists(path, doc_dir=""):
    bases = [ROOT, PACKAGE, os.path.join(ROOT, "tools"), os.path.join(ROOT, doc_dir)]
    return any(os.path.exists(os.path.join(base, path)) for base in bases)


@functools.cache
def _file_names():
    names = set()
    for _, dirnames, files in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        names.update(files)
    return frozenset(names)


def path_problems(text, doc_dir=""):
    problems = [f"no file or folder {p}" for p in PATH.findall(text) if not _exists(p, doc_dir)]
    return problems + [f"no file named {n} in the repository" for n in BARE_PY.findall(text)
                       if n not in _file_names()]


def _module_file(parts):
    base = os.path.join(ROOT, *parts)
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


@functools.cache
def _defined(path):
    """Names a module defines at top level, imports, or lists as a string (__all__, lazy tables)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return frozenset(names)


def dotted_problems(text):
    problems = []
    for name in set(DOTTED.findall(text)):
        parts = name.split(".")
        found = max((k for k in range(1, len(parts) + 1) if _module_file(parts[:k])), default=0)
        if found < 2 and not (found == 1 and len(parts) > 1
                              and parts[1] in _defined(_module_file(parts[:1]))):
            problems.append(f"no module {'.'.join(parts[:2])} (in {name})")
        elif found and found < len(parts) and parts[found] not in _defined(
                _module_file(parts[:found])):
            problems.append(f"{'.'.join(parts[:found])} defines no {parts[found]} (in {name})")
    return problems


def _without_fences(text):
    out, inside = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside:
            out.append(line)
    return out


def slugs(text):
    """GitHub's anchors of the headings of markdown `text` (duplicates get -1, -2, ...)."""
    seen, out = {}, set()
    for line in _without_fences(text):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return out


def link_problems(text, doc_dir, own_slugs=None):
    problems = []
    for target in LINK.findall("\n".join(_without_fences(text))):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(ROOT, doc_dir, path)) if path else None
        if full and not os.path.exists(full):
            problems.append(f"link to a missing file: {target}")
            continue
        if anchor:
            if full is None:
                targets = own_slugs if own_slugs is not None else slugs(text)
            elif full.endswith(".md"):
                with open(full, encoding="utf-8") as f:
                    targets = slugs(f.read())
            else:
                continue
            if anchor not in targets:
                problems.append(f"link to a missing heading: {target}")
    return problems


@functools.cache
def _configs():
    from tinybert_tf.launch import config_lib

    return [config_lib.load(name) for name in ("general_distill", "task_distill")]


def _has_key(config, key):
    for part in key.split("."):
        if not hasattr(config, "keys") or part not in config:
            return False
        config = config[part]
    return True


def config_key_problems(text):
    keys = set(CONFIG_KEY.findall(text))
    return [f"--config.{k} is a key of no config" for k in sorted(keys)
            if not any(_has_key(c, k) for c in _configs())]


def history_problems(text):
    return [f"history / narration: {m!r}" for m in HISTORY.findall(text)]


# ---- the package's facts the docs must name -----------------------------------------------------


def _modules():
    """Dotted module names (without `tinybert_tf.`) of every module file but __init__."""
    out = []
    for path in glob.glob(f"{PACKAGE}/**/*.py", recursive=True):
        rel = os.path.relpath(path, PACKAGE)[:-3]
        if not rel.endswith("__init__"):
            out.append(rel.replace(os.sep, "."))
    return sorted(out)


def _has_own_test(module):
    stem = "test_" + module.replace(".", "_")
    return bool(glob.glob(f"{ROOT}/tests/{stem}.py") + glob.glob(f"{ROOT}/tests/{stem}_*.py"))


def user_errors():
    """Every class of the package that subclasses errors.UserError (directly or not)."""
    bases = {}
    for path in glob.glob(f"{PACKAGE}/**/*.py", recursive=True):
        with open(path, encoding="utf-8") as f:
            for node in ast.walk(ast.parse(f.read())):
                if isinstance(node, ast.ClassDef):
                    bases[node.name] = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
    found, grew = {"UserError"}, True
    while grew:
        new = {name for name, b in bases.items() if b & found} - found
        found |= new
        grew = bool(new)
    return found


def table_problems(text):
    rows = re.findall(r"^\|\s*`([\w.]+)`\s*\|(.*)$", text, re.M)
    listed = {module for module, _ in rows}
    problems = [f"tests/README.md: no row for {m} (it has no test file of its own name)"
                for m in _modules() if not _has_own_test(m) and m not in listed]
    problems += [f"tests/README.md: {m} is not a module of tinybert_tf" for m in listed
                 if m not in _modules()]
    for module, cells in rows:
        problems += [f"tests/README.md: {module}: no tests/{name}"
                     for name in re.findall(r"test_\w+\.py", cells)
                     if not os.path.isfile(os.path.join(ROOT, "tests", name))]
    return problems


# ---- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS)
def test_named_paths_and_modules_exist(doc):
    text = read(doc)
    assert path_problems(text, os.path.dirname(doc)) + dotted_problems(text) == []


@pytest.mark.parametrize("doc", DOCS)
def test_links_and_anchors_resolve(doc):
    assert link_problems(read(doc), os.path.dirname(doc)) == []


@pytest.mark.parametrize("doc", DOCS)
def test_config_keys_exist(doc):
    assert config_key_problems(read(doc)) == []


@pytest.mark.parametrize("doc", DOCS)
def test_no_history_or_narration(doc):
    assert history_problems(read(doc)) == []


def test_architecture_names_every_user_error():
    text = read("docs/ARCHITECTURE.md")
    errors = user_errors()
    assert {"UserError", "LaunchError", "CorpusError", "DistributionError"} <= errors
    assert [e for e in sorted(errors) if f"`{e}`" not in text] == []


def test_tests_readme_table_is_complete():
    assert table_problems(read("tests/README.md")) == []


def test_readme_is_a_front_door():
    lines = read("README.md").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
    assert any("bench/RESULTS.md" in line for line in lines)


@pytest.mark.parametrize("check, text", [
    (path_problems, "see `launch/nonexistent.py`"),
    (path_problems, "in tinybert_tf/distill/recipe.py"),
    (path_problems, "the folder `examples/nowhere/`"),
    (path_problems, "run `no_such_tool.py`"),
    (dotted_problems, "`tinybert_tf.distill.recipes.NOPE`"),
    (dotted_problems, "`tinybert_tf.nowhere.module`"),
    (dotted_problems, "`tinybert_tf.Distiler`"),
    (dotted_problems, "python -m examples.stdlib.demos"),
    (lambda t: link_problems(t, "docs"), "[guide](no_such_guide.md)"),
    (lambda t: link_problems(t, "docs"), "[guide](proof.md#no-such-heading)"),
    (lambda t: link_problems(t, ""), "# Title\n[up](#titel)"),
    (config_key_problems, "--config.data.trian='*.txt'"),
    (config_key_problems, "`--config.finetune.epoch`"),
    (history_problems, "No GPU was lent to this session."),
    (history_problems, "## Stop 13 (issue 14)"),
    (table_problems, "| `launch.nowhere` | `test_launch_main.py` |"),
    (table_problems, "| `launch.modes` | `test_launch_nothing.py` |"),
])
def test_checks_find_wrong_names(check, text):
    assert check(text)


def test_checks_accept_right_names():
    text = ("`launch/distribution.py`, `tinybert_tf/launch/train.py`, `distill/terms.py`, "
            "`tools/bench/`, `configs/*.py`, `evaluate.py`, `tinybert_tf.distill.recipes.NEEDS`, "
            "`tinybert_tf.Distiller`, `examples.stdlib.demo`, --json=bench/new.json, "
            "`tests/test_<subpackage>_<module>.py`, `launch/<name>_mode.py`")
    assert path_problems(text) + dotted_problems(text) == []
    assert link_problems("## Loss numerics (float32)\n[a](#loss-numerics-float32)", "") == []
    assert config_key_problems("--config.data.train=x --config.prediction.hard_weight=1 "
                               "--config.KEY=VALUE") == []
