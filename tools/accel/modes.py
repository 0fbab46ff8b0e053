"""The mode checks: general distillation, finetune (an ensemble of two), task distillation from
that ensemble with a transfer set, evaluate; each a launcher process, as a user runs it:

    KERAS_BACKEND=jax python -m tinybert_tf.main --config=<config_dir>/<name>.py
        --workdir=<dir>/<mode> --config.backend=jax --config.<key>=<value> ...

on the generated inputs of `assets` (written first by the `--assets_worker` child), each mode
reading the one before (task_distill starts from the general-distilled student). A mode whose
input failed is skipped. Each record: status (ok | failed | skipped), wall seconds, the command,
the launcher's device lines, and the key outputs read back from the files the mode wrote
(metrics.jsonl, selection.json, transfer.json, report.json, the presets' config.json)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from types import SimpleNamespace

ORDER = ("general_distill", "finetune", "task_distill", "evaluate")
NEEDS = {"task_distill": ("general_distill", "finetune"), "evaluate": ("finetune", "task_distill")}
CONFIG = {"general_distill": "general_distill", "finetune": "task_distill",
          "task_distill": "task_distill", "evaluate": "task_distill"}
CONSOLE = ("Devices:", "Keras backend", "Hardware:")  # the launcher's device / precision lines
TIMEOUT_S = 600  # one mode process; a slower one is recorded as failed (a hang, a loaded CPU)

SIZES = {
    # The accelerator run: a 6-layer hidden-384 teacher (MiniLM-L6's shape) -> TinyBERT-4; corpus
    # sequences of 128, task rows of up to 40 words (length buckets 16 / 32 / 64).
    "full": SimpleNamespace(
        vocab=2000, seq=128, task_words=40, student="tinybert_4l_312h",
        teacher=dict(num_layers=6, hidden_dim=384, num_heads=12, intermediate_dim=1536),
        batch=32, general_steps=64, corpus_docs=4000, train_rows=2048, dev_rows=256,
        transfer_rows=1024, finetune_epochs=2, distill_epochs=2, learning_rate=5e-4, log_every=16,
        checkpoint_every=64, latency_runs=10),
    # --tiny: 2-layer hidden-32 models, seq 16 (a CPU); teachers and student reach dev accuracy 1.0.
    "tiny": SimpleNamespace(
        vocab=120, seq=16, task_words=14, student="tiny_2l_32h",
        teacher=dict(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64),
        batch=8, general_steps=32, corpus_docs=200, train_rows=512, dev_rows=32,
        transfer_rows=64, finetune_epochs=2, distill_epochs=1, learning_rate=5e-3, log_every=16,
        checkpoint_every=64, latency_runs=2),
}


def plan(sizes, assets, workdir):
    """{mode: launcher argv} for the generated `assets` (the dict `assets.write` returns)."""
    dirs = {mode: os.path.join(workdir, mode) for mode in ORDER}
    s = sizes
    common = [f"--config.batch_size={s.batch}", f"--config.data.seq_len={s.seq}",
              f"--config.log_every={s.log_every}", f"--config.checkpoint_every={s.checkpoint_every}"]
    task = ["--config.task=file", f"--config.data.train_file={assets['train']}",
            f"--config.data.eval_file={assets['dev']}"]
    flags = {
        "general_distill": [f"--config.teacher={assets['teacher']}",
                            f"--config.data.train={assets['corpus']}",
                            f"--config.student={s.student}", f"--config.steps={s.general_steps}",
                            *common],
        "finetune": ["--config.mode=finetune", f"--config.teacher={assets['teacher']}", *task,
                     "--config.finetune.members=2", f"--config.finetune.epochs={s.finetune_epochs}",
                     f"--config.finetune.learning_rate={s.learning_rate}", *common],
        "task_distill": ["--config.mode=task_distill",
                         f"--config.teacher={os.path.join(dirs['finetune'], 'teacher')}",
                         f"--config.student={os.path.join(dirs['general_distill'], 'student')}",
                         f"--config.transfer_file={assets['transfer']}", "--config.stages=both",
                         *task, f"--config.intermediate.epochs={s.distill_epochs}",
                         f"--config.prediction.epochs={s.distill_epochs}",
                         f"--config.intermediate.learning_rate={s.learning_rate}",
                         f"--config.prediction.learning_rate={s.learning_rate}", *common],
        "evaluate": ["--config.mode=evaluate",
                     f"--config.teacher={os.path.join(dirs['finetune'], 'teacher')}",
                     "--config.student=" + os.path.join(dirs["task_distill"], "prediction",
                                                        "student"),
                     *task, f"--config.latency_runs={s.latency_runs}",
                     f"--config.batch_size={s.batch}", f"--config.data.seq_len={s.seq}"],
    }
    config = os.path.join(assets["config_dir"], "{}.py")
    return {mode: [sys.executable, "-m", "tinybert_tf.main",
                   f"--config={config.format(CONFIG[mode])}", f"--workdir={dirs[mode]}",
                   "--config.backend=jax", *flags[mode]] for mode in ORDER}


def launcher_env(root):
    """The mode processes' environment: Keras on JAX, this checkout's tinybert_tf first."""
    env = {k: v for k, v in os.environ.items() if k != "TINYBERT_TF_REEXEC"}
    env["KERAS_BACKEND"] = "jax"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def error_line(text):
    """The launcher's one-line `Error: ...`, else the last exception line of a traceback, else
    the last line of `text`."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or [""]
    for pattern in (r"Error: ", r"[\w.]*(Error|Exception|Interrupt)\b.*"):
        found = [line for line in lines if re.match(pattern, line)]
        if found:
            return found[-1]
    return lines[-1]


