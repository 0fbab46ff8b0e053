"""The precision rule: float32 trainable weights under every policy, presets with a plain float
dtype, any preset loading under any precision (distill.dtypes and the places that use it)."""

import json
import os
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf.distill import dtypes, students
from tinybert_tf.distill.distiller import Distiller
from tinybert_tf.launch import builders

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def _stored_policy(preset, name="config.json"):
    with open(os.path.join(preset, name)) as f:
        config = json.load(f)
    dtype = config["config"]["dtype"]
    return dtype["config"]["name"] if isinstance(dtype, dict) else dtype


def _mixed_preset(path):
    """What Keras writes under mixed_bfloat16 with a plain save_to_preset: a stored mixed policy
    (presets written before the rule; keras-hub's from_preset refuses them without dtype=)."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = tiny.classifier(tiny.backbone(seed=1), num_classes=3)
    model.save_to_preset(str(path))
    tiny.tokenizer().save_to_preset(str(path))
    keras.mixed_precision.set_global_policy("float32")
    assert _stored_policy(str(path)) == "mixed_bfloat16"
    return str(path), [w.numpy() for w in model.weights]


def test_plain_policy_maps_mixed_to_its_variable_dtype():
    serialized = keras.saving.serialize_keras_object(keras.DTypePolicy("mixed_float16"))
    assert dtypes.plain_policy(serialized)["config"]["name"] == "float32"
    assert dtypes.plain_policy("mixed_bfloat16") == "float32"
    for kept in ("float32", "bfloat16", "int32", None):
        assert dtypes.plain_policy(kept) == kept


def test_save_preset_stores_float32_and_plain_keras_hub_loads_it(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = tiny.classifier(tiny.backbone(), num_classes=3)
    assert model.backbone.dtype_policy.name == "mixed_bfloat16"
    dtypes.save_preset(model, str(tmp_path))
    tiny.tokenizer().save_to_preset(str(tmp_path))
    assert _stored_policy(str(tmp_path)) == "float32"
    with open(tmp_path / "task.json") as f:
        assert "mixed_" not in f.read()
    keras.mixed_precision.set_global_policy("float32")
    reloaded = keras_hub.models.TextClassifier.from_preset(str(tmp_path), preprocessor=None)
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_stored_mixed_policy_loads_under_every_precision(tmp_path, precision):
    preset, weights = _mixed_preset(tmp_path / "p")
    with pytest.raises(ValueError, match="Invalid dtype"):  # what plain keras-hub does with it
        keras_hub.models.TextClassifier.from_preset(preset, preprocessor=None)
    keras.mixed_precision.set_global_policy(precision)
    model = builders.load_classifier(preset)
    assert model.dtype_policy.name == precision and model.backbone.dtype_policy.name == precision
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    for a, b in zip(weights, model.weights):
        np.testing.assert_array_equal(a, b.numpy())
    teacher = builders.load_classifier(preset, dtype="bfloat16")  # a frozen bf16 teacher
    assert {v.dtype for v in teacher.weights if v.dtype != "int64"} <= {"bfloat16", "int32"}


def test_init_from_teacher_takes_the_run_policy_not_the_teachers():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    teacher = tiny.backbone(num_layers=4, dtype="bfloat16")
    student = students.init_from_teacher(teacher, 2)
    assert student.dtype_policy.name == "mixed_bfloat16"
    assert {v.dtype for v in student.trainable_variables} == {"float32"}
    out = student(tiny.inputs())["sequence_output"]
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"  # bf16 compute
    # The copied weights are the teacher's (bf16 values, widened exactly).
    np.testing.assert_array_equal(
        np.asarray(teacher.transformer_layers[2].weights[0].numpy(), np.float32),
        student.transformer_layers[1].weights[0].numpy())


def test_a_low_precision_trainable_variable_is_refused_at_compile():
    teacher = tiny.classifier(tiny.backbone(num_layers=4, dtype="bfloat16"), num_classes=3)
    student = tiny.classifier(tiny.backbone(dtype="bfloat16"), num_classes=3)
    assert dtypes.low_precision_trainables(student)
    d = Distiller(teacher, student, "tinybert_task_prediction")
    with pytest.raises(ValueError, match="trainable variables are bfloat16 .*must be float32"):
        d.compile(optimizer=keras.optimizers.AdamW(1e-3))
    fine = tiny.classifier(tiny.backbone(), num_classes=3)
    Distiller(teacher, fine, "tinybert_task_prediction").compile(optimizer="adam")  # a bf16 teacher is fine
    assert dtypes.low_precision_trainables(fine) == []


def test_a_mixed_preset_written_by_the_package_loads_in_a_fresh_keras_hub_process(tmp_path):
    """builders.save_model under mixed_bfloat16 -> plain keras-hub, no tinybert_tf imported."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = tiny.classifier(tiny.backbone(), num_classes=3)
    builders.save_model(model, tiny.tokenizer(), str(tmp_path / "s"))
    code = ("import sys, keras_hub; m = keras_hub.models.TextClassifier.from_preset(sys.argv[1]); "
            "assert 'tinybert_tf' not in sys.modules; "
            "print(m.dtype_policy.name, sorted({v.dtype for v in m.weights}))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["float32", "['float32']"], done.stdout
