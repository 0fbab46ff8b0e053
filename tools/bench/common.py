"""What the benchmark modules share: the precision variants (teacher / student dtype policies),
the backbones they build, medians and teacher-feature errors."""

from __future__ import annotations

import statistics

# Teacher / student dtype policies of each precision.
POLICIES = {
    "fp32": ("float32", "float32"),
    "bf16": ("bfloat16", "mixed_bfloat16"),
    "mixed": ("mixed_bfloat16", "mixed_bfloat16"),
    "bf16t": ("bfloat16", "float32"),  # only the teacher in bfloat16
    "mixedt": ("mixed_bfloat16", "float32"),
    # teacher_dtype=int8: a float32 teacher with int8 kernels (`tinybert_tf.distill.quantize`)
    "int8": ("int8", "mixed_bfloat16"),
    "int8t": ("int8", "float32"),
}


def parse_variant(name):
    """'bf16_xla_spe4' -> precision 'bf16', jit True, steps_per_execution 4; '_fus' -> jit
    "fusible" (XLA clusters of element-wise ops, matmuls on oneDNN: `launch.hardware`)."""
    parts = name.split("_")
    precision, jit, spe = parts[0], False, 1
    if precision not in POLICIES:
        raise ValueError(f"Unknown variant {name!r}: start with one of {sorted(POLICIES)}.")
    for part in parts[1:]:
        if part == "xla":
            jit = True
        elif part == "fus":
            jit = "fusible"
        elif part.startswith("spe") and part[3:].isdigit():
            spe = int(part[3:])
        else:
            raise ValueError(f"Unknown variant part {part!r} in {name!r}.")
    return precision, jit, spe


def auto_variant(kind="cpu", flags=None, teacher_steps=True):
    """The variant name of what the launcher's precision/teacher_dtype/jit_compile = auto pick
    here (`tinybert_tf.launch.hardware.resolve`) for steps that run a teacher (distillation) or,
    `teacher_steps=False`, for fine-tuning; and its one-line reason."""
    from tinybert_tf.launch import hardware

    flags = hardware.cpu_flags() if flags is None else flags
    precision, teacher_dtype, jit, reason = hardware.resolve("auto", "auto", "auto", kind, flags,
                                                             teacher_steps=teacher_steps)
    student = "t" if precision == "float32" else ""
    if teacher_dtype == "int8":
        name = "int8" + student
    elif precision == "float32" and teacher_dtype in ("", "float32"):
        name = "fp32"
    elif precision == "mixed_bfloat16" and teacher_dtype == "bfloat16":
        name = "bf16"
    else:
        name = "mixed"
    return name + variant_suffix(jit), reason


def keras_jit(jit):
    """Keras' jit_compile for a variant's jit (True, False or "fusible"), with TensorFlow's
    auto-clustering set to match: on for "fusible" (the process's TF_XLA_FLAGS allow element-wise
    clusters: `hardware.enable_onednn`), off otherwise."""
    import keras

    if keras.backend.backend() == "tensorflow":
        from tinybert_tf.launch import hardware

        hardware.set_clustering(jit)
    return jit is True


def variant_suffix(jit):
    return {True: "_xla", "fusible": "_fus"}.get(jit, "")


def build_backbones(vocab, max_len, teacher_arch, student_arch, precision="fp32"):
    """(teacher, student) keras-hub backbones of one precision (a POLICIES name), random weights;
    the student is `tinybert_tf.distill.students.build` of `student_arch` beside the teacher.
    An int8 teacher is built in float32: `quantize_if_int8` after its weights are set."""
    import keras_hub

    from tinybert_tf.distill import students

    t_dtype, s_dtype = POLICIES[precision]
    teacher = keras_hub.models.BertBackbone(
        vocabulary_size=vocab, max_sequence_length=max(512, max_len),
        dtype="float32" if t_dtype == "int8" else t_dtype, **teacher_arch,
    )
    return teacher, students.build(student_arch, teacher=teacher, dtype=s_dtype)


def quantize_if_int8(teacher, precision):
    """Quantise the teacher's kernels to int8 (Keras' quantize) when `precision` asks for it."""
    if POLICIES[precision][0] == "int8":
        from tinybert_tf.distill import quantize

        quantize.quantize_teacher(teacher)


def median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def rel_error(approx, exact):
    """mean|approx - exact| / mean|exact| of one feature tensor (numpy)."""
    import numpy as np

    a, e = np.asarray(approx, "float64"), np.asarray(exact, "float64")
    return float(np.mean(np.abs(a - e)) / max(np.mean(np.abs(e)), 1e-30))


def feature_errors(approx, exact):
    """Relative errors over embeddings, every hidden state and every attention-score tensor."""
    errors = [rel_error(approx["embeddings"], exact["embeddings"])]
    for key in ("hidden_states", "attention_scores"):
        errors += [rel_error(a, e) for a, e in zip(approx[key], exact[key])]
    return {"teacher_rel_err": float(sum(errors) / len(errors)), "teacher_rel_err_max": max(errors)}
