#!/usr/bin/env python
"""Every mode of the launcher on the accelerator that is present, plus the step timing.

On the Keras JAX backend of JAX's default devices (GPU, TPU, else CPU), meant for a lent
accelerator machine:

  * the modes, end to end, each a `python -m tinybert_tf.main ... --config.backend=jax` process
    with KERAS_BACKEND=jax, as a user runs them (tools/accel/modes.py has the command lines), on
    generated inputs (tools/accel/assets.py: a random-weight BERT teacher preset with a word
    vocabulary, a corpus, a two-class TSV task, a transfer set): general distillation (teacher ->
    student, a few dozen steps), finetune with finetune.members=2 (an ensemble of two teachers),
    task_distill from that ensemble with the transfer set (stages both, from the general-distilled
    student), evaluate (teachers, ensemble and student on one table). Their tf.data input
    pipelines need TensorFlow (on CPU under JAX): where it is not installed they are skipped;
  * the step timing, TensorFlow-free (tools/accel/step.py): `tinybert_tf.Distiller`, recipe
    `tinybert_general`, AdamW, jit, BERT-base teacher (12 layers, 768 hidden, 12 heads, 3072 FFN,
    vocab 30522; policy bfloat16) -> TinyBERT-4 student (4 layers, 312 hidden, 12 heads, 1200 FFN;
    mixed_bfloat16), random weights, seq 128, --batch_size (256); sequences/s is the median over
    --steps timed steps after --warmup, timed inside one `fit` by a callback (the wall time
    between train-batch ends, synchronised on the loss); its FLOP/s (tools/bench/flops.py) against
    a jitted bf16 matmul of two --matmul_size squares in the same run; the PyTorch peer on the
    same device (tools/bench/torch_gpu.py: a transformers BertModel teacher under no_grad, the
    student with the same emb + attention-score + hidden terms, AdamW) in a child process run
    first, variants bf16_autocast and bf16_teacher; `ratio` is ours / the faster.

This process never imports TensorFlow (it hides tensorflow* from the import system, as if not
installed); the modes run in their own processes. One JSON report (--json): device (platform,
kind, count), versions, each mode's status / wall seconds / command / device lines / outputs,
the step timing. Exit status 1 when a check that ran failed.

    python tools/accelerator_check.py --json=accel.json           # the device run (sized for < 8 min, 1 GPU)
    python tools/accelerator_check.py --tiny --json=/tmp/a.json   # 2-layer models, seq 16: a CPU

On a GPU machine without internet: carry keras/keras-hub wheels (.whl/, git-ignored) as the device
README says, `pip install --target /tmp/site .whl/*.whl`, PYTHONPATH=/tmp/site, then the first
command above (docs/distributed.md has the exact lines).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
SCRIPT = os.path.abspath(__file__)


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
        raise SystemExit(f"TensorFlow was imported before tools/accelerator_check.py ran: "
                         f"{loaded[:3]}")
    sys.meta_path[:] = [f if isinstance(f, _HideTensorFlow) else _HideTensorFlow(f)
                        for f in sys.meta_path]


def tensorflow_version():
    """The installed TensorFlow's version (the modes need it), or None; read before hiding it."""
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec("tensorflow") is None:
        return None
    try:
        return version("tensorflow")
    except PackageNotFoundError:  # tensorflow-cpu, a source build, ...
        return "installed"


