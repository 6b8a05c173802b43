"""Same API as :mod:`quipref.methods`: the *same* recipes, run with the fast primitives
(Numba lazy-batch LDLQ, Numba/CUDA Hadamard transforms, the fast E8P / RVQ / trellis
quantizers)."""
from quipref.methods import *  # noqa: F401,F403
from quipref.methods import __all__, Toolkit  # noqa: F401
from quipref._contract import run_recipe as _quantize_linear


def fast_toolkit() -> Toolkit:
    # (``from . import ldlq`` would give the function: the package exports ldlq())
    from . import quantizers
    from .formats import QuantizedLinear
    from .incoherence import KroneckerOrthogonal, RandomizedHadamard, incoherence_process, rescale
    from .ldlq import greedy_passes, ldlq, ldlq_rg

    return Toolkit(ldlq, ldlq_rg, RandomizedHadamard, KroneckerOrthogonal, incoherence_process,
                   rescale, QuantizedLinear, quantizers, greedy_passes)


def quantize_linear(W, H, method: str, bits: int, seed=0, **options):
    """Same as :func:`quipref.quantize_linear` (see its docstring), with fast primitives.

    NumPy inputs run on the CPU (Numba); CuPy inputs run on the GPU and return a layer
    whose codes live on the GPU.
    """
    return _quantize_linear(W, H, method, bits, seed, fast_toolkit(), **options)
