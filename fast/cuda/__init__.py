"""CuPy raw-CUDA implementations used by :mod:`fast` when it is given CuPy arrays.

Kernels live in ``fast/kernels/*.cu`` (one concern per file) and are compiled with
NVRTC through :func:`fast.cuda._compile.load_module`. Nothing here is imported unless
a CuPy array reaches a :mod:`fast` function, so CPU-only installs never need CuPy.
"""
from ._compile import gpu_available, kernel_sources, load_module, nvrtc_compile

__all__ = ["gpu_available", "kernel_sources", "load_module", "nvrtc_compile"]
