"""Quantizers ``Q`` that (Block)LDLQ plugs in: each has ``encode``, ``decode``,
``quantize``, ``dim`` and ``bits_per_weight`` (contract in :mod:`quipref.quantizers.base`).

* :mod:`~quipref.quantizers.scalar`: ScalarGrid (QuIP, OPTQ/RTN), IntegerGrid (the theorems'
  unbounded grid), LloydMax (N(0, 1)-optimal scalar).
* :mod:`~quipref.quantizers.e8p`: QuIP#'s 2-bit E8P lattice codebook (dim 8).
* :mod:`~quipref.quantizers.rvq`: QuIP#'s 3/4-bit residual vector quantizers, E81B.
* :mod:`~quipref.quantizers.trellis`: QTIP's bitshift trellis (1MAD, 3INST, HYB, Gaussian),
  Viterbi and tail-biting, on 16×16 tiles.
* :mod:`~quipref.quantizers.icquant`: ICQuant's index-coded outliers (top-γ per row, own
  ranges) over a scalar grid or Lloyd-Max; :mod:`~quipref.quantizers.index_coding` codes
  the outlier positions (gap code, enumerative code).
"""
from .base import Quantizer, quantizer_from_state
from .e8p import E8P, e8p_source_set
from .icquant import ICQuant, select_outliers
from .rvq import E81B, RVQ, e81b_codebook
from .scalar import IntegerGrid, LloydMax, ScalarGrid, lloyd_max_gaussian
from .trellis import (CODES, Trellis, ViterbiResult, bitshift_viterbi, code_1mad, code_3inst,
                      code_hyb, code_table, gaussian_lut, hyb_lut, pack_states,
                      tail_biting_viterbi, unpack_states)

__all__ = ["Quantizer", "quantizer_from_state", "ScalarGrid", "IntegerGrid", "LloydMax",
           "lloyd_max_gaussian", "E8P", "e8p_source_set", "RVQ", "E81B", "e81b_codebook",
           "Trellis", "ViterbiResult", "CODES", "bitshift_viterbi", "tail_biting_viterbi",
           "pack_states", "unpack_states", "code_table", "code_1mad", "code_3inst", "code_hyb",
           "hyb_lut", "gaussian_lut", "ICQuant", "select_outliers"]
