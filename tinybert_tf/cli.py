"""One line per user mistake at the command line (the launcher and tools/ use `report`).

A user-facing error (a `errors.UserError`, a missing or unreadable file, a preset keras-hub cannot
load, a name the network cannot resolve, the NaN guard) prints `Error: <one line>` and exits
with its exit code; `errors.Interrupted` prints its message and exits 130/143. Anything else is a
bug and keeps its traceback, as every error does with `verbose` (the launcher's --verbose).
"""

from __future__ import annotations

import sys
import urllib.error

from tinybert_tf.errors import Interrupted, UserError, first_line

_FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def _raised_in(err, package):
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and package in tb.tb_frame.f_code.co_filename


def user_message(err):
    """(one-line message, exit code) for a user-facing error; None for a bug."""
    if isinstance(err, UserError):
        return first_line(err), err.exit_code
    if isinstance(err, (ValueError, OSError)) and _raised_in(err, "keras_hub") and \
            "preset" in str(err).lower():
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        received = f" ({lines[-1]})" if len(lines) > 1 and "Received" in lines[-1] else ""
        return (f"keras-hub could not load a preset: {first_line(err)}{received}; pass a "
                "preset directory or a keras-hub preset name.", 1)
    if isinstance(err, (*_FILE_ERRORS, FloatingPointError)):
        return first_line(err), 1
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(err, tf.errors.PermissionDeniedError):
        return f"permission denied: {first_line(err)}; pass a path you can write to.", 1
    if isinstance(err, urllib.error.URLError):
        return (f"network lookup failed ({err.reason}); a TPU name needs the GCE metadata server "
                "(on a TPU VM use --config.tpu=local).", 1)
    if type(err).__module__.startswith(("requests", "urllib3")):
        return (f"download failed ({first_line(err)[:200]}); check the network, or pass a local "
                "preset directory.", 1)
    return None


def report(fn, *args, verbose=False, prefix="Error", **kwargs):
    """`fn(*args, **kwargs)`; a user-facing error prints `<prefix>: <one line>` to stderr and
    exits with its code (see module doc); returns what `fn` returns."""
    try:
        return fn(*args, **kwargs)
    except Interrupted as err:
        print(str(err), file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:
        found = None if verbose else user_message(err)
        if found is None:
            raise
        print(f"{prefix}: {found[0]}", file=sys.stderr)
        sys.exit(found[1])
