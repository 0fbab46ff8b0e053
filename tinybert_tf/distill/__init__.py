"""The method: feature views of keras-hub encoders, loss terms, recipes, the Distiller and its
per-backend steps, student architectures, task heads and the optimisers/schedules of the papers.

Nothing here reads configs, files or flags; `tinybert_tf.launch` builds these objects.
"""

import importlib


def __getattr__(name):
    """Submodules load on first use (`tinybert_tf.distill.students`), as in the package root."""
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = module
    return module
