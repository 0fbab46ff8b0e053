"""distill.quantize: an int8 frozen teacher (Keras' int8 kernels) and its fidelity to float32."""

import gc
import importlib.util
import os
import re
import subprocess
import sys
import warnings
import weakref

import keras
import keras_hub
import ml_collections
import numpy as np
import pytest
import tiny

import tinybert_tf
from tinybert_tf.distill import dtypes, features, quantize, recipes, students
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import hardware, strategy, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pair(num_layers=4):
    """(float32 teacher, its int8 copy): the same seed builds the same weights."""
    reference = tiny.backbone(num_layers=num_layers, seed=0)
    return reference, quantize.quantize_teacher(tiny.backbone(num_layers=num_layers, seed=0))


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def _quantizable(model):
    """The layers Keras gives an int8 form: Dense, EinsumDense and the (Reversible)Embeddings."""
    kinds = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)
    return [layer for layer in model._flatten_layers() if isinstance(layer, kinds)]


def test_int8_teacher_kernels_are_int8_and_dequantize_to_the_float_ones(tmp_path):
    preset = tiny.write_teacher(tmp_path / "teacher")
    reference = dtypes.load_preset(keras_hub.models.Backbone, preset, "float32")
    teacher = dtypes.load_preset(keras_hub.models.Backbone, preset, "int8")
    layers = _quantizable(teacher)
    assert len(layers) == 4 * 6 + 3  # q, k, v, output, 2 feed-forward per layer; pooler, 2 tables
    for layer in layers:
        kernel = layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel
        assert keras.backend.standardize_dtype(kernel.dtype) == "int8", layer.path
    int8 = [v for v in teacher.weights if keras.backend.standardize_dtype(v.dtype) == "int8"]
    assert len(int8) == len(layers) and not teacher.trainable
    assert teacher.embeddings_layer_norm.gamma.dtype == "float32"
    assert teacher.position_embedding.weights[0].dtype == "float32"
    # int8 / scale is the float kernel to half a step of its column's scale.
    dense, float_dense = (m.transformer_layers[1]._feedforward_intermediate_dense
                          for m in (teacher, reference))
    q, scale = (np.asarray(keras.ops.convert_to_numpy(v)) for v in (dense.kernel, dense.kernel_scale))
    w = keras.ops.convert_to_numpy(float_dense.kernel)
    assert np.abs(q).max() == 127 and q.shape == w.shape
    assert np.all(np.abs(q / scale - w) <= 0.5 / scale + 1e-7)
    # A student built beside the int8 teacher (its sizes read from it) is float32 throughout.
    student = students.build("tiny_2l_32h", teacher=teacher)
    assert {keras.backend.standardize_dtype(v.dtype) for v in student.weights} == {"float32"}
    assert student.vocabulary_size == teacher.vocabulary_size


def _float_kernel_freed_by_quantize():
    model = tiny.backbone(num_layers=2)
    float_kernel = weakref.ref(model.transformer_layers[0]._feedforward_output_dense.kernel)
    assert quantize.quantize_teacher(model) is model
    return float_kernel() is None and gc.isenabled()


def test_quantize_teacher_frees_the_float_kernels_and_leaves_the_freeze_as_it_found_it():
    frozen = gc.get_freeze_count()  # the worker's imports (conftest: heap.settled_imports)
    assert frozen and _float_kernel_freed_by_quantize()
    assert 0 < gc.get_freeze_count() <= frozen  # the process's freeze kept, nothing added
    gc.unfreeze()  # a process that froze nothing: quantize's own freeze is undone after it
    try:
        assert _float_kernel_freed_by_quantize() and not gc.get_freeze_count()
    finally:
        gc.collect()
        gc.freeze()


def test_fidelity_has_one_entry_per_layer_and_matches_numpy():
    reference, teacher = _pair()
    x = tiny.inputs(batch=4, seq=12)
    report = quantize.fidelity(reference, teacher, x)
    assert len(report["hidden_states"]) == len(report["attention_probs"]) == 4
    for kind in ("hidden_states", "attention_probs"):
        assert all(0.0 < c <= 1.0 for c in report[kind]), report[kind]
        assert report["min"][kind] == min(report[kind])
    assert 0.0 < report["embeddings"] <= 1.0 and report["examples"] == 4
    assert report["worst"] == min(report["min"].values())
    assert report["min"]["hidden_states"] < 1.0  # the int8 kernels did change the features
    # NumPy reference: per example, cosine over the real tokens, then the mean over examples.
    ref, got = (features.encoder_features(m, x) for m in (reference, teacher))
    real = x["padding_mask"].sum(axis=1)

    def cosine(a, b):
        a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    for layer in (0, 3):
        h_ref, h_got = (np.asarray(f["hidden_states"][layer]) for f in (ref, got))
        p_ref, p_got = (np.asarray(f["attention_probs"][layer]) for f in (ref, got))
        hidden = np.mean([cosine(h_ref[b, :n], h_got[b, :n]) for b, n in enumerate(real)])
        probs = np.mean([cosine(p_ref[b, :, :n, :n], p_got[b, :, :n, :n])
                         for b, n in enumerate(real)])
        np.testing.assert_allclose(report["hidden_states"][layer], hidden, rtol=0, atol=1e-9)
        np.testing.assert_allclose(report["attention_probs"][layer], probs, rtol=0, atol=1e-9)


