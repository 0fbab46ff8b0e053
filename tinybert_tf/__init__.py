"""tinybert_tf: distil keras-hub BERT-family teachers into small TinyBERT-style students.

The pipeline from Python, one function per mode (`tinybert_tf.api`, docs/python_api.md):
`finetune`, `distill_task`, `distill_general`, `compare`, `export_model`; each returns a small
record (`Run`, `Comparison`, `Export`) and raises `UserError` for a mistake to fix.

The names below load on first use, so `import tinybert_tf` (and `python -m tinybert_tf.main`,
which imports this package first) imports neither Keras nor TensorFlow: the launcher sets
TensorFlow's log level and oneDNN before TensorFlow is imported.
"""

import importlib

# name -> (module, attribute or None for the module itself)
_API = ("finetune", "distill_task", "distill_general", "compare", "export_model", "Run", "Score",
        "Comparison", "Export")
_LAZY = {
    **{name: ("tinybert_tf.api", name) for name in _API},
    "UserError": ("tinybert_tf.errors", "UserError"),
    "Interrupted": ("tinybert_tf.errors", "Interrupted"),
    "distill": ("tinybert_tf.distill", None),
    "Distiller": ("tinybert_tf.distill.distiller", "Distiller"),
    "features": ("tinybert_tf.distill.features", None),
    "heads": ("tinybert_tf.distill.heads", None),
    "losses": ("tinybert_tf.distill.losses", None),
    "recipes": ("tinybert_tf.distill.recipes", None),
    "students": ("tinybert_tf.distill.students", None),
}

__all__ = [*_API, "UserError", "Interrupted", "Distiller", "distill", "features", "heads",
           "losses", "recipes", "students"]
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tinybert_tf' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    value = getattr(value, attribute) if attribute else value
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_LAZY})
