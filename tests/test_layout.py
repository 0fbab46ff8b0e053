"""The package's shape: no import circle between its modules (lazy imports inside functions
included), every module at most 400 lines (tools and examples too), the subpackage dependency order
of docs/ARCHITECTURE.md (the method never imports the launcher, the exporter or the examples; the
order itself runs one way), and each user-facing error message raised from one module."""

import ast
import collections
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tinybert_tf")
MAX_LINES = 400
# Who may import whom, by the first level under tinybert_tf ("" = a top-level module). Data flows
# launch -> (data, distill) -> nothing; export and evaluate (the library) read what training wrote,
# and the launcher's modes call them; the tools (prepare_corpus, augment, export) sit on top.
ALLOWED = {
    "errors": set(),
    "cli": {"errors"},
    "data": {"data", "errors"},
    "distill": {"distill", "errors"},  # errors: a damaged preset is one line (dtypes)
    "export": {"export", "data", "distill", "errors"},  # distill: heads registered before loading
    "evaluate": {"evaluate", "data", "distill", "errors"},
    "launch": {"launch", "data", "distill", "errors", "cli", "evaluate", "export"},
    "main": {"launch", "cli", "errors"},
    "api": {"api", "launch", "cli", "errors"},  # the Python API: beside main, over launch
    "configs": {"launch"},  # config files build on launch.config_lib; nothing imports them
    "tools": {"launch", "export", "data", "distill", "cli", "errors"},  # the top, beside main
    "__init__": {"distill", "api", "errors"},
}


def _modules():
    out = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def _imports(path, modules):
    """tinybert_tf modules imported anywhere in the file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "tinybert_tf" and modules[name] != path:
                found.add(name)
    return found


def _graph():
    modules = _modules()
    return {m: _imports(p, modules) for m, p in modules.items()}


def _cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _part(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_allowed_order_runs_one_way():
    """No two parts may import each other, directly or around a circle: ALLOWED is an order."""
    order = {part: allowed - {part} for part, allowed in ALLOWED.items()}
    cycle = _cycle(order)
    assert cycle is None, "ALLOWED lets parts import each other: " + " -> ".join(cycle)


def test_subpackages_import_in_one_direction():
    bad = [f"{m} imports {d}" for m, deps in _graph().items() for d in deps
           if _part(d) not in ALLOWED[_part(m)]]
    assert not bad, "imports against docs/ARCHITECTURE.md's order:\n" + "\n".join(sorted(bad))


def test_modules_are_small():
    """The package, the tools (the benchmark included) and the examples."""
    paths = [os.path.join(d, f) for top in ("tinybert_tf", "tools", "examples")
             for d, _, files in os.walk(os.path.join(ROOT, top)) for f in files if f.endswith(".py")]
    long = {os.path.relpath(p, ROOT): n for p in paths
            if (n := sum(1 for _ in open(p, encoding="utf-8"))) > MAX_LINES}
    assert len(paths) > 50 and not long, f"modules over {MAX_LINES} lines: {long}"


# ---- one place per user-facing message -------------------------------------------------------------

PREFIX_WORDS = 4  # a message is named by its first words (fields of an f-string not counted)


def _name(node):
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)


def _text(node):
    """The text of a string literal, an f-string ("{}" per field) or a `+` of them and other
    values ("{}" each); None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is not None or right is not None:
            return (left or "{}") + (right or "{}")
    return None


def _prefix(text):
    """The message's words up to its PREFIX_WORDS-th word with a letter or digit outside "{}"."""
    words, counted = [], 0
    for word in text.split():
        words.append(word)
        counted += any(ch.isalnum() for ch in word.replace("{}", ""))
        if counted == PREFIX_WORDS:
            break
    return " ".join(words)


def _user_errors(trees):
    """Names of the classes in `trees` derived (by name, transitively) from UserError."""
    bases = {node.name: {_name(b) for b in node.bases} for tree in trees.values()
             for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    family = {"UserError"}
    while True:
        more = {name for name, parents in bases.items() if parents & family} - family
        if not more:
            return family
        family |= more


def duplicate_messages(sources):
    """{message prefix: [modules]} of the user errors (UserError and its subclasses, built
    anywhere: raised, returned or assigned) whose message starts alike in several modules.
    sources: {module name: source text}."""
    trees = {module: ast.parse(text) for module, text in sources.items()}
    family = _user_errors(trees)
    seen = collections.defaultdict(set)
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in family and node.args:
                text = _text(node.args[0])
                if text:
                    seen[_prefix(text)].add(module)
    return {prefix: sorted(found) for prefix, found in seen.items() if len(found) > 1}


def test_each_user_error_message_is_raised_from_one_module():
    """A check and its message live in one place: the same message raised from two modules is
    a check written twice (call the one function that raises it instead)."""
    sources = {m: open(p, encoding="utf-8").read() for m, p in _modules().items()}
    dup = duplicate_messages(sources)
    assert not dup, "user-error messages raised from several modules:\n" + "\n".join(
        f"{prefix!r}: {', '.join(modules)}" for prefix, modules in sorted(dup.items()))


def test_duplicate_messages_finds_a_planted_copy():
    errors = "class UserError(ValueError): pass\nclass LaunchError(UserError): pass\n"
    a = 'def f(c):\n    raise LaunchError(f"stages must be both; got {c.stages!r}.")\n'
    b = ('from tinybert_tf import errors\n'
         'def g(x):\n    return errors.LaunchError("stages must be both; got " + repr(x))\n')
    other = 'def h(c):\n    raise LaunchError(f"stages {c} must be listed")\n'
    plain = 'def k():\n    raise ValueError("stages must be both; got it")\n'
    found = duplicate_messages({"errors": errors, "a": a, "b": b, "other": other, "plain": plain})
    assert found == {"stages must be both;": ["a", "b"]}
