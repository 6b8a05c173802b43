"""quipref: readable reference implementations of QuIP-family weight quantization.

One concept per module (the API reference has a page for each)::

    hessian       H = E[x x^T], damping, the proxy loss
    hadamard      Hadamard matrices K·2^k and the orthonormal fast transform
    incoherence   mu_H, mu_W; randomized Hadamard and Kronecker transforms; rescaling
    ldlq          UDU^T / block LDL, LDLQ, BlockLDLQ, greedy passes, LDLQ-RG
    bounds        the papers' theorems as functions
    quantizers    ScalarGrid, IntegerGrid, LloydMax, ... (encode / decode)
    methods       quantize_linear(W, H, method, bits) recipes
    formats       QuantizedLinear, save / load_linear

``import fast`` gives the same names, implemented with Numba and CUDA.

Note: at package level ``quipref.ldlq`` is the *function* :func:`quipref.ldlq.ldlq`
(the design's stable entry point); the module is reached with
``from quipref.ldlq import ...`` or ``importlib.import_module("quipref.ldlq")``.
"""
__version__ = "0.1.0"

from . import bounds, datasets, formats, hadamard, hessian, incoherence, methods, quantizers
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
