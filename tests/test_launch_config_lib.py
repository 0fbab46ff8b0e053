"""tinybert_tf/configs/ and `config_lib`: `--config` names a packaged config or a file from any
directory; every config leaf is read by a mode its file serves; the savers'
width projections (`builders.save_model` / `presets.load_projections`) round-trip.

The leaf test runs each mode of each config file end to end on tiny models (tests/tiny.py) and
local files, with `ml_collections.ConfigDict.__getitem__` patched to record which leaves code in
the `tinybert_tf` package reads (attribute access, `c[key]` and `c.get(key)` all go through it;
`to_dict`, copies and equality, which touch every field, are not reads). A leaf that no mode reads
is a setting that does nothing: remove it from the config or make it mean something.
"""

import os
import sys

import keras
import ml_collections
import numpy as np
import pytest
import tiny

from tinybert_tf.distill import presets
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import builders, config_lib, task_data
from tinybert_tf.launch.modes import run as run_mode

PACKAGE = os.path.dirname(os.path.abspath(config_lib.__file__)).rsplit(os.sep, 1)[0] + os.sep
ML_COLLECTIONS = os.path.dirname(os.path.abspath(ml_collections.__file__)) + os.sep
ACCESSORS = {"__getattr__", "__getitem__", "get"}  # ConfigDict methods that read one field

# Every config file -> the variants its get_config accepts. Variants differ only in values
# (asserted below), so the tiny runs cover every variant's leaves.
VARIANTS = {"general_distill": (None, "tiny", "distilbert"), "task_distill": (None, "tiny")}

# Leaves read only in situations the tiny runs cannot reach offline. Keep short and honest.
ALLOWED_UNREAD = {
    "general_distill": set(),
    "task_distill": set(),
}


def leaves(c, prefix=""):
    out = set()
    for key, value in c.items():
        if isinstance(value, ml_collections.ConfigDict):
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


class Reads:
    """Records `path.to.leaf` for every ConfigDict field that tinybert_tf code reads."""

    def __init__(self, monkeypatch):
        self.paths = set()
        self._prefix = {}  # id(sub-ConfigDict) -> "parent.key."
        self._alive = []  # keeps registered sub-dicts alive so their ids are not reused
        original = ml_collections.ConfigDict.__getitem__
        recorder = self

        def getitem(config, key):
            value = original(config, key)
            path = recorder._prefix.get(id(config), "") + str(key)
            if isinstance(value, ml_collections.ConfigDict):
                recorder._prefix[id(value)] = path + "."
                recorder._alive.append(value)
            elif recorder._read_by_package(sys._getframe(1)):
                recorder.paths.add(path)
            return value

        self._code = getitem.__code__
        monkeypatch.setattr(ml_collections.ConfigDict, "__getitem__", getitem)

    def _read_by_package(self, frame):
        """The access came from tinybert_tf through ConfigDict's one-field accessors only."""
        while frame is not None:
            name = os.path.abspath(frame.f_code.co_filename)
            if frame.f_code is self._code:
                pass
            elif name.startswith(ML_COLLECTIONS):
                if frame.f_code.co_name not in ACCESSORS:
                    return False  # to_dict, copy, __eq__, ...: not a read of this field
            else:
                return name.startswith(PACKAGE)
            frame = frame.f_back
        return False




def _run(name, workdir, monkeypatch, **overrides):
    """Run the tiny variant of packaged config <name> with overrides; returns (output, leaves read)."""
    c = config_lib.load(name, "tiny", **overrides)
    with monkeypatch.context() as patch:
        reads = Reads(patch)
        out = run_mode(c, str(workdir))
    return out, reads.paths


def _check(name, read):
    for variant in VARIANTS[name]:
        config = config_lib.load(name, variant)
        assert leaves(config) == leaves(config_lib.load(name, "tiny")), variant
        unread = sorted(leaves(config) - read - ALLOWED_UNREAD[name])
        assert not unread, (f"tinybert_tf/configs/{name}.py (variant {variant}): no mode reads "
                            f"{', '.join(unread)}; remove them or make them mean something.")
    stale = sorted(ALLOWED_UNREAD[name] & read)
    assert not stale, f"allow-listed but read: {stale}; drop them from ALLOWED_UNREAD."


def test_every_config_file_is_covered():
    assert config_lib.packaged_names() == sorted(VARIANTS)
    for name, variants in VARIANTS.items():
        with pytest.raises(ValueError, match="Unknown variant"):
            config_lib.load(name, "no_such_variant")
        for variant in variants:
            config_lib.load(name, variant)


def test_config_names_and_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: packaged names and the configs/ spelling
    packaged = os.path.join(config_lib.CONFIG_DIR, "task_distill.py")
    assert config_lib.resolve_path("task_distill") == (packaged, None)
    assert config_lib.resolve_path("task_distill:tiny") == (packaged, "tiny")
    assert config_lib.resolve_path("configs/task_distill.py:tiny") == (packaged, "tiny")
    assert config_lib.resolve_path("./configs/general_distill.py")[0].endswith(
        os.path.join("tinybert_tf", "configs", "general_distill.py"))
    own = tmp_path / "configs" / "task_distill.py"  # a file of that name here wins
    own.parent.mkdir()
    own.write_text("from tinybert_tf.configs.general_distill import get_config  # noqa: F401\n")
    assert config_lib.resolve_path("configs/task_distill.py:tiny") == (
        "configs/task_distill.py", "tiny")
    assert config_lib.load("configs/task_distill.py:tiny").mode == "general_distill"
    assert config_lib.load(f"{own}:distilbert", "tiny").student == "tiny_2l_32h"
    assert config_lib.load("task_distill:tiny").mode == "task_distill"
    for spec in ("task_distil", "elsewhere/task_distill.py", f"{tmp_path}/nope.py:tiny"):
        with pytest.raises(LaunchError, match="use one of general_distill, task_distill "
                                              r"\(e.g. --config=task_distill:tiny\)"):
            config_lib.resolve_path(spec)


