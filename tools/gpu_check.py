#!/usr/bin/env python
"""The general-distillation step on one GPU, on the Keras JAX backend, without TensorFlow.

Measures, on the machine it runs on (meant for an NVIDIA GPU machine: CUDA, JAX, PyTorch,
transformers, no TensorFlow; keras and keras-hub carried as wheels):

  * our step: `tinybert_tf.Distiller`, recipe `tinybert_general`, AdamW, KERAS_BACKEND=jax (jit),
    BERT-base teacher (12 layers, 768 hidden, 12 heads, 3072 FFN, vocab 30522; policy bfloat16)
    -> TinyBERT-4 student (4 layers, 312 hidden, 12 heads, 1200 FFN; policy mixed_bfloat16),
    keras_hub.models.BertBackbone configs with random weights, seq 128, --batch_size (256);
    sequences/s is the median over --steps timed steps after --warmup, timed inside one `fit` by
    a callback (the wall time between consecutive train-batch ends, synchronised on the loss);
  * its FLOP/s (tools/bench/flops.py `step_flops`) against the bf16 matmul rate of the same run
    (a jitted `jnp.matmul` of two --matmul_size squares, 10 back-to-back products, median);
  * the PyTorch peer on the same device: the benchmark's HF loop (tools/bench/torch_peer.py: a
    transformers `BertModel` teacher under no_grad, student forward/backward with the same
    emb + attention-score + hidden loss terms through one shared projection, AdamW), in a child
    process run first (so JAX's preallocated GPU memory is not held while it runs), variants
    bf16_autocast (teacher and student under bfloat16 autocast) and bf16_teacher (teacher weights
    in bfloat16, student under autocast: the precision of ours); `ratio` is ours / the faster.

TensorFlow is never imported: before anything else the script hides tensorflow* from the import
system (as if not installed: keras-hub's optional TensorFlow / tensorflow-text imports take their
fallbacks), and it uses only TensorFlow-free modules of tinybert_tf and tools/bench.

    python tools/gpu_check.py --json=gpu.json           # the device run (BERT-base -> TinyBERT-4)
    python tools/gpu_check.py --tiny --json=/tmp/g.json  # 2-layer models, seq 16, batch 4: CPU, < 60 s

On a GPU machine without internet: carry keras/keras-hub wheels (.whl/, git-ignored) as the device README says,
`pip install --target /tmp/site .whl/*.whl`, PYTHONPATH=/tmp/site, then the first command above
(the exact line: docs/distributed.md, "The GPU check").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)

PEER_VARIANTS = ("bf16_autocast", "bf16_teacher")
BERT_BASE = dict(num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=3072)
TINYBERT_4 = dict(num_layers=4, hidden_dim=312, num_heads=12, intermediate_dim=1200)
# --tiny: 2-layer models; the student narrower than the teacher so the projection runs as in the
# real shapes.
TINY_TEACHER = dict(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64)
TINY_STUDENT = dict(num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32)


def _is_tensorflow(fullname):
    return fullname.split(".")[0].startswith("tensorflow")  # tensorflow, tensorflow_text, ...


class _HideTensorFlow:
    """A meta-path finder that finds nothing named tensorflow* and forwards the rest to the one it
    wraps: `import tensorflow` then fails and `importlib.util.find_spec` returns None, as where
    TensorFlow is not installed (a finder raising ImportError would break callers of find_spec
    such as torch._dynamo's trace rules)."""

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, fullname, path=None, target=None):
        if _is_tensorflow(fullname):
            return None
        find = getattr(self._finder, "find_spec", None)
        return find(fullname, path, target) if find is not None else None

    def invalidate_caches(self):
        invalidate = getattr(self._finder, "invalidate_caches", None)
        if invalidate is not None:
            invalidate()

    def __getattr__(self, name):  # find_distributions, ...
        return getattr(self._finder, name)


