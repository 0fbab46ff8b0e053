"""One training run per workdir (`launch/workdir_lock.py`): a second launch on a workdir in use is
refused in one line naming the holder; a lock whose holder is gone (killed, or silent past the
stale timeout) is taken over by the restart, which resumes; the lock goes with a normal run, a
user error and a signal; read-only modes take none. Local and remote (`ram://`) workdirs."""

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import tensorflow as tf
import tiny

from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import config_lib, modes, workdir_lock
from tinybert_tf.launch.modes import run as run_mode
from tinybert_tf.launch.workdir_lock import LOCK_NAME, acquire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = """import sys, time
from tinybert_tf.launch import workdir_lock
workdir_lock.acquire(sys.argv[1], heartbeat_s=float(sys.argv[2]))
print("held", flush=True)
time.sleep(600)
"""
THREAD = "tinybert_tf-workdir-lock"


@contextlib.contextmanager
def holder(workdir, heartbeat_s=0.2):
    """Another process holding the lock on `workdir` until the block ends (or it is killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), str(heartbeat_s)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == "held", proc.stderr.read()[-2000:]
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def _read(path, attempts=50):
    """The lock record at `path`; a read that meets a rewrite in progress (ram:// renames by
    copying) is tried again."""
    for _ in range(attempts - 1):
        with contextlib.suppress(ValueError, tf.errors.NotFoundError):
            with tf.io.gfile.GFile(path) as f:
                return json.loads(f.read())
        time.sleep(0.01)
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def _write_foreign(workdir, age, name=LOCK_NAME, **fields):
    """A lock record of a run on another machine whose last heartbeat was `age` s ago."""
    tf.io.gfile.makedirs(workdir)
    beat = time.time() - age
    record = {"host": "other-host", "pid": 4242, "machine": ["other-host", "boot", "ns"],
              "started": beat - 60, "heartbeat": beat, "token": uuid.uuid4().hex, **fields}
    path = os.path.join(workdir, name)
    if tf.io.gfile.exists(path):  # ram:// appends to an existing file
        tf.io.gfile.remove(path)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(record))
    if "://" not in path:
        os.utime(path, (beat, beat))
    return path


def _wait(predicate, timeout=30):
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.05)


@pytest.fixture(params=["local", "ram"])
def workdir(request, tmp_path):
    if request.param == "ram":
        return f"ram://lock_{os.getpid()}_{uuid.uuid4().hex[:8]}/run"
    return str(tmp_path / "run")


# ---- the lock ---------------------------------------------------------------------------------


def test_acquire_names_this_process_heartbeats_and_release_removes_it(workdir):
    assert LOCK_NAME not in modes._TRAINED and LOCK_NAME != "config.json"
    lock = acquire(workdir, heartbeat_s=0.05)
    try:
        record = _read(lock.path)
        assert lock.path == os.path.join(workdir, LOCK_NAME)
        assert (record["host"], record["pid"]) == (socket.gethostname(), os.getpid())
        if "://" in workdir:  # remote: the record's heartbeat is rewritten
            _wait(lambda: _read(lock.path)["heartbeat"] > record["heartbeat"] + 0.1)
        else:  # local: the file's mtime is touched
            os.utime(lock.path, (0, 0))
            _wait(lambda: os.stat(lock.path).st_mtime > 0)
    finally:
        lock.release()
    assert not tf.io.gfile.exists(lock.path) and tf.io.gfile.listdir(workdir) == []
    assert not lock.thread.is_alive() and not lock.held
    lock.release()


def test_a_live_holder_in_another_process_is_refused_then_taken_over_once_killed(tmp_path,
                                                                                 capsys):
    run = tmp_path / "run"
    with holder(run) as proc:
        with pytest.raises(LaunchError) as err:
            acquire(str(run))
        message = str(err.value)
        assert f"workdir {run} is in use by another run (host {socket.gethostname()}, pid " \
               f"{proc.pid}, started 20" in message and "\n" not in message
        assert f"delete {run / LOCK_NAME} (a lock without a heartbeat for 90 s" in message
        proc.kill()
        proc.wait(timeout=60)
        lock = acquire(str(run))  # its pid is gone on this host: stale at once, no heartbeat wait
    assert f"pid {proc.pid}: process {proc.pid} is gone." in capsys.readouterr().out
    assert _read(lock.path)["pid"] == os.getpid()
    lock.release()


def test_a_foreign_lock_is_taken_over_only_once_its_heartbeat_is_stale(workdir, capsys):
    path = _write_foreign(workdir, age=5)
    with pytest.raises(LaunchError, match=r"host other-host, pid 4242, .* last heartbeat 5 s"):
        acquire(workdir)
    assert _read(path)["host"] == "other-host"
    _write_foreign(workdir, age=3600)
    lock = acquire(workdir)
    assert "pid 4242: no heartbeat for 3600 s (stale after 90 s)." in capsys.readouterr().out
    assert _read(path)["token"] == lock.record["token"]
    lock.release()
    assert tf.io.gfile.listdir(workdir) == []


def test_a_live_rival_candidate_wins_a_take_over_and_a_dead_one_is_ignored(workdir):
    _write_foreign(workdir, age=3600)
    rival = f"{LOCK_NAME}.candidate-rival"
    _write_foreign(workdir, age=1, name=rival, host="rival-host", written=time.time())
    with pytest.raises(LaunchError, match="host rival-host"):
        acquire(workdir)
    assert sorted(tf.io.gfile.listdir(workdir)) == [LOCK_NAME, rival]
    _write_foreign(workdir, age=3600, name=rival, written=time.time() - 3600)
    lock = acquire(workdir)
    assert tf.io.gfile.listdir(workdir) == [LOCK_NAME]
    lock.release()


def test_a_holder_whose_lock_was_taken_warns_and_leaves_it(tmp_path, capsys):
    lock = acquire(str(tmp_path), heartbeat_s=3600)
    _write_foreign(str(tmp_path), age=0)
    assert lock.beat() is False
    assert f"workdir lock {lock.path} is no longer this run's (now: host other-host, pid 4242)" \
        in capsys.readouterr().err
    lock.release()
    assert _read(lock.path)["host"] == "other-host"


def test_a_pid_of_this_machine_is_stale_once_gone_or_reused(tmp_path):
    lock = acquire(str(tmp_path), heartbeat_s=3600)
    lock.release()
    alive = lock.record
    assert workdir_lock.stale_reason(alive, 0, 90) is None
    assert workdir_lock.stale_reason({**alive, "heartbeat": 0}, 0, 90) is None  # the pid decides
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert workdir_lock.stale_reason({**alive, "pid": child.pid}, 0, 90) == \
        f"process {child.pid} is gone"
    if alive["proc_start"] is not None:  # Linux: the start time tells a reused pid
        assert workdir_lock.stale_reason({**alive, "proc_start": alive["proc_start"] + 1}, 0,
                                         90) == f"pid {os.getpid()} now belongs to another process"
    elsewhere = {**alive, "machine": ["elsewhere"], "pid": child.pid, "stale_s": 90}
    assert workdir_lock.stale_reason(elsewhere, 0, 90) is None  # another machine: the heartbeat
    assert workdir_lock.stale_reason({**elsewhere, "heartbeat": time.time() - 91}, 0, 90) == \
        "no heartbeat for 91 s (stale after 90 s)"


# ---- the dispatcher ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("lock_assets")
    return {"teacher": tiny.write_teacher(d / "teacher", num_classes=2), "task": "file",
            "data.train_file": tiny.write_task(d / "train.tsv", 16, 0),
            "data.eval_file": tiny.write_task(d / "dev.tsv", 8, 1)}


def _config(assets, **overrides):
    return config_lib.load("task_distill", "tiny", **{**assets, **overrides})


def _lock_threads():
    return [t for t in threading.enumerate() if t.name == THREAD]


def test_a_training_launch_on_a_held_workdir_is_refused_before_writing(assets, tmp_path):
    run = tmp_path / "run"
    with holder(run) as proc:
        with pytest.raises(LaunchError, match=f"is in use by another run .* pid {proc.pid},"):
            run_mode(_config(assets, mode="finetune"), str(run))
        assert os.listdir(run) == [LOCK_NAME]


def test_read_only_modes_take_no_lock(assets, tmp_path):
    run = tmp_path / "run"
    with holder(run):
        run_mode(_config(assets, mode="evaluate", student=assets["teacher"], latency_runs=1),
                 str(run))
        assert sorted(os.listdir(run)) == ["report.json", "report.md", LOCK_NAME]
        assert json.load(open(run / LOCK_NAME))["pid"] != os.getpid()


def test_a_run_and_a_refused_config_leave_no_lock(assets, tmp_path):
    run, before = tmp_path / "run", set(_lock_threads())  # (another test's may still run)
    run_mode(_config(assets, mode="finetune"), str(run))
    assert not (run / LOCK_NAME).exists() and (run / "teacher").is_dir()
    assert not set(_lock_threads()) - before
    with pytest.raises(LaunchError, match="holds a run with a different config"):
        run_mode(_config(assets, mode="finetune", seed=1), str(run))
    assert not (run / LOCK_NAME).exists() and not set(_lock_threads()) - before


def test_unclaim_releases_the_lock_and_removes_the_workdir_it_made(workdir):
    lock = acquire(workdir, heartbeat_s=3600)
    with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
        f.write("{}")
    modes._unclaim(workdir, True, lock)
    assert not lock.held and not tf.io.gfile.exists(os.path.join(workdir, LOCK_NAME))
    assert not tf.io.gfile.exists(workdir) or tf.io.gfile.listdir(workdir) == []


# ---- the launcher: a real run holds it, SIGTERM releases it, SIGKILL leaves it to the restart -


def _launcher(assets, workdir, log):
    args = [f"--config.{k}={v}" for k, v in assets.items()]
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tinybert_tf.main", "--config=task_distill:tiny",
             f"--workdir={workdir}", "--config.mode=finetune", *args, "--config.eval_every=-1",
             "--config.log_every=50", "--config.checkpoint_every=50"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _checkpoints(run):
    found = tf.io.gfile.glob(str(run / "finetune" / "checkpoints" / "ckpt-*.index"))
    return sorted(int(p.rsplit("-", 1)[1].split(".")[0]) for p in found)


def _stop(proc, sig):
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=300)


@pytest.mark.slow
def test_launcher_refused_while_held_released_on_sigterm_taken_over_after_sigkill(tmp_path):
    d = tmp_path
    assets = {"teacher": tiny.write_teacher(d / "teacher", num_classes=2), "task": "file",
              "data.train_file": tiny.write_task(d / "train.tsv", 2000, 0),
              "finetune.epochs": 20}  # 10,000 steps: the run outlasts the test
    run, logs = d / "run", [d / f"log{i}.txt" for i in range(4)]
    procs = []
    try:
        procs.append(_launcher(assets, run, logs[0]))  # first: trains
        _wait(lambda: _checkpoints(run) or procs[0].poll() is not None, timeout=300)
        assert _read(str(run / LOCK_NAME))["pid"] == procs[0].pid, logs[0].read_text()[-2000:]
        procs.append(_launcher(assets, run, logs[1]))  # second, same command: refused
        assert procs[1].wait(timeout=300) == 1
        text = logs[1].read_text()
        assert f"Error: workdir {run} is in use by another run (host {socket.gethostname()}, " \
               f"pid {procs[0].pid}, started " in text and "Traceback" not in text, text[-2000:]
        assert _stop(procs[0], signal.SIGTERM) == 143 and not (run / LOCK_NAME).exists()
        stopped = _checkpoints(run)[-1]  # SIGTERM's checkpoint, at the step reached
        text = logs[0].read_text()
        assert "SIGTERM: stopping after this step" in text and "Traceback" not in text, text[-2000:]
        assert f"stopped at step {stopped}, checkpoint written; run the same command" in text
        procs.append(_launcher(assets, run, logs[2]))  # restart, then killed outright
        _wait(lambda: any(n > stopped for n in _checkpoints(run)), timeout=300)
        assert f"ckpt-{stopped} (step {stopped} of " in logs[2].read_text()  # resumed there
        assert _stop(procs[2], signal.SIGKILL) == -signal.SIGKILL
        assert _read(str(run / LOCK_NAME))["pid"] == procs[2].pid  # left behind
        procs.append(_launcher(assets, run, logs[3]))  # the same command again: takes over
        _wait(lambda: "Resuming from" in logs[3].read_text(), timeout=300)
        text = logs[3].read_text()
        assert f"pid {procs[2].pid}: process {procs[2].pid} is gone." in text, text[-2000:]
        assert _read(str(run / LOCK_NAME))["pid"] == procs[3].pid
        assert _stop(procs[3], signal.SIGTERM) == 143 and not (run / LOCK_NAME).exists()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
