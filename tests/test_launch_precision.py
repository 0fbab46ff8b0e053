"""Every training mode end to end under the precisions users run: mixed_bfloat16 with a bfloat16
teacher and XLA's element-wise clusters (what `auto` picks on bf16 CPUs) and mixed_float16. The
loss falls, the trained weights moved, every preset stores float32 and loads with plain keras-hub
in a fresh process (one for all, the file's last test) and, the bf16 run's, under every other
precision through the package's loaders."""

import json
import os
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf.launch import builders, config_lib, train
from tinybert_tf.launch.modes import run as run_mode

pytestmark = pytest.mark.slow

RUNS = {"bf16": {"precision": "mixed_bfloat16", "teacher_dtype": "bfloat16",
                 "jit_compile": "fusible"},
        "fp16": {"precision": "mixed_float16", "teacher_dtype": ""}}
LOADS = (("float32", ""), ("mixed_bfloat16", ""), ("mixed_bfloat16", "bfloat16"),
         ("mixed_float16", ""))


def _config(name, variant="tiny", **overrides):
    return config_lib.load(name, variant, **overrides)


def _losses(run_dir, key="loss"):
    return [r[key] for r in train.read_metrics(str(run_dir)) if key in r]


def _stored_policy(preset):
    with open(os.path.join(preset, "config.json")) as f:
        dtype = json.load(f)["config"]["dtype"]
    return dtype["config"]["name"] if isinstance(dtype, dict) else dtype


# (preset, keras-hub class) of every preset the runs write: the file's last test loads them all
# in one fresh process (a file runs in order, on one worker).
WRITTEN = []


def _plain_keras_hub_loads(*presets):
    """Each (preset, class) loads with plain keras-hub, all in one fresh process that never
    imports tinybert_tf; every weight of each is float32."""
    code = ("import json, sys, keras_hub\n"
            "dtypes = []\n"
            "for path, cls in zip(sys.argv[1::2], sys.argv[2::2]):\n"
            "    m = getattr(keras_hub.models, cls).from_preset(path)\n"
            "    assert 'tinybert_tf' not in sys.modules\n"
            "    dtypes.append(sorted({v.dtype for v in m.weights}))\n"
            "print(json.dumps(dtypes))")
    args = [arg for preset in presets for arg in preset]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [["float32"]] * len(presets), done.stdout


def _loads_under_every_precision(preset, x):
    outputs = []
    for precision, teacher_dtype in LOADS:
        keras.mixed_precision.set_global_policy(precision)
        model = builders.load_classifier(preset, dtype=teacher_dtype)
        outputs.append(np.asarray(model.predict(x, verbose=0), np.float32))
    keras.mixed_precision.set_global_policy("float32")
    for out in outputs[1:]:  # reduced-precision compute of the same float32 weights
        np.testing.assert_allclose(out, outputs[0], rtol=0.2, atol=0.1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("precision")
    return {"dir": d, "teacher": tiny.write_teacher(d / "pre"), "corpus": tiny.write_corpus(d / "c.txt"),
            "task": {"task": "file", "data.train_file": tiny.write_task(d / "train.tsv", 96, 0),
                     "data.eval_file": tiny.write_task(d / "dev.tsv", 32, 1),
                     "log_every": 8, "checkpoint_every": 8}}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_general_distillation_trains_float32_students(files, tmp_path, run):
    students = []
    for recipe in ("tinybert_general", "distilbert"):
        teacher = files["teacher"]
        if recipe == "distilbert":  # a masked-LM teacher; the student is cut from its layers
            mlm = keras_hub.models.BertMaskedLM(tiny.backbone(num_layers=4, max_sequence_length=32),
                                                preprocessor=None)
            teacher = builders.save_model(mlm, tiny.tokenizer(), str(tmp_path / "mlm"))
        workdir = tmp_path / recipe
        c = _config("general_distill", teacher=teacher, recipe=recipe, steps=24, save_initial=True,
                    student="from_teacher:2" if recipe == "distilbert" else "tiny_2l_32h",
                    **{**RUNS[run], "optimizer.learning_rate": 3e-3, "data.train": files["corpus"]})
        out = run_mode(c, str(workdir))
        losses = _losses(workdir)
        assert min(losses[-3:]) < losses[0], losses
        assert _stored_policy(out) == "float32"
        students.append((out, "Backbone"))
        before = keras_hub.models.Backbone.from_preset(str(workdir / "student_init"))
        after = keras_hub.models.Backbone.from_preset(out)
        moved = [np.abs(a.numpy() - b.numpy()).max() for a, b in zip(before.weights, after.weights)]
        assert max(moved) > 1e-3 and {w.dtype for w in after.weights} == {"float32"}
    WRITTEN.extend(students)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_finetune_then_task_distill_learn_and_reload(files, tmp_path, run):
    """The scenario of a bf16 CPU: a teacher fine-tuned under the run's precision, a student cut
    from it (from_teacher:2) distilled on its soft targets + labels; then the same presets read
    back under float32 with the teacher at the run's precision."""
    task, x = files["task"], tiny.inputs(batch=8, seq=16)
    ft = _config("task_distill", mode="finetune", teacher=files["teacher"], **task, **RUNS[run],
                 **{"finetune.learning_rate": 3e-3, "finetune.epochs": 4})
    teacher = run_mode(ft, str(tmp_path / "ft"))
    assert _losses(tmp_path / "ft" / "finetune")[-1] < _losses(tmp_path / "ft" / "finetune")[0]
    td = _config("task_distill", mode="task_distill", teacher=teacher, student="from_teacher:2",
                 **task, **RUNS[run], **{"prediction.hard_weight": 1.0, "prediction.epochs": 3,
                                         "prediction.learning_rate": 3e-3,
                                         "intermediate.epochs": 2,
                                         "intermediate.learning_rate": 3e-3})
    student = run_mode(td, str(tmp_path / "td"))
    for stage in ("intermediate", "prediction"):
        losses = _losses(tmp_path / "td" / stage)
        assert min(losses[-3:]) < losses[0], (stage, losses)
    with open(tmp_path / "td" / "prediction" / "selection.json") as f:
        assert json.load(f)["best"]["value"] > 0.5  # two balanced classes: chance is 0.5
    cut = builders.load_classifier(teacher)  # the teacher's layers 0 and 2 were the start
    trained = builders.load_classifier(student)
    assert np.abs(cut.backbone.transformer_layers[2].weights[0].numpy()
                  - trained.backbone.transformer_layers[1].weights[0].numpy()).max() > 1e-3
    for preset in (teacher, teacher + "_last", student, student + "_last",
                   str(tmp_path / "td" / "intermediate" / "student")):
        assert _stored_policy(preset) == "float32", preset
    WRITTEN.extend([(teacher, "TextClassifier"), (student, "TextClassifier")])
    if run == "bf16":  # both runs store float32 presets (above), read back alike: once is enough
        _loads_under_every_precision(teacher, x)
        _loads_under_every_precision(student, x)
    again = _config("task_distill", mode="task_distill", teacher=teacher, student=student,
                    stages="prediction", **task, precision="float32", teacher_dtype="")
    assert _stored_policy(run_mode(again, str(tmp_path / "fp32"))) == "float32"


def test_presets_load_with_plain_keras_hub():
    """Every preset the runs above wrote loads with plain keras-hub in one fresh process, its
    weights float32 (the runs of a selection of this file's tests only: theirs)."""
    if not WRITTEN:
        pytest.skip("no run above wrote a preset in this session")
    _plain_keras_hub_loads(*WRITTEN)
