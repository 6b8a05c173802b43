r"""Method recipes: ``quantize_linear(W, H, method, bits)`` for RTN, GPTQ, QuIP, QuIP#, QTIP and ICQuant.

Each recipe is a few lines composing the shared parts (the pipeline of :doc:`/index`):

======== ============================== ================= =================================
method   incoherence transform          rounding          quantizer
======== ============================== ================= =================================
rtn      none                           nearest           per-row min-max grid (OPTQ's)
gptq     none                           LDLQ (= OPTQ)     per-row min-max grid
quip     Kronecker orthogonal (or RHT)  LDLQ / LDLQ-RG    :math:`2^b` points on
                                                          :math:`[-\rho\,\mathrm{RMS}, \rho\,\mathrm{RMS}]`
quip#    RHT (Hadamard + signs)         BlockLDLQ, g = 8  E8P (2 bits), RVQ over E8P (3, 4)
qtip     RHT                            BlockLDLQ, g = 16 bitshift trellis on 16 x 16 tiles
                                                          (1MAD, 3INST, HYB), tail-biting
icquant  none (or RHT)                  LDLQ, mask first  ICQuant: top-gamma outliers per row
                                                          index-coded, own ranges (reconstr.)
======== ============================== ================= =================================

The recipes take their primitives (LDLQ, the transforms, the layer class) from a
:class:`Toolkit`; :mod:`quipref` passes the reference primitives and :mod:`fast`
passes its Numba/CUDA ones, so both packages run the *same* recipe.

References
----------
.. [QuIP] Chee et al., arXiv 2307.13304, Alg. 1-3 (steps as in the authors' code,
   :ref:`papers-from-code`).
.. [OPTQ] Frantar et al., arXiv 2210.17323.
.. [QuIP#] Tseng et al., arXiv 2402.04396, Alg. 1-3, Sec. 4, App. F.5.
.. [QTIP] Tseng, Sun, Hou, De Sa, arXiv 2406.11235, Sec. 3-4, Alg. 5, App. A.3.
.. [ICQ] Li, Hanna, Fragouli, Diggavi, arXiv 2505.00850 (abstract; the recipe is this
   library's reconstruction).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from ._checks import (array_module, check_bits, check_block_size, check_bool, check_choice, check_hessian,
                      check_int, check_real, check_rounding, check_seed, check_weight)
from .hessian import damp_hessian, regularize_hessian
from .quantizers.e8p import E8P
from .quantizers.rvq import RVQ
from .quantizers.scalar import ScalarGrid

__all__ = ["quantize_linear", "METHODS", "Toolkit"]

#: method -> (smallest, largest) supported bit width
METHODS = {"rtn": (1, 8), "gptq": (1, 8), "quip": (2, 4), "quip#": (2, 4), "qtip": (1, 8),
           "icquant": (1, 8)}


@dataclasses.dataclass(frozen=True)
class Toolkit:
    """The primitives a recipe is built from (reference or fast)."""

    ldlq: Callable
    ldlq_rg: Callable
    RandomizedHadamard: type
    KroneckerOrthogonal: type
    incoherence_process: Callable
    rescale: Callable
    QuantizedLinear: type
    #: the quantizers package (:mod:`quipref.quantizers` or :mod:`fast.quantizers`)
    quantizers: Any = None
    greedy_passes: Callable = None


def reference_toolkit() -> Toolkit:
    # (``from . import ldlq`` would give the function: the package exports ldlq())
    from . import quantizers
    from .formats import QuantizedLinear
    from .incoherence import KroneckerOrthogonal, RandomizedHadamard, incoherence_process, rescale
    from .ldlq import greedy_passes, ldlq, ldlq_rg

    return Toolkit(ldlq, ldlq_rg, RandomizedHadamard, KroneckerOrthogonal, incoherence_process,
                   rescale, QuantizedLinear, quantizers, greedy_passes)


def quantize_linear(W, H, method: str, bits: int, seed=0, **options):
    r"""Quantize one linear layer's weights ``W`` (m, n) against its proxy Hessian ``H`` (n, n).

    Parameters
    ----------
    W : ndarray of shape (m, n)
        Weights, (out_features, in_features).
    H : ndarray of shape (n, n) or None
        Proxy Hessian :math:`E[x x^T]` of the layer inputs (undamped: each recipe
        damps it as its paper does). ``None`` is accepted only by ``"rtn"``.
    method : {"rtn", "gptq", "quip", "quip#", "qtip", "icquant"}
    bits : int
        Bits per weight of the codes: rtn/gptq 1..8, quip 2..4, quip# 2..4 (E8P at 2,
        RVQ at 3 and 4), qtip 1..8 (``k``; the paper uses 2..4), icquant 1..8 (code bits of
        every weight; ``"lloydmax"`` 1..4).
    seed : int or numpy.random.Generator
        All random choices (transforms, stochastic rounding) derive from it.
    **options
        Method options:

        * gptq: ``percdamp=0.01``.
        * quip: ``rho=2.4`` (grid half-width in RMS units), ``percdamp=0.01``,
          ``transform="kronecker"`` or ``"hadamard"`` (RHT, QuIP#'s transform with
          QuIP's scalar grid), ``rescale=False`` (QuIP's diagonal rescaling, §2.3),
          ``rounding="nearest"`` or ``"stochastic"``, ``greedy_passes=0`` (> 0 runs
          LDLQ-RG: LDLQ in decreasing-diag(H) order, then that many greedy passes),
          ``store_factors=False`` (Kronecker transforms: save only their seeds, as in the
          paper; ``True`` also saves the float64 factors, bit-exact on every machine but
          costing more bits per weight, see :class:`~quipref.incoherence.KroneckerOrthogonal`).
        * icquant (arXiv 2505.00850, reconstructed: :class:`~quipref.quantizers.ICQuant`):
          ``inner="rtn"`` (min-max grids) or ``"lloydmax"`` (per-row Lloyd-Max),
          ``gamma=0.05``, ``B=None`` (best for gamma), ``index_code="gap"`` or
          ``"enumerative"``, ``group=None``, ``transform=None`` or ``"hadamard"`` (RHT first,
          an extension), ``percdamp=0.01`` (no transform) / ``sigma_reg=0.01`` (RHT),
          ``feedback=True`` (LDLQ with the per-weight quantizer chosen by the fixed mask;
          False: nearest rounding).

    Returns
    -------
    QuantizedLinear
        ``dequantize()``, ``matvec(x)``, ``bits_per_weight``, ``save(path)``.

    Raises
    ------
    ValueError
        Unknown method or option, bits out of range, bad shapes, NaN/Inf, non-PSD H.
    TypeError
        Non-numeric arrays, non-integer bits or seed.
    """
    return _quantize_linear(W, H, method, bits, seed, reference_toolkit(), **options)


def _quantize_linear(W, H, method, bits, seed, kit: Toolkit, **options):
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, one of {sorted(METHODS)}, got {method!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    lo, hi = METHODS[method]
    bits = check_bits(bits, lo, hi)
    W = check_weight(W)
    if H is None and method != "rtn":
        raise ValueError(f"method {method!r} needs the proxy Hessian H (n, n); only 'rtn' works without it")
    if H is not None:
        H = check_hessian(H, W.shape[1])
    rng = check_seed(seed)
    return _RECIPES[method](W, H, bits, rng, kit, **options)


def _take(options: dict, method: str, **defaults) -> dict:
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for method {method!r}; "
            f"it accepts {sorted(defaults)}"
        )
    return {**defaults, **options}


def _rtn(W, H, bits, rng, kit, **options):
    """Round to nearest on OPTQ's per-row min-max grid; H is not used."""
    _take(options, "rtn")
    q = ScalarGrid.minmax(W, bits)
    codes = q.encode(W)
    return kit.QuantizedLinear(codes, q, W.shape, "rtn", bits)


