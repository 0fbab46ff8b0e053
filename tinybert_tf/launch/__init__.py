"""The launcher: the dispatcher (modes: the MODES table, checks, claiming the workdir), the mode
bodies (general_mode, task_modes, evaluate_mode, export_mode), configs -> objects (builders), the
checks before a run (validate), the training loop (train, checkpoints, progress), eval-based
checkpoint selection (selection), strategies and precision (strategy, distribution), hardware
defaults (hardware), teachers and ensembles (teachers) and config pieces (config_lib).

This package file imports nothing, so `tinybert_tf.launch.hardware` can be read before TensorFlow.
"""
