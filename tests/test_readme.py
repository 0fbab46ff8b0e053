"""Every command in README.md, docs/*.md and bench/RESULTS.md runs as written.

Fenced shell blocks are read line by line: a trailing backslash continues a line, `#` starts a
comment, leading `VAR=value` words are the environment; inline code spans count too when they are
a whole command (a program and its arguments), not a bare name or a template. A line that starts with `make`, `python -m ...`,
`python tools/...` or `python examples/...` (also `.venv/bin/python`), or with a console script
of setup.py (`tinybert-tf ...`, `tinybert-tf-export ...`), is checked (from a directory outside
the checkout, as an installed package runs):

* `make X`: the Makefile has a target X;
* `python -m tinybert_tf.main ...` and `tinybert-tf ...`: the launcher's own flag parser
  (`main.define_flags`) accepts the line: the config loads with its variant and every
  `--config.` override (an unknown key or a value of the wrong type fails), `--workdir` is given,
  and the mode, strategy, backend, precision, recipes, task and stages are names the package
  knows;
* any other `python -m MODULE` / `python PATH.py` / console script: the module, script or
  setup.py entry point exists, its `--helpfull` (absl) or `--help` (argparse) works in a
  subprocess (once per entry point), and every flag on the line is one it lists.

`test_checker_finds_mistakes` feeds the checker wrong commands, so a checker that passes
everything fails here too.
"""