def _gptq(W, H, bits, rng, kit, **options):
    """OPTQ = LDLQ on the damped H, no incoherence, per-row min-max grid ([QuIP] Thm. 6)."""
    opt = _take(options, "gptq", percdamp=0.01)
    check_real(opt["percdamp"], "percdamp", inclusive=True)
    H_d, W_d, _ = damp_hessian(H, opt["percdamp"], W)
    q = ScalarGrid.minmax(W_d, bits)
    codes = kit.ldlq(W_d, H_d, q).codes
    layer = kit.QuantizedLinear(codes, q, W.shape, "gptq", bits, options=opt)
    layer.info.update(hessian_used=H_d, hessian_scale=1.0)
    return layer


def _quip(W, H, bits, rng, kit, **options):
    """QuIP per layer ([QuIP] Alg. 1-3, arXiv 2307.13304; :ref:`papers-from-code`)."""
    opt = _take(options, "quip", rho=2.4, percdamp=0.01, transform="kronecker",
                rescale=False, rounding="nearest", greedy_passes=0, store_factors=False)
    transforms = {"kronecker": kit.KroneckerOrthogonal, "hadamard": kit.RandomizedHadamard}
    check_choice(opt["transform"], "transform", sorted(transforms))
    check_real(opt["rho"], "rho")  # grid half-width rho RMS(W~): 0 would collapse the grid
    check_real(opt["percdamp"], "percdamp", inclusive=True)
    check_bool(opt["rescale"], "rescale")
    check_rounding(opt["rounding"])
    check_int(opt["greedy_passes"], "greedy_passes", lo=0)
    if check_bool(opt["store_factors"], "store_factors") and opt["transform"] != "kronecker":
        raise ValueError("store_factors applies to transform='kronecker' only (the RHT stores its signs)")
    if opt["greedy_passes"] and opt["rounding"] != "nearest":
        raise ValueError("greedy passes need nearest rounding (they would bias stochastic rounding)")
    m, n = W.shape
    xp = array_module(W, H)
    W = W.astype(np.float64)
    H = H.astype(np.float64)
    # 1. optional diagonal rescaling W diag(d), diag(d)^-1 H diag(d)^-1
    d, h_scale = None, 1.0
    if opt["rescale"]:
        h_scale = 1.0 / float(xp.abs(H).max())  # rescale() also normalises H by max|H_ij|
        W, H, d = kit.rescale(W, H)
    # 2. QuIP's normalisation before the conjugation: H n / tr(H) + 0.01 I
    trace = float(xp.trace(H))
    if not trace > 0:  # PSD H with tr(H) = 0 is H = 0
        raise ValueError("H is all zeros (no input ever activated, tr(H) = 0); QuIP normalises H by "
                         "n / tr(H), so there is nothing to quantize against")
    c = n / trace
    H = H * c + 0.01 * xp.eye(n)
    # 3. seeded orthogonal transforms, W~ = T_out W T_in^T, H~ = T_in H T_in^T
    s_out, s_in, s_round = (int(v) for v in rng.integers(0, 2**63 - 1, size=3))
    T = transforms[opt["transform"]]
    kw = {"store_factors": True} if opt["store_factors"] else {}
    t_out, t_in = T(m, seed=s_out, **kw), T(n, seed=s_in, **kw)
    Wt, Ht = kit.incoherence_process(W, H, t_out, t_in)
    # 4. OPTQ damping after the conjugation
    Ht, _, _ = damp_hessian(Ht, opt["percdamp"])
    # 5-6. grid s = rho RMS(W~), then LDLQ (or LDLQ-RG) with clamping inside the recursion
    q = ScalarGrid.quip(Wt, bits, opt["rho"], opt["rounding"])
    if opt["greedy_passes"]:
        codes = kit.ldlq_rg(Wt, Ht, q, opt["greedy_passes"], seed=s_round).codes
    else:
        codes = kit.ldlq(Wt, Ht, q, seed=s_round).codes
    layer = kit.QuantizedLinear(codes, q, (m, n), "quip", bits, input_transform=t_in,
                                output_transform=t_out, rescale=d, options=opt)
    layer.info.update(hessian_used=Ht, hessian_scale=c * h_scale)
    return layer


