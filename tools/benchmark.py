#!/usr/bin/env python
"""Benchmarks of tinybert_tf on this machine: distillation step, input pipeline, serving, memory.

    python tools/benchmark.py             # all benchmarks, BERT-base teacher, batch 8 x 128
    python tools/benchmark.py --bench=step --json=bench.json
    python tools/benchmark.py --tiny      # tiny shapes (what tests/test_tools_benchmark.py runs)

Benchmarks (`--bench`, comma-separated; all by default):
  step    The TinyBERT general-distillation step (Distiller, recipe `tinybert_general`, AdamW) in
          several precision/compilation variants vs the PyTorch peer (HF transformers `BertModel`,
          same losses, run in a subprocess); achieved FLOP/s vs measured matmul FLOP/s; and a
          task-prediction step with cached teacher logits vs running the teacher; and MiniLMv2
          with the teacher run to its last layer vs to 2/3 of its depth (truncated teacher).
  input   tf.data pipeline (keras-hub BertTokenizer, packing to --seq, batching) examples/s vs the
          fastest step's sequences/s.
  serve   SavedModel latency at batch 1 and --serve_batch for the teacher vs the student.
  memory  Peak RSS of a fresh process running the step, per framework and precision (Linux
          VmHWM; ru_maxrss is recorded too but counts the parent's pages at fork).
  jax     The same Distiller step on the Keras JAX backend (subprocess with KERAS_BACKEND=jax).
  checkpoint  One Distiller checkpoint: size and save time with the frozen teacher inside (a
          plain tf.train.Checkpoint of every variable) vs the package's (teacher left out).

Every benchmark uses the same thread count (--threads: TF intra-op threads, torch.set_num_threads,
XLA's CPU thread pool; --inter_op_threads for TF inter-op and torch inter-op); the peer runs with
OMP_WAIT_POLICY=PASSIVE (--peer_omp_wait_policy), its faster setting on shared cores. Times are
medians over --repeats after --warmup untimed calls. Models have random weights. Note the machine
load (printed at the start and end): on shared cores single figures move by tens of percent.

The code is the package tools/bench/ (one module per job, listed in its __init__); this script is
its one entry point, also of the worker processes it starts (`--worker=NAME`).
"""

from __future__ import annotations

import os
import sys

import bench.options  # tools/bench: tools/ is on sys.path when this file runs as a script
from absl import app, flags
from bench.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

flags.adopt_module_key_flags(bench.options)  # --help lists the benchmark's flags, as before

if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tinybert_tf.launch import hardware

    ONEDNN = hardware.enable_onednn()  # before TensorFlow is imported; workers inherit it
    app.run(main)
