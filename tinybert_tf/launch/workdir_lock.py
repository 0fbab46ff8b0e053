"""One training run per workdir: a lock file `workdir.lock` that a second launch is refused on.

`acquire(workdir)` writes the lock (a JSON record: host, pid, start time, heartbeat) and starts a
daemon thread that refreshes its heartbeat every `heartbeat_s` seconds (a local file: its mtime;
a remote one, gs://: the record is rewritten); `WorkdirLock.release` stops the thread and removes
the file (also at interpreter exit). A launch finding a live lock is refused in one line naming
the holder; a stale lock is taken over (`stale_reason`):

* on the same host (hostname, boot id and pid namespace alike) the pid decides: stale at once
  when the holder's process is gone or its pid now belongs to another process (its start time
  differs), live while it runs, however old its heartbeat (a hung holder is named, not ousted);
* on another host, when the holder's heartbeat (the record's or the file's mtime, the newer) is
  older than `stale_s` (3 x the heartbeat by default; the longer of the reader's and the
  holder's own). The clocks of the two hosts are compared: keep them in sync (NTP).

Atomicity. A free local lock is created with `O_CREAT | O_EXCL`. A stale lock, and any lock on a
remote filesystem (tf.io.gfile, so `ram://` works in tests), goes through an election: each
taker writes a uniquely named candidate file, lists the candidates and goes on only when its own
is the oldest (the filesystem's mtime, else the writer's clock), then reads the lock once more,
writes it (local: unlink + `O_EXCL`) and reads it back. The race window left: the election
assumes candidates show in a listing in the order of their mtimes, so two written within one
mtime tick (1 ms on GCS; the writers' clock skew where the filesystem has no mtime) can both win
(the earlier listed before the later appeared, the later sorts first by name), both write the
lock and both pass their read-back; and a holder on another host silent past `stale_s`
(paused) that wakes up may rewrite the lock over its taker's (gfile has no conditional write).
In both cases the first heartbeat that finds the lock no longer its own warns; both runs go on.
"""

from __future__ import annotations

import atexit
import errno
import glob
import json
import os
import socket
import sys
import threading
import time
import uuid

from tinybert_tf.errors import LaunchError

LOCK_NAME = "workdir.lock"
HEARTBEAT_S = 30.0
STALE_FACTOR = 3  # heartbeats missed before a lock is stale
_CANDIDATE = ".candidate-"
_ATTEMPTS = 3


def _remote(path):
    return "://" in path


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _read(path):
    """(record or {} when unreadable, mtime in seconds or 0) of a lock file; None when absent."""
    try:
        if _remote(path):
            gfile = _gfile()
            if not gfile.exists(path):
                return None
            with gfile.GFile(path) as f:
                text = f.read()
            mtime = gfile.stat(path).mtime_nsec / 1e9
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    except Exception as err:  # a remote NotFoundError: removed between the calls
        if type(err).__name__ == "NotFoundError":
            return None
        raise
    try:
        record = json.loads(text)
    except ValueError:  # being written
        record = {}
    return (record if isinstance(record, dict) else {}), mtime


def _write(path, record, exclusive=False):
    """Write `record` to `path`; `exclusive` (local only): fail when it exists (FileExistsError)."""
    text = json.dumps(record, sort_keys=True)
    if _remote(path):  # whole or not at all (and ram:// appends to an existing file)
        gfile, tmp = _gfile(), f"{path}.tmp-{uuid.uuid4().hex}"
        with gfile.GFile(tmp, "w") as f:
            f.write(text)
        gfile.rename(tmp, path, overwrite=True)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _remove(path):
    try:
        if _remote(path):
            _gfile().remove(path)
        else:
            os.remove(path)
    except Exception as err:
        if not isinstance(err, FileNotFoundError) and type(err).__name__ != "NotFoundError":
            raise


def _list(prefix):
    """The files whose path starts with `prefix`."""
    if _remote(prefix):
        return [p for p in _gfile().glob(prefix + "*") if p.startswith(prefix)]
    return glob.glob(glob.escape(prefix) + "*")


# ---- who holds it, and is it alive -------------------------------------------------------------


def _first_line(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip()
    except OSError:
        return ""


def _proc_start(pid):
    """The start time of process `pid` (clock ticks since boot, /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return int(f.read().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _machine():
    """What makes two processes' pids comparable: the hostname, boot id and pid namespace."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return [socket.gethostname(), _first_line("/proc/sys/kernel/random/boot_id"), namespace]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def heartbeat_age(record, mtime, now=None):
    """Seconds since the holder's last heartbeat: the record's or the file's mtime, the newer."""
    last = max(float(record.get("heartbeat") or 0), float(mtime or 0))
    return (time.time() if now is None else now) - last


def stale_reason(record, mtime, stale_s, now=None):
    """Why the lock `record` (file mtime `mtime`) may be taken over, or None while it is live."""
    stale_s = max(float(stale_s), float(record.get("stale_s") or 0))
    pid = record.get("pid")
    if record.get("machine") == _machine() and isinstance(pid, int):
        if not _pid_alive(pid):
            return f"process {pid} is gone"
        started = _proc_start(pid)
        if record.get("proc_start") is not None and started not in (None, record["proc_start"]):
            return f"pid {pid} now belongs to another process"
        return None  # the holder itself, alive (perhaps hung: the refusal names its pid)
    age = heartbeat_age(record, mtime, now)
    if age > stale_s:
        return f"no heartbeat for {age:.0f} s (stale after {stale_s:.0f} s)"
    return None


def _when(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds)) if seconds else "?"


