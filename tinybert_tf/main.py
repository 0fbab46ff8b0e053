"""The absl entry point: python -m tinybert_tf.main --config=NAME[:variant] --workdir=DIR (console
script `tinybert-tf`). NAME is a packaged config (general_distill, task_distill; tinybert_tf/configs)
or the path of a config file (`config_lib.resolve_path`).

Modes (--config.mode): general_distill | task_distill | finetune | evaluate | export.
A user mistake prints one line `Error: ...` and exits non-zero (`cli.report`); --verbose adds the
traceback.

Keras backend (fixed per process): `--config.backend=jax` or `KERAS_BACKEND=jax` (the config's
default "tensorflow" defers to KERAS_BACKEND). Keras is imported after the config is read; when
it was already imported with another backend, the command line re-executes itself once with
KERAS_BACKEND set (`launch()`, in a process that keeps its Keras, refuses in one line instead).

Console: TensorFlow's C++ log (start-up INFO lines, `failed call to cuInit`, oneDNN notes) and
Python-side INFO logs are off unless --verbose (`hardware.quiet_tensorflow`, set before
TensorFlow is imported, as oneDNN is); a real error is still reported (`cli.report`).
"""

from __future__ import annotations

import contextlib
import re
import sys

from tinybert_tf.launch import hardware, heap  # noqa: E402  (os, gc: before TensorFlow)


def verbose_in(argv):
    """Whether the command line `argv` asks for --verbose (absl's spellings: --verbose,
    --verbose=true|1, --noverbose; the last one wins), read before absl parses it: TensorFlow's
    log level has to be set before TensorFlow is imported."""
    verbose = False
    for arg in argv[1:]:
        name, _, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name == "verbose":
            verbose = value.lower() in ("", "true", "1", "t", "yes", "y")
        elif arg.startswith("-") and name == "noverbose":
            verbose = False
    return verbose


# Both before TensorFlow is imported (`import tinybert_tf` imports nothing yet).
_QUIET = hardware.quiet_tensorflow(verbose_in(sys.argv))
hardware.enable_onednn()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from tinybert_tf.launch import backend as backend_lib  # noqa: E402  (os and sys only)
from tinybert_tf.launch import config_lib  # noqa: E402  (ml_collections only)


class _ConfigParser(flags.ArgumentParser):
    """ml_collections' config-file parser behind `config_lib.resolve_path`: `--config` is a
    packaged name (task_distill:tiny) or a file path, from any directory."""

    def __init__(self, files):
        self._files = files

    def parse(self, argument):
        path, variant = config_lib.resolve_path(argument)
        return self._files.parse(path if variant is None else f"{path}:{variant}")

    def flag_type(self):
        return self._files.flag_type()


def define_flags(fv, argv=None):
    """The launcher's flags on `fv` -> (config, workdir, verbose) holders. `argv`: the command
    line the config overrides are read from (default sys.argv)."""
    config = config_flags.DEFINE_config_file(
        "config", None, f"Config: a packaged name ({', '.join(config_lib.packaged_names())}) or "
        "a .py file, with an optional :variant, e.g. task_distill:tiny.", flag_values=fv,
        sys_argv=argv)
    fv["config"].parser = _ConfigParser(fv["config"].parser)
    holders = (
        config,
        flags.DEFINE_string("workdir", None, "Run directory (local path or gs://).",
                            flag_values=fv),
        flags.DEFINE_bool("verbose", False, "Print the traceback of a user error too (it is "
                          "reported in one line otherwise).", flag_values=fv),
    )
    flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)
    return holders


_CONFIG, _WORKDIR, _VERBOSE = define_flags(flags.FLAGS)


BACKENDS = backend_lib.BACKENDS
select_backend, check_backend = backend_lib.select_backend, backend_lib.check_backend


def _launch(config, workdir, verbose, reexec=False, process=False):
    """process: this process is the launcher's own (the command line), so its garbage collector
    is set for a run (`heap.settled_imports`); in a caller's process it is left as it is."""
    from tinybert_tf import cli

    try:
        config.mode  # noqa: B018  (ml_collections defers a config file that failed to load)
    except OSError as err:
        if verbose:
            raise
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        print(f"Error: the config file did not load: {lines[-1]}", file=sys.stderr)
        sys.exit(2)
    backend = cli.report(select_backend, config, verbose=verbose)
    cli.report(check_backend, backend, reexec, verbose=verbose)
    settled = heap.settled_imports() if process else contextlib.nullcontext()
    with hardware.native_start_up_filtered(_QUIET and not verbose), settled:
        from tinybert_tf.launch.modes import run  # Keras is imported with `backend` by now

    cli.report(run, config, workdir, verbose=verbose)


def main(argv):
    del argv
    # Python-side INFO logs (TensorFlow's checkpoint saver, ...) only with --verbose.
    hardware.quiet_python_logs(_VERBOSE.value or flags.FLAGS["verbosity"].present)
    _launch(_CONFIG.value, _WORKDIR.value, _VERBOSE.value, reexec=True, process=True)


def launch(argv):
    """The launcher in this process (tests, notebooks): `argv` as on the command line (argv[0]
    the program name), parsed into fresh flags -> the exit code; errors print as from a shell."""
    fv = flags.FlagValues()
    holders = define_flags(fv, argv)
    try:
        _parse_flags(argv, fv)
        _launch(*(h.value for h in holders))
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    return 0


def _parse_flags(argv, fv=flags.FLAGS):
    """absl flag parsing with config-override mistakes turned into one line naming the key."""
    try:
        return fv(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        unknown = re.search(r"Unknown command line flag '(?:config\.)?([\w.]+)'", str(err))
        if unknown or isinstance(err, (AttributeError, KeyError)):
            words = re.findall(r"[A-Za-z_][\w.]*", str(err))
            key = unknown.group(1) if unknown else (words[0] if words else text)
            hint = re.search(r"Did you mean [\"']([\w.]+)", str(err))
            fix = f"did you mean {hint.group(1)}?" if hint else "check the spelling against " \
                "the config file (its get_config() lists every key)."
            key, fix = config_lib.removed_key_fix(str(err), " ".join(argv)) or (key, fix)
            text = f"unknown config key {key}; {fix}"
        print(f"Error: {text}", file=sys.stderr)
        sys.exit(2)


def entry():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    entry()