def test_fidelity_of_a_model_against_itself_is_one():
    model = tiny.classifier(tiny.backbone(num_layers=2, seed=3))
    report = quantize.fidelity(model, model, tiny.inputs())
    values = [report["embeddings"], report["logits"], *report["hidden_states"],
              *report["attention_probs"]]
    np.testing.assert_allclose(values, 1.0, rtol=0, atol=1e-12)


def test_compare_counts_real_tokens_only():
    rng = np.random.default_rng(0)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    hidden = rng.normal(size=(2, 3, 4))
    noisy = hidden + rng.normal(size=hidden.shape) * (1 - mask)[..., None]  # padding differs
    hidden[1, 0], noisy[1, 0] = [3, 0, 0, 0], [1, 1, 0, 0]  # cosine 1/sqrt(2)
    probs = rng.uniform(size=(2, 2, 3, 3))
    padded = probs.copy()
    padded[:, :, 2, :] += 1  # padded queries and keys differ
    padded[:, :, :, 2] += 1
    padded[1, :, 1, :] += 1
    report = quantize.compare({"embeddings": hidden, "hidden_states": [hidden, hidden],
                               "attention_probs": [probs]},
                              {"embeddings": hidden, "hidden_states": [hidden, noisy],
                               "attention_probs": [padded]}, mask)
    assert report["embeddings"] == pytest.approx(1.0, abs=1e-12)
    assert report["hidden_states"] == pytest.approx([1.0, (1 + 2 ** -0.5) / 2], abs=1e-12)
    assert report["attention_probs"] == pytest.approx([1.0], abs=1e-12)
    assert report["worst"] == pytest.approx((1 + 2 ** -0.5) / 2, abs=1e-12)


def test_load_preset_int8_prints_its_fidelity_and_warns_below_the_bound(tmp_path, capsys,
                                                                        monkeypatch):
    preset = tiny.write_teacher(tmp_path / "teacher", num_classes=3)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        teacher = dtypes.load_preset(keras_hub.models.TextClassifier, preset, "int8",
                                     preprocessor=None)
    assert not [w for w in caught if "quantize" in str(w.message)]
    out, err = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if ln.startswith("Int8 teacher")]
    assert len(lines) == 1 and re.search(r"hidden states (0\.99\d\d|1\.0000),", lines[0]), out
    assert "logits" in lines[0] and "over 4 probe sequences" in lines[0]
    assert "Warning" not in err
    assert keras.backend.standardize_dtype(teacher.output_dense.kernel.dtype) == "int8"
    monkeypatch.setattr(quantize, "BOUND", 1.0 + 1e-9)  # no int8 teacher reaches it
    dtypes.load_preset(keras_hub.models.Backbone, preset, "int8")
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("Warning: the int8 teacher")] == [
        err.strip()]


def test_masked_lm_teacher_quantizes_its_tied_output_embedding():
    reference = keras_hub.models.BertMaskedLM(tiny.backbone(seed=0), preprocessor=None)
    teacher = quantize.quantize_teacher(
        keras_hub.models.BertMaskedLM(tiny.backbone(seed=0), preprocessor=None))
    x = dict(tiny.inputs(), mask_positions=np.tile(np.arange(3, dtype="int32"), (4, 1)))
    report = quantize.fidelity(reference, teacher, x)
    assert 0.99 < report["logits"] < 1.0


