"""fast: the public API of :mod:`quipref`, implemented for speed.

``import fast as q`` in place of ``import quipref as q``: every public name exists
with the same signature. NumPy arrays run on the CPU (Numba, BLAS-3 blocked
algorithms); CuPy arrays run on the GPU (raw CUDA kernels in ``fast/kernels``) and
results stay on the GPU. Names that the reference already computes at full speed
are re-exported from :mod:`quipref`.
"""
from quipref import __version__, datasets

from . import bounds, formats, hadamard, hessian, incoherence, methods, quantizers
from .formats import QuantizedLinear, load_linear
from .hadamard import factor_dimension, hadamard_matrix, hadamard_transform
from .hessian import HessianAccumulator, damp_hessian, proxy_loss, regularize_hessian
from .incoherence import (KroneckerOrthogonal, RandomizedHadamard, incoherence_process,
                          incoherence_unprocess, mu_hessian, mu_weights, rescale)
from .ldlq import greedy_passes, ldl, ldlq, ldlq_rg
from .methods import quantize_linear

__all__ = [
    "bounds", "datasets", "formats", "hadamard", "hessian", "incoherence", "methods", "quantizers",
    "QuantizedLinear", "load_linear",
    "factor_dimension", "hadamard_matrix", "hadamard_transform",
    "HessianAccumulator", "damp_hessian", "proxy_loss", "regularize_hessian",
    "KroneckerOrthogonal", "RandomizedHadamard", "incoherence_process", "incoherence_unprocess",
    "mu_hessian", "mu_weights", "rescale",
    "greedy_passes", "ldl", "ldlq", "ldlq_rg",
    "quantize_linear",
]
