"""tools/accelerator_check.py's parts (the script is the entry point, also of their worker
processes):

  step    the step timing: ours on Keras JAX vs the PyTorch peer (tools/bench/torch_gpu.py)
  modes   the launcher's modes end to end, one process each; what each wrote
  assets  the modes' generated inputs (teacher preset, corpus, task TSVs, transfer set)
"""
