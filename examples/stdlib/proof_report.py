"""Scores, choices and reports of the task-distillation proof (examples/stdlib/task_proof.py).

Every model is scored with `tinybert_tf.evaluate.evaluate_model` in float32 (`Scorer`, cached
beside the model). Choices read dev only: (kE)'s temperature and each start's best distilled row
are the best seed-0 dev accuracies (`choose`). `write_reports` runs the evaluate mode on dev and
test (teachers, ensemble and every row's seed-0 model); `collect` gathers per-seed numbers, their
mean and standard deviation (numpy, ddof=1) into proof_summary.json.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from examples.stdlib import proof_rows as rows_lib
from examples.stdlib.proof_rows import STARTS, VARIANTS

SPLITS = {"dev": "validation", "test": "test"}  # our name -> the task's split name
METRIC = "accuracy"


class Scorer:
    """Dev/test metrics of a saved task model: `evaluate.evaluate_model` in float32 on the task's
    splits, written beside the model (`<model>.scores.json`) so a resumed run reads them back and
    a re-trained model (its row dir removed) is scored again."""

    def __init__(self, proof):
        self.proof = proof
        self.data = None
        self.spec = None

    def _datasets(self):
        """The dev and test datasets, built once (the same batches the evaluate mode reads)."""
        if self.data is None:
            from tinybert_tf.launch import builders, config_lib, task_data

            config = config_lib.load("task_distill", **self.proof.task_fields())
            self.spec = task_data.task_spec(config)
            tokenizer = builders.load_tokenizer(self.proof.teacher_pre)
            data = task_data.TaskData(config, self.spec, tokenizer)
            self.data = {name: data.evaluation(split) for name, split in SPLITS.items()}
        return self.data

    def __call__(self, model, split):
        """`model`'s accuracy on `split` (dev | test)."""
        return self.scores(model, (split,))[split]

    def scores(self, model, splits):
        """{split: accuracy} of `model` on `splits`. A model is loaded once: when a split asked
        for is missing, every split not yet scored is scored (dev and test together; a choice
        still reads dev alone)."""
        path = model.rstrip("/") + ".scores.json"
        cached = {}
        if os.path.exists(path):
            with open(path) as f:
                cached = json.load(f)
        missing = [split for split in SPLITS if split not in cached]
        if any(split not in cached for split in splits):
            import keras

            from tinybert_tf import evaluate
            from tinybert_tf.distill import heads

            data = self._datasets()
            keras.mixed_precision.set_global_policy("float32")
            net = heads.load_task_model(model, dtype="float32")
            for split in missing:
                cached[split] = evaluate.evaluate_model(net, data[split], self.spec)
            del net
            keras.backend.clear_session()
            with open(path, "w") as f:
                json.dump(cached, f, indent=1)
        return {split: float(cached[split][METRIC]) for split in splits}


