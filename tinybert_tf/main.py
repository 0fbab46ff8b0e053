"""The absl entry point: python -m tinybert_tf.main --config=configs/<file>.py[:variant] --workdir=DIR.

Modes (--config.mode): general_distill | task_distill | finetune | evaluate | export.
"""

from __future__ import annotations

import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (.py[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local path or gs://).")
flags.mark_flags_as_required(["config", "workdir"])

MODES = ("general_distill", "task_distill", "finetune", "evaluate", "export")


def run(config, workdir):
    """Run one mode of a resolved config; returns what the mode returns (e.g. a preset dir)."""
    import keras
    import tensorflow as tf

    from tinybert_tf import modes, strategy, train

    if config.mode not in MODES:
        raise strategy.LaunchError(f"Unknown mode {config.mode!r}; use one of {', '.join(MODES)}.")
    train.prepare_workdir(workdir, config.to_dict(), overwrite=config.overwrite)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy.set_precision(config.precision)
    dist = strategy.make_strategy(config.strategy, config.tpu)
    logging.info("Strategy %s with %d replicas.", type(dist).__name__, dist.num_replicas_in_sync)
    if config.mode == "general_distill":
        return modes.general_distill(config, workdir, dist)
    if config.mode == "finetune":
        return modes.finetune(config, workdir, dist)
    if config.mode == "task_distill":
        return modes.task_distill(config, workdir, dist)
    if config.mode == "evaluate":
        from tinybert_tf import evaluate

        return evaluate.run_from_config(config, workdir)
    from tinybert_tf import export

    return export.run_from_config(config, workdir)


def main(argv):
    del argv
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
