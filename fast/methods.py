"""Same API as :mod:`quipref.methods`: the *same* recipes, run with the fast primitives
(Numba lazy-batch LDLQ, Numba/CUDA Hadamard transforms)."""
from quipref.methods import *  # noqa: F401,F403
from quipref.methods import __all__, Toolkit, _quantize_linear  # noqa: F401


def fast_toolkit() -> Toolkit:
    from . import formats, incoherence, ldlq

    return Toolkit(ldlq.ldlq, ldlq.ldlq_rg, incoherence.RandomizedHadamard,
                   incoherence.KroneckerOrthogonal, incoherence.incoherence_process,
                   incoherence.rescale, formats.QuantizedLinear)


def quantize_linear(W, H, method: str, bits: int, seed=0, **options):
    """Same as :func:`quipref.quantize_linear` (see its docstring), with fast primitives.

    NumPy inputs run on the CPU (Numba); CuPy inputs run on the GPU and return a layer
    whose codes live on the GPU.
    """
    return _quantize_linear(W, H, method, bits, seed, fast_toolkit(), **options)