def block_tensorflow():
    """Hide TensorFlow from this process (and its packages' optional imports of it)."""
    loaded = sorted(m for m in sys.modules if _is_tensorflow(m))
    if loaded:
        raise SystemExit(f"TensorFlow was imported before tools/gpu_check.py ran: {loaded[:3]}")
    sys.meta_path[:] = [f if isinstance(f, _HideTensorFlow) else _HideTensorFlow(f)
                        for f in sys.meta_path]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=None, help="Sequences per step (256; --tiny 4).")
    p.add_argument("--seq", type=int, default=None, help="Sequence length (128; --tiny 16).")
    p.add_argument("--vocab", type=int, default=None, help="Vocabulary (30522; --tiny 1000).")
    p.add_argument("--steps", type=int, default=None, help="Timed steps (20; --tiny 3).")
    p.add_argument("--warmup", type=int, default=None,
                   help="Untimed first steps, compilation included (5; --tiny 2); at least 1.")
    p.add_argument("--steps_per_execution", type=int, default=1,
                   help="Keras steps_per_execution of our step (steps per jitted call).")
    p.add_argument("--matmul_size", type=int, default=None, help="Square bf16 matmul (8192; --tiny 256).")
    p.add_argument("--peer_variants", default=",".join(PEER_VARIANTS),
                   help="PyTorch peer variants, comma-separated: bf16_autocast, bf16_teacher.")
    p.add_argument("--no_peer", action="store_true", help="Skip the PyTorch peer.")
    p.add_argument("--tiny", action="store_true",
                   help="2-layer hidden-32 teacher / hidden-16 student, seq 16, batch 4, few steps.")
    p.add_argument("--json", default=None, help="Write every figure to this JSON file.")
    p.add_argument("--torch_worker", default=None, help=argparse.SUPPRESS)  # child: result path
    args = p.parse_args(argv)
    tiny = args.tiny
    defaults = dict(batch_size=4 if tiny else 256, seq=16 if tiny else 128,
                    vocab=1000 if tiny else 30522, steps=3 if tiny else 20,
                    warmup=2 if tiny else 5, matmul_size=256 if tiny else 8192)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.warmup = max(1, args.warmup)  # the first interval holds the compilation
    args.steps = max(1, args.steps)
    args.peer_variants = [v for v in args.peer_variants.split(",") if v]
    for v in args.peer_variants:
        if v not in PEER_VARIANTS:
            p.error(f"unknown peer variant {v!r}; choose from {', '.join(PEER_VARIANTS)}")
    return args


def shapes(args):
    """The config object tools/bench's helpers read (batch, seq, vocab, teacher, student)."""
    return SimpleNamespace(
        batch=args.batch_size, seq=args.seq, vocab=args.vocab,
        teacher=dict(TINY_TEACHER if args.tiny else BERT_BASE),
        student=dict(TINY_STUDENT if args.tiny else TINYBERT_4),
    )


def run_peer(args):
    """The PyTorch peer in a child process (this script with --torch_worker); its figures, or
    `skipped` with the reason."""
    if args.no_peer or not args.peer_variants:
        return {"skipped": "--no_peer"}
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"not importable: {', '.join(missing)}"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peer.json")
        argv = [a for a in sys.argv[1:] if not a.startswith("--json")]
        env = dict(os.environ, USE_TF="0", USE_TORCH="1", TRANSFORMERS_VERBOSITY="error")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv,
                               f"--torch_worker={out}"], env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout)[-2000:]
            print(f"PyTorch peer failed (rc {proc.returncode}):\n{tail}", file=sys.stderr)
            return {"skipped": f"peer failed (rc {proc.returncode}): {tail[-500:]}"}
        with open(out) as f:
            return json.load(f)


# ---- ours (KERAS_BACKEND=jax) ------------------------------------------------------------------