def _rht_process(W, H, rng, kit, sigma_reg):
    """Shared first steps of QuIP# and QTIP: H / mean(diag H) + sigma I, seeded RHTs on
    both sides (signs S_out (m), S_in (n)), W~ = T_out W T_in^T, H~ = T_in H T_in^T.
    Returns (W~, H~, T_out, T_in, c) with H~ = c T_in H T_in^T + sigma I."""
    m, n = W.shape
    xp = array_module(W, H)
    md = float(xp.mean(xp.diag(H)))
    H = regularize_hessian(H, sigma_reg)  # H / md + sigma I; raises for an all-zero diagonal
    c = 1.0 / md
    s_out, s_in = (int(v) for v in rng.integers(0, 2**63 - 1, size=2))
    t_out, t_in = kit.RandomizedHadamard(m, seed=s_out), kit.RandomizedHadamard(n, seed=s_in)
    Wt, Ht = kit.incoherence_process(W.astype(np.float64), H, t_out, t_in)
    return Wt, Ht, t_out, t_in, c


def _rms(X) -> float:
    xp = array_module(X)
    r = float(xp.sqrt(xp.mean(X * X)))
    if not r > 0:
        raise ValueError("W is all zeros: there is nothing to quantize (the scale RMS(W) is 0)")
    return r