def parse_args(argv=None):
    from accel.step import PEER_VARIANTS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=None,
                   help="Step timing: sequences per step (256; --tiny 4).")
    p.add_argument("--seq", type=int, default=None, help="Step timing: sequence length (128; --tiny 16).")
    p.add_argument("--vocab", type=int, default=None, help="Step timing: vocabulary (30522; --tiny 1000).")
    p.add_argument("--steps", type=int, default=None, help="Step timing: timed steps (20; --tiny 3).")
    p.add_argument("--warmup", type=int, default=None,
                   help="Untimed first steps, compilation included (5; --tiny 2); at least 1.")
    p.add_argument("--steps_per_execution", type=int, default=1,
                   help="Keras steps_per_execution of our step (steps per jitted call).")
    p.add_argument("--matmul_size", type=int, default=None, help="Square bf16 matmul (8192; --tiny 256).")
    p.add_argument("--peer_variants", default=",".join(PEER_VARIANTS),
                   help="PyTorch peer variants, comma-separated: bf16_autocast, bf16_teacher.")
    p.add_argument("--no_peer", action="store_true", help="Skip the PyTorch peer.")
    p.add_argument("--no_timing", action="store_true",
                   help="Skip the step timing (and its peer): the modes only.")
    p.add_argument("--tiny", action="store_true",
                   help="Everything small (2-layer hidden-32 models, seq 16, few steps): a CPU.")
    p.add_argument("--workdir", default=None,
                   help="Keep the modes' inputs, workdirs and logs here (default: a temporary "
                        "directory, removed at the end).")
    p.add_argument("--json", default=None, help="Write the report to this JSON file.")
    p.add_argument("--torch_worker", default=None, help=argparse.SUPPRESS)  # child: result path
    p.add_argument("--assets_worker", default=None, help=argparse.SUPPRESS)  # child: assets dir
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


def write_assets(args, workdir):
    """The modes' generated inputs, written by this script's --assets_worker child (keras-hub
    and TensorFlow there, JAX on the CPU: this process keeps both off the device) -> their paths,
    or raises RuntimeError with the child's error."""
    directory = os.path.join(workdir, "assets")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    argv = [sys.executable, SCRIPT, f"--assets_worker={directory}"] + ["--tiny"] * args.tiny
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:]))
    with open(os.path.join(directory, "assets.json")) as f:
        return json.load(f)


def run_modes(args, workdir, tensorflow):
    """{mode: record} (tools/accel/modes.py), and the generated inputs' record."""
    from accel import modes

    if tensorflow is None:
        reason = ("TensorFlow not installed (the modes' tf.data input pipelines need it; "
                  "the step timing runs without it)")
        return modes.skipped(reason), {"status": "skipped", "reason": reason}
    start = time.perf_counter()
    try:
        assets = write_assets(args, workdir)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        failed = {"status": "failed", "error": str(err), "wall_s": time.perf_counter() - start}
        return modes.skipped("the generated inputs failed"), failed
    record = {"status": "ok", "wall_s": time.perf_counter() - start, **assets}
    sizes = modes.SIZES["tiny" if args.tiny else "full"]
    return modes.run_all(sizes, assets, workdir, ROOT), record


@contextlib.contextmanager
def _workdir(path):
    """`path` (new or empty: a mode resumes from what an earlier run left), else a temporary
    directory removed at the end."""
    if path is None:
        with tempfile.TemporaryDirectory(prefix="accelerator_check_") as tmp:
            yield tmp
        return
    if os.path.isdir(path) and os.listdir(path):
        raise SystemExit(f"--workdir={path} is not empty; pass a new or empty directory.")
    os.makedirs(path, exist_ok=True)
    yield os.path.abspath(path)


def device_info():
    import jax

    devices = jax.devices()
    return {"platform": devices[0].platform, "kind": devices[0].device_kind,
            "count": len(devices), "processes": jax.process_count()}


def run_timing(args, peer):
    """tools/accel/step.py's `step_timing`, a skipped record (--no_timing), or a failed record
    with the traceback's tail."""
    from accel import step

    if args.no_timing:
        return {"status": "skipped", "reason": "--no_timing"}
    try:
        return step.step_timing(args, peer)
    except Exception:  # a failed check is reported beside the modes' results, not raised
        return {"status": "failed", "error": "\n".join(traceback.format_exc().splitlines()[-20:])}


