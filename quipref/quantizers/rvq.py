r"""Residual vector quantization (RVQ) over E8P: QuIP#'s 3- and 4-bit codebooks.

RVQ quantizes, then quantizes what is left ([QuIP#] Sec. 4.3). With the data first
divided by ``scale`` (the repository's ``Wscale``) and ``u = x / scale``:

.. math::

    \delta_1 = Q_1(u), \qquad
    \delta_2 = Q_2\big((u - \delta_1)\, r\big) / r, \qquad
    \hat x = \mathrm{scale}\,(\delta_1 + \delta_2),

where ``r`` is ``resid_scale``: the residual is *multiplied* by ``r`` before it meets the
second unit codebook and divided by it afterwards (the repository's convention; the
paper writes the same thing with the reciprocal). Both stages search their own codebook
exactly; the pair is greedy, not the joint nearest point of the sum codebook.

* **4 bit**: ``Q_1 = Q_2 =`` :class:`~quipref.quantizers.E8P` (16 + 16 bits per 8 weights).
  The repository's defaults ``(rho, r) = (1.03, 3.45)`` give MSE 0.0096 per weight on
  N(0, 1) -- *not* the Gaussian optimum: Tutorial 2 measures 0.0087 at (0.925, 3.45) and
  0.0084 at (0.9, 3.9), below 4-bit Lloyd-Max (0.0095), which (1.03, 3.45) does not beat.
* **3 bit**: ``Q_1 =`` E8P, ``Q_2 =`` :class:`E81B`, the 1-bit E8 codebook
  (16 + 8 bits per 8 weights). ``(rho, r) = (0.98, 2.04)``, MSE 0.0295.

Here ``rho`` is the RMS the data is normalised to (``scale = RMS(x) / rho``, see
:meth:`RVQ.from_rms`); for N(0, 1) data ``RVQ(4, scale=1/1.03, resid_scale=3.45)``.

Code layout
-----------
One unsigned integer per 8 weights (``uint32``):

* 4 bit: ``(first << 16) | second``, both 16-bit E8P codes (repository layout, same
  index as the repository's RVQ4 codes);
* 3 bit: ``(first << 8) | second``, a 16-bit E8P code and an 8-bit E81B index.

E81B
----
The 256 points: the 241 points of :math:`E_8` with norm² ≤ 2 (the origin and the 240
roots: 112 of the form (±1, ±1, 0⁶) and 128 of the form (±½)⁸ with an even number of
minus signs) plus the 15 points ±2e_i of norm² 4, excluding −2e_8 ([QuIP#] Sec. 4.3,
arXiv 2402.04396). **Index order is ours**: the 256 vectors sorted
lexicographically ascending. The paper gives no order and we did not take the repository's,
so 3-bit codes are not claimed to be bit-compatible with relaxml 3-bit checkpoints
(4-bit codes are, since both stages are E8P).

References
----------
.. [QuIP#] Tseng, Chee, Sun, Kuleshov, De Sa, ICML 2024 (arXiv 2402.04396), Sec. 4.3,
   App. F.5; repository Cornell-RelaxML/quip-sharp (GPL-3.0; re-derived, not copied).
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

from .._checks import array_module, check_bits
from .base import Quantizer
from .e8p import E8P, check_codes, check_scale, check_vectors, nearest_brute_force

__all__ = ["RVQ", "E81B", "e81b_codebook"]


@functools.lru_cache(maxsize=None)
def e81b_codebook() -> np.ndarray:
    """The 256 points of the 1-bit E8 codebook, shape (256, 8), float64, read-only,
    sorted lexicographically (see the module docstring). Checked on construction."""
    pts = [(0.0,) * 8]
    for i, j in itertools.combinations(range(8), 2):  # (+-1, +-1, 0^6): 112 roots
        for si, sj in itertools.product((-1.0, 1.0), repeat=2):
            v = [0.0] * 8
            v[i], v[j] = si, sj
            pts.append(tuple(v))
    for signs in itertools.product((-0.5, 0.5), repeat=8):  # (+-1/2)^8, even minus count
        if sum(s < 0 for s in signs) % 2 == 0:
            pts.append(signs)
    for i in range(8):  # +-2 e_i, except -2 e_8
        for s in (2.0, -2.0):
            if not (i == 7 and s < 0):
                v = [0.0] * 8
                v[i] = s
                pts.append(tuple(v))
    C = np.array(sorted(pts), dtype=np.float64)
    norms = (C**2).sum(1)
    if (len(C) != 256 or len(np.unique(C, axis=0)) != 256
            or sorted(np.unique(norms, return_counts=True)[1]) != [1, 15, 240]
            or not np.all(np.mod(C.sum(1), 2) == 0)):  # all in E8: even coordinate sums
        raise AssertionError("E81B construction is wrong")
    C.setflags(write=False)
    return C


@functools.lru_cache(maxsize=None)
def _e81b_search_tables():
    C = e81b_codebook()
    return np.ascontiguousarray(2.0 * C.T), (C**2).sum(axis=1)


class E81B(Quantizer):
    r"""The 1-bit E8 codebook of QuIP#'s 3-bit RVQ: 8 weights per 8-bit index.

    Parameters
    ----------
    scale : float
        Codebook multiplier, as for :class:`~quipref.quantizers.E8P`.

    Notes
    -----
    ``encode`` is the exact brute force over the 256 points (ties: lowest index).
    """

    dim = 8
    n_codes = 256

    def __init__(self, scale: float = 1.0):
        self.scale = check_scale(scale)

    @property
    def bits_per_weight(self) -> float:
        """8 bits per 8 weights = 1.0."""
        return 1.0

    def codebook(self):
        """The 256 codewords times ``scale``, shape (256, 8)."""
        return self.scale * e81b_codebook()

    def encode(self, x, rng=None):
        """Index of the nearest codeword per group of 8 entries: (..., 8k) -> (..., k) uint8."""
        u, code_shape = check_vectors(x, self.dim, "E81B")
        table2t, norms = _e81b_search_tables()
        return nearest_brute_force(u / self.scale, table2t, norms).astype(np.uint8).reshape(code_shape)

    def decode(self, codes):
        """``scale · codeword``: (..., k) -> (..., 8k) float64."""
        c = check_codes(codes, self.n_codes, "E81B")
        xp = array_module(c)
        out = self.scale * xp.asarray(e81b_codebook())[c.reshape(-1)]
        return out.reshape(c.shape[:-1] + (c.shape[-1] * self.dim,))

    def state(self):
        return {"type": "E81B", "scale": self.scale}, {}

    @classmethod
    def from_state(cls, config, arrays):
        return cls(config["scale"])


class RVQ(Quantizer):
    r"""QuIP#'s residual E8P codebooks at 3 and 4 bits per weight.

    Parameters
    ----------
    bits : {3, 4}
        4: E8P then E8P on the residual; 3: E8P then :class:`E81B`.
    scale : float
        Codebook multiplier of the first stage (the repository's ``Wscale``): the data
        is quantized as ``x / scale``. See :meth:`from_rms`.
    resid_scale : float, optional
        ``r``: the residual is multiplied by ``r`` before the second stage and divided by
        it after. Default: the repository's value for ``bits`` (3.45 at 4 bits,
        2.04 at 3 bits).

    Attributes
    ----------
    OPT_SCALES : dict
        ``bits -> (rho, resid_scale)``, the repository's defaults:
        ``{3: (0.98, 2.04), 4: (1.03, 3.45)}`` (Gaussian-optimal at 3 bits; at 4 bits a
        smaller rho does better, see the module docstring).
    stages : tuple of Quantizer
        The two unit-scale stage quantizers.

    Notes
    -----
    Codes are ``uint32``: ``(first << 16) | second`` at 4 bits, ``(first << 8) | second``
    at 3 bits (module docstring). ``decode(c) = scale · (Q1.decode(first) +
    Q2.decode(second) / resid_scale)``.
    """

    dim = 8
    OPT_SCALES = {3: (0.98, 2.04), 4: (1.03, 3.45)}
    #: stage quantizer classes (the fast package substitutes its own)
    _stage_classes = {3: (E8P, E81B), 4: (E8P, E8P)}

    def __init__(self, bits: int = 4, scale: float = 1.0, resid_scale: float | None = None):
        bits = check_bits(bits, 3, 4)
        self.bits = bits
        self.scale = check_scale(scale)
        self.resid_scale = (self.OPT_SCALES[bits][1] if resid_scale is None
                            else check_scale(resid_scale, "resid_scale"))
        first, second = self._stage_classes[bits]
        self.stages = (first(1.0), second(1.0))
        self._shift = 16 if bits == 4 else 8
        self.n_codes = 2 ** (16 + self._shift)

    @classmethod
    def from_rms(cls, bits: int, rms: float, rho: float | None = None,
                 resid_scale: float | None = None) -> "RVQ":
        """The quantizer QuIP# applies to data of RMS ``rms``: ``scale = rms / rho``, with
        ``rho`` and ``resid_scale`` defaulting to :attr:`OPT_SCALES` ``[bits]``."""
        bits = check_bits(bits, 3, 4)
        rho = cls.OPT_SCALES[bits][0] if rho is None else check_scale(rho, "rho")
        return cls(bits, check_scale(rms, "rms") / rho, resid_scale)

    @property
    def bits_per_weight(self) -> float:
        """(16 + 16) / 8 = 4.0 or (16 + 8) / 8 = 3.0."""
        return float(self.bits)

    @property
    def side_bits(self) -> int:
        """``scale`` and ``resid_scale``, float64 each: 128 bits."""
        return 128

    def encode(self, x, rng=None):
        """Greedy two-stage codes: (..., 8k) -> (..., k) uint32 (layout in the module docstring)."""
        u, code_shape = check_vectors(x, self.dim, "RVQ")
        q1, q2 = self.stages
        u = u / self.scale
        c1 = q1.encode(u)[:, 0]
        resid = u - q1.decode(c1[:, None])
        c2 = q2.encode(resid * self.resid_scale)[:, 0]
        xp = array_module(c1)
        codes = (c1.astype(xp.uint32) << self._shift) | c2.astype(xp.uint32)
        return codes.reshape(code_shape)

    def decode(self, codes):
        """``scale · (Q1(first) + Q2(second) / resid_scale)``: (..., k) -> (..., 8k) float64."""
        c = check_codes(codes, self.n_codes, "RVQ")
        q1, q2 = self.stages
        first = c >> self._shift
        second = c & ((1 << self._shift) - 1)
        return self.scale * (q1.decode(first) + q2.decode(second) / self.resid_scale)

    def state(self):
        return ({"type": "RVQ", "bits": self.bits, "scale": self.scale,
                 "resid_scale": self.resid_scale}, {})

    @classmethod
    def from_state(cls, config, arrays):
        return cls(config["bits"], config["scale"], config["resid_scale"])