def run_one(mode, argv, workdir, env, timeout):
    """One launcher process -> its record; stdout / stderr kept as `<workdir>/<mode>.out|.err`."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True,
                              timeout=timeout)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as late:
        out, err = (t.decode(errors="replace") if isinstance(t, bytes) else t or ""
                    for t in (late.stdout, late.stderr))
        code, err = None, f"{err}\ntimed out after {timeout} s"
    record = {"status": "ok" if code == 0 else "failed", "returncode": code,
              "wall_s": time.perf_counter() - start, "command": "KERAS_BACKEND=jax " + shlex.join(argv),
              "console": [line for line in out.splitlines() if line.startswith(CONSOLE)]}
    for suffix, text in (("out", out), ("err", err)):
        with open(os.path.join(workdir, f"{mode}.{suffix}"), "w") as f:
            f.write(text)
    if code != 0:
        text = err or out
        record.update(error=error_line(text), log_tail="\n".join(text.splitlines()[-30:]))
        return record
    try:
        record["outputs"] = READ[mode](os.path.join(workdir, mode))
    except (OSError, KeyError, ValueError, IndexError) as bad:
        record.update(status="failed", error=f"outputs not as expected: {bad!r}")
    return record


def run_all(sizes, assets, workdir, root):
    """Every mode in ORDER -> {mode: record}; a mode whose input failed is skipped."""
    env, results = launcher_env(root), {}
    for mode, argv in plan(sizes, assets, workdir).items():
        failed = [m for m in NEEDS.get(mode, ()) if results[m]["status"] != "ok"]
        if failed:
            results[mode] = {"status": "skipped", "reason": f"needs {', '.join(failed)}"}
            continue
        print(f"[accelerator_check] {mode} ...", flush=True)
        results[mode] = run_one(mode, argv, workdir, env, TIMEOUT_S)
        r = results[mode]
        print(f"[accelerator_check] {mode}: {r['status']} in {r['wall_s']:.1f} s", flush=True)
    return results


def skipped(reason):
    return {mode: {"status": "skipped", "reason": reason} for mode in ORDER}


# ---- what each mode wrote -------------------------------------------------------------------------

def _json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def losses(run_dir):
    """Steps and first / final logged loss of a run's metrics.jsonl (records with a step)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = {r["step"]: r for r in map(json.loads, filter(str.strip, f))
                   if "step" in r and "loss" in r}
    steps = sorted(records)
    return {"steps": steps[-1], "first_loss": records[steps[0]]["loss"],
            "final_loss": records[steps[-1]]["loss"]}


def best(run_dir):
    """The eval-split selection of a task stage: metric, best value and its step."""
    state = _json(run_dir, "selection.json")
    return {"metric": state["metric"], "value": state["best"]["value"],
            "step": state["best"]["step"]}


def preset(path):
    """A preset dir's backbone shape (its config.json) and task model class (task.json), if any."""
    config = _json(path, "config.json")["config"]
    task = os.path.join(path, "task.json")
    return {"path": path, "task": _json(task)["class_name"] if os.path.exists(task) else None,
            **{k: config[k] for k in ("num_layers", "hidden_dim", "num_heads", "intermediate_dim",
                                      "vocabulary_size")}}


def _general(d):
    return {**losses(d), "student": preset(os.path.join(d, "student"))}


def _finetune(d):
    with open(os.path.join(d, "teacher", "members.txt")) as f:
        members = f.read().split()
    return {"teacher": os.path.join(d, "teacher"), "members": {
        m: {**losses(os.path.join(d, "finetune", m)), "best": best(os.path.join(d, "finetune", m)),
            "preset": preset(os.path.join(d, "teacher", m))} for m in members}}


def _task_distill(d):
    counts = _json(d, "transfer.json")
    return {"student": preset(os.path.join(d, "prediction", "student")),
            "transfer": {k: counts[k] for k in ("read", "used")},
            "stages": {s: {**losses(os.path.join(d, s)), "best": best(os.path.join(d, s))}
                       for s in ("intermediate", "prediction")}}


def _evaluate(d):
    report = _json(d, "report.json")
    return {"split": report["split"], "reference": report["reference"], "rows": [
        {k: v for k, v in row.items() if k in ("name", "metrics", "params", "share")
         or k.startswith("latency_")} for row in report["models"]]}


READ = {"general_distill": _general, "finetune": _finetune, "task_distill": _task_distill,
        "evaluate": _evaluate}


def summary(mode, record):
    """One line of a mode's record for the console table."""
    if record["status"] == "skipped":
        return record["reason"]
    if record["status"] == "failed":
        return record["error"][:100]
    out = record["outputs"]

    def loss(r):
        return f"loss {r['first_loss']:.4g} -> {r['final_loss']:.4g} ({r['steps']} steps)"

    if mode == "general_distill":
        return loss(out)
    if mode == "finetune":
        return "; ".join(f"{m} dev {r['best']['metric']} {r['best']['value']:.3f}"
                         for m, r in out["members"].items())
    if mode == "task_distill":
        stages = out["stages"]
        return (f"intermediate {loss(stages['intermediate'])}; prediction dev "
                f"{stages['prediction']['best']['metric']} {stages['prediction']['best']['value']:.3f}")
    metric = next(iter(out["rows"][0]["metrics"]))
    return f"{metric}: " + ", ".join(f"{r['name']} {r['metrics'][metric]:.3f}" for r in out["rows"])
