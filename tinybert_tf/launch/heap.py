"""The garbage collector in a process that runs the package (the launcher, the examples, tools).

TensorFlow, Keras and keras-hub leave about half a million Python objects behind their imports,
all of them alive until the process exits, and tracing a step builds tens of thousands more.
CPython's collector walks every object it tracks on each full pass, and it starts a pass once
10 passes of the middle generation have run and the objects waiting have grown by a quarter: on
a tiny run that spent 12 % of its CPU time (the JAX backend, whose tracing allocates more: a
third), walking the imports over and over (bench/RESULTS.md: the collector's share).

`settled_imports()` around a process's heavy imports: the collector is off while they run
(they build no garbage worth a pass), then one full pass and `gc.freeze()` move what they built
out of every later pass, and the first generation is collected every `THRESHOLD0` allocations
net instead of 700. Objects the run builds are collected as before: a model of a finished stage
is still freed.
"""

from __future__ import annotations

import contextlib
import gc

# Net allocations between first-generation passes (CPython's default 700); the middle and
# oldest generations keep their defaults (10, 10).
THRESHOLD0 = 10_000
# What a run imports first, the bulk of the objects frozen.
RUN_MODULES = ("tensorflow", "keras", "keras_hub")


def import_settled(*modules):
    """Import `modules` (names) inside `settled_imports`: a process's start (scripts, tools,
    test workers)."""
    import importlib

    with settled_imports():
        for name in modules:
            importlib.import_module(name)


@contextlib.contextmanager
def settled_imports():
    """Run the block (a process's heavy imports) with the collector off, then freeze what it
    built and raise the first generation's threshold. A collector the process had turned off
    stays off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        gc.freeze()
        first, middle, oldest = gc.get_threshold()
        gc.set_threshold(max(THRESHOLD0, first), middle, oldest)
        if was_enabled:
            gc.enable()