#: QuIP#'s per-bit-width normalisation rho ([QuIP#] App. F.5): E8P 0.9, RVQ-3 0.98, RVQ-4 1.03,
#: taken from the quantizers (one definition: ``E8P.PAPER_RHO``, ``RVQ.OPT_SCALES``)
QUIPSHARP_RHO = {2: E8P.PAPER_RHO, 3: RVQ.OPT_SCALES[3][0], 4: RVQ.OPT_SCALES[4][0]}


def _quipsharp(W, H, bits, rng, kit, **options):
    """QuIP# without fine-tuning, per layer ([QuIP#] Alg. 1-3, arXiv 2402.04396)."""
    opt = _take(options, "quip#", rho=None, resid_scale=None, sigma_reg=0.01, refine_passes=0)
    m, n = W.shape
    check_block_size(8, n, "the E8P vector dimension 8 (n)")
    check_int(opt["refine_passes"], "refine_passes", lo=0)
    if opt["rho"] is not None:
        check_real(opt["rho"], "rho")
    if opt["resid_scale"] is not None:
        check_real(opt["resid_scale"], "resid_scale")
    check_real(opt["sigma_reg"], "sigma_reg", inclusive=True)
    # 1-3. regularise H, RHT on both sides
    Wt, Ht, t_out, t_in, c = _rht_process(W, H, rng, kit, opt["sigma_reg"])
    # 5. Wscale = RMS(W~) / rho: the codebook scaled by Wscale quantizes W~
    rho = QUIPSHARP_RHO[bits] if opt["rho"] is None else opt["rho"]
    Q = kit.quantizers
    if bits == 2:
        q = Q.E8P.from_rms(_rms(Wt), rho)
    else:
        q = Q.RVQ.from_rms(bits, _rms(Wt), rho, opt["resid_scale"])
    # 6. BlockLDLQ with g = 8, then optional refinement passes
    W_hat, codes = kit.ldlq(Wt, Ht, q, block_size=8)
    if opt["refine_passes"]:
        W_hat, codes = kit.greedy_passes(Wt, Ht, q, W_hat, int(opt["refine_passes"]), block_size=8)
    layer = kit.QuantizedLinear(codes, q, (m, n), "quip#", bits, input_transform=t_in,
                                output_transform=t_out, options=opt)
    layer.info.update(hessian_used=Ht, hessian_scale=c)
    return layer


