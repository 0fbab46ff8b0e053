"""The worker side of `spawn.run_worker`: one job in this (fresh) process, its result printed."""

from __future__ import annotations

import json
import resource

from .keras_step import keras_step_worker, setup_tensorflow
from .options import Config
from .report import clean
from .spawn import RESULT_PREFIX
from .torch_peer import torch_step_worker


def worker_main(name, args):
    from tinybert_tf.launch import hardware

    hardware.quiet_python_logs()
    if name == "torch_task":
        from . import task_peer

        print(RESULT_PREFIX + json.dumps(clean(task_peer.worker(args))), flush=True)
        return
    cfg = Config(**args["cfg"])
    if name in ("tf_step", "jax_step"):
        setup_tensorflow(cfg)
        result = keras_step_worker(cfg, args)
    elif name == "torch_step":
        result = torch_step_worker(cfg, args)
    else:
        raise ValueError(f"Unknown worker {name!r}")
    result["peak_rss_mb"] = peak_rss_mb()
    result["ru_maxrss_mb"] = max_rss_mb()
    print(RESULT_PREFIX + json.dumps(clean(result)), flush=True)


def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def peak_rss_mb():
    """This process's RSS high-water mark (Linux VmHWM), else ru_maxrss.

    ru_maxrss of a child started from a large parent counts the parent's pages at fork (Linux
    keeps the pre-exec high-water mark), so it is not this process's own peak; VmHWM is reset by
    exec and is.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return max_rss_mb()
