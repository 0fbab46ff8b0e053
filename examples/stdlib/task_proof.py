"""The real-data proof of task distillation (docs/proof.md), re-run
fairly: every model trained to its dev peak under the same rule.

Task: stdlib docstrings labelled by library area (examples.stdlib.stdlib_task.build_task, split by
source file); transfer set: prose of the train split's files only (stdlib_task.build_transfer).
  teachers  the packaged MiniLM-L6 fine-tuned `--members` times (seeds 0..N-1, `finetune.members`):
            each member and their ensemble (mean probability) are rows;
  starts    wide = 3 layers of the teacher's width cut from fine-tuned member 0; narrow =
            TinyBERT-4 general-distilled here with minilm_v2 (12 relation heads, bf16 teacher) on
            stdlib prose without any dev/test source file;
  rows      from each start: (a) fine-tuned, no teacher; (k1) prediction-layer KD (soft targets +
            `--hard_weight` x labels) from the best single teacher (best member by dev accuracy,
            its selection.json) on labels + transfer set; (kE) the same from the ensemble, at
            every `--temperatures` (the best on dev is the row); (tE) two-step distillation from
            the ensemble (step 1 from member 0) on labels + transfer set.
Every stage: up to `--max_epochs` (the package's file-task default: 10), early-stopped after
`--patience` dev evaluations without improvement (default 3), dev evaluated once per epoch
(`--eval_every` steps if set); its model is its best dev checkpoint. (a) and each start's best
distilled row (chosen on dev) run `--seeds` seeds: mean ± sd. Only the reports read the test split.
Every stage goes through `tinybert_tf.launch.modes.run`; a stage whose output exists is skipped (the
script resumes; `--rows` runs a subset, e.g. two processes on different rows).

Writes into --workdir: report_dev.json/md and report_test.json/md (the evaluate mode: every
teacher, the ensemble, each row's seed-0 model), proof_summary.md/json (the table, per-seed values,
the temperature sweep, wall-clock per stage) and dev_curves.png.

python examples/stdlib/task_proof.py --workdir=proof_out
python examples/stdlib/task_proof.py --workdir=proof_out --rows=teachers,wide_a,wide_k1 --noreport
python examples/stdlib/task_proof.py --smoke --workdir=/tmp/proof_smoke   # a few minutes, tests
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from tinybert_tf.launch import hardware  # noqa: E402  (os only: before TensorFlow is imported)

hardware.enable_onednn()
hardware.import_tensorflow_quietly()

from absl import app, flags  # noqa: E402

from examples.stdlib import proof_rows  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "proof_out", "Output directory.")
_TEACHER = flags.DEFINE_string("teacher", "", "Pre-trained teacher preset (default: the "
                               "packaged MiniLM-L6; --smoke: a tiny random one).")
_MEMBERS = flags.DEFINE_integer("members", 3, "Fine-tuned teachers in the ensemble (>= 3).")
_GD_STEPS = flags.DEFINE_integer("gd_steps", 600, "Narrow start's general distillation steps.")
_TEACHER_LR = flags.DEFINE_float("teacher_lr", 1e-4, "Teacher fine-tuning peak learning rate.")
_STUDENT_LR = flags.DEFINE_float("student_lr", 1e-4, "Peak learning rate of every student stage.")
_HARD = flags.DEFINE_float("hard_weight", 1.0, "Prediction step: weight of the hard-label term.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Soft-target temperature of (k1), (tE).")
_TEMPERATURES = flags.DEFINE_list("temperatures", ["1", "2", "4", "8"],
                                  "(kE) temperature sweep; the best on dev is the row.")
_COMBINE = flags.DEFINE_enum("combine", "prob", ["prob", "logit"],
                             "How the ensemble's soft targets are combined (prediction.combine).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds of (a) and of the best distilled row.")
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", None, "Most epochs of every task stage "
                                   "(default: the package's, 10 for a file task).")
_PATIENCE = flags.DEFINE_integer("patience", None, "Dev evaluations without improvement before "
                                 "a stage stops (default: the package's, 3).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 0, "Steps between dev evaluations (0: per epoch).")
_SEQ = flags.DEFINE_integer("seq_len", 64, "Sequence length.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size of every stage.")
_ROWS = flags.DEFINE_list("rows", [], f"Rows to run (default: all): {','.join(proof_rows.ROWS)}.")
_REPORT = flags.DEFINE_bool("report", True, "Write the reports and the summary at the end.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny end-to-end run for tests: a few dozen rows per "
                           "split, ~100 transfer rows, 2 members, 1 epoch, 1 temperature, 2 seeds, "
                           "tiny random teacher and narrow student; float32 without XLA.")

# --smoke: the defaults of the flags not given on the command line.
SMOKE = {"members": 2, "gd_steps": 3, "temperatures": ["2"], "seeds": 2, "max_epochs": 1,
         "seq_len": 32}


def settings():
    """Settings from the flags; `--smoke` fills in SMOKE for every flag left at its default."""
    values = {"members": _MEMBERS, "gd_steps": _GD_STEPS, "teacher_lr": _TEACHER_LR,
              "student_lr": _STUDENT_LR, "hard_weight": _HARD, "temperature": _TEMPERATURE,
              "temperatures": _TEMPERATURES, "combine": _COMBINE, "seeds": _SEEDS,
              "max_epochs": _MAX_EPOCHS, "patience": _PATIENCE, "eval_every": _EVAL_EVERY,
              "seq_len": _SEQ, "batch_size": _BATCH}
    out = {name: holder.value for name, holder in values.items()}
    if _SMOKE.value:
        out.update({k: v for k, v in SMOKE.items() if not flags.FLAGS[k].present})
        out["latency_runs"] = 1
    out["temperatures"] = tuple(float(t) for t in out["temperatures"])
    if out["members"] < 2 and not _SMOKE.value:
        raise app.UsageError("--members must be >= 2 (an ensemble); the proof uses 3.")
    return proof_rows.Settings(workdir=os.path.abspath(_WORKDIR.value), smoke=_SMOKE.value, **out)


def run_rows(p, rows):
    """Run the chosen rows in protocol order: teachers, then per start (a), (k1), (kE) at every
    temperature, (tE), and last the extra seeds of (a) and the best distilled row."""
    from examples.stdlib import proof_report

    scorer = proof_report.Scorer(p)
    for row in proof_rows.ROWS:
        if row not in rows:
            continue
        if row == "teachers":
            p.ensemble  # noqa: B018  (trains them)
            continue
        start, variant = row.split("_", 1)
        if variant == "seeds":
            proof_rows.run_seeds(p, start, proof_report.choose(p, scorer, start))
            continue
        for key in proof_rows.row_keys(p.s, variant):
            proof_rows.run_row(p, start, key)
    return scorer


def report(p, scorer):
    """Reports (evaluate mode, dev and test), proof_summary.md/json and dev_curves.png."""
    from examples.stdlib import proof_report, proof_summary

    choices = {start: proof_report.choose(p, scorer, start, strict=False)
               for start in proof_rows.STARTS}
    reports = proof_report.write_reports(p, choices)
    summary = proof_report.collect(p, scorer, choices, reports)
    path = proof_summary.write_summary(summary, p.w)
    proof_summary.plot_dev_curves(summary, os.path.join(p.w, "dev_curves.png"))
    with open(path, encoding="utf-8") as f:
        print(f.read())
    return path


def main(argv):
    """Data, then the chosen rows (teachers and starts as they are needed), then the report."""
    del argv
    from examples.stdlib import proof_stages

    hardware.quiet_python_logs()  # TF's checkpoint INFO lines would interleave the bars

    s = settings()
    unknown = sorted(set(_ROWS.value) - set(proof_rows.ROWS))
    if unknown:
        raise app.UsageError(f"Unknown rows {unknown}; choose from {','.join(proof_rows.ROWS)}.")
    os.makedirs(s.workdir, exist_ok=True)
    stages = proof_stages.Stages(s.workdir)
    data = proof_stages.build_data(s.workdir, stages, s.smoke)
    p = proof_rows.Proof(s, stages, data, teacher_preset(s, stages))
    scorer = run_rows(p, _ROWS.value or proof_rows.ROWS)
    if _REPORT.value:
        report(p, scorer)


def teacher_preset(s, stages):
    """The pre-trained teacher: --teacher, else the packaged MiniLM-L6 (--smoke: a tiny random
    BERT with MiniLM's tokenizer, so the whole pipeline runs in minutes)."""
    from examples.stdlib import demo

    if _TEACHER.value:
        return _TEACHER.value
    if not s.smoke:
        return demo.minilm_dir()
    from examples.stdlib import proof_stages

    out = os.path.join(s.workdir, "tiny_teacher")
    return stages.run("tiny random teacher", out,
                      lambda: proof_stages.tiny_teacher(demo.minilm_dir(), out))


if __name__ == "__main__":
    app.run(main)
