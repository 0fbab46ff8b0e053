"""Command-line tools beside the launcher, each `python -m tinybert_tf.tools.<name>` and a console
script: prepare_corpus (`tinybert-tf-prepare-corpus`), augment (`tinybert-tf-augment`), export
(`tinybert-tf-export`)."""