def _refusal(workdir, path, record, mtime, stale_s):
    stale_s = max(float(stale_s), float(record.get("stale_s") or 0))
    age = max(0.0, heartbeat_age(record, mtime))
    return LaunchError(
        f"workdir {workdir} is in use by another run (host {record.get('host', '?')}, pid "
        f"{record.get('pid', '?')}, started {_when(record.get('started'))}, last heartbeat "
        f"{age:.0f} s ago); wait for it or use another --workdir; if you are sure that run is "
        f"gone, delete {path} (a lock without a heartbeat for {stale_s:.0f} s is taken over).")


# ---- the lock ---------------------------------------------------------------------------------


class WorkdirLock:
    """A held workdir lock: `path`, `record` (what the lock file holds) and `thread` (the
    heartbeat, a daemon thread). `release()` is idempotent."""

    def __init__(self, workdir, path, record, heartbeat_s):
        self.workdir, self.path, self.record = workdir, path, record
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._beat_loop, daemon=True,
                                       name="tinybert_tf-workdir-lock")
        self.thread.start()
        atexit.register(self.release)

    @property
    def held(self):
        return not self._stop.is_set()

    def release(self):
        """Stop the heartbeat and remove the lock file when it is still this run's."""
        if self._stop.is_set():
            return
        self._stop.set()
        atexit.unregister(self.release)
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=60)
        found = _read(self.path)
        if found is not None and found[0].get("token") == self.record["token"]:
            _remove(self.path)

    def _beat_loop(self):
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.beat():
                    return
            except Exception as err:  # a transient remote error: try again next time
                print(f"Warning: workdir lock {self.path}: heartbeat failed ({err}).",
                      file=sys.stderr, flush=True)

    def beat(self):
        """Refresh the heartbeat; False (after a warning) when the lock is no longer this run's."""
        found = _read(self.path)
        if found is None or found[0].get("token") != self.record["token"]:
            other = found[0] if found else {}
            print(f"Warning: workdir lock {self.path} is no longer this run's (now: host "
                  f"{other.get('host', 'none')}, pid {other.get('pid', '-')}); another run may "
                  f"write {self.workdir}.", file=sys.stderr, flush=True)
            return False
        if _remote(self.path):
            self.record = {**self.record, "heartbeat": time.time()}
            _write(self.path, self.record)
        else:
            os.utime(self.path)
        return True


def _record(heartbeat_s, stale_s):
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "machine": _machine(),
            "proc_start": _proc_start(os.getpid()), "started": now, "heartbeat": now,
            "heartbeat_s": heartbeat_s, "stale_s": stale_s, "token": uuid.uuid4().hex,
            "argv": " ".join(sys.argv)[:500]}


def acquire(workdir, heartbeat_s=HEARTBEAT_S, stale_s=None):
    """Lock `workdir` (created when missing) for this process -> a `WorkdirLock`; a live lock
    of another run raises LaunchError naming it, a stale one is taken over (module doc)."""
    stale_s = STALE_FACTOR * heartbeat_s if stale_s is None else stale_s
    path = os.path.join(workdir, LOCK_NAME)
    if _remote(path):
        _gfile().makedirs(workdir)
    else:
        os.makedirs(workdir, exist_ok=True)
    me = _record(heartbeat_s, stale_s)
    found = None
    for _ in range(_ATTEMPTS):
        found = _read(path)
        if found is not None:
            reason = stale_reason(*found, stale_s)
            if reason is None:
                raise _refusal(workdir, path, *found, stale_s)
        if found is None and not _remote(path):
            try:
                _write(path, me, exclusive=True)
            except FileExistsError:
                continue
        elif not _take(path, me, stale_s):
            continue
        if found is not None:
            print(f"Taking over the workdir lock {path} of host {found[0].get('host', '?')}, "
                  f"pid {found[0].get('pid', '?')}: {reason}.", flush=True)
        return WorkdirLock(workdir, path, me, heartbeat_s)
    if found is None:
        raise OSError(errno.EAGAIN, f"could not lock workdir {workdir}", path)
    raise _refusal(workdir, path, *found, stale_s)


def _take(path, me, stale_s):
    """The election (module doc): True when `me` now holds `path`; a live rival (a candidate or
    a fresh lock) raises the refusal naming it."""
    workdir = os.path.dirname(path)
    mine = f"{path}{_CANDIDATE}{me['token']}"
    _write(mine, {**me, "written": time.time()})
    try:
        rivals = []
        for name in _list(f"{path}{_CANDIDATE}"):
            found = _read(name)
            if found is None:
                continue
            written = found[1] or float(found[0].get("written") or 0)
            if name != mine and time.time() - written > stale_s:
                _remove(name)  # left by a taker that died
                continue
            rivals.append((written, name, found))
        _, first, rival = min(rivals, default=(0, mine, None))
        if first != mine:
            raise _refusal(workdir, path, *rival, stale_s)
        found = _read(path)
        if found is not None and stale_reason(*found, stale_s) is None:
            raise _refusal(workdir, path, *found, stale_s)
        if _remote(path):
            _write(path, me)
        else:
            if found is not None:
                _remove(path)
            try:
                _write(path, me, exclusive=True)
            except FileExistsError:
                return False
        found = _read(path)
        return found is not None and found[0].get("token") == me["token"]
    finally:
        _remove(mine)
