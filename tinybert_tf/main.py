"""The absl entry point: python -m tinybert_tf.main --config=configs/<file>.py[:variant] --workdir=DIR.

Modes (--config.mode): general_distill | task_distill | finetune | evaluate | export.
A user mistake prints one line `Error: ...` and exits non-zero (`cli.report`); --verbose adds the
traceback.
"""

from __future__ import annotations

import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from tinybert_tf.launch import hardware  # noqa: E402  (os only: before TensorFlow is imported)

_ONEDNN = hardware.enable_onednn()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402


def define_flags(fv, argv=None):
    """The launcher's flags on `fv` -> (config, workdir, verbose) holders. `argv`: the command
    line the config overrides are read from (default sys.argv)."""
    holders = (
        config_flags.DEFINE_config_file("config", None, "Config file (.py[:variant]).",
                                        flag_values=fv, sys_argv=argv),
        flags.DEFINE_string("workdir", None, "Run directory (local path or gs://).",
                            flag_values=fv),
        flags.DEFINE_bool("verbose", False, "Print the traceback of a user error too (it is "
                          "reported in one line otherwise).", flag_values=fv),
    )
    flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)
    return holders


_CONFIG, _WORKDIR, _VERBOSE = define_flags(flags.FLAGS)


def _launch(config, workdir, verbose):
    from tinybert_tf import cli
    from tinybert_tf.launch.modes import run

    try:
        config.mode  # noqa: B018  (ml_collections defers a config file that failed to load)
    except OSError as err:
        if verbose:
            raise
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        print(f"Error: the config file did not load: {lines[-1]}", file=sys.stderr)
        sys.exit(2)
    cli.report(run, config, workdir, verbose=verbose)


def main(argv):
    del argv
    _launch(_CONFIG.value, _WORKDIR.value, _VERBOSE.value)


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
            if "learning_rate" in str(err) and "optimizer" in " ".join(argv):
                key = "optimizer.learning_rate"
                fix = ("task modes set each stage's own rate: --config.finetune.learning_rate, "
                       "--config.intermediate.learning_rate, --config.prediction.learning_rate.")
            text = f"unknown config key {key}; {fix}"
        print(f"Error: {text}", file=sys.stderr)
        sys.exit(2)


def entry():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    entry()
