"""Where one distillation step's time goes: each part timed as its own compiled function on the
same models and batch, and the oneDNN implementation of every primitive the step ran. Parts are
differences of cumulative timings, so a small part carries the noise of two larger ones.

    python tools/bench/profile_step.py [--precision=bf16] [--jit=fusible] [--threads=2] [--tiny]
        [--json=F]

Parts (medians of --repeats calls, each a `tf.function` on the benchmark's BERT-base teacher and
TinyBERT-4 student, batch 8 x 128, recipe tinybert_general, AdamW): `teacher` (the frozen
teacher's features), `student_forward`, `+ loss terms` (forward and the recipe's terms),
`+ backward` (the gradient tape as well), `step` (the Distiller's train step under `fit`, optimizer
included). Differences give the loss terms, the backward pass and the rest (optimizer, casts,
the loop). A second process runs the step with ONEDNN_VERBOSE=1 and sums oneDNN's execution
times by primitive kind and implementation (e.g. `matmul brg_matmul:avx10_1_512_amx`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BERT_BASE = dict(num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=3072)
TINY = dict(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64)


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="bf16", help="a tools/bench variant precision")
    p.add_argument("--jit", default="none", choices=("none", "fusible", "xla"),
                   help="fusible: XLA clusters of element-wise ops (jit_compile=fusible); xla: "
                        "every part and the step jit-compiled")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="2-layer models, batch 2 x 16 (tests)")
    p.add_argument("--json", default="", help="write the profile here")
    p.add_argument("--onednn_steps", type=int, default=3, help="0: no oneDNN process")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _shapes(args):
    if args.tiny:
        return dict(vocab=120, seq=16, batch=2, teacher=TINY, student="tiny_2l_32h")
    return dict(vocab=30522, seq=128, batch=8, teacher=BERT_BASE, student="tinybert_4l_312h")


def _setup(args):
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, ROOT)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def _distiller(args):
    import keras
    import numpy as np

    from bench import common
    from tinybert_tf import Distiller

    s = _shapes(args)
    keras.mixed_precision.set_global_policy("float32")
    teacher, student = common.build_backbones(s["vocab"], s["seq"], s["teacher"], s["student"],
                                              args.precision)
    common.quantize_if_int8(teacher, args.precision)
    model = Distiller(teacher, student, "tinybert_general")
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  jit_compile=common.keras_jit(_jit(args)))
    ids = np.random.default_rng(0).integers(1, s["vocab"], (s["batch"], s["seq"])).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    return model, x


def _jit(args):
    return {"none": False, "fusible": "fusible", "xla": True}[args.jit]


def _median_ms(fn, x, repeats):
    fn(x)  # trace and warm up
    fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(x)
        _ = [float(v.numpy().ravel()[0]) for v in _leaves(out)[:1]]  # wait for the result
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def _leaves(out):
    import tensorflow as tf

    return tf.nest.flatten(out)


def part_times(args):
    """{part: median ms} of the parts (module doc), on one Distiller and batch."""
    tf = _setup(args)
    from tinybert_tf.distill import optim

    model, x = _distiller(args)
    variables = model.trainable_variables

    def terms(x):
        return model.compute_terms(x, None, None, model.teacher_features(x),
                                   model.student_features(x, training=True))

    def backward(x):
        t_feats = model.teacher_features(x)
        with tf.GradientTape() as tape:
            loss = model.compute_terms(x, None, None, t_feats,
                                       model.student_features(x, training=True))["loss"]
        return optim.densify([g for g in tape.gradient(loss, variables) if g is not None])

    def touched(*features):
        # One scalar that reads every feature tensor (one element each): a function returning
        # the features themselves would time copying them out, and one returning nothing
        # would have its unused work pruned.
        leaves = [t for t in tf.nest.flatten(features) if hasattr(t, "shape") and t.shape.rank]
        return tf.add_n([tf.cast(tf.reshape(t, [-1])[0], tf.float32) for t in leaves])

    def compiled(fn):
        return tf.function(fn, jit_compile=_jit(args) is True)

    parts = {
        "teacher": compiled(lambda x: touched(model.teacher_features(x))),
        "teacher + student_forward": compiled(
            lambda x: touched(model.teacher_features(x), model.student_features(x, training=True))),
        "teacher + student_forward + loss_terms": compiled(terms),
        "teacher + student_forward + loss_terms + backward": compiled(backward),
    }
    out = {name: _median_ms(fn, x, args.repeats) for name, fn in parts.items()}
    from bench import keras_step

    # fit's own step, timed between consecutive batch ends (as tools/benchmark.py's step bench),
    # after 2 untimed steps that build and trace it
    times = keras_step.time_fit(model, keras_step.repeat_dataset(x), args.repeats + 3, 1)[2:]
    out["step (fit: + optimizer and loop)"] = sorted(times)[len(times) // 2] * 1e3
    return out


def split(times):
    """The parts' own times (ms) from the cumulative ones of `part_times`."""
    keys = list(times)
    own = {"teacher": times[keys[0]]}
    names = ["student_forward", "loss_terms", "backward", "optimizer_and_loop"]
    for name, (prev, cur) in zip(names, zip(keys, keys[1:])):
        own[name] = times[cur] - times[prev]
    own["step"] = times[keys[-1]]
    return own


