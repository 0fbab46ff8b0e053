"""tinybert_tf: distil keras-hub BERT-family teachers into small TinyBERT-style students."""

from tinybert_tf.distill import features, heads, losses, recipes, students
from tinybert_tf.distill.distiller import Distiller

__all__ = ["Distiller", "features", "heads", "losses", "recipes", "students"]
__version__ = "0.1.0"
