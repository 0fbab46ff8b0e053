"""The absl entry point: python -m tinybert_tf.main --config=configs/<file>.py[:variant] --workdir=DIR.

Modes (--config.mode): general_distill | task_distill | finetune | evaluate | export.
"""

from __future__ import annotations

import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from tinybert_tf import hardware  # noqa: E402  (os only: before TensorFlow is imported)

_ONEDNN = hardware.enable_onednn()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (.py[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local path or gs://).")
flags.mark_flags_as_required(["config", "workdir"])

def main(argv):
    del argv
    from tinybert_tf.modes import run
    from tinybert_tf.strategy import LaunchError

    try:
        run(_CONFIG.value, _WORKDIR.value)
    except (LaunchError, FloatingPointError, FileNotFoundError) as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)


def _parse_flags(argv):
    """absl flag parsing with config-override mistakes turned into one line naming the key."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        unknown = re.search(r"Unknown command line flag '(?:config\.)?([\w.]+)'", str(err))
        if unknown or isinstance(err, (AttributeError, KeyError)):
            words = re.findall(r"[A-Za-z_][\w.]*", str(err))
            key = unknown.group(1) if unknown else (words[0] if words else text)
            hint = re.search(r"Did you mean [\"']([\w.]+)", str(err))
            fix = f"did you mean {hint.group(1)}?" if hint else "check the spelling against " \
                "the config file (its get_config() lists every key)."
            text = f"unknown config key {key}; {fix}"
        print(f"Error: {text}", file=sys.stderr)
        sys.exit(2)


def entry():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    entry()
