"""A shortened `make demo` on the real packaged MiniLM-L6 teacher: table, PNG, export request, and
the distilled student closer to the teacher than the same student before training."""

import json
import os

import pytest

from examples.stdlib import demo


@pytest.mark.slow
def test_short_demo_end_to_end(tmp_path):
    try:
        teacher = demo.minilm_dir()
    except FileNotFoundError as err:  # make test installs it; a bare pytest may not have it
        pytest.skip(str(err))
    corpus = tmp_path / "corpus"
    from examples.stdlib import stdlib_text

    stdlib_text.build_corpus(str(corpus), max_files=120)
    returned = demo.run_demo(
        # The budget path: a few steps are timed first, then at most max_steps run.
        teacher, str(tmp_path / "demo"), steps=None, time_budget=3600, max_steps=60,
        batch_size=16, seq_len=64,
        student="from_teacher:4", layer_map="1,2,4,5", learning_rate=2e-4, eval_docs=96,
        corpus=str(corpus / "train.txt"), heldout=str(corpus / "heldout.txt"),
        recipe="tinybert_sentence",
    )
    out = tmp_path / "demo"
    assert (out / "loss_curve.png").stat().st_size > 10_000
    table = (out / "summary.md").read_text()
    assert "| student, distilled |" in table and "| teacher |" in table
    saved = json.loads((out / "summary.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(returned["rows"]))
    rows = saved["rows"]
    assert rows["student, distilled"]["params"] < rows["teacher"]["params"]
    # The demo's claim, on both fidelity measures: distilled beats the same student untrained.
    before, after = rows["student, untrained"], rows["student, distilled"]
    assert after["cosine"] > before["cosine"] + 0.01, (before, after)
    assert after["nn_agreement"] > before["nn_agreement"] + 0.03, (before, after)
    assert saved["request"]["outputs"]["sequence_output"][0] == 1
    assert saved["last_loss"] < saved["first_loss"]
    assert os.path.isdir(saved["request"]["path"])
    plan = saved["plan"]
    assert plan["step_s"] > 0 and not plan["pinned"]
    assert plan["steps"] == saved["steps"] == 60  # min(fit, max_steps), run in full
    from tinybert_tf.launch import train

    assert train.read_metrics(str(out / "general_distill"))[-1]["step"] == 60
    assert plan["cpu"] in table


@pytest.mark.slow
def test_the_demo_prints_progress_and_results_only(tmp_path):
    """`make demo`'s console, as a user sees it: no TensorFlow/absl INFO line (the SavedModel
    and checkpoint savers log some), no Python warning, no C++ log line."""
    import re
    import subprocess
    import sys

    try:
        demo.minilm_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    corpus = tmp_path / "corpus"
    from examples.stdlib import stdlib_text

    stdlib_text.build_corpus(str(corpus), max_files=40)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "examples.stdlib.demo", f"--workdir={tmp_path / 'demo'}",
         "--steps=6", "--batch_size=8", "--eval_docs=32", f"--corpus={corpus / 'train.txt'}",
         f"--heldout={corpus / 'heldout.txt'}"],
        capture_output=True, text=True, timeout=1200, env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    noise = re.compile(r"^(INFO|WARNING):|^[IWEF]\d{4} |Warning\b|warnings\.warn|absl::")
    printed = (done.stdout + done.stderr).splitlines()
    assert not [line for line in printed if noise.search(line)], printed
    assert (tmp_path / "demo" / "summary.md").exists()
