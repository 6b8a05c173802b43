"""Shared benchmark harness: timers, device naming and result files.

Rules every benchmark follows (see ``../shared/reference/performance.md`` §10):

* GPU code is timed with CUDA events after warm-up; the reported number is the
  median of many runs; inputs rotate through enough copies to exceed the 50 MB L2.
* Every table carries a baseline measured in the same run (device copy, cuBLAS, the
  NumPy reference, dgemm) and reports the ratio against it.
* Results go to ``benchmarks/results/<device>/<name>.json`` (machine readable, with
  the command, versions and raw samples) and ``<name>.md`` (a short table).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_name() -> str:
    """Short name of the machine the benchmark runs on: the GPU model or ``cpu-<n>c``."""
    try:
        import cupy

        if cupy.cuda.is_available():
            props = cupy.cuda.runtime.getDeviceProperties(0)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            for tag in ("H100", "H200", "A100", "L40", "RTX"):
                if tag in name:
                    return tag.lower()
            return name.replace(" ", "_").lower()
    except Exception:
        pass
    return f"cpu-{os.cpu_count()}c"


def cpu_time(fn, *, warmup: int = 1, iters: int = 5) -> list[float]:
    """Wall-clock seconds of ``fn()`` for ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def cuda_time(fn, *, warmup: int = 10, iters: int = 100) -> list[float]:
    """Seconds per call of ``fn()`` measured with CUDA events, one event pair per call.

    ``fn`` should rotate its inputs (e.g. cycle through copies whose total size
    exceeds L2) so that repeated calls do not measure cache hits.
    """
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    out = []
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    for _ in range(iters):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        out.append(cupy.cuda.get_elapsed_time(start, stop) * 1e-3)
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def versions() -> dict:
    v = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("numpy", "scipy", "numba", "cupy", "torch"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:
            pass
    return v


def write_results(name: str, rows: list[dict], columns: list[str], *, meta: dict | None = None,
                  title: str | None = None, notes: str = "") -> Path:
    """Write ``rows`` to ``results/<device>/<name>.json`` and a Markdown table ``.md``.

    ``columns`` picks and orders the keys shown in the Markdown table; the JSON keeps
    every key of every row plus ``meta`` (command line, versions, device).
    """
    dev = device_name()
    out = RESULTS_DIR / dev
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "device": dev,
        "command": "python -m benchmarks." + name + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
        "meta": meta or {},
        "rows": rows,
    }
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = [f"# {title or name} ({dev})", "", f"Command: `{payload['command']}`  ", f"Date: {payload['date']}", ""]
    if notes:
        lines += [notes, ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    return out / f"{name}.json"
