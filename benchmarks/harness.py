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


def graph_time(step, n_calls: int, *, replays: int = 20, warmup: int = 4,
               backend: str = "cupy") -> list[float]:
    """Seconds per call of CUDA-graph replays of ``n_calls`` captured calls ``step(i)``.

    The one graph timer of every GPU benchmark: ``step(i)`` for i < ``warmup`` runs first
    (compilation, workspaces, first touches) on the capture stream, then ``step(0)`` ..
    ``step(n_calls - 1)`` are captured into one graph (``step`` should rotate its inputs
    through copies whose total size exceeds L2), the graph is replayed 3 times untimed
    and ``replays`` times between two CUDA events; each sample is the replay time divided
    by ``n_calls`` (take the median). ``backend``: ``"cupy"`` (CuPy stream capture) or
    ``"torch"`` (``torch.cuda.CUDAGraph``, for cuBLAS baselines).
    """
    if backend == "torch":
        import torch

        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for i in range(warmup):
                step(i)
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(n_calls):
                step(i)
        for _ in range(3):
            g.replay()
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        out = []
        for _ in range(replays):
            start.record()
            g.replay()
            stop.record()
            stop.synchronize()
            out.append(start.elapsed_time(stop) * 1e-3 / n_calls)
        return out
    if backend != "cupy":
        raise ValueError(f"backend must be 'cupy' or 'torch', got {backend!r}")
    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        for i in range(warmup):
            step(i)
        stream.synchronize()
        stream.begin_capture()
        for i in range(n_calls):
            step(i)
        graph = stream.end_capture()
    graph.upload(stream)
    for _ in range(3):
        graph.launch(stream)
    stream.synchronize()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    out = []
    for _ in range(replays):
        start.record(stream)
        graph.launch(stream)
        stop.record(stream)
        stop.synchronize()
        out.append(cupy.cuda.get_elapsed_time(start, stop) * 1e-3 / n_calls)
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


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def command() -> str:
    """The command line that reproduces this run: ``python -m <module> <args>`` of the
    running ``__main__`` module (so that a results file names a module that exists)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        mod = spec.name
    else:
        path = Path(sys.argv[0]).resolve()
        try:
            rel = path.relative_to(RESULTS_DIR.parent.parent).with_suffix("")
            mod = ".".join(rel.parts)
        except ValueError:
            mod = path.stem
    return "python -m " + mod + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")


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
        "command": command(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
        "meta": meta or {},
        "rows": rows,
    }
    _atomic_write(out / f"{name}.json", json.dumps(payload, indent=2, default=float) + "\n")

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
    _atomic_write(out / f"{name}.md", "\n".join(lines) + "\n")
    return out / f"{name}.json"
