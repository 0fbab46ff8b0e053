"""The launcher's ml_collections config files, one per mode family, each a `get_config(variant)`.

`--config=task_distill:tiny` (a bare name) reads `task_distill.py` here; `--config=PATH.py` reads
any other file (`config_lib.resolve_path`). They ship in the wheel, so every command works from
any directory.
"""
