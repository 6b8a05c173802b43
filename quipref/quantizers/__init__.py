"""Quantizers ``Q`` that (Block)LDLQ plugs in: each has ``encode``, ``decode``,
``quantize``, ``dim`` and ``bits_per_weight`` (contract in :mod:`quipref.quantizers.base`).

* :mod:`~quipref.quantizers.scalar`: ScalarGrid (QuIP, OPTQ/RTN), IntegerGrid (the theorems'
  unbounded grid), LloydMax (N(0, 1)-optimal scalar).
* :mod:`~quipref.quantizers.e8p`: QuIP#'s 2-bit E8P lattice codebook (dim 8).
* :mod:`~quipref.quantizers.rvq`: QuIP#'s 3/4-bit residual vector quantizers, E81B.
"""
from .base import Quantizer, quantizer_from_state
from .e8p import E8P, e8p_source_set
from .rvq import E81B, RVQ, e81b_codebook
from .scalar import IntegerGrid, LloydMax, ScalarGrid, lloyd_max_gaussian

__all__ = ["Quantizer", "quantizer_from_state", "ScalarGrid", "IntegerGrid", "LloydMax",
           "lloyd_max_gaussian", "E8P", "e8p_source_set", "RVQ", "E81B", "e81b_codebook"]