def onednn_worker(args):
    """(this process runs with ONEDNN_VERBOSE=1) a few steps, to be read by `onednn_table`."""
    tf = _setup(args)
    model, x = _distiller(args)
    data = tf.data.Dataset.from_tensors(x).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # build and trace
    print("PROFILE-START", flush=True)
    model.fit(data, steps_per_epoch=args.onednn_steps, epochs=1, verbose=0)
    print("PROFILE-END", flush=True)


def onednn_table(text, steps):
    """{"primitive impl": (calls per step, ms per step)} from ONEDNN_VERBOSE exec lines between
    the markers (`onednn_verbose,...,exec,cpu,<kind>,<impl>,...,<ms>`)."""
    rows = collections.defaultdict(lambda: [0, 0.0])
    inside = False
    for line in text.splitlines():
        if line.startswith("PROFILE-"):
            inside = line == "PROFILE-START"
            continue
        fields = line.split(",")
        if not inside or "exec" not in fields or not line.startswith("onednn_verbose"):
            continue
        at = fields.index("exec")
        kind, impl = fields[at + 2], fields[at + 3]
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        rows[f"{kind} {impl}"][0] += 1
        rows[f"{kind} {impl}"][1] += ms
    return {k: (c / steps, ms / steps) for k, (c, ms) in
            sorted(rows.items(), key=lambda kv: -kv[1][1])}


def run_onednn(args):
    argv = [sys.executable, os.path.abspath(__file__), "--worker=onednn",
            f"--precision={args.precision}", f"--jit={args.jit}", f"--threads={args.threads}",
            f"--onednn_steps={args.onednn_steps}", *(["--tiny"] if args.tiny else [])]
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_ENABLE_ONEDNN_OPTS="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return onednn_table(done.stdout, args.onednn_steps)


def main(argv=None):
    args = _args(argv)
    if args.worker == "onednn":
        return onednn_worker(args)
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f.startswith(("avx512",
                                                                                     "amx"))})
    report = {"precision": args.precision, "jit": args.jit, "threads": args.threads, "shapes": _shapes(args),
              "cpu_flags": flags, "load_before": os.getloadavg()[0]}
    report["cumulative_ms"] = part_times(args)
    report["parts_ms"] = split(report["cumulative_ms"])
    onednn = run_onednn(args) if args.onednn_steps else {}
    report["onednn"] = {k: {"calls_per_step": c, "ms_per_step": ms} for k, (c, ms) in onednn.items()}
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    sys.path.insert(0, ROOT)
    from tinybert_tf.launch import hardware

    hardware.allow_fusible_clusters()  # before TensorFlow's first function: --jit=fusible
    main()
