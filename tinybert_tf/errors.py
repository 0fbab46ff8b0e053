"""The package's one base error type: a mistake the user fixes (a flag, a file, a path).

`tinybert_tf.main` prints any `UserError` as one line ("Error: ...") and exits non-zero; anything
else is a bug and keeps its traceback. Each layer subclasses it (`LaunchError` here,
`export_serving.ExportError`, `data.task_spec.TaskFileError`, ...) so callers can catch one type.
"""

from __future__ import annotations


class UserError(ValueError):
    """A user mistake; the message is one line that names what to fix."""

    exit_code = 1


class LaunchError(UserError):
    """A launch problem a user fixes with a flag; the message is one line naming the fix
    (defined here, TensorFlow-free, so `launch.distribution` raises it too)."""


class Interrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after writing a checkpoint (exit 130 / 143)."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(err, default=None):
    """The first line of an exception's (or a string's) text, stripped: the one-line reason a user
    error quotes. `default` when the text is blank (None: the exception's type name)."""
    text = str(err).strip()
    if text:
        return text.splitlines()[0].strip()
    return type(err).__name__ if default is None else default
