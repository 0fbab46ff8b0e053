"""What the benchmark prints and writes: tables, JSON-safe figures, the machine it ran on."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess


def finite_or_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def clean(obj):
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    return finite_or_none(obj) if isinstance(obj, float) else obj


def print_table(title, headers, rows):
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n== {title}")
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "-"
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def machine_info(threads):
    info = {"uptime": _uptime(), "loadavg": list(os.getloadavg()), "cores": os.cpu_count(),
            "threads": threads, "python": platform.python_version(), "cpu": _cpu_model()}
    return info


def _uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(path, results):
    """All figures to `path` (the `--json` file), JSON-safe, keys sorted."""
    with open(path, "w") as f:
        json.dump(clean(results), f, indent=2, sort_keys=True)
    print(f"wrote {path}")
