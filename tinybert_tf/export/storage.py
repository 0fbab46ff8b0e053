"""Where an export's files live: local disk or any `tf.io.gfile` filesystem (``gs://``, ...).

A version is staged on local disk, because the fresh-process checks and ``saved_model_cli``
read it there: beside the final directory when the export dir is local (same filesystem, so
publishing is one atomic rename), in a local temporary directory when it is remote. A remote
version is uploaded to a hidden directory beside its final name, then its files are moved into
place with ``saved_model.pb`` last: TF Serving only lists integer directories, and a version
without its graph fails to load and is retried, so no server loads a half-uploaded version.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from tinybert_tf.errors import first_line

# Moved into a remote version directory last: the file that makes the directory loadable.
LAST_FILE = "saved_model.pb"


def is_remote(path) -> bool:
    """True for a ``scheme://`` path (``gs://``, ``ram://``, ...), False for a local path."""
    return "://" in os.fspath(path)


def candidate_dir(model_dir: str, kind: str, version: int) -> str:
    """Hidden sibling of a version directory: ``<model_dir>/.<kind>-<version>-<pid>-<time>``."""
    return os.path.join(model_dir, f".{kind}-{version}-{os.getpid()}-{int(time.time())}")


def staging_dir(model_dir: str, version: int) -> str:
    """A new local directory to build version ``version`` in (see the module docstring)."""
    if not is_remote(model_dir):
        return candidate_dir(model_dir, "tmp", version)
    return tempfile.mkdtemp(prefix=f"tinybert_export_{version}_")


def error_text(e: Exception) -> str:
    """The one-line reason of an ``OSError`` or ``tf.errors.OpError``."""
    reason = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
    return first_line(reason, "")


def check_writable(directory: str) -> None:
    """Create ``directory`` and write / remove a probe file in it (raises on failure)."""
    import tensorflow as tf

    tf.io.gfile.makedirs(directory)
    probe = os.path.join(directory, f".write-probe-{os.getpid()}")
    write_text(probe, "")
    tf.io.gfile.remove(probe)


def write_text(path: str, text: str) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def write_lines(path: str, lines) -> None:
    """One item of ``lines`` per line, each ending in a newline."""
    write_text(path, "".join(x + "\n" for x in lines))


def write_json(path: str, value) -> None:
    write_text(path, json.dumps(value, indent=2))


def read_json(path: str):
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def exists(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def local_dir_size(path: str) -> int:
    """Total bytes of the files under the local directory ``path``."""
    return sum(os.path.getsize(os.path.join(path, f)) for f in _local_tree(path)[1])


def remove_tree(path: str) -> None:
    """Delete ``path`` and what it holds, if it exists; errors are ignored (clean-up only)."""
    import tensorflow as tf

    try:
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)
    except (OSError, tf.errors.OpError):
        pass


def _local_tree(root_dir: str) -> tuple[list[str], list[str]]:
    """``(directories, files)`` under the local ``root_dir``, relative to it; ``LAST_FILE``
    sorts last. Listed on local disk: a remote listing may be slow or, on some filesystems
    (``ram://`` lists by name prefix), not exact."""
    dirs, files = [], []
    for root, _, names in os.walk(root_dir):
        rel = os.path.relpath(root, root_dir)
        rel = "" if rel == "." else rel
        dirs.append(rel)
        files += [os.path.join(rel, name) for name in names]
    files.sort(key=lambda f: f == LAST_FILE)
    return dirs, files


def _transfer_tree(src: str, dst: str, tree, move: bool) -> None:
    """Copy (or move, file by file) ``tree`` (`_local_tree`) from ``src`` to ``dst``."""
    import tensorflow as tf

    dirs, files = tree
    for rel in dirs:
        tf.io.gfile.makedirs(os.path.join(dst, rel) if rel else dst)
    for rel in files:
        if move:
            tf.io.gfile.rename(os.path.join(src, rel), os.path.join(dst, rel))
        else:
            tf.io.gfile.copy(os.path.join(src, rel), os.path.join(dst, rel))


def move_dir(src: str, dst: str) -> None:
    """Move the local directory ``src`` to ``dst`` (a rename when both are local)."""
    import tensorflow as tf

    if is_remote(dst):
        _transfer_tree(src, dst, _local_tree(src), move=False)
        remove_tree(src)
    else:
        tf.io.gfile.rename(src, dst)


def publish_dir(stage: str, final: str) -> None:
    """Put the staged local directory ``stage`` at ``final``; an existing ``final`` is an error.

    Local: one atomic rename. Remote: upload beside ``final``, then move the files into place
    (``LAST_FILE`` last); the upload directory is removed either way.
    """
    import tensorflow as tf

    if not is_remote(final):
        tf.io.gfile.rename(stage, final)
        return
    tree = _local_tree(stage)
    upload = candidate_dir(os.path.dirname(final), "upload", int(os.path.basename(final)))
    try:
        _transfer_tree(stage, upload, tree, move=False)
        if tf.io.gfile.exists(final):
            raise tf.errors.AlreadyExistsError(None, None, f"{final} appeared meanwhile")
        try:
            _transfer_tree(upload, final, tree, move=True)
        except Exception:
            remove_tree(final)  # ours: it did not exist a moment ago
            raise
    finally:
        remove_tree(upload)
    remove_tree(stage)