def time_ours(args, cfg):
    import keras
    from bench.common import build_backbones, median
    from bench.keras_step import random_batch, repeat_dataset

    from tinybert_tf import Distiller

    class Timer(keras.callbacks.Callback):
        """Wall time of each train-batch end, synchronised on the loss (JAX is asynchronous)."""

        def __init__(self):
            super().__init__()
            self.ends, self.losses = [], []

        def on_train_begin(self, logs=None):
            self.ends = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))
            self.ends.append(time.perf_counter())

    keras.backend.clear_session()
    teacher, student = build_backbones(cfg.vocab, cfg.seq, cfg.teacher, cfg.student, "bf16")
    distiller = Distiller(teacher, student, "tinybert_general")
    spe = max(1, args.steps_per_execution)
    distiller.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-4), jit_compile=True,
                      steps_per_execution=spe)
    calls = args.warmup + -(-args.steps // spe)
    timer = Timer()
    distiller.fit(repeat_dataset(random_batch(cfg)), epochs=1, steps_per_epoch=calls * spe,
                  verbose=0, callbacks=[timer], shuffle=False)
    times = [(b - a) / spe for a, b in zip(timer.ends, timer.ends[1:])][args.warmup:]
    step_s = median(times)
    result = {"step_ms": step_s * 1e3, "step_ms_min": min(times) * 1e3,
              "seq_per_s": cfg.batch / step_s, "timed_steps": len(times) * spe,
              "steps_per_execution": spe, "loss": timer.losses[-1],
              "teacher_dtype": teacher.dtype_policy.name, "student_dtype": student.dtype_policy.name}
    del distiller, teacher, student
    keras.backend.clear_session()
    return result


def matmul_rate(n, warmup=3, repeats=5, inner=10):
    """FLOP/s of a jitted bf16 `jnp.matmul` (n x n x n), median over `repeats` timings of `inner`
    back-to-back products (one synchronisation each)."""
    import jax
    import jax.numpy as jnp
    from bench.common import median

    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    f = jax.jit(jnp.matmul)
    for _ in range(warmup):
        f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready([f(a, b) for _ in range(inner)])
        times.append((time.perf_counter() - start) / inner)
    return {"size": n, "bf16_flops_per_s": 2 * n**3 / median(times), "ms": median(times) * 1e3}


def versions(peer):
    import jax
    import jaxlib
    import keras
    import keras_hub

    out = {"python": platform.python_version(), "jax": jax.__version__,
           "jaxlib": jaxlib.__version__, "keras": keras.__version__,
           "keras_hub": keras_hub.__version__}
    for name in ("torch", "transformers"):
        if name in peer:
            out[name] = peer[name]
        else:
            try:
                from importlib.metadata import version

                out[name] = version(name)
            except Exception:  # not installed
                out[name] = None
    return out


def main(argv=None):
    args = parse_args(argv)
    block_tensorflow()
    for path in (ROOT, TOOLS):  # tinybert_tf (not installed on the device) and tools/bench
        if path not in sys.path:
            sys.path.insert(0, path)
    if args.torch_worker:
        from bench.torch_gpu import torch_worker

        result = torch_worker(args, shapes(args))
        with open(args.torch_worker, "w") as f:
            json.dump(result, f)
        return 0

    os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "jax":
        raise SystemExit("keras was imported with another backend before tools/gpu_check.py ran.")
    cfg = shapes(args)
    peer = run_peer(args)  # first: the child has the GPU to itself

    import jax
    from bench.flops import step_flops
    from bench.report import clean, print_table

    dev = jax.devices()[0]
    if dev.platform == "cpu" and not args.tiny:
        print("warning: JAX sees no GPU; these are CPU figures", file=sys.stderr)
    ours = time_ours(args, cfg)
    flops = step_flops(cfg)
    matmul = matmul_rate(args.matmul_size, repeats=3 if args.tiny else 5)
    ours["flops_per_s"] = flops["total"] * ours["seq_per_s"] / cfg.batch
    fraction = ours["flops_per_s"] / matmul["bf16_flops_per_s"]

    peer_variants = peer.get("variants", {})
    ratios = {k: ours["seq_per_s"] / v["seq_per_s"] for k, v in peer_variants.items()}
    for v in peer_variants.values():
        v["flops_per_s"] = flops["total"] * v["seq_per_s"] / cfg.batch
    fastest = max(peer_variants, key=lambda k: peer_variants[k]["seq_per_s"], default=None)
    results = {
        "device": {"jax": dev.device_kind, "platform": dev.platform,
                   "torch": peer.get("device_name"), "torch_device": peer.get("device")},
        "versions": versions(peer),
        "shapes": {"batch": cfg.batch, "seq": cfg.seq, "vocab": cfg.vocab, "teacher": cfg.teacher,
                   "student": cfg.student, "recipe": "tinybert_general", "tiny": args.tiny},
        "ours": ours, "flops_per_step": flops, "matmul": matmul, "fraction": fraction,
        "peer": {"variants": peer_variants, "skipped": peer.get("skipped"), "fastest": fastest},
        "ratio": ratios.get(fastest) if fastest else None, "ratio_vs": ratios,
        "tensorflow_loaded": any(_is_tensorflow(m) for m in sys.modules),
    }

    v = results["versions"]
    print_table(f"device: {dev.device_kind} ({dev.platform}); jax {v['jax']}, keras {v['keras']}, "
                f"keras_hub {v['keras_hub']}, torch {v['torch']}, transformers {v['transformers']}",
                ["what", "value"],
                [["batch x seq", f"{cfg.batch} x {cfg.seq}"],
                 ["step TFLOP (teacher fwd + 3 x student)", flops["total"] / 1e12]])
    rows = [["ours (Distiller, jax, bf16)", ours["seq_per_s"], ours["step_ms"],
             ours["flops_per_s"] / 1e12, fraction, None]]
    for k, r in peer_variants.items():
        rows.append([f"torch peer {k}", r["seq_per_s"], r["step_ms"], r["flops_per_s"] / 1e12,
                     r["flops_per_s"] / matmul["bf16_flops_per_s"], ratios[k]])
    print_table(f"general-distillation step; bf16 matmul {matmul['size']}^3: "
                f"{matmul['bf16_flops_per_s'] / 1e12:.4g} TFLOP/s",
                ["step", "seq/s", "ms/step", "TFLOP/s", "of matmul", "ours/this"], rows)
    if peer.get("skipped"):
        print(f"PyTorch peer skipped: {peer['skipped']}")
    else:
        print(f"ratio (ours / fastest peer, {fastest}): {results['ratio']:.3g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(clean(results), f, indent=2, sort_keys=True)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