@pytest.mark.parametrize("recipe,jit", [("tinybert_general", False), ("minilm_v2", True)])
def test_distiller_with_an_int8_teacher_trains_only_the_student(recipe, jit):
    _, teacher = _pair()
    student = tiny.backbone(num_layers=2, hidden_dim=16, seed=1)
    overrides = {"relation_heads": 4} if recipe == "minilm_v2" else {}  # divides 16 and 32
    d = tinybert_tf.Distiller(teacher, student, recipes.get(recipe, **overrides))
    t0, s0 = _weights(teacher), _weights(student)
    d.compile(optimizer=keras.optimizers.AdamW(1e-3), jit_compile=jit)
    history = d.fit(tiny.dataset(steps=2), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for a, b in zip(t0, _weights(teacher)):
        np.testing.assert_array_equal(a, b)  # bit-identical
    changed = {v.path for v, a, b in zip(student.weights, s0, _weights(student))
               if np.abs(a - b).max() > 0}
    # What the recipe's terms read moves: TinyBERT every weight but the pooler, MiniLM v2 the
    # embeddings and the last layer's query/key/value projections (its relations).
    last = "transformer_layer_1/self_attention_layer"
    read = ({v.path for v in student.weights} - {"pooled_dense/kernel", "pooled_dense/bias"}
            if recipe == "tinybert_general" else
            {"token_embedding/embeddings"} | {f"{last}/{p}/kernel" for p in ("query", "key",
                                                                            "value")})
    assert read <= changed, sorted(read - changed)
    assert {keras.backend.standardize_dtype(v.dtype) for v in student.weights} == {"float32"}
    trainable = {id(v) for v in d.trainable_variables}
    assert not any(id(v) in trainable for v in teacher.weights)


def test_validate_accepts_int8_and_the_student_is_never_int8():
    def config(teacher_dtype, student="tiny_2l_32h", mode="general_distill"):
        return ml_collections.ConfigDict(dict(teacher_dtype=teacher_dtype, student=student,
                                              mode=mode))

    for value in ("int8", "auto", "", "bfloat16", "float32"):
        validate.check_teacher_dtype(config(value))
    validate.check_teacher_dtype(config("int8", "from_teacher:2", mode="finetune"))
    with pytest.raises(LaunchError, match="teacher_dtype=int8 quantises"):
        validate.check_teacher_dtype(config("int8", "from_teacher:2"))
    with pytest.raises(LaunchError, match="Unknown teacher_dtype 'int4'"):
        validate.check_teacher_dtype(config("int4"))
    with pytest.raises(LaunchError, match="Unknown precision 'int8'"):
        strategy.check_precision("int8")


def test_auto_picks_int8_only_for_teacher_steps_and_an_int8_teacher_turns_jit_on():
    flags = frozenset({"avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})
    assert hardware.resolve("auto", "auto", "auto", "cpu", flags)[:3] == (
        "mixed_bfloat16", "bfloat16", "fusible")
    assert hardware.resolve("auto", "auto", "auto", "cpu", flags, teacher_steps=True)[:3] == (
        "float32", "int8", True)
    resolved = hardware.resolve("mixed_bfloat16", "int8", "auto", "cpu", flags)
    assert resolved[:3] == ("mixed_bfloat16", "int8", True) and "int8 teacher" in resolved[3]
    assert hardware.resolve("float32", "int8", "False", "cpu", flags)[2] is False


@pytest.mark.slow
def test_general_distill_with_an_int8_teacher_prints_its_fidelity(tmp_path, capsys):
    from tinybert_tf.launch import config_lib, modes

    teacher = tiny.write_teacher(tmp_path / "teacher")
    # One device: under the suite's two-CPU MirroredStrategy XLA is off whatever the teacher.
    c = config_lib.load("general_distill", "tiny", teacher=teacher, teacher_dtype="int8",
                        strategy="cpu", jit_compile="auto",
                        **{"data.train": tiny.write_corpus(tmp_path / "c")})
    out = modes.run(c, str(tmp_path / "run"))
    printed = capsys.readouterr().out
    assert "teacher int8, jit_compile True" in printed
    assert len([ln for ln in printed.splitlines() if ln.startswith("Int8 teacher:")]) == 1
    student = keras_hub.models.Backbone.from_preset(out)
    assert {keras.backend.standardize_dtype(v.dtype) for v in student.weights} == {"float32"}


JAX_CHECK = """
import numpy as np, keras, tiny
from tinybert_tf.distill import quantize
reference, teacher = (tiny.backbone(num_layers=2, seed=0) for _ in range(2))
quantize.quantize_teacher(teacher)
report = quantize.fidelity(reference, teacher, tiny.inputs())
kernel = teacher.transformer_layers[0]._feedforward_output_dense.kernel
assert keras.backend.backend() == "jax" and keras.backend.standardize_dtype(kernel.dtype) == "int8"
assert len(report["hidden_states"]) == 2 and 0.99 < report["worst"] < 1.0, report
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
@pytest.mark.slow
def test_int8_teacher_features_on_jax():
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", JAX_CHECK], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
