"""The step timing of tools/accelerator_check.py, TensorFlow-free: one general-distillation step
(BERT-base -> TinyBERT-4 by default) on the Keras JAX backend, its FLOP/s against a bf16 matmul
of the same run, and the PyTorch HF peer on the same device (tools/bench/torch_gpu.py, in a child
process run first, so JAX's preallocated device memory is not held while it runs)."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

PEER_VARIANTS = ("bf16_autocast", "bf16_teacher")
BERT_BASE = dict(num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=3072)
TINYBERT_4 = dict(num_layers=4, hidden_dim=312, num_heads=12, intermediate_dim=1200)
# --tiny: 2-layer models; the student narrower than the teacher so the projection runs as in the
# real shapes.
TINY_TEACHER = dict(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64)
TINY_STUDENT = dict(num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32)


def shapes(args):
    """The config object tools/bench's helpers read (batch, seq, vocab, teacher, student)."""
    return SimpleNamespace(
        batch=args.batch_size, seq=args.seq, vocab=args.vocab,
        teacher=dict(TINY_TEACHER if args.tiny else BERT_BASE),
        student=dict(TINY_STUDENT if args.tiny else TINYBERT_4),
    )


def run_peer(args, script):
    """The PyTorch peer in a child process (`script` with --torch_worker); its figures, or
    `skipped` with the reason."""
    if args.no_peer or not args.peer_variants:
        return {"skipped": "--no_peer"}
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"not importable: {', '.join(missing)}"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peer.json")
        argv = [a for a in sys.argv[1:] if not a.startswith(("--json", "--workdir"))]
        env = dict(os.environ, USE_TF="0", USE_TORCH="1", TRANSFORMERS_VERBOSITY="error")
        proc = subprocess.run([sys.executable, script, *argv, f"--torch_worker={out}"], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout)[-2000:]
            print(f"PyTorch peer failed (rc {proc.returncode}):\n{tail}", file=sys.stderr)
            return {"skipped": f"peer failed (rc {proc.returncode}): {tail[-500:]}"}
        with open(out) as f:
            return json.load(f)


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


def step_timing(args, peer):
    """Our step, its FLOP/s and the bf16 matmul rate on JAX's default device, set against the
    peer's figures (`run_peer`, run before JAX took the device): the report's `step_timing`."""
    from bench.flops import step_flops

    cfg = shapes(args)
    ours = time_ours(args, cfg)
    flops = step_flops(cfg)
    matmul = matmul_rate(args.matmul_size, repeats=3 if args.tiny else 5)
    ours["flops_per_s"] = flops["total"] * ours["seq_per_s"] / cfg.batch
    peer_variants = peer.get("variants", {})
    ratios = {k: ours["seq_per_s"] / v["seq_per_s"] for k, v in peer_variants.items()}
    for v in peer_variants.values():
        v["flops_per_s"] = flops["total"] * v["seq_per_s"] / cfg.batch
    fastest = max(peer_variants, key=lambda k: peer_variants[k]["seq_per_s"], default=None)
    return {
        "status": "ok",
        "shapes": {"batch": cfg.batch, "seq": cfg.seq, "vocab": cfg.vocab, "teacher": cfg.teacher,
                   "student": cfg.student, "recipe": "tinybert_general", "tiny": args.tiny},
        "ours": ours, "flops_per_step": flops, "matmul": matmul,
        "fraction": ours["flops_per_s"] / matmul["bf16_flops_per_s"],
        "peer": {"variants": peer_variants, "skipped": peer.get("skipped"), "fastest": fastest,
                 "device": peer.get("device"), "device_name": peer.get("device_name")},
        "ratio": ratios.get(fastest) if fastest else None, "ratio_vs": ratios,
    }


def versions(peer, tensorflow):
    """Versions of what ran: JAX, Keras, keras-hub (imported here), torch / transformers (the
    peer's, else installed), `tensorflow` (the modes' TensorFlow version, or None)."""
    from importlib.metadata import PackageNotFoundError, version

    import jax
    import jaxlib
    import keras
    import keras_hub

    out = {"python": platform.python_version(), "jax": jax.__version__,
           "jaxlib": jaxlib.__version__, "keras": keras.__version__,
           "keras_hub": keras_hub.__version__, "tensorflow": tensorflow}
    for name in ("torch", "transformers"):
        try:
            out[name] = peer.get(name) or version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