import functools
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/docs/*.md")),
        "bench/RESULTS.md"]
SHELLS = {"", "bash", "sh", "shell", "console"}
PYTHONS = ("python", "python3", ".venv/bin/python")
COMMAND = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:make|python3?|\.venv/bin/python|tinybert-tf[\w-]*)"
                     r"(?:\s|$)")
ENV = re.compile(r"[A-Z_][A-Z0-9_]*=\S*")
LAUNCHER = "tinybert_tf.main"
HELP_TIMEOUT = 120  # seconds for one `--help` subprocess (they import no TensorFlow)


# ---- reading the documents ------------------------------------------------------------------------


def shell_lines(text):
    """(line number, logical line) of every line of the fenced shell blocks of markdown `text`."""
    out, inside, lang, pending, start = [], False, "", "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("```"):
            inside, lang = not inside, line[3:].strip().lower()
            pending = ""
            continue
        if not inside or lang not in SHELLS:
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def inline_spans(text):
    """(line number, span) of the inline code spans outside fenced blocks of markdown `text`."""
    out, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside:
            out += [(number, span) for span in re.findall(r"`([^`\n]+)`", line)]
    return out


def commands(text):
    """(line number, logical line) of what `text` shows as commands: lines of its shell blocks,
    and inline code spans that are whole commands (a bare name such as `tinybert-tf`, and
    templates with `<...>`, `[...]` or `...`, are not)."""
    inline = [(n, span) for n, span in inline_spans(text)
              if COMMAND.match(span) and len(span.split()) > 1
              and not re.search(r"[<\[…]|\.\.\.", span)]
    return sorted([(n, line) for n, line in shell_lines(text) if COMMAND.match(line)] + inline)


def _all_commands():
    found = []
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            found += [(doc, n, line) for n, line in commands(f.read())]
    return found


ALL = _all_commands()


# ---- checking one command -------------------------------------------------------------------------


def check(line):
    """The problems of one command line (an empty list: it runs as written)."""
    try:
        argv = shlex.split(line, comments=True)
    except ValueError as err:
        return [f"does not parse as a shell line: {err}"]
    while argv and ENV.fullmatch(argv[0]):
        argv.pop(0)
    if not argv:
        return ["no command after the environment"]
    if argv[0].startswith("tinybert-tf"):
        module = console_scripts().get(argv[0])
        if module is None:
            return [f"setup.py has no console script {argv[0]}"]
        return check_launcher(argv[1:]) if module == LAUNCHER else check_flags(("-m", module),
                                                                               argv[1:])
    if argv[0] == "make":
        missing = [t for t in argv[1:] if not t.startswith("-") and "=" not in t
                   and t not in make_targets()]
        return [f"the Makefile has no target {t!r}" for t in missing]
    if argv[0] not in PYTHONS or len(argv) < 2:
        return [f"not a command this test knows: {argv[0]}"]
    if argv[1] == "-m":
        if len(argv) < 3:
            return ["python -m without a module"]
        if argv[2] == LAUNCHER:
            return check_launcher(argv[3:])
        if importlib.util.find_spec(argv[2]) is None:
            return [f"no module {argv[2]}"]
        return check_flags(("-m", argv[2]), argv[3:])
    if not os.path.isfile(os.path.join(ROOT, argv[1])):
        return [f"no script {argv[1]}"]
    return check_flags((argv[1],), argv[2:])


@functools.cache
def make_targets():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        return frozenset(re.findall(r"^([A-Za-z_][\w.-]*)\s*:(?!=)", f.read(), re.M))


@functools.cache
def console_scripts():
    """setup.py's console scripts -> the module each runs."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        return dict(re.findall(r"[\"']([\w-]+)=([\w.]+):\w+[\"']", f.read()))


@functools.cache
def entry_flags(entry):
    """(flags, boolean flags) an entry point lists in its --helpfull / --help, or an error string."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    text = ""
    for ask in ("--helpfull", "--help"):
        try:
            proc = subprocess.run([sys.executable, *entry, ask], cwd=ROOT, env=env, text=True,
                                  capture_output=True, timeout=HELP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(entry)} {ask}` took over {HELP_TIMEOUT} s"
        text = proc.stdout + proc.stderr
        absl = set(re.findall(r"^\s+--(?:\[no\])?([\w.-]+):", text, re.M))
        if absl:  # absl prints every flag of every module with --helpfull (and exits 1)
            return absl, set(re.findall(r"^\s+--\[no\]([\w.-]+):", text, re.M))
        if proc.returncode == 0 and "usage:" in text:  # argparse
            return set(re.findall(r"(?:^|[\s\[])--([\w-]+)", text, re.M)), set()
    return f"`{' '.join(entry)} --help` printed no flags: {text[-800:]}"


def check_flags(entry, args):
    listed = entry_flags(entry)
    if isinstance(listed, str):
        return [listed]
    names, booleans = listed
    problems = []
    for arg in args:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0]
        if name not in names and not (name.startswith("no") and name[2:] in booleans):
            problems.append(f"--{name} is not a flag of {' '.join(entry)}")
    return problems


def known_values():
    """Config key -> the values the package accepts there (checked when the key is set)."""
    from tinybert_tf import main
    from tinybert_tf.data.task_spec import TASKS
    from tinybert_tf.distill.recipes import RECIPES
    from tinybert_tf.launch.modes import MODES
    from tinybert_tf.launch.strategy import JAX_STRATEGIES, PRECISIONS, STRATEGIES

    recipes = set(RECIPES)
    return {"mode": set(MODES), "strategy": {"auto", *STRATEGIES, *JAX_STRATEGIES},
            "backend": set(main.BACKENDS), "precision": {"auto", *PRECISIONS},
            "recipe": recipes, "intermediate.recipe": recipes, "task": {*TASKS, "file"},
            "stages": {"intermediate", "prediction", "both"}}


def _get(config, dotted):
    for part in dotted.split("."):
        if part not in config:
            return None
        config = config[part]
    return config


def check_launcher(args):
    """What `python -m tinybert_tf.main ARGS` would parse (in the working directory)."""
    from absl import flags

    from tinybert_tf import main

    argv = [LAUNCHER, *args]
    fv = flags.FlagValues()
    config, workdir, _ = main.define_flags(fv, argv)
    try:
        fv(argv)
        c = config.value
        c.mode  # noqa: B018  (ml_collections defers a config file that failed to load)
    except Exception as err:  # what absl / ml_collections raise for a bad line
        text = " ".join(str(err).split())[-400:]
        return [f"the launcher refuses it: {type(err).__name__}: {text}"]
    problems = [] if workdir.value else ["no --workdir"]
    for key, allowed in known_values().items():
        value = _get(c, key)
        if value is not None and value != "" and value not in allowed:
            problems.append(f"--config.{key}={value}: not one of {sorted(allowed)}")
    return problems


# ---- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc, number, line", ALL, ids=[f"{d}:{n}" for d, n, _ in ALL])
def test_command_runs_as_written(doc, number, line, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # configs and tools resolve without the checkout's folders
    assert check(line) == [], f"{doc}:{number}: {line}"


def test_the_documents_have_commands_of_each_kind():
    """The extraction finds what the README shows (an extractor that finds nothing passes all)."""
    readme = [line for doc, _, line in ALL if doc == "README.md"]
    assert any(line.startswith("make demo") for line in readme)
    assert any(line.startswith("make test") for line in readme)
    assert sum(f"-m {LAUNCHER}" in line for line in readme) >= 6
    assert any("-m tinybert_tf.tools.export" in line for line in readme)
    assert any("examples/stdlib/task_proof.py" in line for line in readme)
    continued = [line for line in readme if "--config.data.train=" in line]
    assert continued, "a command continued with a backslash lost its second line"
    install = [line for doc, _, line in ALL if doc == "docs/distributed.md"]
    assert any(line.startswith("tinybert-tf --config=task_distill:tiny") for line in install)
    assert any(line.startswith("tinybert-tf-prepare-corpus ") for line in install)


LAUNCH = "python -m tinybert_tf.main --config={} --workdir=w "


@pytest.mark.parametrize("line, says", [
    ("make tset", "no target 'tset'"),
    (LAUNCH.format("general_distill") + "--config.data.trian=c.txt", "trian"),
    (LAUNCH.format("task_distill") + "--config.finetune.members=three", "refuses"),
    (LAUNCH.format("task_distill") + "--config.mode=distil", "config.mode=distil"),
    (LAUNCH.format("task_distill") + "--config.intermediate.recipe=tinybert", "recipe"),
    (LAUNCH.format("general_distill:huge"), "refuses"),
    (LAUNCH.format("general.py"), "no packaged config named general"),
    ("python -m tinybert_tf.main --config=general_distill", "workdir"),
    ("KERAS_BACKEND=jax " + LAUNCH.format("general_distill") + "--config.strategy=tpus",
     "strategy"),
    ("tinybert-tf --config=task_distil:tiny --workdir=w", "no packaged config named task_distil"),
    ("tinybert-tf --config=configs/task_distill.py --workdir=w --config.mode=distil", "distil"),
    ("tinybert-tf-export --student=s --export_dri=serving", "--export_dri"),
    ("tinybert-tf-exporter --student=s", "no console script tinybert-tf-exporter"),
    ("python -m tinybert_tf.tools.export --student=s --export_dri=serving", "--export_dri"),
    ("python tools/export.py --student=s", "no script"),
    ("python -m examples.stdlib.demos", "no module"),
    ("python examples/stdlib/task_proof.py --norepor", "--norepor"),
    ("python tools/accelerator_check.py --batchsize=512", "--batchsize"),
])
def test_checker_finds_mistakes(line, says, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    problems = check(line)
    assert problems and any(says in p for p in problems), problems


def test_shell_lines_join_continuations_and_skip_other_blocks():
    text = ("```python\npython -m not.checked\n```\n"
            "```bash\n# a comment\nmake demo   # trailing comment\n"
            "python -m tinybert_tf.main --config=general_distill \\\n"
            "    --workdir=w\n```\nrun `make test` or `python -m tinybert_tf.main --config=X [...]`\n"
            "with `tinybert-tf` installed: `tinybert-tf-export --helpfull`\n")
    assert commands(text) == [
        (6, "make demo   # trailing comment"),
        (7, "python -m tinybert_tf.main --config=general_distill  --workdir=w"),
        (10, "make test"), (11, "tinybert-tf-export --helpfull")]