def seed_stats(values):
    """{"mean", "sd"} of per-seed values: numpy mean and sample standard deviation (ddof=1;
    None for a single seed)."""
    values = np.asarray(values, np.float64)
    return {"mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def choose(p, scorer, start, strict=True):
    """The dev choices of a start: (kE)'s best temperature and the best distilled row among
    (k1), (kE) at that temperature and (tE), by seed-0 dev accuracy (first in that order on a
    tie). strict: every seed-0 run must exist (else a RuntimeError naming the rows to run);
    otherwise missing runs are left out (None when nothing is there). Writes choices/<start>.json.
    """
    dev = {}
    for variant in ("k1", "kE", "tE"):
        for key in rows_lib.row_keys(p.s, variant):
            model = rows_lib.model_dir(p.w, start, key, 0)
            if os.path.exists(model):
                dev[key] = scorer(model, "dev")
            elif strict:
                raise RuntimeError(f"{start}: the seed-0 run {key} is missing; run "
                                   f"--rows={start}_k1,{start}_kE,{start}_tE before {start}_seeds.")
    sweep = [k for k in rows_lib.row_keys(p.s, "kE") if k in dev]
    kE = max(sweep, key=dev.get) if sweep else None
    candidates = [k for k in ("k1", kE, "tE") if k in dev]
    choice = {"kE": kE, "best": max(candidates, key=dev.get) if candidates else None, "dev": dev}
    os.makedirs(os.path.join(p.w, "choices"), exist_ok=True)
    with open(os.path.join(p.w, "choices", f"{start}.json"), "w") as f:
        json.dump(choice, f, indent=1)
    return choice


def row_key(variant, choice):
    """The run a variant's row stands for: (kE) is its best-on-dev temperature."""
    return choice.get("kE") if variant == "kE" else variant


def seed0_students(p, choices):
    """{report name: seed-0 model dir} of every row that has run, in table order."""
    out = {}
    for start in STARTS:
        for variant in VARIANTS:
            key = row_key(variant, choices[start])
            model = key and rows_lib.model_dir(p.w, start, key, 0)
            if model and os.path.exists(model):
                out[f"{start} {key}"] = model
    return out


def write_reports(p, choices):
    """The evaluate mode on dev and test, every model loaded once (`evaluate_mode.run_splits`):
    every teacher, the ensemble and the rows' seed-0 models (`report_<split>/`, copied to
    report_dev.json/md and report_test.json/md with timings)."""
    import keras

    from tinybert_tf.launch import config_lib, evaluate_mode

    students = seed0_students(p, choices)
    keras.mixed_precision.set_global_policy("float32")  # the Scorer's numbers, exactly
    config = config_lib.load(
        "task_distill", mode="evaluate", teacher=p.ensemble,
        student=",".join(f"{k}={v}" for k, v in students.items()), **p.task_fields())
    outputs = {split: (os.path.join(p.w, f"report_{name}"),
                       p.s.latency_runs if name == "test" else 1)
               for name, split in SPLITS.items()}
    by_split = evaluate_mode.run_splits(config, outputs, p.w)
    reports = {}
    for name, split in SPLITS.items():
        report = {**by_split[split], "timings_s": p.stages.timings()}
        with open(os.path.join(p.w, f"report_{name}.json"), "w") as f:
            json.dump(report, f, indent=2, default=str)
        shutil.copyfile(os.path.join(outputs[split][0], "report.md"),
                        os.path.join(p.w, f"report_{name}.md"))
        reports[name] = report
    return reports


def _ensemble(reports):
    """{split: the evaluate report's ensemble accuracy} (None where a report has no ensemble)."""
    found = {}
    for name, report in reports.items():
        row = next((r for r in report["models"] if r["name"] == "ensemble"), None)
        found[name] = row and float(row["metrics"][METRIC])
    return found


def _teachers(p, scorer):
    """Each member's dev/test accuracy, its best step and its selection.json."""
    out = []
    for k in range(p.s.members):
        selection = rows_lib.read_selection(p.member_selection(k))
        out.append({"name": f"teacher {k}", "member": k, "seed": k, "model": p.member(k),
                    **scorer.scores(p.member(k), ("dev", "test")),
                    "best_step": selection["best"]["step"],
                    "selection": p.member_selection(k)})
    return out


def _row(p, scorer, start, variant, key, choice):
    """One summary row: the per-seed dev/test values of the runs that exist (every seed that
    ran, also of a row that is not the best distilled one), their mean and sd, the seed-0
    stage's wall-clock; None when no seed has run."""
    seeds = [seed for seed in range(p.s.seeds)
             if os.path.exists(rows_lib.model_dir(p.w, start, key, seed))]
    if not seeds:
        return None
    models = [rows_lib.model_dir(p.w, start, key, seed) for seed in seeds]
    scores = [scorer.scores(m, ("dev", "test")) for m in models]
    dev, test = [x["dev"] for x in scores], [x["test"] for x in scores]
    return {"start": start, "variant": variant, "key": key, "label": VARIANTS[variant],
            "best_distilled": key == choice.get("best"), "seeds": seeds, "models": models,
            "dev": dev, "test": test, "dev_stats": seed_stats(dev), "test_stats": seed_stats(test),
            "seconds": p.stages.seconds(rows_lib.stage_name(start, key, 0)),
            "selection": rows_lib.selection_path(p.w, start, key, 0)}


def _sweep(p, scorer, start, choice):
    """(kE)'s temperature sweep of a start, dev only (its test split is never scored)."""
    out = []
    for t in p.s.temperatures:
        key = rows_lib.kE_key(t)
        model = rows_lib.model_dir(p.w, start, key, 0)
        if os.path.exists(model):
            selection = rows_lib.selection_path(p.w, start, key, 0)
            sel = rows_lib.read_selection(selection)
            out.append({"temperature": t, "key": key, "dev": scorer(model, "dev"),
                        "selection": selection,
                        "best_step": sel["best"]["step"], "chosen": key == choice.get("kE"),
                        "seconds": p.stages.seconds(rows_lib.stage_name(start, key, 0))})
    return out


def collect(p, scorer, choices, reports):
    """Everything proof_summary.md shows, with the per-seed values behind each mean ± sd.

    Shares are of the best single teacher chosen on dev (the (k1) teacher), on test."""
    teachers = _teachers(p, scorer)
    best = p.best_member()
    ref = teachers[best]["test"]
    rows = []
    for start in STARTS:
        for variant in VARIANTS:
            key = row_key(variant, choices[start])
            row = key and _row(p, scorer, start, variant, key, choices[start])
            if row:
                row["test_share_of_best_teacher"] = row["test_stats"]["mean"] / ref if ref else None
                rows.append(row)
    ensemble = _ensemble(reports)
    return {"teachers": teachers, "best_member": best, "ensemble": ensemble,
            "ensemble_seconds": p.stages.seconds(rows_lib.teachers_stage(p.s)),
            "rows": rows, "choices": choices,
            "temperature_sweep": {s: _sweep(p, scorer, s, choices[s]) for s in STARTS},
            "settings": dict(vars(p.s)), "timings_s": _timings(p)}


def _timings(p):
    """{stage: seconds} of this protocol's stages that have run, in the order they run."""
    recorded = p.stages.timings()
    return {name: recorded[name] for name in rows_lib.protocol_stages(p.s) if name in recorded}
