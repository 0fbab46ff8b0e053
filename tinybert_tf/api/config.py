"""The config of one API call: a packaged (or given) config with the call's keyword arguments.

Keyword arguments mirror the config's keys: a top-level key by name (`seed=1`, `student=...`), a
section as a dict (`finetune={"epochs": 3}`, `data={"seq_len": 128}`) or a dotted name
(`**{"data.seq_len": 128}`). A key the config does not have, or a value of the wrong type, is a
one-line `UserError` naming it.
"""

from __future__ import annotations

import copy

import ml_collections

from tinybert_tf.errors import UserError, first_line
from tinybert_tf.launch import config_lib


def _flatten(keys, prefix=""):
    """{"data": {"seq_len": 1}, "a.b": 2} -> {"data.seq_len": 1, "a.b": 2}."""
    out = {}
    for key, value in keys.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _set(run_config, name, value):
    target, (*parents, last) = run_config, name.split(".")
    try:
        for part in parents:
            target = target[part]
        if not isinstance(target, ml_collections.ConfigDict) or last not in target:
            raise KeyError(name)
        if isinstance(target[last], ml_collections.ConfigDict):
            raise UserError(f"config key {name} is a section; pass a dict, e.g. "
                            f"{last}={{{next(iter(target[last]), 'key')!r}: ...}}.")
        target[last] = value
    except (KeyError, AttributeError):
        source = "general_distill" if run_config.mode == "general_distill" else "task_distill"
        raise UserError(f"unknown config key {name}; check the spelling against the config "
                        f"(tinybert_tf/configs/{source}.py lists every key).") from None
    except TypeError as err:
        raise UserError(f"config key {name}: {first_line(err)}") from None


def build(name, mode, config=None, variant=None, keys=None):
    """The config of a call: `config` (a ConfigDict, copied; or a config name / path as
    `--config` takes) else the packaged `name`, with `variant` (e.g. "tiny"), `mode` and `keys`
    (a flat or nested dict of overrides) applied."""
    if isinstance(config, ml_collections.ConfigDict):
        run_config = copy.deepcopy(config)
        run_config.lock()
    else:
        run_config = config_lib.load(config or name, variant)
    run_config.mode = mode
    for key, value in _flatten(dict(keys or {})).items():
        _set(run_config, key, value)
    return run_config
