"""The Distiller's JAX step (tinybert_tf.distill.jax_step) matches the TensorFlow step.

The Keras backend is fixed per process, so each backend runs this file as a script in a subprocess
(`KERAS_BACKEND=tensorflow|jax`) on the same tiny teacher/student weights (written here to an .npz),
dropout off: the evaluation loss, one SGD step (loss and updated student + projection weights) and
one AdamW step with weight decay (the student's pooler, which no term reaches, must stay unchanged
on both backends) agree to 1e-5.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5


def build_models():
    from tests import tiny

    teacher = tiny.backbone(num_layers=4, hidden_dim=32, dropout=0.0, seed=0)
    student = tiny.backbone(num_layers=2, hidden_dim=16, intermediate_dim=32, dropout=0.0, seed=1)
    return teacher, student


def _distiller(weights, optimizer):
    from tinybert_tf import Distiller

    teacher, student = build_models()
    teacher.set_weights([weights[f"teacher_{i}"] for i in range(len(teacher.weights))])
    student.set_weights([weights[f"student_{i}"] for i in range(len(student.weights))])
    distiller = Distiller(teacher, student, "tinybert_general")
    distiller.projections[0].set_weights([weights["proj_0"], weights["proj_1"]])
    distiller.compile(optimizer=optimizer)
    return distiller


def _trained(distiller):
    return [w.numpy() if hasattr(w, "numpy") else np.asarray(w) for w in
            distiller.student.weights + distiller.projections[0].weights]


def worker(weights_path, out_path):
    """Runs in a subprocess under one backend; writes its results to `out_path`."""
    import keras

    from tests import tiny

    weights = dict(np.load(weights_path))
    x = tiny.inputs(batch=4, seq=12)
    out = {"backend": np.array(keras.backend.backend())}
    sgd = _distiller(weights, keras.optimizers.SGD(learning_rate=0.5))
    out["eval_loss"] = np.float64(sgd.test_on_batch(x, return_dict=True)["loss"])
    out["sgd_loss"] = np.float64(sgd.train_on_batch(x, return_dict=True)["loss"])
    for i, w in enumerate(_trained(sgd)):
        out[f"sgd_{i}"] = np.asarray(keras.ops.convert_to_numpy(w))
    # epsilon 1e-3: Adam's first step is lr * g / (|g| + eps), which turns float32 round-off in a
    # tiny gradient (~1e-9) into lr/eps times as much in the weights (1e-4 with the default 1e-7).
    adamw = _distiller(
        weights, keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=0.1, epsilon=1e-3)
    )
    out["adamw_loss"] = np.float64(adamw.train_on_batch(x, return_dict=True)["loss"])
    for i, w in enumerate(_trained(adamw)):
        out[f"adamw_{i}"] = np.asarray(keras.ops.convert_to_numpy(w))
    pooler = [keras.ops.convert_to_numpy(w) for w in adamw.student.pooled_dense.weights]
    out["pooler_kernel"], out["pooler_bias"] = pooler
    np.savez(out_path, **out)


def _run(backend, weights_path, out_path):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), weights_path, out_path],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"{backend} worker failed:\n{proc.stderr[-4000:]}"
    result = dict(np.load(out_path))
    assert str(result["backend"]) == backend
    return result


def _index(model, variable):
    return [i for i, w in enumerate(model.weights) if w is variable][0]


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed (pip install jax jaxlib); the JAX step cannot run",
)
@pytest.mark.slow
def test_jax_step_matches_tensorflow(tmp_path):
    from tests import tiny
    from tinybert_tf import Distiller

    teacher, student = build_models()

    proj = Distiller(teacher, student, "tinybert_general").projections[0]
    rng = np.random.default_rng(0)
    weights = {f"teacher_{i}": w.numpy() for i, w in enumerate(teacher.weights)}
    weights.update({f"student_{i}": w.numpy() for i, w in enumerate(student.weights)})
    # A non-zero bias so that its update is visible too.
    weights["proj_0"] = proj.kernel.numpy()
    weights["proj_1"] = rng.normal(0, 0.1, proj.bias.shape).astype("float32")
    weights_path = str(tmp_path / "weights.npz")
    np.savez(weights_path, **weights)

    tf_out = _run("tensorflow", weights_path, str(tmp_path / "tf.npz"))
    jax_out = _run("jax", weights_path, str(tmp_path / "jax.npz"))

    for key in ("eval_loss", "sgd_loss", "adamw_loss"):
        np.testing.assert_allclose(jax_out[key], tf_out[key], rtol=TOL, atol=TOL, err_msg=key)
    keys = [k for k in tf_out if k.startswith(("sgd_", "adamw_")) and k[-1].isdigit()]
    assert len(keys) == 2 * (len(student.weights) + 2)
    # Keras' TF Adam receives the gathered embedding tables' gradients as IndexedSlices and squares
    # each slice, so a row looked up more than once per batch gets v = sum(g_i^2) instead of
    # (sum g_i)^2; JAX (dense gradients) follows the Adam formula. Those rows are compared for SGD
    # (linear in the gradient) but not for AdamW.
    x = tiny.inputs(batch=4, seq=12)
    gathered = {
        _index(student, student.token_embedding.embeddings): x["token_ids"],
        _index(student, student.segment_embedding.embeddings): x["segment_ids"],
    }
    for key in keys:
        want, got = tf_out[key], jax_out[key]
        index = int(key.split("_")[1])
        if key.startswith("adamw_") and index in gathered:
            counts = np.bincount(gathered[index].ravel(), minlength=want.shape[0])
            want, got = want[counts <= 1], got[counts <= 1]
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL, err_msg=key)
    # The step did change the student, and left the unreached pooler alone (no weight decay).
    assert not np.allclose(tf_out["sgd_0"], weights["student_0"])
    pooler = _index(student, student.pooled_dense.kernel)
    np.testing.assert_array_equal(jax_out["pooler_kernel"], weights[f"student_{pooler}"])
    np.testing.assert_array_equal(tf_out["pooler_kernel"], weights[f"student_{pooler}"])


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    worker(sys.argv[1], sys.argv[2])
