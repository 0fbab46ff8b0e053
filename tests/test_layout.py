"""The package's shape: no import circle between its modules (lazy imports inside functions
included), every module at most 400 lines (tools and examples too), and the subpackage dependency order of
docs/ARCHITECTURE.md (the method never imports the launcher, the exporter or the examples)."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tinybert_tf")
MAX_LINES = 400
# Who may import whom, by the first level under tinybert_tf ("" = a top-level module).
# Data flows launch -> (data, distill) -> nothing; export and evaluate read what training wrote.
ALLOWED = {
    "errors": set(),
    "cli": {"errors"},
    "data": {"data", "errors"},
    "distill": {"distill"},
    "export": {"export", "data", "distill", "errors"},  # distill: heads registered before loading
    "evaluate": {"evaluate", "data", "distill", "launch", "errors"},
    "launch": {"launch", "data", "distill", "errors", "cli", "evaluate", "export"},
    "main": {"launch", "cli", "errors"},
    "__init__": {"distill"},
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
