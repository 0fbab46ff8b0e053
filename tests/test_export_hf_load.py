"""Hugging Face BERT task dirs as teachers (`export/hf_load.py`, hooked into `launch/builders.py`
and `launch/teachers.py`): students exported by `export/hf.py` load back with the same logits and
label names; a checkpoint in HF's layout written here loads with exactly its head weights; one
that transformers wrote gives transformers' logits; task_distill runs from one; a checkpoint
that cannot load is a one-line error."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tiny
from safetensors.numpy import load_file, save_file

from tinybert_tf import main
from tinybert_tf.distill import heads
from tinybert_tf.errors import UserError
from tinybert_tf.export import hf, hf_load
from tinybert_tf.export.labels import preset_labels
from tinybert_tf.launch import builders, config_lib, teachers
from tinybert_tf.launch.modes import run as run_mode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = dict(vocab_size=len(tiny.VOCAB), hidden_size=32, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)


def _write_vocab(path):
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("".join(t + "\n" for t in tiny.VOCAB))


def _encoder_tensors(rng, layers=2, hidden=32, inner=64):
    """HF `BertModel` tensors keyed as transformers names them (`[out, in]` Dense weights)."""
    shapes = {"embeddings.word_embeddings.weight": (len(tiny.VOCAB), hidden),
              "embeddings.position_embeddings.weight": (SIZES["max_position_embeddings"], hidden),
              "embeddings.token_type_embeddings.weight": (2, hidden),
              "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,),
              "pooler.dense.weight": (hidden, hidden), "pooler.dense.bias": (hidden,)}
    for i in range(layers):
        block = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            shapes.update({f"{block}{name}.weight": (hidden, hidden), f"{block}{name}.bias": (hidden,)})
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes.update({f"{block}{name}.weight": (hidden,), f"{block}{name}.bias": (hidden,)})
        shapes.update({f"{block}intermediate.dense.weight": (inner, hidden),
                       f"{block}intermediate.dense.bias": (inner,),
                       f"{block}output.dense.weight": (hidden, inner),
                       f"{block}output.dense.bias": (hidden,)})
    return {k: rng.normal(0.0, 0.2, s).astype(np.float32) for k, s in shapes.items()}


def write_hf_dir(path, labels, arch="BertForSequenceClassification", seed=0, layers=2, **config):
    """An HF task dir in transformers' layout: `bert.*` encoder (no pooler for a token
    classifier), `classifier.weight` [C, H] / `classifier.bias` [C], id2label, vocab.txt."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {"bert." + k: v for k, v in _encoder_tensors(rng, layers).items()
               if arch != "BertForTokenClassification" or not k.startswith("pooler.")}
    tensors["classifier.weight"] = rng.normal(0.0, 0.5, (len(labels), 32)).astype(np.float32)
    tensors["classifier.bias"] = rng.normal(0.0, 0.5, (len(labels),)).astype(np.float32)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    cfg = {"architectures": [arch], "model_type": "bert", **SIZES, "num_hidden_layers": layers,
           "type_vocab_size": 2, "hidden_act": "gelu_new", "hidden_dropout_prob": 0.1,
           "attention_probs_dropout_prob": 0.1, "id2label": {str(i): n for i, n in
                                                             enumerate(labels)},
           "label2id": {n: i for i, n in enumerate(labels)}, **config}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, f)
    _write_vocab(path)
    return str(path), tensors


def _np(x):
    return np.asarray(x, np.float32)


def test_exported_student_classifier_loads_back_with_its_logits_and_labels(tmp_path):
    student = tiny.classifier(tiny.backbone(max_sequence_length=16, seed=3), num_classes=3)
    out = hf.export_hf_checkpoint(student, tiny.tokenizer(), str(tmp_path / "hf"),
                                  labels=["pos", "neg", "mid"])
    x = tiny.inputs()
    loaded = builders.load_classifier(out)
    assert type(loaded).__name__ == "BertTextClassifier"
    np.testing.assert_allclose(_np(loaded(x)), _np(student(x)), atol=1e-5)
    np.testing.assert_allclose(_np(builders.load_task_model(out, "teacher")(x)), _np(student(x)),
                               atol=1e-5)
    assert hf_load.label_names(out) == ["pos", "neg", "mid"]
    assert preset_labels(out) == ["pos", "neg", "mid"] and teachers._num_classes(out) == 3
    text = "the teacher said small models train fast"
    np.testing.assert_array_equal(np.asarray(builders.load_tokenizer(out)(text)),
                                  np.asarray(tiny.tokenizer()(text)))