def test_general_distill_reads_every_leaf(tmp_path, monkeypatch):
    teacher = tiny.write_teacher(tmp_path / "teacher")
    corpus = tiny.write_corpus(tmp_path / "corpus.txt", docs=60)
    _, read = _run("general_distill", tmp_path / "gd", monkeypatch, teacher=teacher,
                   save_initial=True, **{"data.train": corpus})
    # The masked-LM recipes (distilbert) read the masking fields.
    mlm = keras_hub_mlm(tmp_path / "mlm")
    _, read_mlm = _run("general_distill", tmp_path / "mlm_run", monkeypatch, teacher=mlm,
                       recipe="distilbert", student="from_teacher:2", steps=4,
                       **{"data.train": corpus})
    _check("general_distill", read | read_mlm)


def keras_hub_mlm(path):
    import keras_hub

    teacher = keras_hub.models.BertMaskedLM(tiny.backbone(num_layers=4, max_sequence_length=32),
                                            preprocessor=None)
    teacher.save_to_preset(str(path))
    tiny.tokenizer().save_to_preset(str(path))
    return str(path)


def test_task_distill_reads_every_leaf(tmp_path, monkeypatch):
    """finetune -> task_distill (stages both, a transfer set) -> evaluate -> export."""
    common = {"task": "file", "data.train_file": tiny.write_task(tmp_path / "train.tsv", 16, 0),
              "data.eval_file": tiny.write_task(tmp_path / "dev.tsv", 8, 1),
              "data.test_file": tiny.write_task(tmp_path / "test.tsv", 8, 2)}
    teacher, read = _run("task_distill", tmp_path / "ft", monkeypatch, mode="finetune",
                         teacher=tiny.write_teacher(tmp_path / "pre"), **common)
    with open(tmp_path / "transfer.txt", "w") as f:
        f.write("the model is small\nthe teacher is fast\n")
    student, read_td = _run("task_distill", tmp_path / "td", monkeypatch, mode="task_distill",
                            teacher=teacher, transfer_file=str(tmp_path / "transfer.txt"),
                            **common)
    read |= read_td
    _, read_eval = _run("task_distill", tmp_path / "eval", monkeypatch, mode="evaluate",
                        teacher=teacher, student=student, latency_runs=1, **common)
    _, read_export = _run("task_distill", tmp_path / "export", monkeypatch, mode="export",
                          teacher=teacher, **common, **{"export.student": student})
    _check("task_distill", read | read_eval | read_export)


def test_projections_round_trip(tmp_path):
    """`save_model` writes a Distiller's width projections beside the student (npz keys
    `<layer>/<weight>`); `load_projections` gives back layers with identical weights."""
    keras.utils.set_random_seed(0)
    projections = []
    for i in range(2):
        layer = keras.layers.Dense(48, name=f"projection_{i}")
        layer.build((None, None, 32))
        layer.set_weights([np.random.default_rng(i).normal(size=w.shape).astype("float32")
                           for w in layer.weights])
        projections.append(layer)
    path = builders.save_model(tiny.backbone(), tiny.tokenizer(), str(tmp_path / "student"),
                               projections)
    with np.load(os.path.join(path, "projections.npz")) as data:
        assert data.files == ["projection_0/kernel", "projection_0/bias", "projection_1/kernel",
                              "projection_1/bias"]
    loaded = presets.load_projections(path)
    assert [p.name for p in loaded] == ["projection_0", "projection_1"]
    for saved, back in zip(projections, loaded):
        for a, b in zip(saved.get_weights(), back.get_weights()):
            np.testing.assert_array_equal(a, b)
    x = np.ones((1, 3, 32), "float32")
    np.testing.assert_array_equal(projections[1](x), loaded[1](x))
    # A student saved without projections has none to load.
    bare = builders.save_model(tiny.backbone(), tiny.tokenizer(), str(tmp_path / "bare"))
    assert not os.path.exists(os.path.join(bare, "projections.npz"))
    assert presets.load_projections(bare) == []


def test_recorder_counts_package_reads_only(monkeypatch):
    """The recorder itself: one-field reads from tinybert_tf count (with their dotted path);
    to_dict / copies / reads from elsewhere (this test) do not."""
    from tinybert_tf.launch import devices, modes

    c = config_lib.load("task_distill", "tiny")
    with monkeypatch.context() as patch:
        reads = Reads(patch)
        c.to_dict()
        ml_collections.ConfigDict(c.to_dict())
        assert c.data.seq_len == 32 and not reads.paths  # read here, not by the package
        task_data.buckets(c)  # reads data.buckets and strategy
        # reads precision, teacher_dtype, jit_compile, and mode and student (may the teacher be
        # int8?); copies the rest
        modes.resolve_auto(c, devices.choose("tensorflow", "cpu", []))
    assert reads.paths == {"data.buckets", "strategy", "precision", "teacher_dtype",
                           "jit_compile", "mode", "student"}