def print_report(results):
    from accel import modes
    from bench.report import print_table

    d, v = results["device"], results["versions"]
    print_table(f"device: {d['kind']} x {d['count']} ({d['platform']}); jax {v['jax']}, keras "
                f"{v['keras']}, keras_hub {v['keras_hub']}, tensorflow {v['tensorflow']}, "
                f"torch {v['torch']}", ["mode", "status", "wall s", "result"],
                [[m, r["status"], r.get("wall_s"), modes.summary(m, r)]
                 for m, r in results["modes"].items()])
    timing = results["step_timing"]
    if timing["status"] == "skipped":
        print(f"step timing skipped: {timing['reason']}")
        return
    if timing["status"] != "ok":
        print(f"step timing failed:\n{timing['error']}")
        return
    ours, matmul, peer = timing["ours"], timing["matmul"], timing["peer"]
    rows = [["ours (Distiller, jax, bf16)", ours["seq_per_s"], ours["step_ms"],
             ours["flops_per_s"] / 1e12, timing["fraction"], None]]
    for k, r in peer["variants"].items():
        rows.append([f"torch peer {k}", r["seq_per_s"], r["step_ms"], r["flops_per_s"] / 1e12,
                     r["flops_per_s"] / matmul["bf16_flops_per_s"], timing["ratio_vs"][k]])
    s = timing["shapes"]
    print_table(f"general-distillation step, batch {s['batch']} x seq {s['seq']}, "
                f"{timing['flops_per_step']['total'] / 1e12:.4g} TFLOP per step; bf16 matmul "
                f"{matmul['size']}^3: {matmul['bf16_flops_per_s'] / 1e12:.4g} TFLOP/s",
                ["step", "seq/s", "ms/step", "TFLOP/s", "of matmul", "ours/this"], rows)
    if peer["skipped"]:
        print(f"PyTorch peer skipped: {peer['skipped']}")
    else:
        print(f"ratio (ours / fastest peer, {peer['fastest']}): {timing['ratio']:.3g}")


def main(argv=None):
    for path in (ROOT, TOOLS):  # tinybert_tf (not installed on the device), tools/accel, bench
        if path not in sys.path:
            sys.path.insert(0, path)
    start = time.perf_counter()
    args = parse_args(argv)
    from accel import modes, step

    if args.assets_worker:  # keras-hub writes the preset without TensorFlow, as on the device
        block_tensorflow()
        from accel import assets

        assets.write(args.assets_worker, modes.SIZES["tiny" if args.tiny else "full"])
        return 0
    tensorflow = tensorflow_version()
    block_tensorflow()
    if args.torch_worker:
        from bench.torch_gpu import torch_worker

        result = torch_worker(args, step.shapes(args))
        with open(args.torch_worker, "w") as f:
            json.dump(result, f)
        return 0

    os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "jax":
        raise SystemExit("keras was imported with another backend before "
                         "tools/accelerator_check.py ran.")
    with _workdir(args.workdir) as workdir:  # the modes first: no JAX in this process yet
        mode_results, assets = run_modes(args, workdir, tensorflow)
    # then the peer: the child has the device to itself
    peer = {"skipped": "--no_timing"} if args.no_timing else step.run_peer(args, SCRIPT)
    device = device_info()
    if device["platform"] == "cpu" and not args.tiny:
        print("warning: JAX sees no GPU or TPU; these are CPU figures", file=sys.stderr)
    results = {"device": device, "versions": step.versions(peer, tensorflow), "assets": assets,
               "modes": mode_results, "step_timing": run_timing(args, peer), "tiny": args.tiny,
               "tensorflow_loaded": any(_is_tensorflow(m) for m in sys.modules),
               "wall_s": time.perf_counter() - start}
    print_report(results)
    print(f"accelerator check: {results['wall_s']:.0f} s in all")
    if args.json:
        from bench.report import write_json

        write_json(args.json, results)
    checks = {**mode_results, "assets": assets, "step_timing": results["step_timing"]}
    failed = [name for name, r in checks.items() if r["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
