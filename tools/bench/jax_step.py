"""`--bench=jax`: the same Distiller step on the Keras JAX backend (a KERAS_BACKEND=jax worker)."""

from __future__ import annotations

import dataclasses
import importlib.util

from .options import FLAGS
from .report import print_table
from .spawn import run_worker


def bench_jax(cfg, tf_step):
    if importlib.util.find_spec("jax") is None:
        print("JAX benchmark skipped: jax is not installed")
        return {"skipped": "jax not installed"}
    r = run_worker("jax_step", {"cfg": dataclasses.asdict(cfg), "variants": FLAGS.jax_variants},
                   backend="jax")
    if "error" in r:
        print(f"JAX benchmark failed: {r['error'][-500:]}")
        return {"skipped": r["error"]}
    out = {"variants": r["variants"], "peak_rss_mb": r.get("peak_rss_mb")}
    rows = [[f"jax:{k}", v["seq_per_s"], v["step_ms"]] for k, v in r["variants"].items()]
    if tf_step:
        for name in FLAGS.jax_variants:
            tf_name = f"{name}_xla"
            if tf_name in tf_step["variants"]:
                out[f"{name}_ratio_vs_tf_xla"] = (r["variants"][name]["seq_per_s"]
                                                  / tf_step["variants"][tf_name]["seq_per_s"])
                rows.append([f"tensorflow:{tf_name}", tf_step["variants"][tf_name]["seq_per_s"],
                             tf_step["variants"][tf_name]["step_ms"]])
    print_table("jax: the same Distiller step on the Keras JAX backend (jit)",
                ["variant", "seq/s", "ms/step"], rows)
    return out
