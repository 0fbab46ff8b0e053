"""Input pipelines (tf.data + keras-hub tokenizers + TFDS) and task metrics.

Import the submodules directly (`from tinybert_tf.data import corpus, masking, tasks, metrics`);
this package file stays light so importing `tinybert_tf.data` does not pull in TFDS.
"""
