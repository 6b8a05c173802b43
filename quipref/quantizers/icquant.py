r"""ICQuant: separate ranges for the top-γ weights of each row, their positions index-coded.

ICQuant (Li, Hanna, Fragouli, Diggavi, "ICQuant: Index Coding enables Low-bit LLM
Quantization", arXiv 2505.00850, COLM 2025) observes that weight outliers inflate the
range of a scalar quantizer and that the *positions* of the largest few percent of a
row can be stored for ≈0.3 bits per weight; inliers and outliers then each get their
own quantizer over a range about half as wide. That much is the paper's abstract; the
details below are **this library's reconstruction** (the paper body was not available):

* **Outliers**: per output row, the ``k = round(γ n)`` entries of largest ``|w|`` (ties
  to the lower column index). The mask is chosen once, before any rounding.
* **Index**: the mask is stored with the B-bit gap code (default) or the enumerative
  code (:mod:`quipref.quantizers.index_coding`).
* **Two quantizers per row**, both with ``b`` bits per weight, built from the ``inner``
  quantizer's family (below).
* **Uniform family** (``inner`` a :class:`~quipref.quantizers.ScalarGrid`): inliers on a
  min-max grid of :math:`2^b` points over ``[min, max]`` of the row's inliers; outliers as
  a sign plus a (b-1)-bit magnitude on a uniform grid of :math:`2^{b-1}` points over
  ``[min |w|, max |w|]`` of the row's outliers (one point at the midpoint if b = 1).
  Side arrays: 4 float16 per row.
* **Lloyd family** (``inner`` a :class:`~quipref.quantizers.LloydMax`): Lloyd's algorithm
  (Max, 1960) run on each row's inlier values (:math:`2^b` levels) and on its outlier
  magnitudes (:math:`2^{b-1}` levels, sign bit apart), i.e. the Lloyd-Max quantizer of
  the row's empirical distribution. Side arrays: :math:`2^b + 2^{b-1}` float16 per row.
* **Codes**: every weight gets one ``b``-bit code, an inlier code at an inlier position,
  an outlier code at an outlier position, stored densely in row order, so the k-th
  decoded position of a row is paired with the k-th outlier code of that row. Encoding
  is nearest-level (ties to the lower level); an outlier code is ``2^{b-1}`` plus the
  magnitude index for ``w >= 0`` and ``2^{b-1} - 1`` minus it for ``w < 0``. The per-row
  parameters are rounded to float16 when fitted, so what is stored is exactly what
  encodes and decodes.
* **Bits per weight** (exact): ``b`` for every code, plus every stored array at its
  width: the index bytes, the row offsets of the index (uint32, m + 1), the float16
  parameters.

With γ = 0 (or ``round(γ n) = 0``) there are no outliers and no index: the layer is the
inner family's quantizer fitted to whole rows (min-max grid / row Lloyd-Max).

Which inner quantizers: the scalar families above. The vector and trellis quantizers of
this library are *not* wrapped: an E8P code covers 8 consecutive weights, so a row with an
outlier inside an 8-vector would need that vector's inliers coded around a hole (or the
outliers taken as whole 8-vectors, which changes the statistics the index code relies
on), and a trellis walk covers a whole 16 x 16 tile; both are research questions, not a
wrapper.

LDLQ rounds one (block) column at a time; a quantizer that depends on the column
implements ``columns(start, stop)``, which (Block)LDLQ calls for every block, so the
feedback loop picks the inlier or outlier quantizer of each weight by the mask.

References
----------
* X. Li, O. Hanna, C. Fragouli, S. Diggavi, "ICQuant: Index Coding enables Low-bit LLM
  Quantization", arXiv 2505.00850 (abstract: index coding of outlier positions, ≈0.3
  bits, 2.3 bits per weight with scalar quantizers).
* J. Max, "Quantizing for minimum distortion", IRE Trans. Inf. Theory, 1960.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._checks import array_module, check_array, to_numpy
from .base import Quantizer
from .index_coding import MAX_B, MAX_GROUP, enum_decode, enum_encode, gap_decode, gap_encode
from .scalar import LloydMax, ScalarGrid

__all__ = ["ICQuant", "select_outliers"]

_FAMILIES = {ScalarGrid: "uniform", LloydMax: "lloyd"}
_FP16_MAX = float(np.finfo(np.float16).max)
#: Lloyd iterations when fitting the "lloyd" family (converged to float16 precision well
#: before that on the rows tried; fixed so that the result is deterministic)
LLOYD_ITERS = 40


def select_outliers(W, gamma: float) -> np.ndarray:
    """Boolean mask (m, n) of the ``round(γ n)`` largest ``|W_ij|`` of each row (ties to the
    lower column index)."""
    W = np.asarray(to_numpy(check_array(W, "W", ndim=2)), dtype=np.float64)
    gamma = _check_gamma(gamma)
    m, n = W.shape
    k = _count(gamma, n)
    mask = np.zeros((m, n), dtype=bool)
    if k:
        idx = np.argsort(-np.abs(W), axis=1, kind="stable")[:, :k]
        np.put_along_axis(mask, idx, True, axis=1)
    return mask


def _count(gamma: float, n: int) -> int:
    return int(math.floor(gamma * n + 0.5))


def _check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"gamma must be a number in [0, 0.5] (the outlier fraction), got {gamma!r}")
    gamma = float(gamma)
    if not 0.0 <= gamma <= 0.5:
        raise ValueError(f"gamma must be in [0, 0.5] (the outlier fraction, e.g. 0.05), got {gamma}")
    return gamma


def _lloyd_rows(V, L: int, iters: int = LLOYD_ITERS) -> np.ndarray:
    """Lloyd's algorithm on each row of V (r, c): L sorted levels per row (r, L).

    Start at the row quantiles ``(j + 1/2) / L``; each step assigns values to the nearest
    level (ties to the lower one) and moves every level to the mean of its cell (an empty
    cell keeps its level)."""
    r, c = V.shape
    S = np.sort(V, axis=1)
    q = np.minimum(((np.arange(L) + 0.5) / L * c).astype(np.int64), c - 1)
    C = S[:, q].copy()
    rows = np.repeat(np.arange(r) * L, c)
    for _ in range(iters):
        mids = 0.5 * (C[:, 1:] + C[:, :-1])
        a = _nearest(S, mids)
        idx = rows + a.reshape(-1)
        sums = np.bincount(idx, weights=S.reshape(-1), minlength=r * L).reshape(r, L)
        cnt = np.bincount(idx, minlength=r * L).reshape(r, L)
        new = np.where(cnt > 0, sums / np.maximum(cnt, 1), C)
        if np.array_equal(new, C):
            break
        C = new
    return np.sort(C, axis=1)


def _nearest(x, mids) -> np.ndarray:
    """Index of the nearest of sorted levels given their midpoints ``mids`` (r, L-1), for
    x (r, w): the number of midpoints strictly below x (ties to the lower level)."""
    out = np.zeros(x.shape, dtype=np.int64)
    for j in range(mids.shape[1]):
        out += x > mids[:, j:j + 1]
    return out


def _fp16(a, what):
    a = np.asarray(a, dtype=np.float64)
    if np.any(np.abs(a) > _FP16_MAX):
        raise ValueError(f"ICQuant stores its {what} as float16, but a value reaches {np.abs(a).max():.3g} "
                         f"> {_FP16_MAX}; scale W down first")
    return a.astype(np.float16)


class ICQuant(Quantizer):
    r"""Index-coded outliers on top of an inner scalar quantizer (module docstring).

    ``ICQuant(inner, gamma, B, index_code)`` is a configuration; :meth:`fit` chooses the
    mask of a weight matrix and returns the fitted quantizer that encodes and decodes it.

    Parameters
    ----------
    inner : ScalarGrid or LloydMax
        Sets the family of the inlier and outlier quantizers and their bit width ``b``
        (``inner.bits``); its own range is not used (each row's ranges are refitted).
    gamma : float in [0, 0.5]
        Outlier fraction per row (``round(γ n)`` outliers per row of length n).
    B : int or None
        Gap-code symbol width (1..16); ``None``: :func:`quipref.bounds.best_gap_B` (γ).
    index_code : {"gap", "enumerative"}
    group : int or None
        Enumerative group size (1..64); ``None``: :func:`quipref.bounds.best_group` (γ).

    Raises
    ------
    TypeError
        ``inner`` is not a ScalarGrid / LloydMax instance; non-numeric γ, B, group.
    ValueError
        γ outside [0, 0.5], B or group out of range, unknown index code.

    Examples
    --------
    >>> q = ICQuant(ScalarGrid.symmetric(2, 1.0), gamma=0.05).fit(W)   # doctest: +SKIP
    >>> W_hat = q.quantize(W)                                         # doctest: +SKIP
    """

    dim = 1
    stochastic = False

    def __init__(self, inner, gamma: float = 0.05, B=None, index_code: str = "gap", group=None):
        from .. import bounds

        family = _FAMILIES.get(type(inner))
        if family is None:
            raise TypeError(
                f"inner must be a ScalarGrid or LloydMax instance (it sets the family and the "
                f"bits of the inlier/outlier quantizers), got {type(inner).__name__}")
        if getattr(inner, "rounding", "nearest") != "nearest":
            raise ValueError("ICQuant rounds to nearest; pass an inner grid with rounding='nearest'")
        self.inner = inner
        self.family = family
        self.bits = int(inner.bits)
        self.gamma = _check_gamma(gamma)
        if index_code not in ("gap", "enumerative"):
            raise ValueError(f"index_code must be 'gap' or 'enumerative', got {index_code!r}")
        self.index_code = index_code
        if B is None:
            B = bounds.best_gap_B(min(self.gamma, 0.99))
        if isinstance(B, bool) or not isinstance(B, numbers.Integral) or not 1 <= B <= MAX_B:
            raise ValueError(f"B must be an integer in 1..{MAX_B} (gap-code symbol width), got {B!r}")
        self.B = int(B)
        if group is None:
            group = bounds.best_group(self.gamma) if self.gamma > 0 else 32
        if isinstance(group, bool) or not isinstance(group, numbers.Integral) or not 1 <= group <= MAX_GROUP:
            raise ValueError(f"group must be an integer in 1..{MAX_GROUP} (enumerative group size), got {group!r}")
        self.group = int(group)
        self._fit = None      # fitted data (dict) or None
        self._cols = None     # (start, stop) for a column view

    # -- fitting -------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._fit is not None

    def fit(self, W, mask=None) -> "ICQuant":
        """Choose the outliers of ``W`` (m, n) (or take ``mask``) and fit both quantizers.

        Parameters
        ----------
        W : ndarray of shape (m, n)
        mask : boolean ndarray of shape (m, n), optional
            Outlier mask; default :func:`select_outliers` (W, γ). A given mask must have
            the same number of outliers in every row.

        Returns
        -------
        ICQuant
            A new, fitted quantizer for W's shape.

        Raises
        ------
        ValueError
            Bad W (NaN/Inf, not 2-D), a mask of another shape or with unequal row counts,
            a value beyond float16 range.
        """
        W = np.asarray(to_numpy(check_array(W, "W", ndim=2)), dtype=np.float64)
        m, n = W.shape
        if mask is None:
            mask = select_outliers(W, self.gamma)
        else:
            mask = np.asarray(to_numpy(mask))
            if mask.dtype != np.bool_ or mask.shape != W.shape:
                raise ValueError(f"mask must be a boolean array of shape {W.shape}, got {mask.dtype} {mask.shape}")
            counts = mask.sum(axis=1)
            if m and np.any(counts != counts[0]):
                raise ValueError("mask must have the same number of outliers in every row (the gap code "
                                 "stores that count once)")
        k = int(mask[0].sum()) if m else 0
        L = 2**self.bits
        inl = W[~mask].reshape(m, n - k)
        params = {}
        if self.family == "uniform":
            if n - k:
                lo, hi = inl.min(axis=1), inl.max(axis=1)
            else:
                lo = hi = np.zeros(m)
            params["in_lo"] = _fp16(lo, "inlier range")
            params["in_step"] = _fp16((hi - lo) / (L - 1), "inlier step")
            if k:
                mag = np.abs(W[mask].reshape(m, k))
                mlo, mhi = mag.min(axis=1), mag.max(axis=1)
                Lm = L // 2
                if Lm == 1:
                    params["out_lo"] = _fp16(0.5 * (mlo + mhi), "outlier range")
                    params["out_step"] = np.zeros(m, dtype=np.float16)
                else:
                    params["out_lo"] = _fp16(mlo, "outlier range")
                    params["out_step"] = _fp16((mhi - mlo) / (Lm - 1), "outlier step")
        else:
            book = _lloyd_rows(inl, L) if n - k else np.zeros((m, L))
            params["in_book"] = _fp16(book, "inlier levels")
            if k:
                params["out_book"] = _fp16(_lloyd_rows(np.abs(W[mask].reshape(m, k)), L // 2), "outlier levels")
        stream = self._encode_stream(mask) if k else None
        return self._with_fit(m, n, k, mask, params, stream)

    def _encode_stream(self, mask):
        """``(bytes, row bit offsets)`` of the mask (the fast package overrides this with Numba)."""
        s = gap_encode(mask, self.B) if self.index_code == "gap" else enum_encode(mask, self.group)
        return s.data, s.offsets

    def _with_fit(self, m, n, k, mask, params, stream):
        q = type(self)(self.inner, self.gamma, self.B, self.index_code, self.group)
        q._fit = {"m": m, "n": n, "k": k, "mask": mask, "params": params, "stream": stream}
        q._fit.update(self._books(params, m, k))
        return q

    def _books(self, params, m, k):
        """Float64 sorted levels (m, L) of the inlier and outlier quantizers, and midpoints."""
        L = 2**self.bits
        if self.family == "uniform":
            j = np.arange(L, dtype=np.float64)
            inb = params["in_lo"].astype(np.float64)[:, None] + params["in_step"].astype(np.float64)[:, None] * j
        else:
            inb = params["in_book"].astype(np.float64)
        out = {"in_book": inb, "in_mids": 0.5 * (inb[:, 1:] + inb[:, :-1])}
        if k:
            if self.family == "uniform":
                j = np.arange(L // 2, dtype=np.float64)
                mags = params["out_lo"].astype(np.float64)[:, None] + params["out_step"].astype(np.float64)[:, None] * j
            else:
                mags = params["out_book"].astype(np.float64)
            outb = np.concatenate([-mags[:, ::-1], mags], axis=1)
            out.update(out_book=outb, out_mids=0.5 * (outb[:, 1:] + outb[:, :-1]))
        return out

    def _require_fit(self):
        if self._fit is None:
            raise ValueError("this ICQuant is not fitted: call q = q.fit(W) first (it chooses the outlier "
                             "mask and the ranges of W's rows)")
        return self._fit

    @property
    def mask(self) -> np.ndarray:
        """The outlier mask (m, n) (or the view's columns), boolean."""
        f = self._require_fit()
        return f["mask"] if self._cols is None else f["mask"][:, self._cols[0]:self._cols[1]]

    @property
    def shape(self) -> tuple:
        f = self._require_fit()
        return (f["m"], f["n"])

    @property
    def k(self) -> int:
        """Outliers per row."""
        return self._require_fit()["k"]

    def columns(self, start: int, stop: int) -> "ICQuant":
        """The quantizer of columns ``start .. stop - 1`` (what (Block)LDLQ rounds at a time)."""
        f = self._require_fit()
        a, b = (0, f["n"]) if self._cols is None else self._cols
        start, stop = int(start) + a, int(stop) + a
        if not (a <= start <= stop <= b):
            raise ValueError(f"columns({start - a}, {stop - a}) is outside this quantizer's {b - a} columns")
        q = object.__new__(type(self))
        q.__dict__.update(self.__dict__)
        q._cols = (start, stop)
        return q

    # -- the contract ----------------------------------------------------------------------
    def encode(self, x, rng=None):
        """Nearest-level codes (uint8) of x (m, w) with w the fitted (or view's) column count:
        the outlier quantizer at masked positions, the inlier quantizer elsewhere."""
        f = self._require_fit()
        x = check_array(x, "x", ndim=2)
        xp = array_module(x)
        mask = self.mask
        if x.shape != mask.shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this ICQuant covers {mask.shape} (its outlier mask); "
                f"for a block of columns use q.columns(start, stop) (LDLQ does)")
        xn = np.asarray(to_numpy(x), dtype=np.float64)
        codes = _nearest(xn, f["in_mids"])
        if f["k"]:
            codes = np.where(mask, _nearest(xn, f["out_mids"]), codes)
        codes = codes.astype(np.uint8)
        return codes if xp is np else xp.asarray(codes)

    def decode(self, codes):
        """Values (m, w) float64: the inlier level of each code, or the outlier level where masked."""
        f = self._require_fit()
        xp = array_module(codes)
        c = np.asarray(to_numpy(codes)).astype(np.intp)
        mask = self.mask
        if c.shape != mask.shape:
            raise ValueError(f"codes have shape {c.shape} but this ICQuant covers {mask.shape}")
        if c.size and (c.min() < 0 or c.max() >= 2**self.bits):
            raise ValueError(f"codes must lie in [0, {2**self.bits}) for {self.bits}-bit ICQuant")
        out = np.take_along_axis(f["in_book"], c, axis=1)
        if f["k"]:
            out = np.where(mask, np.take_along_axis(f["out_book"], c, axis=1), out)
        return out if xp is np else xp.asarray(out)

    @property
    def code_bits(self) -> int:
        return self.bits

    @property
    def index_bits(self) -> int:
        """Exact bits of the coded mask (symbols / fields only, no byte padding, no offsets)."""
        f = self._require_fit()
        return 0 if f["stream"] is None else int(f["stream"][1][-1])

    @property
    def bits_per_weight(self) -> float:
        r"""Exact storage per weight when fitted: ``b`` + (index bytes + row offsets +
        float16 parameters, each at its stored width) / (m n); this equals the
        :class:`~quipref.formats.QuantizedLinear` count of a layer without transforms.
        Unfitted: the expected value ``b`` + the gap code's (or enumerative code's)
        expected overhead for γ (:mod:`quipref.bounds`), side arrays not counted."""
        if self._fit is None:
            from .. import bounds

            if self.gamma == 0:
                return float(self.bits)
            ov = (bounds.gap_code_overhead(self.gamma, self.B) if self.index_code == "gap"
                  else bounds.enumerative_overhead(self.gamma, self.group))
            return self.bits + ov
        m, n = self.shape
        _, arrays = self.state()
        side = sum(np.asarray(a).size * np.asarray(a).dtype.itemsize * 8 for a in arrays.values())
        return self.bits + side / (m * n)

    # -- persistence -----------------------------------------------------------------------
    def state(self):
        cfg = {"type": "ICQuant", "family": self.family, "bits": self.bits, "gamma": self.gamma, "B": self.B,
               "index_code": self.index_code, "group": self.group}
        if self._fit is None:
            return cfg, {}
        if self._cols is not None:
            raise ValueError("a column view of ICQuant cannot be saved; save the full quantizer")
        f = self._fit
        cfg.update(m=f["m"], n=f["n"], k=f["k"])
        arrays = dict(f["params"])
        if f["stream"] is not None:
            data, offsets = f["stream"]
            if offsets[-1] >= 2**32:
                raise ValueError("the index stream exceeds 2^32 bits; quantize smaller blocks of rows")
            arrays["index"] = np.asarray(data, dtype=np.uint8)
            arrays["index_offsets"] = np.asarray(offsets).astype(np.uint32)
        return cfg, arrays

    @classmethod
    def from_state(cls, config, arrays):
        if config.get("family") not in ("uniform", "lloyd"):
            raise ValueError(f"saved ICQuant state has an unknown family {config.get('family')!r}")
        inner = (ScalarGrid.symmetric(config["bits"], 1.0) if config["family"] == "uniform"
                 else LloydMax(config["bits"]))
        q = cls(inner, config["gamma"], config["B"], config["index_code"], config["group"])
        if "m" not in config:
            return q
        m, n, k = int(config["m"]), int(config["n"]), int(config["k"])
        names = ("in_lo", "in_step", "out_lo", "out_step") if q.family == "uniform" else ("in_book", "out_book")
        params = {}
        for name in names:
            if name.startswith("out") and not k:
                continue
            if name not in arrays:
                raise ValueError(f"saved ICQuant state lacks the array {name!r}")
            params[name] = np.asarray(arrays[name]).astype(np.float16)
        stream, mask = None, np.zeros((m, n), dtype=bool)
        if k:
            data = np.asarray(arrays["index"], dtype=np.uint8)
            offsets = np.asarray(arrays["index_offsets"]).astype(np.int64)
            mask = q._decode_stream(data, offsets, m, n, k)
            if np.any(mask.sum(axis=1) != k):
                raise ValueError("corrupt ICQuant index: a row does not decode to k outliers")
            stream = (data, offsets)
        return q._with_fit(m, n, k, mask, params, stream)

    def _decode_stream(self, data, offsets, m, n, k):
        """Decode the saved index to the mask (the fast package overrides this with Numba)."""
        if self.index_code == "gap":
            return gap_decode(data, offsets, k, n, self.B)
        return enum_decode(data, offsets, n, self.group)
