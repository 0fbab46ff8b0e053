"""The garbage collector's settings for a run (`launch/heap.py`): the imports' objects frozen
out of every later pass, the collector off during them and back on after, the first
generation's threshold raised, and garbage the run makes still collected."""

import gc
import os
import subprocess
import sys
import weakref

import pytest

from tinybert_tf.launch import heap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Cycle:
    def __init__(self):
        self.me = self


@pytest.fixture
def saved_threshold():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_settled_imports_freezes_what_the_block_built_and_still_collects_later_garbage(
        saved_threshold):
    gc.set_threshold(700, 10, 10)
    frozen = gc.get_freeze_count()
    with heap.settled_imports():
        assert not gc.isenabled()
        kept = [_Cycle() for _ in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert gc.get_threshold() == (heap.THRESHOLD0, 10, 10)

    later = _Cycle()
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None  # a cycle made after the imports is still collected


def test_a_collector_turned_off_stays_off_and_a_higher_threshold_is_kept(saved_threshold):
    gc.set_threshold(50_000, 10, 10)
    gc.disable()
    try:
        with heap.settled_imports():
            pass
        assert not gc.isenabled()
        assert gc.get_threshold()[0] == 50_000
    finally:
        gc.enable()


@pytest.mark.slow
def test_a_script_importing_tensorflow_as_the_cli_does_has_its_imports_frozen():
    code = ("import gc; from tinybert_tf.launch import hardware; "
            "hardware.import_tensorflow_quietly(); import sys; "
            "print(gc.get_freeze_count(), gc.get_threshold()[0], gc.isenabled(), "
            "sorted(m for m in ('keras', 'keras_hub', 'tensorflow') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    frozen, threshold, enabled, modules = proc.stdout.strip().split(" ", 3)
    assert int(frozen) > 100_000  # TensorFlow's, Keras' and keras-hub's module objects
    assert (int(threshold), enabled) == (heap.THRESHOLD0, "True")
    assert modules == "['keras', 'keras_hub', 'tensorflow']"
    assert proc.stderr == ""  # quietly: no start-up line


@pytest.mark.parametrize("process", [True, False], ids=["command line", "launch() in a caller"])
def test_only_the_launchers_own_process_is_settled(monkeypatch, tmp_path, capsys, process):
    from tinybert_tf import main
    from tinybert_tf.launch import config_lib

    calls, real = [], heap.settled_imports
    monkeypatch.setattr(heap, "settled_imports", lambda: calls.append(1) or real())
    config = config_lib.load("general_distill", "tiny")  # no teacher: a one-line error after
    with pytest.raises(SystemExit):
        main._launch(config, str(tmp_path / "run"), False, process=process)
    assert "No teacher given" in capsys.readouterr().err
    assert calls == ([1] if process else [])
