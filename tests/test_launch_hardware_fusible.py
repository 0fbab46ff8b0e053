"""jit_compile="fusible": TensorFlow's auto-clustering with only the element-wise ops XLA can fuse,
the matmuls left to TensorFlow's own (oneDNN) kernels (`launch.hardware`). Clusters really form
(the graph TensorFlow ran holds `_XlaRun` nodes), the matmuls stay outside them, the distillation
losses and the student's gradients match the unclustered step within the precision's tolerance,
and a run leaves the caller's setting as it was."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny
from tensorflow.python.eager import context

from tinybert_tf import Distiller
from tinybert_tf.distill import students
from tinybert_tf.launch import config_lib, global_state, hardware


def _distiller(policy, teacher_policy):
    keras.mixed_precision.set_global_policy("float32")
    teacher = tiny.backbone(num_layers=4, dtype=teacher_policy)
    student = students.build("tiny_2l_32h", teacher=teacher, dtype=policy)
    return Distiller(teacher, student, "tinybert_general")


def _loss_and_grads(model, x, clustered):
    """Loss terms and student gradients of one forward/backward, as TensorFlow ran them with
    auto-clustering on or off, and the op types of the graphs it ran."""
    hardware.set_clustering("fusible" if clustered else False)
    variables = model.student.trainable_variables

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            terms = model.compute_terms(x, None, None, model.teacher_features(x),
                                        model.student_features(x, training=False))
        return terms, tape.gradient(terms["loss"], variables)

    context.context().enable_run_metadata()
    try:
        terms, grads = step(x)
        ran = context.context().export_run_metadata()
    finally:
        context.context().disable_run_metadata()
        hardware.set_clustering(False)
    ops = {node.op for graph in ran.partition_graphs for node in graph.node}
    return ({k: float(v) for k, v in terms.items()},
            [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads], ops)


@pytest.mark.parametrize("policy, teacher_policy, rtol", [
    ("float32", "float32", 1e-4), ("mixed_bfloat16", "bfloat16", 5e-2)])
def test_clustered_step_matches_the_unclustered_one(policy, teacher_policy, rtol):
    model = _distiller(policy, teacher_policy)
    x = {k: tf.constant(v) for k, v in tiny.inputs(batch=4, seq=12).items()}
    plain_terms, plain_grads, plain_ops = _loss_and_grads(model, x, clustered=False)
    terms, grads, ops = _loss_and_grads(model, x, clustered=True)
    assert "_XlaRun" in ops and "_XlaRun" not in plain_ops, sorted(ops)
    # the matmuls ran on TensorFlow's kernels outside the clusters (oneDNN's _Mkl* where on)
    assert any("MatMul" in op for op in ops), sorted(ops)
    assert plain_terms.keys() == terms.keys()
    for key, value in plain_terms.items():
        np.testing.assert_allclose(terms[key], value, rtol=rtol, atol=1e-6, err_msg=key)
    assert [g is None for g in grads] == [g is None for g in plain_grads]
    pairs = [(got, want) for got, want in zip(grads, plain_grads) if want is not None]
    scale = max(np.abs(want).max() for _, want in pairs)
    for got, want in pairs:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
    assert tf.config.optimizer.get_jit() == ""


def test_a_run_turns_clustering_on_for_fusible_and_puts_the_callers_setting_back(tmp_path):
    from tinybert_tf.launch.modes import resolve_auto

    c = config_lib.load("general_distill", "tiny", jit_compile="fusible")
    choice = type("Choice", (), {"kind": "cpu", "strategy": "cpu", "devices": ["cpu:0"]})()
    assert resolve_auto(c, choice).jit_compile == "fusible"
    tf.config.optimizer.set_jit(False)
    with global_state.preserved():
        hardware.set_clustering("fusible")
        assert tf.config.optimizer.get_jit() == "autoclustering"
    assert tf.config.optimizer.get_jit() == ""
    tf.config.optimizer.set_jit("autoclustering")
    with global_state.preserved():
        hardware.set_clustering(True)  # a whole-step XLA compile: no auto-clustering beside it
        assert tf.config.optimizer.get_jit() == ""
    assert tf.config.optimizer.get_jit() == "autoclustering"
    tf.config.optimizer.set_jit(False)


def test_only_distillation_steps_with_a_separate_student_may_get_an_int8_teacher():
    from tinybert_tf.launch.modes import _teacher_steps

    def config(mode, student):
        return config_lib.load(mode if mode != "finetune" else "task_distill", mode=mode,
                               student=student)

    assert _teacher_steps(config("general_distill", "tinybert_4l_312h"))
    assert _teacher_steps(config("task_distill", "tinybert_4l_312h"))
    assert not _teacher_steps(config("general_distill", "from_teacher:2"))
    assert not _teacher_steps(config("finetune", "tinybert_4l_312h"))