def test_exported_token_classifier_loads_back_with_its_logits(tmp_path):
    """hf.py writes sequence classifiers only: the token layout is written here from its
    encoder table (`backbone_state_dict`) plus `classifier.*`, without a pooler, as HF has it."""
    student = heads.TokenClassifier(tiny.backbone(max_sequence_length=16, seed=4), 5)
    out = str(tmp_path / "tok")
    os.makedirs(out)
    state = {k: v for k, v in hf.backbone_state_dict(student.backbone, hf.ENCODER_PREFIX).items()
             if ".pooler." not in k}
    state["classifier.weight"] = _np(student.output_dense.kernel).T.copy()
    state["classifier.bias"] = _np(student.output_dense.bias)
    save_file(state, os.path.join(out, hf.HF_WEIGHTS_FILE))
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    config = {**hf.hf_config(student.backbone), "architectures": [hf.TOKEN_ARCHITECTURE],
              "id2label": {str(i): n for i, n in enumerate(labels)}}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    _write_vocab(out)
    x = tiny.inputs()
    loaded = builders.load_classifier(out, token_level=True)
    assert isinstance(loaded, heads.TokenClassifier)
    np.testing.assert_allclose(_np(loaded(x)), _np(student(x)), atol=1e-5)
    assert hf_load.label_names(out) == labels and preset_labels(out) == labels


def test_hf_layout_written_here_loads_those_exact_head_weights(tmp_path):
    labels = ["zeta", "alpha", "mid"]  # ids 0, 1, 2: not sorted by name
    out, tensors = write_hf_dir(tmp_path / "seq", labels)
    model = builders.load_classifier(out)
    np.testing.assert_array_equal(_np(model.output_dense.kernel), tensors["classifier.weight"].T)
    np.testing.assert_array_equal(_np(model.output_dense.bias), tensors["classifier.bias"])
    pooler = model.backbone.get_layer("pooled_dense")
    np.testing.assert_array_equal(_np(pooler.kernel), tensors["bert.pooler.dense.weight"].T)
    np.testing.assert_array_equal(_np(pooler.bias), tensors["bert.pooler.dense.bias"])
    x = tiny.inputs()
    pooled = _np(model.backbone(x)["pooled_output"])
    np.testing.assert_allclose(_np(model(x)), pooled @ tensors["classifier.weight"].T
                               + tensors["classifier.bias"], atol=1e-5)
    assert hf_load.label_names(out) == labels and preset_labels(out) == labels

    tok_dir, tok = write_hf_dir(tmp_path / "tok", ["O", "B-X"], "BertForTokenClassification")
    token_model = builders.load_task_model(tok_dir, "teacher")
    assert isinstance(token_model, heads.TokenClassifier)
    np.testing.assert_array_equal(_np(token_model.output_dense.kernel), tok["classifier.weight"].T)
    sequence = _np(token_model.backbone(x)["sequence_output"])
    np.testing.assert_allclose(_np(token_model(x)), sequence @ tok["classifier.weight"].T
                               + tok["classifier.bias"], atol=1e-5)


def test_ensemble_of_hf_dirs_is_checked_by_their_id2label(tmp_path):
    a, _ = write_hf_dir(tmp_path / "a", ["neg", "pos"], seed=0)
    b, _ = write_hf_dir(tmp_path / "b", ["neg", "pos"], seed=1)
    c, _ = write_hf_dir(tmp_path / "c", ["pos", "neg"], seed=2)
    teachers.check_compatible([a, b])
    with pytest.raises(UserError, match=r"differ in their label names \(\['neg', 'pos'\] vs "):
        teachers.check_compatible([a, c])
    plain, _ = write_hf_dir(tmp_path / "plain", ["LABEL_0", "LABEL_1"], seed=3)
    assert preset_labels(plain) is None and teachers._num_classes(plain) == 2


