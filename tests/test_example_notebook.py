"""The stdlib notebook (examples/notebook_stdlib.py) run headless in QUICK mode, the way a user
runs it (`python -m examples.notebook_stdlib`, from outside the checkout): a teacher ensemble on
the packaged MiniLM-L6, a distilled student, the comparison table, the exported SavedModel
answering one string, and the dev-curve PNG."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_notebook_runs_end_to_end_in_quick_mode(tmp_path):
    from examples.stdlib import demo

    try:
        demo.minilm_dir()
    except FileNotFoundError as err:  # make test installs it; a bare pytest may not have it
        pytest.skip(str(err))
    workdir = tmp_path / "nb"
    env = dict(os.environ, TINYBERT_TF_NOTEBOOK_QUICK="1", TINYBERT_TF_NOTEBOOK_WORKDIR=str(workdir),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               MPLBACKEND="Agg")
    env.pop("DISPLAY", None)
    proc = subprocess.run([sys.executable, "-m", "examples.notebook_stdlib"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # Five models predict with Keras in this process (two members, two cached teachers, the
    # student): TF's per-code retracing count would warn at the fifth (the API filters it).
    assert "retracing" not in out + proc.stderr, proc.stderr[-3000:]

    png = workdir / "dev_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    report = json.loads((workdir / "compare" / "report.json").read_text())
    assert report["split"] == "test"
    rows = {row["name"]: row for row in report["models"]}
    assert set(rows) == {"teacher 0", "teacher 1", "ensemble", "student"}
    for row in rows.values():
        assert 0.0 <= row["metrics"]["accuracy"] <= 1.0
    assert rows["student"]["params"] < rows["teacher 0"]["params"]
    assert rows["student"]["preset"] == str(workdir / "student" / "prediction" / "student")

    export = workdir / "student" / "export" / "student" / "1"
    assert (export / "saved_model.pb").is_file()
    assert f"exported: {export}" in out
    assert "probabilities: shape [1, 16]" in out  # the one request, 16 classes
    # The table, as compare.markdown printed it (the notebook prints it after "Split: test").
    table = (workdir / "compare" / "report.md").read_text()
    assert "| student |" in table and "| ensemble |" in table
    assert out.count("| teacher 0 |") >= 2  # the compare mode's print and the notebook's
    assert table.strip() in out.split("Split: test", 1)[1]
    # Each stage's curve reached the figure: two members, both distillation steps.
    for stage in ("finetune/member_0", "finetune/member_1", "intermediate", "prediction"):
        assert f"{stage}: best dev" in out
