"""The method: feature views of keras-hub encoders, loss terms, recipes, the Distiller and its
per-backend steps, student architectures, task heads and the optimisers/schedules of the papers.

Nothing here reads configs, files or flags; `tinybert_tf.launch` builds these objects.
"""
