"""tinybert_tf's benchmark as a package; `tools/benchmark.py` is its one entry point (also of the
worker processes it starts). Modules by job:

  options         flags and `Config` (the shapes every job runs at)
  main            the entry point: a --worker job, or the benchmarks of --bench, then --json
  spawn / worker  a job in a fresh process (`benchmark.py --worker=NAME`) and its worker side
  common          precision variants, backbones, medians, teacher-feature errors
  report          tables, JSON-safe figures, machine info, the --json file
  flops           FLOP counts and measured matmul FLOP/s
  keras_step      the Keras Distiller step timed per variant; the cached-logits step
  step            --bench=step (ours vs the PyTorch peer)
  truncated       the step with the teacher run only as deep as the recipe reads (in --bench=step)
  torch_peer      the PyTorch / transformers peer of the step (worker process)
  input_pipeline  --bench=input
  serve           --bench=serve
  memory          --bench=memory
  jax_step        --bench=jax
  checkpoint      --bench=checkpoint (a Distiller checkpoint with and without its teacher)
  task            --bench=task (ours; the flags' settings)
  task_peer       the PyTorch peer of --bench=task (worker process)
"""
