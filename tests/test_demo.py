"""A shortened `make demo` on the real packaged MiniLM-L6 teacher: table, PNG, export request, and
the distilled student closer to the teacher than the same student before training."""

import json
import os

import pytest

from tinybert_tf import demo


def test_short_demo_end_to_end(tmp_path):
    try:
        teacher = demo.minilm_dir()
    except FileNotFoundError as err:  # make test installs it; a bare pytest may not have it
        pytest.skip(str(err))
    corpus = tmp_path / "corpus"
    from tinybert_tf.data import stdlib_text

    stdlib_text.build_corpus(str(corpus), max_files=120)
    returned = demo.run_demo(
        teacher, str(tmp_path / "demo"), steps=24, batch_size=16, seq_len=64,
        student="tinybert_4l_312h", layer_map="1,2,4,5", learning_rate=3e-4, eval_docs=96,
        corpus=str(corpus / "train.txt"), heldout=str(corpus / "heldout.txt"),
    )
    out = tmp_path / "demo"
    assert (out / "loss_curve.png").stat().st_size > 10_000
    table = (out / "summary.md").read_text()
    assert "| student, distilled |" in table and "| teacher |" in table
    saved = json.loads((out / "summary.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(returned["rows"]))
    rows = saved["rows"]
    assert rows["student, distilled"]["params"] < rows["teacher"]["params"]
    # The gain that a short run reliably shows: the distilled student's sentence embeddings point
    # where the teacher's do; the untrained student's are unrelated (cosine ~0).
    assert rows["student, untrained"]["cosine"] < 0.1
    assert rows["student, distilled"]["cosine"] > rows["student, untrained"]["cosine"] + 0.05
    assert saved["request"]["outputs"]["sequence_output"][0] == 1
    assert saved["last_loss"] < saved["first_loss"]
    assert os.path.isdir(saved["request"]["path"])
