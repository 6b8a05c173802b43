"""Scalar quantizers: uniform grids (QuIP, OPTQ/RTN), the unbounded integer grid of
QuIP's theorems, and the Lloyd-Max quantizer for N(0, 1).

References
----------
.. [QuIP] Chee, Cai, Kuleshov, De Sa. "QuIP: 2-Bit Quantization of Large Language
   Models With Guarantees", NeurIPS 2023 (arXiv 2307.13304), Alg. 1 and Sec. 3.
.. [OPTQ] Frantar, Ashkboos, Hoefler, Alistarh. "GPTQ", ICLR 2023 (arXiv 2210.17323).
.. [Max60] J. Max, "Quantizing for minimum distortion", IRE Trans. Inf. Theory, 1960.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats

from .._checks import array_module, check_array, check_bits, check_rounding, check_seed
from .base import Quantizer

__all__ = ["ScalarGrid", "IntegerGrid", "LloydMax", "lloyd_max_gaussian"]

def _round(t, rounding: str, rng, xp):
    """floor(t + 1/2) (nearest, as QuIP's code) or floor(t + u), u ~ U[0, 1) (unbiased).

    The uniforms come from the NumPy ``rng`` in C order of ``t`` so that the same seed
    gives the same codes in every package and on every device.
    """
    if rounding == "nearest":
        return xp.floor(t + 0.5)
    if rng is None:
        raise ValueError("stochastic rounding needs a random generator: pass rng=numpy.random.default_rng(seed)")
    u = check_seed(rng, "rng").random(t.shape)
    return xp.floor(t + xp.asarray(u))


def _rowwise(param, x, xp):
    """Broadcast a per-row parameter of shape (m,) against x of shape (m, ...)."""
    p = xp.asarray(param)
    if p.ndim == 0:
        return p
    if x.ndim == 0 or x.shape[0] != p.shape[0]:
        raise ValueError(
            f"this quantizer has per-row parameters for {p.shape[0]} rows, "
            f"but x has shape {tuple(x.shape)}; x must be (m, ...) with m = {p.shape[0]}"
        )
    return p.reshape(p.shape + (1,) * (x.ndim - 1))


class ScalarGrid(Quantizer):
    r"""Uniform grid of :math:`2^b` points ``offset + step * q``, ``q = 0 .. 2^b - 1``.

    Values outside the grid are clamped to its end points.

    Parameters
    ----------
    bits : int
        Bits per weight ``b`` (1..8).
    step, offset : float or ndarray of shape (m,)
        Grid spacing and position of the first point; arrays give one grid per row.
    rounding : {"nearest", "stochastic"}
        ``floor(t + 1/2)`` or the unbiased ``floor(t + u)``, ``u ~ U[0, 1)``, with
        ``t = (x - offset) / step`` ([QuIP] Sec. 3).

    Notes
    -----
    Constructors for the grids of the papers:

    * :meth:`symmetric` / :meth:`quip`: :math:`2^b` points evenly spaced on
      :math:`[-s, s]`, :math:`s = \rho\,\mathrm{RMS}(W)` with :math:`\rho = 2.4`
      (QuIP after incoherence; for b = 2: ``{-s, -s/3, s/3, s}``).
    * :meth:`minmax`: OPTQ's per-row asymmetric min-max grid (RTN and GPTQ baselines).
    """

    def __init__(self, bits: int, step, offset, rounding: str = "nearest"):
        self.bits = check_bits(bits, 1, 8)
        self.rounding = check_rounding(rounding)
        self.stochastic = rounding == "stochastic"
        step = np.asarray(step, dtype=np.float64)
        offset = np.asarray(offset, dtype=np.float64)
        if step.ndim > 1 or offset.ndim > 1:
            raise ValueError("step and offset must be scalars or 1-D arrays of shape (m,)")
        if not (np.all(np.isfinite(step)) and np.all(step > 0)):
            raise ValueError("step must be finite and > 0 (a grid of zero width cannot quantize)")
        if not np.all(np.isfinite(offset)):
            raise ValueError("offset must be finite")
        self.step, self.offset = step, offset

    def codes_shape(self, shape) -> tuple:
        """``(m, n)``; per-row grids must have m rows (``ValueError`` otherwise)."""
        m, n = (int(s) for s in shape)
        for name in ("step", "offset"):
            p = getattr(self, name)
            if p.ndim == 1 and p.shape[0] != m:
                raise ValueError(f"the grid has a per-row {name} for {p.shape[0]} rows, not m = {m}")
        return (m, n)

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def symmetric(cls, bits: int, half_width, rounding: str = "nearest") -> "ScalarGrid":
        """:math:`2^b` evenly spaced points on ``[-half_width, half_width]``."""
        bits = check_bits(bits, 1, 8)
        s = np.asarray(half_width, dtype=np.float64)
        return cls(bits, 2.0 * s / (2**bits - 1), -s, rounding)

    @classmethod
    def quip(cls, W, bits: int, rho: float = 2.4, rounding: str = "nearest") -> "ScalarGrid":
        r"""QuIP's grid: symmetric on :math:`[-s, s]`, :math:`s = \rho\,\mathrm{RMS}(W) + 10^{-16}`.

        ``W`` is the (incoherence-processed) weight matrix of shape (m, n); RMS is over all
        m·n entries. ``rho = 2.4`` is the value of QuIP's code (the paper's value is not
        restated in [QuIP#]; :ref:`papers-from-code`).
        """
        W = check_array(W, "W")
        xp = array_module(W)
        s = rho * float(xp.sqrt(xp.mean(W.astype(np.float64) ** 2))) + 1e-16
        return cls.symmetric(bits, s, rounding)

    @classmethod
    def minmax(cls, W, bits: int, rounding: str = "nearest") -> "ScalarGrid":
        r"""OPTQ's per-row asymmetric grid.

        For row i: ``lo = min(0, min W_i)``, ``hi = max(0, max W_i)`` (``[-1, 1]`` if
        both are 0), ``scale = (hi - lo) / (2^b - 1)``, ``zero = round(-lo / scale)``;
        grid points ``scale * (q - zero)``.
        """
        W = check_array(W, "W", ndim=2)
        bits = check_bits(bits, 1, 8)
        Wn = np.asarray(W.get() if hasattr(W, "get") else W, dtype=np.float64)
        lo = np.minimum(Wn.min(axis=1), 0.0)
        hi = np.maximum(Wn.max(axis=1), 0.0)
        dead = (lo == 0) & (hi == 0)
        lo[dead], hi[dead] = -1.0, 1.0
        scale = (hi - lo) / (2**bits - 1)
        zero = np.round(-lo / scale)
        return cls(bits, scale, -scale * zero, rounding)

    # -- contract ----------------------------------------------------------------------
    @property
    def levels(self) -> int:
        """Number of grid points, :math:`2^b`."""
        return 2**self.bits

    @property
    def bits_per_weight(self) -> float:
        """``bits`` (grid parameters are per matrix or per row: negligible, not counted)."""
        return float(self.bits)

    def encode(self, x, rng=None):
        """Codes ``clamp(round((x - offset) / step), 0, 2^b - 1)`` as uint8, same shape as x."""
        x = check_array(x, "x")
        xp = array_module(x)
        t = (x.astype(np.float64) - _rowwise(self.offset, x, xp)) / _rowwise(self.step, x, xp)
        q = _round(t, self.rounding, rng, xp)
        return xp.clip(q, 0, self.levels - 1).astype(np.uint8)

    def decode(self, codes):
        """Values ``offset + step * codes`` (float64) for integer codes in ``[0, 2^bits)``.

        Raises
        ------
        TypeError
            ``codes`` is not an integer array.
        ValueError
            A code outside the grid ``[0, 2^bits)``.
        """
        xp = array_module(codes)
        if isinstance(codes, (str, bytes, dict)) or codes is None:
            raise TypeError(f"codes must be an integer array, got {type(codes).__name__}")
        c = xp.asarray(codes)
        if c.dtype.kind not in "iu":
            raise TypeError(f"codes must be an integer array (grid indices in [0, {2**self.bits})), got dtype {c.dtype}")
        if c.size and (int(c.min()) < 0 or int(c.max()) >= 2**self.bits):
            raise ValueError(f"codes must lie in [0, 2^bits) = [0, {2**self.bits}) (the grid's points), "
                             f"got values in [{int(c.min())}, {int(c.max())}]")
        return _rowwise(self.offset, c, xp) + _rowwise(self.step, c, xp) * c.astype(np.float64)

    def state(self):
        return ({"type": "ScalarGrid", "bits": self.bits, "rounding": self.rounding},
                {"step": self.step, "offset": self.offset})

    @classmethod
    def from_state(cls, config, arrays):
        return cls(config["bits"], arrays["step"], arrays["offset"], config.get("rounding", "nearest"))


class IntegerGrid(Quantizer):
    """Rounding to *all* multiples of ``step`` (no clamp): the quantizer of QuIP's Theorem 1.

    ``encode`` returns int64 codes ``round(x / step)``; nearest is ``floor(t + 1/2)``,
    stochastic is ``floor(t + u)``. With ``step = 1`` this is rounding to the integers,
    for which LDLQ's worst-case and average proxy losses are ``(m/4) tr(D)`` and
    ``(m/12) tr(D)`` (nearest) / ``(m/6) tr(D)`` (stochastic).
    """

    def __init__(self, step: float = 1.0, rounding: str = "nearest"):
        step = float(step)
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be finite and > 0, got {step}")
        self.step = step
        self.rounding = check_rounding(rounding)
        self.stochastic = rounding == "stochastic"

    @property
    def bits_per_weight(self) -> float:
        """Unbounded grid: infinitely many levels (``math.inf``)."""
        return math.inf

    def encode(self, x, rng=None):
        r"""Codes :math:`q = \lfloor x / \mathrm{step} + 1/2 \rfloor` (nearest) or
        :math:`\lfloor x / \mathrm{step} + u \rfloor`, :math:`u \sim U[0, 1)` (stochastic).

        Parameters
        ----------
        x : ndarray of any shape
        rng : numpy.random.Generator
            Required for stochastic rounding (uniforms drawn in C order of ``x``).

        Returns
        -------
        codes : int64 ndarray, same shape as ``x`` (unbounded: no clamp)
        """
        x = check_array(x, "x")
        xp = array_module(x)
        return _round(x.astype(np.float64) / self.step, self.rounding, rng, xp).astype(np.int64)

    def decode(self, codes):
        """Values ``step * codes`` (float64, same shape as ``codes``)."""
        xp = array_module(codes)
        return xp.asarray(codes).astype(np.float64) * self.step

    def state(self):
        return {"type": "IntegerGrid", "step": self.step, "rounding": self.rounding}, {}

    @classmethod
    def from_state(cls, config, arrays):
        return cls(config["step"], config.get("rounding", "nearest"))


@functools.lru_cache(maxsize=None)
def lloyd_max_gaussian(bits: int, tol: float = 1e-14, max_iter: int = 100_000):
    r"""Lloyd-Max (MSE-optimal scalar) quantizer of N(0, 1) with :math:`2^b` levels.

    Lloyd's iteration [Max60]: thresholds are midpoints of adjacent levels, and each
    level is the conditional mean of its cell,
    :math:`c_i = (\varphi(t_{i-1}) - \varphi(t_i)) / (\Phi(t_i) - \Phi(t_{i-1}))`.

    Returns
    -------
    levels : ndarray of shape (2^b,)
    thresholds : ndarray of shape (2^b - 1,)
    mse : float
        :math:`E[(X - Q(X))^2]`, e.g. 0.3634 (1 bit), 0.1175 (2 bits), 0.03455 (3),
        0.009501 (4) [Max60 tabulates 0.3634, 0.1175, 0.03454, 0.009497].
    """
    bits = check_bits(bits, 1, 8)
    k = 2**bits
    c = stats.norm.ppf((np.arange(k) + 0.5) / k)  # start at the quantiles
    for _ in range(max_iter):
        t = np.concatenate(([-np.inf], (c[1:] + c[:-1]) / 2, [np.inf]))
        p = stats.norm.cdf(t[1:]) - stats.norm.cdf(t[:-1])
        new = (stats.norm.pdf(t[:-1]) - stats.norm.pdf(t[1:])) / p
        if np.max(np.abs(new - c)) < tol:
            c = new
            break
        c = new
    t = np.concatenate(([-np.inf], (c[1:] + c[:-1]) / 2, [np.inf]))
    a, b = t[:-1], t[1:]
    # E[(X - c)^2 ; a < X < b] = E[X^2; cell] - 2c E[X; cell] + c^2 P(cell)
    def x_pdf(z):  # z * phi(z), with the limit 0 at z = +-inf
        out = np.zeros_like(z)
        fin = np.isfinite(z)
        out[fin] = z[fin] * stats.norm.pdf(z[fin])
        return out

    ex2 = (stats.norm.cdf(b) - stats.norm.cdf(a)) + x_pdf(a) - x_pdf(b)
    ex = stats.norm.pdf(a) - stats.norm.pdf(b)
    pc = stats.norm.cdf(b) - stats.norm.cdf(a)
    mse = float(np.sum(ex2 - 2 * c * ex + c**2 * pc))
    levels = c.copy()
    thresholds = t[1:-1].copy()
    levels.setflags(write=False)
    thresholds.setflags(write=False)
    return levels, thresholds, mse


class LloydMax(Quantizer):
    """The Lloyd-Max quantizer of N(0, scale²): nearest of ``scale * levels``.

    Parameters
    ----------
    bits : int
        1..4 (the levels are computed, not tabulated: see :func:`lloyd_max_gaussian`).
    scale : float
        Standard deviation the levels are stretched to.

    Notes
    -----
    Code ``i`` is the number of thresholds strictly below ``x / scale``; at 2 bits the
    MSE on N(0, 1) is 0.1175 against Shannon's 2^-4 = 0.0625 (QTIP Table 1).
    """

    def __init__(self, bits: int, scale: float = 1.0):
        self.bits = check_bits(bits, 1, 4)
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        self.scale = scale
        self.levels, self.thresholds, self.gaussian_mse = lloyd_max_gaussian(self.bits)

    @property
    def bits_per_weight(self) -> float:
        """``bits``: one :math:`b`-bit code per weight (the scale is in :attr:`side_bits`)."""
        return float(self.bits)

    @property
    def side_bits(self) -> int:
        """The float64 ``scale`` kept in the config: 64 bits."""
        return 64

    def encode(self, x, rng=None):
        """Index of the nearest level of ``scale * levels``: the number of thresholds
        strictly below ``x / scale``.

        Parameters
        ----------
        x : ndarray of any shape
        rng : ignored (deterministic)

        Returns
        -------
        codes : uint8 ndarray, same shape as ``x``, values in ``[0, 2^b)``
        """
        x = check_array(x, "x")
        xp = array_module(x)
        t = x.astype(np.float64) / self.scale
        return xp.searchsorted(xp.asarray(self.thresholds), t, side="left").astype(np.uint8)

    def decode(self, codes):
        """Values ``scale * levels[codes]`` (float64, same shape as ``codes``)."""
        xp = array_module(codes)
        return self.scale * xp.asarray(self.levels)[xp.asarray(codes).astype(np.intp)]

    def state(self):
        return {"type": "LloydMax", "bits": self.bits, "scale": self.scale}, {}

    @classmethod
    def from_state(cls, config, arrays):
        return cls(config["bits"], config["scale"])