def test_encoder_dir_takes_a_new_head_and_refuses_to_be_a_teacher(tmp_path):
    out, tensors = write_hf_dir(tmp_path / "enc", ["a", "b"], "BertForMaskedLM")
    model = builders.load_classifier(out, num_classes=4)
    assert model.output_dense.kernel.shape == (32, 4)
    np.testing.assert_array_equal(_np(model.backbone.get_layer("token_embedding").embeddings),
                                  tensors["bert.embeddings.word_embeddings.weight"])
    assert preset_labels(out) is None and teachers._num_classes(out) is None
    with pytest.raises(UserError, match="without a task head; fine-tune it first") as err:
        builders.load_classifier(out)
    assert "\n" not in str(err.value)


def _one_line_error(call, match):
    with pytest.raises(UserError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_unsupported_architectures_are_one_line_errors_naming_what_loads(tmp_path):
    qa, _ = write_hf_dir(tmp_path / "qa", ["a", "b"], arch="BertForQuestionAnswering")
    _one_line_error(lambda: builders.check_preset(qa, "teacher"),
                    "is a Hugging Face BertForQuestionAnswering .*BertForSequenceClassification "
                    "or BertForTokenClassification")
    roberta, _ = write_hf_dir(tmp_path / "rob", ["a", "b"], arch="RobertaForSequenceClassification",
                              model_type="roberta")
    _one_line_error(lambda: builders.load_classifier(roberta),
                    "RobertaForSequenceClassification \\(model_type 'roberta'\\); pass a BERT")
    relu, _ = write_hf_dir(tmp_path / "relu", ["a", "b"], hidden_act="relu")
    _one_line_error(lambda: builders.check_preset(relu, "teacher"), "hidden_act 'relu'")
    seq, _ = write_hf_dir(tmp_path / "seq", ["a", "b"])
    _one_line_error(lambda: builders.load_classifier(seq, token_level=True),
                    "is a BertForSequenceClassification but the task is token classification")


@pytest.mark.parametrize("change, match", [
    (lambda t: t.pop("classifier.bias"), "has no classifier.bias, which a "
                                          "BertForSequenceClassification needs"),
    (lambda t: t.pop("bert.pooler.dense.weight"), "has no pooler.dense.weight"),
    (lambda t: t.update({"classifier.weight": t["classifier.weight"][:2]}),
     r"classifier.weight is \[2, 32\], config.json says \[3, 32\] \(num_labels 3"),
    (lambda t: t.update({"bert.encoder.layer.1.output.dense.weight": np.zeros((32, 8), "float32")}),
     r"encoder.layer.1.output.dense.weight is \[32, 8\], which does not fit the model"),
])
def test_missing_or_misshaped_weights_are_one_line_errors(tmp_path, change, match):
    out, _ = write_hf_dir(tmp_path / "bad", ["a", "b", "c"])
    tensors = load_file(os.path.join(out, "model.safetensors"))
    change(tensors)
    save_file(tensors, os.path.join(out, "model.safetensors"))
    _one_line_error(lambda: builders.load_classifier(out), match)


def test_pytorch_only_checkpoint_is_a_one_line_error(tmp_path):
    out, _ = write_hf_dir(tmp_path / "bin", ["a", "b"])
    os.rename(os.path.join(out, "model.safetensors"), os.path.join(out, "pytorch_model.bin"))
    _one_line_error(lambda: builders.load_classifier(out), "has no model.safetensors")


@pytest.mark.parametrize("act, atol", [("gelu_new", 1e-4), ("gelu", 5e-3)])
@pytest.mark.parametrize("arch", ["BertForSequenceClassification", "BertForTokenClassification"])
def test_transformers_checkpoint_gives_transformers_logits(tmp_path, arch, act, atol):
    """keras-hub's BERT computes tanh-GELU: `gelu_new` matches transformers to float32 rounding;
    an erf `gelu` checkpoint differs by the two GELUs' gap (at most ~5e-4 per activation; 1.3e-3
    to 1.9e-3 measured on these logits of magnitude ~5), so it gets 5e-3 and the same argmax."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    labels = {0: "pos", 1: "neg", 2: "mid"}
    config = transformers.BertConfig(**SIZES, hidden_act=act, id2label=labels,
                                     initializer_range=0.5)
    model = getattr(transformers, arch)(config).eval()
    out = str(tmp_path / "hf")
    model.save_pretrained(out)
    _write_vocab(out)
    x = tiny.inputs()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(x["token_ids"], dtype=torch.long),
                    token_type_ids=torch.tensor(x["segment_ids"], dtype=torch.long),
                    attention_mask=torch.tensor(x["padding_mask"])).logits.numpy()
    got = _np(builders.load_task_model(out, "teacher")(x))
    if arch == "BertForTokenClassification":  # padded positions are not compared
        real = x["padding_mask"].astype(bool)
        ref, got = ref[real], got[real]
    np.testing.assert_allclose(got, ref, atol=atol)
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))
    assert hf_load.label_names(out) == ["pos", "neg", "mid"]
    text = "The Teacher said smàll models train fast"
    hf_ids = transformers.BertTokenizer(os.path.join(out, "vocab.txt"))(text)["input_ids"]
    assert np.asarray(builders.load_tokenizer(out)(text)).tolist() == hf_ids[1:-1]


@pytest.mark.slow
def test_task_distill_evaluate_export_from_a_hf_teacher_dir(tmp_path, capsys):
    """A HF classifier whose id2label lists the task's labels in another order distils (its
    outputs remapped by name) into a student whose export serves the label names."""
    teacher, _ = write_hf_dir(tmp_path / "hf_teacher", ["pos", "neg"], layers=4)
    data = [f"--config.data.train_file={tiny.write_task(tmp_path / 'train.tsv', 32, 0)}",
            f"--config.data.eval_file={tiny.write_task(tmp_path / 'dev.tsv', 8, 1)}"]
    code = main.launch(["main", "--config=task_distill:tiny", "--config.mode=task_distill",
                        "--config.task=file", *data, f"--config.teacher={teacher}",
                        "--config.student=from_teacher:2", f"--workdir={tmp_path / 'td'}"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "remapped by name to the task's (neg, pos)" in out
    student_dir = str(tmp_path / "td" / "prediction" / "student")
    student = heads.load_task_model(student_dir)
    assert student.num_classes == 2 and len(student.backbone.transformer_layers) == 2
    report = run_mode(config_lib.load("task_distill", "tiny", mode="evaluate", latency_runs=2,
                                      teacher=teacher, student=student_dir, task="file", **{
                                          "data.train_file": data[0].split("=", 1)[1],
                                          "data.eval_file": data[1].split("=", 1)[1]}),
                      str(tmp_path / "ev"))
    assert [m["name"] for m in report["models"]] == ["teacher", "student"]
    done = subprocess.run(
        [sys.executable, "-m", "tinybert_tf.tools.export", f"--student={student_dir}",
         f"--export_dir={tmp_path / 'serving'}", "--model_name=student"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "serving" / "student" / "1" / "assets.extra" / "labels.txt") as f:
        assert f.read().split() == ["neg", "pos"]


@pytest.mark.slow
def test_finetune_starts_from_a_hf_dir(tmp_path):
    """finetune puts a new head on the HF encoder (as on a keras-hub preset's), here a token
    classifier's, which has no pooler: at a ~0 learning rate the teacher it writes carries the
    checkpoint's encoder weights and the task's labels."""
    source, tensors = write_hf_dir(tmp_path / "hf", ["neg", "pos"], arch="BertForTokenClassification")
    out = run_mode(config_lib.load("task_distill", "tiny", mode="finetune", teacher=source,
                                   task="file", **{
                                       "finetune.learning_rate": 1e-12,
                                       "data.train_file": tiny.write_task(tmp_path / "t.tsv", 16, 0),
                                       "data.eval_file": tiny.write_task(tmp_path / "d.tsv", 8, 1)}),
                   str(tmp_path / "ft"))
    teacher = builders.load_task_model(out, "teacher")
    assert type(teacher).__name__ == "BertTextClassifier" and teacher.num_classes == 2
    np.testing.assert_allclose(
        _np(teacher.backbone.get_layer("token_embedding").embeddings),
        tensors["bert.embeddings.word_embeddings.weight"], atol=1e-6)
    assert preset_labels(out) == ["neg", "pos"]
