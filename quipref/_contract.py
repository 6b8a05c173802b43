"""The quipref <-> fast contract: everything :mod:`fast` takes from :mod:`quipref` beyond
the public API, in one place (as scikit-learn keeps its shared validators in
``sklearn.utils.validation``).

:mod:`fast` mirrors :mod:`quipref`'s public API with faster primitives and must behave the
same: the same validation and errors, the same recipes, the same file format. It may
import from quipref

* the public API (every module's ``__all__``);
* the internal modules :mod:`quipref._checks` (every validator: arrays, integers, reals,
  flags, choices, seeds, bit widths; the lattice quantizers' ``check_vectors`` /
  ``check_codes`` / ``check_scale``; the trellis' ``check_trellis_*``),
  :mod:`quipref._io` (atomic, reproducible file writes), :mod:`quipref._stream` (the
  portable random stream of saved seeds) and this module;
* the hooks below, each named here with what it is for.

Nothing else: ``tests/test_contract.py`` reads fast's source and fails on any other private
quipref name. A change to anything listed here is a change to both packages.

Hooks
-----
run_recipe(W, H, method, bits, seed, kit, **options)
    The method recipes with a :class:`quipref.methods.Toolkit` of primitives
    (:func:`fast.quantize_linear` passes its own).
layer_from_tensors(tensors, config, cls, transform_from_state, quantizer_from_state)
    Validate (schema + SHA-256) and rebuild a saved layer with the given classes.
load_layer(path, cls, transform_from_state, quantizer_from_state)
    Read a layer file, then :func:`layer_from_tensors`.
transform_from_state_with(config, arrays, classes)
    Rebuild a transform, dispatching on ``config["type"]`` among ``classes``.
block_quantizer(quantizer, start, stop)
    The quantizer of columns ``start .. stop - 1`` (``quantizer.columns`` where a quantizer
    differs per column, as ICQuant's outlier mask does), so both LDLQs honour that hook.
LDLQResult, cholesky_lower(H, xp), check_greedy_inputs(...), ldlq_rg_with(...)
    LDLQ's result type, the reference's Cholesky (same calls, so the same factor bit for
    bit), the greedy passes' validation, and LDLQ-RG given LDLQ / greedy primitives.
hadamard_factor(n, name), prepare_transform_input(x, name)
    ``n = K 2^k`` (with the error message naming the argument) and the Hadamard
    transforms' input validation.
e8p_unit_codebook(), e8p_search_tables(), nearest_brute_force(u, table2t, norms)
    The unit E8P codebook (65,536 x 8), the brute-force score tables, and the brute force
    itself (the tie rule "lowest code" both packages follow).
MAD1_DIVISOR
    QTIP's 1MAD normalisation (one definition; the CUDA kernels mirror it).
encode_mask_with(codec, mask, code, param), decode_mask_with(codec, data, offsets, n, code, param, counts)
    ICQuant's index-code dispatch (gap / enumerative, the code name checked once) over a
    module of codecs: the reference's, or fast's Numba ones.
trellis_codes
    The module of QTIP's computed-code constants (1MAD / 3INST multipliers, masks, the
    HYB hash): :mod:`fast.cuda._codes` renders it into ``fast/kernels/trellis_codes.cuh``.
"""
from __future__ import annotations

from ._checks import *  # noqa: F401,F403  (the validators)
from ._checks import __all__ as _checks_all
from ._io import atomic_write_bytes, safetensors_bytes
from .formats import _from_tensors as layer_from_tensors
from .formats import _load as load_layer
from .hadamard import _factor as hadamard_factor
from .hadamard import _prepare as prepare_transform_input
from .incoherence import _transform_from_state as transform_from_state_with
from .ldlq import LDLQResult
from .ldlq import _block_quantizer as block_quantizer
from .ldlq import _check_greedy_inputs as check_greedy_inputs
from .ldlq import _cholesky_lower as cholesky_lower
from .ldlq import _ldlq_rg as ldlq_rg_with
from .methods import _quantize_linear as run_recipe
from .quantizers import _trellis_codes as trellis_codes
from .quantizers.index_coding import _decode_mask_with as decode_mask_with
from .quantizers.index_coding import _encode_mask_with as encode_mask_with
from .quantizers._trellis_codes import MAD1_DIVISOR
from .quantizers.e8p import _search_tables as e8p_search_tables
from .quantizers.e8p import _unit_codebook as e8p_unit_codebook
from .quantizers.e8p import nearest_brute_force

__all__ = list(_checks_all) + [
    "atomic_write_bytes", "safetensors_bytes",
    "run_recipe", "layer_from_tensors", "load_layer", "transform_from_state_with",
    "block_quantizer", "LDLQResult", "cholesky_lower", "check_greedy_inputs", "ldlq_rg_with",
    "hadamard_factor", "prepare_transform_input",
    "e8p_unit_codebook", "e8p_search_tables", "nearest_brute_force",
    "MAD1_DIVISOR", "trellis_codes", "encode_mask_with", "decode_mask_with",
]
