"""`--bench=memory`: peak RSS of a fresh process running the step, per framework and precision."""

from __future__ import annotations

import dataclasses
import importlib.util

from .options import FLAGS
from .report import print_table
from .spawn import peer_env, run_worker


def bench_memory(cfg, tf_variants, torch_variants):
    small = dataclasses.replace(cfg, repeats=min(cfg.repeats, 3), warmup=1)
    args = dataclasses.asdict(small)
    out = {"tensorflow": {}, "torch": {}}
    for name in tf_variants:
        r = run_worker("tf_step", {"cfg": args, "variants": [name]})
        out["tensorflow"][name] = r.get("peak_rss_mb") if "error" not in r else r["error"]
    torch_ok = (FLAGS.peer != "none" and importlib.util.find_spec("torch") is not None
                and importlib.util.find_spec("transformers") is not None)
    if torch_ok:
        for name in torch_variants:
            r = run_worker("torch_step", {"cfg": args, "variants": [name]}, extra_env=peer_env())
            out["torch"][name] = r.get("peak_rss_mb") if "error" not in r else r["error"]
    else:
        out["torch_skipped"] = "torch/transformers not importable or --peer=none"
    rows = [[f"tensorflow:{k}", v] for k, v in out["tensorflow"].items()]
    rows += [[f"torch:{k}", v] for k, v in out["torch"].items()]
    print_table("memory: peak RSS (VmHWM) of a fresh process running the step", ["run", "MB"], rows)
    return out
