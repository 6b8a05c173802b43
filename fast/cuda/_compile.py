"""Load and compile the CUDA sources in ``fast/kernels``.

* :func:`load_module` compiles a ``.cu`` file once per process (``cupy.RawModule``,
  NVRTC, C++17) and caches it; it needs a GPU.
* :func:`nvrtc_compile` compiles a source to PTX with the low-level NVRTC bindings and
  needs **no GPU** (only ``cuda-toolkit[nvrtc]``): CI uses it so that a kernel that does
  not build fails CI even on a CPU-only machine.
"""
from __future__ import annotations

import functools
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent.parent / "kernels"

#: Options shared by every kernel build (runtime and compile check alike).
NVRTC_OPTIONS = ("--std=c++17",)


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

    path = KERNEL_DIR / f"{name}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"no CUDA source {path}")
    mod = cupy.RawModule(code=path.read_text(), options=NVRTC_OPTIONS + tuple(options),
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
    prog = nvrtc.createProgram(path.read_text(), path.name, [], [])
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


def _compile_one(args) -> str:
    name, options = args
    load_module(name, tuple(options))
    return " ".join(options)


def precompile_units(name: str, units, processes: int | None = None) -> list[str]:
    """Compile several builds of ``fast/kernels/<name>.cu`` (``units``: option tuples)
    into CuPy's on-disk kernel cache in parallel spawned processes (needs a GPU), so that
    a benchmark or test run does not pay the NVRTC time build by build. Returns the
    option strings compiled."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    units = [tuple(u) for u in units]
    workers = processes or max(1, min(len(units), os.cpu_count() or 1))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        return list(ex.map(_compile_one, [(name, u) for u in units]))


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
