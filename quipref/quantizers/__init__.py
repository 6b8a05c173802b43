"""Quantizers ``Q`` that (Block)LDLQ plugs in: each has ``encode``, ``decode``,
``quantize``, ``dim`` and ``bits_per_weight`` (contract in :mod:`quipref.quantizers.base`).
"""
from .base import Quantizer, quantizer_from_state
from .scalar import IntegerGrid, LloydMax, ScalarGrid, lloyd_max_gaussian

__all__ = ["Quantizer", "quantizer_from_state", "ScalarGrid", "IntegerGrid", "LloydMax",
           "lloyd_max_gaussian"]
