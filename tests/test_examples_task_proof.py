"""The task-distillation proof (examples/stdlib/task_proof.py): each row's config follows the
protocol (fast, nothing trained), and `--smoke` runs the whole pipeline end to end: every row in
proof_summary.md, the dev/test reports, the dev-curve figure, and seed means / standard deviations
that are numpy's of the per-seed values written beside them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from examples.stdlib import proof_report, proof_rows, proof_stages, proof_summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def proof(tmp_path):
    """A Proof whose teachers and starts exist already (stand-in files), so configs build
    without training: member 1 has the best dev accuracy."""
    w = str(tmp_path)
    ensemble = os.path.join(w, "teachers", "teacher")
    _write(os.path.join(ensemble, "members.txt"), "member_0\nmember_1\nmember_2\n")
    for k, dev in enumerate([0.5, 0.7, 0.6]):
        _write(os.path.join(w, "teachers", "finetune", f"member_{k}", "selection.json"),
               json.dumps({"best": {"step": 10, "value": dev}, "history": []}))
    os.makedirs(os.path.join(w, "starts", "wide"))
    os.makedirs(os.path.join(w, "general_minilm", "student"))
    data = {"task_dir": os.path.join(w, "task"), "corpus": "c.txt",
            "transfer": os.path.join(w, "transfer.txt")}
    s = proof_rows.Settings(workdir=w, members=3)
    return proof_rows.Proof(s, proof_stages.Stages(w), data, "pretrained")


def test_row_configs_follow_the_protocol(proof):
    from tinybert_tf.launch import config_lib

    w = proof.w
    a = proof_rows.row_config(proof, "wide", "a", seed=2)
    assert (a.mode, a.teacher, a.seed) == ("finetune", os.path.join(w, "starts", "wide"), 2)
    assert a.precision == "auto" and a.data.buckets  # the package's defaults
    assert config_lib.stage_budget(a, "finetune") == (10, 3)  # file task: 10 epochs, patience 3
    k1 = proof_rows.row_config(proof, "narrow", "k1", 0)
    assert k1.teacher == os.path.join(w, "teachers", "teacher", "member_1")  # best on dev
    assert (k1.stages, k1.transfer_file, k1.prediction.hard_weight) == (
        "prediction", proof.data["transfer"], 1.0)
    assert k1.student == os.path.join(w, "general_minilm", "student")
    assert k1.prediction.logits_cache == os.path.join(w, "logits_cache")  # shared by the rows
    kE = proof_rows.row_config(proof, "wide", proof_rows.kE_key(4.0), 0)
    assert (kE.teacher, kE.stages, kE.prediction.temperature) == (
        os.path.join(w, "teachers", "teacher"), "prediction", 4.0)
    tE = proof_rows.row_config(proof, "narrow", "tE", 0)
    assert (tE.stages, tE.intermediate.teacher, tE.intermediate.recipe) == ("both", 0, "minilm_v2")
    assert tE.intermediate.relation_heads == proof_rows.RELATION_HEADS
    assert config_lib.stage_budget(tE, "intermediate") == (10, 3)
    assert proof_rows.row_config(proof, "wide", "tE", 0).intermediate.recipe == \
        "tinybert_task_intermediate"
    proof.s.max_epochs, proof.s.patience = 4, 1
    assert config_lib.stage_budget(proof_rows.row_config(proof, "wide", "k1", 0),
                                   "prediction") == (4, 1)
    proof.s.smoke = True  # --smoke checks the plumbing: float32, no XLA, as the tiny configs
    smoke = proof_rows.row_config(proof, "wide", "tE", 0)
    assert (smoke.precision, smoke.teacher_dtype, smoke.jit_compile) == ("float32", "", "False")


def test_seed_stats_and_the_seeds_a_row_reports():
    stats = proof_report.seed_stats([0.5, 0.6, 0.7])
    assert stats["mean"] == pytest.approx(0.6) and stats["sd"] == pytest.approx(0.1)
    assert proof_report.seed_stats([0.5])["sd"] is None
    s = proof_rows.Settings(workdir="w", seeds=3)
    assert proof_rows.seeds_of(s, "a", {"best": "tE"}) == [0, 1, 2]
    assert proof_rows.seeds_of(s, "tE", {"best": "tE"}) == [0, 1, 2]
    assert proof_rows.seeds_of(s, "k1", {"best": "tE"}) == [0]


def test_choices_read_seed0_dev_accuracy_only(proof):
    proof.s.temperatures = (1.0, 2.0, 4.0)
    dev = {"k1": 0.50, "kE_T1": 0.52, "kE_T2": 0.58, "kE_T4": 0.55, "tE": 0.56}

    def scorer(model, split):
        assert split == "dev", "a choice read the test split"
        return dev[os.path.basename(os.path.dirname(os.path.dirname(model))).split("_", 1)[1]
                   .rsplit("_s", 1)[0]]

    with pytest.raises(RuntimeError, match="wide_seeds"):
        proof_report.choose(proof, scorer, "wide")
    for key in dev:
        os.makedirs(proof_rows.model_dir(proof.w, "wide", key, 0))
    choice = proof_report.choose(proof, scorer, "wide")
    assert (choice["kE"], choice["best"]) == ("kE_T2", "kE_T2")
    dev["tE"] = 0.60
    assert proof_report.choose(proof, scorer, "wide")["best"] == "tE"
    assert proof_report.choose(proof, scorer, "narrow", strict=False) == {
        "kE": None, "best": None, "dev": {}}


def test_smoke_subsample_keeps_every_label_in_train(tmp_path):
    src = tmp_path / "full"
    src.mkdir()
    for split, n in (("train", 20), ("dev", 8), ("test", 8)):
        rows = [f"text {split} {i}\t{'xyz'[i % 3]}" for i in range(n)]
        (src / f"{split}.tsv").write_text("text\tlabel\n" + "".join(r + "\n" for r in rows))
        (src / f"{split}.src").write_text("".join(f"f{i}.py\n" for i in range(n)))
    (src / "labels.txt").write_text("x\ny\nz\n")
    stats = proof_stages.subsample_task(str(src), str(tmp_path / "out"),
                                        {"train": 2, "dev": 1, "test": 1})
    assert stats["total"] == {"train": 6, "dev": 3, "test": 3}
    for split in ("train", "dev", "test"):
        rows = (tmp_path / "out" / f"{split}.tsv").read_text().splitlines()[1:]
        assert {r.split("\t")[1] for r in rows} == {"x", "y", "z"}
        assert len((tmp_path / "out" / f"{split}.src").read_text().splitlines()) == len(rows)


@pytest.mark.slow
def test_smoke_proof_end_to_end(tmp_path):
    from examples.stdlib import demo

    try:
        demo.minilm_dir()  # the smoke teacher uses its tokenizer
    except FileNotFoundError as err:
        pytest.skip(str(err))
    w = tmp_path / "proof"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "stdlib", "task_proof.py"),
                           "--smoke", f"--workdir={w}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("report_dev.json", "report_dev.md", "report_test.json", "report_test.md"):
        assert (w / name).stat().st_size > 0, name
    assert (w / "dev_curves.png").stat().st_size > 10_000
    md = (w / "proof_summary.md").read_text()
    summary = json.loads((w / "proof_summary.json").read_text())
    assert [t["name"] for t in summary["teachers"]] == ["teacher 0", "teacher 1"]
    assert "ensemble of 2" in md and all(f"| {t['name']}: member" in md
                                         for t in summary["teachers"])
    got = {(r["start"], r["variant"]) for r in summary["rows"]}
    assert got == {(s, v) for s in proof_rows.STARTS for v in proof_rows.VARIANTS}
    reports = {split: {m["name"]: m for m in json.loads((w / f"report_{split}.json").read_text())[
        "models"]} for split in ("dev", "test")}
    assert {"teacher 0", "teacher 1", "ensemble"} <= set(reports["test"])
    for row in summary["rows"]:
        line = proof_summary._row_line(row)
        assert line in md, line
        several = row["variant"] == "a" or row["best_distilled"]
        assert row["seeds"] == ([0, 1] if several else [0]), row
        assert len(row["models"]) == len(row["dev"]) == len(row["test"]) == len(row["seeds"])
        for split in ("dev", "test"):
            values = row[split]
            assert row[f"{split}_stats"]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            if several:
                assert row[f"{split}_stats"]["sd"] == pytest.approx(np.std(values, ddof=1),
                                                                    abs=1e-12)
            # seed 0's value is the evaluate mode's, in the report
            report_row = reports[split][f"{row['start']} {row['key']}"]
            assert values[0] == pytest.approx(report_row["metrics"]["accuracy"], abs=1e-9)
        assert row["seconds"] is not None and row["seconds"] > 0
    assert sum(r["best_distilled"] for r in summary["rows"]) == len(proof_rows.STARTS)
    for start, sweep in summary["temperature_sweep"].items():
        assert [e["temperature"] for e in sweep] == [2.0] and sweep[0]["chosen"], start
    assert "(kE) temperature sweep (dev only)" in md
