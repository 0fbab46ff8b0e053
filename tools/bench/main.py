"""The benchmark's entry point (`tools/benchmark.py` runs `main` under absl): a worker job, or the
benchmarks of --bench in order, each guarded, then the --json file."""

from __future__ import annotations

import dataclasses
import json
import time

from absl import app

from .checkpoint import bench_checkpoint
from .common import parse_variant
from .input_pipeline import bench_input
from .jax_step import bench_jax
from .keras_step import setup_tensorflow
from .memory import bench_memory
from .options import BENCHES, FLAGS, config_from_flags
from .report import machine_info, write_json
from .serve import bench_serve
from .step import bench_step
from .task import run_task_bench
from .worker import worker_main


def main(argv):
    del argv
    from tinybert_tf.launch import hardware, heap

    hardware.quiet_python_logs()
    heap.import_settled(*heap.RUN_MODULES)  # the collector as in the launcher's process
    if FLAGS.worker:
        text = FLAGS.worker_args
        if text.startswith("@"):
            with open(text[1:]) as f:
                text = f.read()
        worker_main(FLAGS.worker, json.loads(text))
        return
    unknown = set(FLAGS.bench) - set(BENCHES)
    if unknown:
        raise app.UsageError(f"Unknown --bench {sorted(unknown)}; choose from {BENCHES}.")
    for name in FLAGS.variants:
        parse_variant(name)
    cfg = config_from_flags()
    tf = setup_tensorflow(cfg)
    tf.get_logger().setLevel("ERROR")
    import keras

    results = {"config": dataclasses.asdict(cfg), "machine_start": machine_info(cfg.threads)}
    results["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
    print(f"machine: {results['machine_start']['cpu']}, {cfg.threads} threads; "
          f"{results['machine_start']['uptime']}")
    step = guarded(results, "step", bench_step, cfg) if "step" in FLAGS.bench else None
    if "input" in FLAGS.bench:
        guarded(results, "input", bench_input, cfg, step["seq_per_s"] if step else None)
    if "serve" in FLAGS.bench:
        guarded(results, "serve", bench_serve, cfg)
    if "memory" in FLAGS.bench:
        fastest = step["fastest"] if step else "bf16t"
        tf_variants = list(dict.fromkeys(["fp32", fastest]))
        guarded(results, "memory", bench_memory, cfg, tf_variants, ["fp32", "bf16_autocast"])
    if "jax" in FLAGS.bench:
        guarded(results, "jax", bench_jax, cfg, step)
    if "task" in FLAGS.bench:
        guarded(results, "task", run_task_bench, cfg)
    if "checkpoint" in FLAGS.bench:
        guarded(results, "checkpoint", bench_checkpoint, cfg)
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    results["machine_end"] = machine_info(cfg.threads)
    print(f"\nmachine at the end: {results['machine_end']['uptime']}")
    if FLAGS.json:
        write_json(FLAGS.json, results)
    if failed:
        raise SystemExit(f"benchmarks failed: {failed}")


def guarded(results, name, fn, *args):
    """Runs one benchmark; a failure is recorded in the JSON and the others still run. Each
    benchmark's own wall time (worker processes and compiles included) goes beside its figures
    as `results["bench_seconds"][name]`."""
    start = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception as err:  # noqa: BLE001 - report and go on with the other benchmarks
        import traceback

        traceback.print_exc()
        results[name] = {"error": f"{type(err).__name__}: {err}"}
        return None
    finally:
        seconds = round(time.perf_counter() - start, 1)
        results.setdefault("bench_seconds", {})[name] = seconds
        print(f"[{name}] {seconds:.0f} s")
    return results[name]
