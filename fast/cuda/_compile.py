"""Load and compile the CUDA sources in ``fast/kernels``.

* :func:`load_module` compiles a ``.cu`` file once per process (``cupy.RawModule``,
  NVRTC, C++17) and caches it; it needs a GPU.
* :func:`nvrtc_compile` compiles a source to PTX with the low-level NVRTC bindings and
  needs **no GPU** (only ``cuda-toolkit[nvrtc]``): CI uses it so that a kernel that does
  not build fails CI even on a CPU-only machine.
* :func:`kernel_source`: the text both compile, with the ``#include "x.cuh"`` lines of
  ``fast/kernels`` inlined (so CuPy's kernel cache, keyed on the text, sees a changed
  header, and NVRTC needs no include path).
* :func:`precompile_units` fills CuPy's on-disk cache with several builds in parallel
  worker processes (``python -m fast.cuda._compile``), from any caller.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent.parent / "kernels"

#: Options shared by every kernel build (runtime and compile check alike).
NVRTC_OPTIONS = ("--std=c++17",)


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)


def kernel_source(path) -> str:
    """The text of a CUDA source with its quoted ``#include`` lines replaced by the
    included files (recursively, relative to the including file), each followed by a
    ``#line`` directive so that compiler messages keep the original file and line.

    Raises
    ------
    FileNotFoundError
        If the source or an included file does not exist.
    """
    path = Path(path)

    def expand(p: Path, stack: tuple) -> str:
        text = p.read_text()

        def sub(m):
            inc = p.parent / m.group(1)
            if not inc.is_file():
                raise FileNotFoundError(f"{p.name} includes {m.group(1)!r}: no file {inc}")
            if inc in stack:
                raise ValueError(f"include cycle: {' -> '.join(q.name for q in stack + (inc,))}")
            line = text.count("\n", 0, m.start()) + 2  # the line after the #include
            return f'#line 1 "{inc.name}"\n{expand(inc, stack + (inc,))}\n#line {line} "{p.name}"'

        return _INCLUDE.sub(sub, text)

    if not path.is_file():
        raise FileNotFoundError(f"no CUDA source {path}")
    return expand(path, (path,))


def kernel_sources() -> list[Path]:
    """All CUDA sources shipped with :mod:`fast`, sorted by name."""
    return sorted(KERNEL_DIR.glob("*.cu"))


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # driver missing or broken
        return False


@functools.lru_cache(maxsize=None)
def load_module(name: str, options: tuple = ()):
    """Compile ``fast/kernels/<name>.cu`` with NVRTC and return the ``cupy.RawModule``.

    Parameters
    ----------
    name : str
        File stem, e.g. ``"rht"``.
    options : tuple of str
        Extra NVRTC options (e.g. ``("-DBLOCK=128",)``); each distinct tuple is cached.
    """
    import cupy

    mod = cupy.RawModule(code=kernel_source(KERNEL_DIR / f"{name}.cu"), options=NVRTC_OPTIONS + tuple(options),
                         backend="nvrtc")
    mod.compile()
    return mod


def nvrtc_compile(path, arch: str = "compute_90", options: tuple = ()) -> bytes:
    """Compile a CUDA source to PTX with NVRTC, without a GPU; return the PTX.

    Raises
    ------
    RuntimeError
        With the NVRTC log when the source does not compile.
    """
    from cupy.cuda import nvrtc

    path = Path(path)
    prog = nvrtc.createProgram(kernel_source(path), path.name, [], [])
    try:
        opts = [f"--gpu-architecture={arch}", *NVRTC_OPTIONS, *options]
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise RuntimeError(f"NVRTC failed to compile {path.name}:\n{log}") from exc
        return nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)


def _worker_env() -> dict:
    """The environment of a worker: this process's, with the directory that holds the
    ``fast`` package first on PYTHONPATH (so the worker imports this very copy)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def precompile_units(name: str, units, processes: int | None = None, *,
                     ptx_only: bool = False) -> list[str]:
    """Compile several builds of ``fast/kernels/<name>.cu`` (``units``: option tuples)
    in parallel worker processes, so that a benchmark or test run does not pay the NVRTC
    time build by build (NVRTC holds the GIL: threads would not overlap).

    Each worker is ``python -m fast.cuda._compile <name> <options...>``, a fresh
    interpreter that imports only this package: unlike a multiprocessing pool it does
    not re-run the caller's ``__main__``, so this works from scripts, ``python -``
    (standard input), ``python -c`` and notebooks alike. A unit whose worker fails (no
    interpreter, a crash) is compiled again in this process, with a ``RuntimeWarning``
    naming the unit and the worker's last error line; an error there propagates.

    Parameters
    ----------
    name : str
        Kernel file stem, e.g. ``"rht"``.
    units : iterable of tuple of str
        NVRTC option tuples, one per build.
    processes : int, optional
        Concurrent workers (default: ``min(len(units), os.cpu_count())``).
    ptx_only : bool
        Only compile to PTX with :func:`nvrtc_compile` (no GPU needed; checks that the
        units build) instead of filling CuPy's kernel cache with :func:`load_module`
        (needs a GPU).

    Returns
    -------
    list of str
        The option strings of the units compiled.
    """
    from concurrent.futures import ThreadPoolExecutor

    units = [tuple(u) for u in units]
    if not units:
        return []
    workers = max(1, min(len(units), processes or os.cpu_count() or 1))
    env = _worker_env()

    def run(u):
        cmd = [sys.executable, "-m", "fast.cuda._compile", *(["--ptx-only"] if ptx_only else []), name, *u]
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            return f"could not start {sys.executable!r}: {exc}"
        if r.returncode:
            tail = (r.stderr or r.stdout).strip().splitlines()
            return f"exit status {r.returncode}: {tail[-1] if tail else 'no output'}"
        return None

    with ThreadPoolExecutor(max_workers=workers) as ex:
        errors = list(ex.map(run, units))
    for u, err in zip(units, errors):
        if err is not None:
            warnings.warn(f"precompiling {name}.cu {' '.join(u) or '(default build)'} in a worker "
                          f"process failed ({err}); compiling it in this process instead",
                          RuntimeWarning, stacklevel=2)
            _compile_here(name, u, ptx_only)
    return [" ".join(u) for u in units]


