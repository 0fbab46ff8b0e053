"""Which Keras backend a launch runs on, decided before Keras is imported (os and sys only).

The backend is fixed per process: `config.backend` (when not the default "tensorflow"), else
KERAS_BACKEND, else tensorflow. The command line re-executes itself once when Keras was already
imported with another backend; in-process callers (`tinybert_tf.api`, `main.launch`) get a
one-line error naming the fix instead.
"""

from __future__ import annotations

import os
import sys

BACKENDS = ("tensorflow", "jax")
REEXEC = "TINYBERT_TF_REEXEC"  # set in the re-executed process: re-execute at most once


def select_backend(config, environ=os.environ):
    """The Keras backend of this launch: `config.backend` when it is not the default
    "tensorflow", else KERAS_BACKEND, else tensorflow. Sets `config.backend` to it (config.json
    records the backend that ran) and returns it."""
    from tinybert_tf.errors import UserError

    asked = str(config.backend or "tensorflow")
    env = environ.get("KERAS_BACKEND", "")
    backend = asked if asked != "tensorflow" else (env or asked)
    if backend not in BACKENDS:
        source = f"--config.backend={asked}" if backend == asked else f"KERAS_BACKEND={env}"
        raise UserError(f"{source}: the launcher runs on the Keras backends "
                        f"{' and '.join(BACKENDS)}; use --config.backend=jax or leave it unset.")
    config.backend = backend
    return backend


def imported_backend():
    """The backend Keras was imported with in this process, or None (not imported yet)."""
    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras is not None and hasattr(keras, "backend") else None


def check_backend(backend, reexec=False):
    """Keras runs `backend` here, or (reexec: the command line) this process re-executes itself
    with KERAS_BACKEND=`backend`; else a one-line error naming the fix."""
    from tinybert_tf.errors import UserError

    have = imported_backend()
    if have is None or have == backend:
        os.environ["KERAS_BACKEND"] = backend  # for a Keras imported after this
        return
    if reexec and not os.environ.get(REEXEC):
        sys.stdout.flush()
        sys.stderr.flush()
        env = dict(os.environ, KERAS_BACKEND=backend, **{REEXEC: "1"})
        os.execve(sys.executable, [sys.executable, "-m", "tinybert_tf.main", *sys.argv[1:]], env)
    raise UserError(f"Keras was already imported with the {have} backend in this process and "
                    f"cannot switch to {backend}; start a fresh process with "
                    f"KERAS_BACKEND={backend} (python -m tinybert_tf.main ...).")
