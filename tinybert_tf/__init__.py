"""tinybert_tf: distil keras-hub BERT-family teachers into small TinyBERT-style students."""

from tinybert_tf import features, losses, recipes, students
from tinybert_tf.distiller import Distiller

__all__ = ["Distiller", "features", "losses", "recipes", "students"]
__version__ = "0.1.0"
