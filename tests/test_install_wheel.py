"""The package installs like one: the wheel built from this checkout, installed with pip into a
fresh virtualenv, runs the launcher with a packaged config and the tools from a directory outside
the checkout (what docs/distributed.md#install shows).

Offline: the wheel is built without build isolation and installed with --no-deps --no-index;
the new virtualenv reaches the dependencies through a .pth file naming this interpreter's
site-packages, whose editable install of tinybert_tf stays invisible there (a path listed in a
.pth file does not run that directory's own .pth files, the editable finder among them).
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import keras_hub
import pytest
import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.py", "README.md", "tinybert_tf")  # what setup.py builds the wheel from
LIMIT = 600  # seconds per subprocess


def _run(args, cwd, env):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=LIMIT)
    return done.returncode, done.stdout + done.stderr


def build_wheel(dest):
    """The wheel of a copy of the checkout's package sources (a build in the checkout itself
    would reuse its build/ folder, stale files included) -> the wheel's path."""
    src = dest / "src"
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            os.makedirs(src, exist_ok=True)
            shutil.copy(path, src / name)
    code, out = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                      "-w", str(dest / "wheels"), str(src)], dest, os.environ)
    assert code == 0, out[-3000:]
    (wheel,) = glob.glob(str(dest / "wheels" / "tinybert_tf-*.whl"))
    return wheel


def fresh_venv(path):
    """A new virtualenv whose only way to the dependencies is this interpreter's site-packages
    -> its bin/ directory."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=LIMIT)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True).stdout
    ours = sysconfig.get_paths()
    with open(os.path.join(site.strip(), "suite_site_packages.pth"), "w") as f:
        f.write("\n".join(dict.fromkeys([ours["purelib"], ours["platlib"]])) + "\n")
    return path / "bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    d = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(d)
    bin_dir = fresh_venv(d / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code, out = _run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
                      wheel], d, env)
    assert code == 0, out[-3000:]
    outside = d / "elsewhere"  # not the checkout: nothing resolves through the working directory
    outside.mkdir()
    return {"dir": d, "bin": bin_dir, "env": env, "cwd": outside, "wheel": wheel}


@pytest.mark.slow
def test_the_venv_imports_the_installed_wheel_not_the_checkout(installed):
    code, out = _run([str(installed["bin"] / "python"), "-c",
                      "import tinybert_tf.configs, tinybert_tf.tools.export as t; "
                      "print(tinybert_tf.configs.__file__); print(t.__file__)"],
                     installed["cwd"], installed["env"])
    assert code == 0, out[-3000:]
    venv = str(installed["dir"] / "venv") + os.sep
    paths = out.split()
    assert len(paths) == 2 and all(p.startswith(venv) for p in paths), out
    assert os.path.isfile(os.path.join(os.path.dirname(paths[0]), "task_distill.py"))


@pytest.mark.slow
def test_a_finetune_runs_from_outside_the_checkout(installed):
    here = installed["cwd"]
    tiny.write_teacher(here / "pre")
    tiny.write_task(here / "train.tsv", 48, 0)
    tiny.write_task(here / "dev.tsv", 16, 1)
    code, out = _run([str(installed["bin"] / "tinybert-tf"), "--config=task_distill:tiny",
                      "--workdir=run", "--config.mode=finetune", "--config.task=file",
                      "--config.data.train_file=train.tsv", "--config.data.eval_file=dev.tsv",
                      "--config.teacher=pre"], here, installed["env"])
    assert code == 0, out[-3000:]
    best = keras_hub.models.TextClassifier.from_preset(str(here / "run" / "teacher"),
                                                       preprocessor=None)
    assert best.num_classes == 2 and best.backbone.num_layers == 4


@pytest.mark.slow
def test_the_tools_run_installed(installed):
    here, bin_dir, env = installed["cwd"], installed["bin"], installed["env"]
    for tool, flag in (("tinybert-tf-export", "--student:"), ("tinybert-tf-augment", "--n_aug:")):
        _, out = _run([str(bin_dir / tool), "--helpfull"], here, env)
        assert flag in out, out[-3000:]
    _, out = _run([str(bin_dir / "python"), "-m", "tinybert_tf.main", "--helpfull"], here, env)
    assert "--config:" in out and "general_distill, task_distill" in out, out[-3000:]
    (here / "vocab.txt").write_text("\n".join(tiny.VOCAB) + "\n")
    tiny.write_corpus(here / "corpus.txt", docs=20)
    code, out = _run([str(bin_dir / "tinybert-tf-prepare-corpus"), "--input=corpus.txt",
                      "--output_dir=shards", "--vocab=vocab.txt", "--seq_len=16",
                      "--num_shards=1"], here, env)
    assert code == 0 and "1 files, 20 documents" in out, out[-3000:]
    assert (here / "shards" / "corpus-00000-of-00001.tfrecord").exists()