def _compile_here(name: str, options: tuple, ptx_only: bool) -> None:
    if ptx_only:
        nvrtc_compile(KERNEL_DIR / f"{name}.cu", options=tuple(options))
    else:
        load_module(name, tuple(options))


def occupancy(kernel, threads: int, smem: int, device_id: int, what: str) -> tuple[int, int]:
    """(resident blocks per SM, SMs of the device) of a ``cupy.RawKernel`` launched with
    ``threads`` threads and ``smem`` bytes of dynamic shared memory (its registers and
    launch bounds included; needs a GPU). ``what`` names the kernel in the error.

    Raises
    ------
    RuntimeError
        If not even one block fits on an SM.
    """
    import cupy
    from cupy_backends.cuda.api import driver

    with cupy.cuda.Device(device_id):
        per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.kernel.ptr, threads, smem)
        sms = cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrMultiProcessorCount, device_id)
    if per_sm < 1:
        raise RuntimeError(f"{what}: a block of {threads} threads with {smem} B of shared memory "
                           f"does not fit on an SM")
    return int(per_sm), int(sms)


def _main(argv=None) -> int:
    """Worker of :func:`precompile_units`: ``python -m fast.cuda._compile [--ptx-only]
    <name> <options...>`` compiles one build unit."""
    args = list(sys.argv[1:] if argv is None else argv)
    ptx_only = bool(args) and args[0] == "--ptx-only"
    if ptx_only:
        args = args[1:]
    if not args:
        print("usage: python -m fast.cuda._compile [--ptx-only] NAME [NVRTC options...]", file=sys.stderr)
        return 2
    _compile_here(args[0], tuple(args[1:]), ptx_only)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
