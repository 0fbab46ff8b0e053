"""The launcher: configs -> objects (builders), the mode bodies (modes, task_modes), the training
loop (train), strategies and precision (strategy), hardware defaults (hardware), checks before a
run (validate) and eval-based checkpoint selection (selection).

This package file imports nothing, so `tinybert_tf.launch.hardware` can be read before TensorFlow.
"""