def _qtip(W, H, bits, rng, kit, **options):
    """QTIP without fine-tuning, per layer ([QTIP] Sec. 4, Alg. 5, arXiv 2406.11235)."""
    opt = _take(options, "qtip", code="hyb", L=16, V=None, Q=9, scale_override=0.9,
                sigma_reg=0.01, tail_biting=True)
    m, n = W.shape
    if m % 16 or n % 16:
        raise ValueError(
            f"W has shape ({m}, {n}); QTIP quantizes 16 x 16 tiles, so m and n must be "
            f"multiples of 16 (pad W and H)")
    so = check_real(opt["scale_override"], "scale_override")
    check_bool(opt["tail_biting"], "tail_biting")
    check_real(opt["sigma_reg"], "sigma_reg", inclusive=True)
    V = opt["V"] if opt["V"] is not None else (2 if opt["code"] == "hyb" else 1)
    s_lut = int(rng.integers(0, 2**63 - 1))
    Wt, Ht, t_out, t_in, c = _rht_process(W, H, rng, kit, opt["sigma_reg"])
    Q = kit.quantizers
    unit = Q.Trellis(opt["L"], bits, V, opt["code"], Q=opt["Q"], tail_biting=opt["tail_biting"],
                     seed=s_lut)
    # Wscale = RMS(W~) / (RMS(C) * scale_override): values scale * C[state] quantize W~
    scale = _rms(Wt) / (unit.table_rms * float(so))
    q = Q.Trellis(opt["L"], bits, V, opt["code"], Q=opt["Q"], tail_biting=opt["tail_biting"],
                  scale=scale, seed=s_lut, lut=unit.lut)
    W_hat, codes = kit.ldlq(Wt, Ht, q, block_size=q.dim)
    layer = kit.QuantizedLinear(codes, q, (m, n), "qtip", bits, input_transform=t_in,
                                output_transform=t_out, options=opt)
    layer.info.update(hessian_used=Ht, hessian_scale=c)
    return layer


def _icquant(W, H, bits, rng, kit, **options):
    """ICQuant-style index-coded outliers (arXiv 2505.00850; the details are this library's
    reconstruction, :mod:`quipref.quantizers.icquant`): the outlier mask is fixed first on
    the (optionally RHT-processed) weights, then LDLQ rounds column by column with each
    weight's quantizer chosen by the mask (``feedback=False``: plain nearest rounding)."""
    opt = _take(options, "icquant", inner="rtn", gamma=0.05, B=None, index_code="gap", group=None,
                transform=None, percdamp=0.01, sigma_reg=0.01, feedback=True)
    Q = kit.quantizers
    inners = {"rtn": lambda: Q.ScalarGrid.symmetric(bits, 1.0), "lloydmax": lambda: Q.LloydMax(bits)}
    if opt["inner"] not in inners:
        raise ValueError(f"inner must be one of {sorted(inners)} for method 'icquant', got {opt['inner']!r}")
    if opt["transform"] not in (None, "hadamard"):
        raise ValueError(f"transform must be None or 'hadamard' for method 'icquant', got {opt['transform']!r}")
    if not isinstance(opt["feedback"], bool):
        raise ValueError(f"feedback must be True or False, got {opt['feedback']!r}")
    m, n = W.shape
    t_in = t_out = None
    if opt["transform"] == "hadamard":
        # QuIP#'s processing (H / mean diag H + sigma I, RHT on both sides): an extension,
        # the abstract does not say whether ICQuant rotates first
        Wt, Ht, t_out, t_in, c = _rht_process(W, H, rng, kit, opt["sigma_reg"])
    else:
        Ht, Wt, _ = damp_hessian(H, opt["percdamp"], W)
        Wt, c = Wt.astype(np.float64), 1.0
    q = Q.ICQuant(inners[opt["inner"]](), opt["gamma"], opt["B"], opt["index_code"], opt["group"]).fit(Wt)
    codes = kit.ldlq(Wt, Ht, q).codes if opt["feedback"] else q.encode(Wt)
    layer = kit.QuantizedLinear(codes, q, (m, n), "icquant", bits, input_transform=t_in,
                                output_transform=t_out, options=opt)
    layer.info.update(hessian_used=Ht, hessian_scale=c)
    return layer


_RECIPES: dict[str, Any] = {"rtn": _rtn, "gptq": _gptq, "quip": _quip, "quip#": _quipsharp,
                            "qtip": _qtip, "icquant": _icquant}
