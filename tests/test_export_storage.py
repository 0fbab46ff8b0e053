"""Publishing a staged export version on local disk and on a non-local `tf.io.gfile` filesystem
(TF's in-memory ``ram://``, standing in for gs://): the version appears whole or not at all, an
existing version is never overwritten, and a candidate that fails verification is kept aside."""

import os

import pytest
import tiny

tf = pytest.importorskip("tensorflow")

from tinybert_tf.export import publish, storage  # noqa: E402

FILES = {"saved_model.pb": "graph", "variables/variables.index": "index",
         "assets.extra/export_config.json": "{}"}


def _stage(root):
    stage = os.path.join(str(root), "stage")
    for rel, text in FILES.items():
        os.makedirs(os.path.dirname(os.path.join(stage, rel)), exist_ok=True)
        with open(os.path.join(stage, rel), "w") as f:
            f.write(text)
    return stage


def _read_tree(path):
    return {rel: tf.io.gfile.GFile(os.path.join(path, rel)).read() for rel in FILES}


@pytest.mark.parametrize("remote", [False, True])
def test_publish_dir_moves_the_whole_version_and_never_overwrites(tmp_path, remote):
    base = f"ram://storage_test_{os.getpid()}" if remote else str(tmp_path / "serving")
    final = f"{base}/student/1"
    tf.io.gfile.makedirs(f"{base}/student")
    stage = _stage(tmp_path)
    assert storage.local_dir_size(stage) == sum(len(t) for t in FILES.values())
    storage.publish_dir(stage, final)
    assert _read_tree(final) == FILES and not os.path.exists(stage)
    assert not [d for d in tf.io.gfile.listdir(f"{base}/student") if d.startswith(".")]

    again = _stage(tmp_path)
    with pytest.raises(tf.errors.AlreadyExistsError):
        storage.publish_dir(again, final)
    assert _read_tree(final) == FILES
    assert not [d for d in tf.io.gfile.listdir(f"{base}/student") if d.startswith(".")]


def test_failed_verification_keeps_the_candidate_beside_a_remote_version(monkeypatch):
    out = f"ram://storage_failed_{os.getpid()}"
    enc = tiny.backbone(seed=0, vocabulary_size=40, max_sequence_length=8)
    fresh = {"ops": {"num_ops": 1, "used_ops": [], "tf_text_ops": [], "unknown_ops": [],
                     "min_tf_serving_version": None},
             "parity": {"ids_texts": 1.0}, "parity_scale": {"ids_texts": 1.0},
             "warmup_replayed": 0, "latency": {}, "saved_model_cli": ""}
    monkeypatch.setattr(publish, "run_fresh_process_checks", lambda *a, **k: fresh)
    with pytest.raises(publish.ExportError, match="verification failed, not published") as e:
        publish.export(enc, out, text_signature=False, warmup=False, quiet=True)
    failed = str(e.value).rsplit("candidate kept at ", 1)[1]
    assert failed.startswith(f"{out}/student/.failed-1-") and "\n" not in str(e.value)
    assert tf.io.gfile.exists(f"{failed}/saved_model.pb")
    assert tf.io.gfile.exists(f"{failed}/assets.extra/export_config.json")
    assert not tf.io.gfile.exists(f"{out}/student/1")
    assert publish.next_version(out, "student") == 1
