r"""Incoherence processing: measure it (μ_H, μ_W) and create it (random orthogonal transforms).

LDLQ's guarantees improve when neither the weights nor the Hessian are aligned with
the coordinate axes. QuIP defines ([QuIP] Def. 1, restated in [QuIP#] Def. 2.1):

* H ∈ R^{n×n} is **μ-incoherent** if it has an eigendecomposition H = Q Λ Qᵀ with
  :math:`\max_{ij} |Q_{ij}| \le \mu/\sqrt n`;
* W ∈ R^{m×n} is **μ-incoherent** if
  :math:`\max_{ij} |W_{ij}| \le \mu \|W\|_F / \sqrt{mn}`.

Always μ ≥ 1 (a unit vector has an entry ≥ 1/√n), and μ = √n (resp. √(mn)) is the
worst case: an eigenvector equal to a coordinate axis (resp. a single non-zero weight).

Incoherence processing conjugates both by random orthogonal matrices,

.. math::

    \tilde W = T_{out}\, W\, T_{in}^T, \qquad \tilde H = T_{in}\, H\, T_{in}^T,

which leaves the proxy loss unchanged: for :math:`\hat W = T_{out}^T \hat{\tilde W} T_{in}`,
:math:`\mathrm{tr}((\hat{\tilde W} - \tilde W)\tilde H(\hat{\tilde W} - \tilde W)^T)
= \mathrm{tr}((\hat W - W) H (\hat W - W)^T)` ([QuIP#] Sec. 2.3). Two transforms share
one interface, :class:`OrthogonalTransform` (``forward`` = T x, ``inverse`` = Tᵀ x along
the last axis):

* :class:`RandomizedHadamard` (QuIP#'s RHT): T = G_n diag(s), s uniform ±1, with
  G_n the orthonormal Hadamard matrix of :mod:`quipref.hadamard`. With probability
  ≥ 1 − δ, μ_H ≤ √(2 log(2n²/δ)) and μ_W ≤ 2 log(4mn/δ) ([QuIP#] Lemma 3.1; see
  :mod:`quipref.bounds`). Cost O(n log n) per vector.
* :class:`KroneckerOrthogonal` (QuIP's): T = P_out (B1 ⊗ B2) P_in with two Haar-random
  orthogonal factors and two random permutations ([QuIP] Sec. 4 / Lemma 5). Cost
  O(n (p1 + p2)) per vector.

:func:`rescale` is QuIP's optional diagonal rescaling, applied before the conjugation.

Every random choice comes from ``seed`` (an int or a ``numpy.random.Generator``): the
same seed gives the same transform here and in :mod:`fast`, and ``state()`` /
:func:`transform_from_state` save and rebuild a transform bit-exactly without drawing
random numbers again.

References
----------
.. [QuIP] Chee, Cai, Kuleshov, De Sa, "QuIP: 2-Bit Quantization of Large Language
   Models With Guarantees", NeurIPS 2023, arXiv:2307.13304 (Def. 1, Sec. 4, Lemma 5;
   factor sizes and rescaling from the authors' code, :ref:`papers-from-code`).
.. [QuIP#] Tseng, Chee, Sun, Kuleshov, De Sa, "QuIP#: Even Better LLM Quantization
   with Hadamard Incoherence and Lattice Codebooks", ICML 2024, arXiv:2402.04396
   (Def. 2.1, Sec. 2.3, Sec. 3, Alg. 3, Lemma 3.1, App. A).
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from . import _stream
from ._checks import (array_module, check_array, check_bool, check_hessian, check_int, check_seed,
                      check_weight, prime_factors, to_numpy)
from .hadamard import factor_dimension, hadamard_transform

__all__ = [
    "mu_hessian",
    "mu_weights",
    "OrthogonalTransform",
    "RandomizedHadamard",
    "KroneckerOrthogonal",
    "kronecker_factor_sizes",
    "haar_orthogonal",
    "transform_from_state",
    "Processed",
    "Rescaled",
    "incoherence_process",
    "incoherence_unprocess",
    "rescale",
    "STATE_VERSION",
]

#: Version of the ``state()`` layout; :func:`transform_from_state` refuses other versions.
STATE_VERSION = 1


# ---------------------------------------------------------------------------------------
# Measuring incoherence.
# ---------------------------------------------------------------------------------------

def mu_hessian(H) -> float:
    r"""Incoherence of a Hessian: :math:`\mu_H = \sqrt n \max_{ij} |Q_{ij}|`.

    ``Q`` is the eigenvector matrix returned by :func:`numpy.linalg.eigh`
    ([QuIP#] Def. 2.1). Always :math:`1 \le \mu_H \le \sqrt n`.

    Parameters
    ----------
    H : ndarray of shape (n, n)
        Symmetric positive semi-definite (NumPy or CuPy; computed on the host).

    Returns
    -------
    float

    Raises
    ------
    ValueError, TypeError
        If H is not a finite, square, symmetric PSD real matrix.

    Notes
    -----
    With repeated eigenvalues the eigenvectors are not unique and the definition
    asks for the *best* basis; the value returned is that of ``eigh``'s basis, an
    **upper estimate** of the definition's μ (e.g. for H = I, eigh returns Q = I and
    μ = √n, although a Hadamard basis would give 1). Any computed value is still a
    valid μ for the theorems, since those hold for every eigendecomposition whose
    entries are bounded by μ/√n.
    """
    H = check_hessian(H)
    Hn = to_numpy(H).astype(np.float64)
    n = Hn.shape[0]
    _, Q = np.linalg.eigh((Hn + Hn.T) / 2)
    return float(math.sqrt(n) * np.abs(Q).max())


def mu_weights(W) -> float:
    r"""Incoherence of a weight matrix: :math:`\mu_W = \sqrt{mn}\,\max_{ij}|W_{ij}| / \|W\|_F`.

    ([QuIP#] Def. 2.1.) Always :math:`1 \le \mu_W \le \sqrt{mn}`: 1 for a matrix
    of equal magnitudes, √(mn) for a single non-zero entry.

    Parameters
    ----------
    W : ndarray of shape (m, n)

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If W is all zeros (μ_W is 0/0), or has NaN/Inf or the wrong shape.
    """
    W = check_weight(W)
    Wn = np.abs(to_numpy(W).astype(np.float64))
    m, n = Wn.shape
    big = Wn.max()
    if big == 0:
        raise ValueError("W is all zeros, so mu_W = sqrt(mn) max|W_ij| / ||W||_F is undefined (0/0)")
    # divide by the largest entry first so that ||W||_F cannot overflow
    return float(math.sqrt(m * n) / np.linalg.norm(Wn / big))


# ---------------------------------------------------------------------------------------
# The transform interface.
# ---------------------------------------------------------------------------------------

def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


class OrthogonalTransform:
    r"""An orthogonal n×n matrix T that acts along the last axis.

    Subclasses implement ``_forward``, ``_inverse``, ``state`` and ``from_state``; the
    public methods validate their input once, here.

    Attributes
    ----------
    n : int
        The size of T.

    Notes
    -----
    The row-vector layout used throughout: for ``x`` of shape (..., n),
    ``forward(x)[..., :] = T x`` for every vector along the last axis, i.e. for a
    matrix ``X`` of shape (k, n), ``forward(X) = X Tᵀ`` and ``inverse(X) = X T``.
    """

    n: int

    # -- application ---------------------------------------------------------------------
    def _check_x(self, x):
        x = check_array(x, "x")
        if x.ndim == 0 or x.shape[-1] != self.n:
            raise ValueError(
                f"x must have shape (..., {self.n}) (this {type(self).__name__} acts on the "
                f"last axis, of length n = {self.n}), got shape {tuple(x.shape)}"
            )
        return x

    def forward(self, x):
        """``T x`` along the last axis.

        Parameters
        ----------
        x : ndarray of shape (..., n)
            NumPy or CuPy; float32 stays float32, integers become float64.

        Returns
        -------
        ndarray of shape (..., n), same array module (and floating dtype) as ``x``.

        Raises
        ------
        ValueError
            If ``x.shape[-1] != n`` or x has NaN/Inf.
        """
        return self._forward(self._check_x(x))

    def inverse(self, x):
        """``Tᵀ x`` along the last axis (the inverse, T being orthogonal). See :meth:`forward`."""
        return self._inverse(self._check_x(x))

    def matrix(self) -> np.ndarray:
        """The dense matrix T of shape (n, n), float64 NumPy (for tests and teaching: n² memory)."""
        return to_numpy(self.forward(np.eye(self.n))).T.copy()

    def _forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _inverse(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:  # pragma: no cover - abstract
        """``(config, arrays)``: a JSON-able dict (with ``type``, ``version``, ``n``) and
        a dict of NumPy arrays from which :meth:`from_state` rebuilds T bit-exactly."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, config: dict, arrays: dict):  # pragma: no cover - abstract
        """Rebuild a transform from :meth:`state` (no random numbers are drawn).

        On the base class use :func:`transform_from_state`, which dispatches on
        ``config["type"]``.
        """
        raise NotImplementedError(
            "call from_state on a concrete transform class, or use transform_from_state(config, arrays)"
        )

    @classmethod
    def _check_config(cls, config) -> int:
        """Validate the common config keys; return n."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict (from state()), got {type(config).__name__}")
        if config.get("type") != cls.__name__:
            raise ValueError(f"config describes a {config.get('type')!r}, not a {cls.__name__}")
        versions = getattr(cls, "_STATE_VERSIONS", (STATE_VERSION,))
        if config.get("version") not in versions or isinstance(config.get("version"), bool):
            raise ValueError(
                f"{cls.__name__} state has version {config.get('version')!r}; this library reads "
                f"version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions))}. "
                f"Upgrade quipref to read newer files."
            )
        return check_int(config.get("n"), "config['n']")

    @staticmethod
    def _get_array(arrays, key: str, shape: tuple, owner: str) -> np.ndarray:
        if not isinstance(arrays, dict) or key not in arrays:
            raise ValueError(f"{owner} state is missing the array {key!r}")
        a = to_numpy(arrays[key])
        if a.shape != shape:
            raise ValueError(f"{owner} state array {key!r} has shape {a.shape}, expected {shape}")
        return a

    def __repr__(self) -> str:
        cfg, _ = self.state()
        inner = ", ".join(f"{k}={v!r}" for k, v in cfg.items() if k not in ("type", "version"))
        return f"{type(self).__name__}({inner})"


# ---------------------------------------------------------------------------------------
# Randomized Hadamard transform (QuIP#).
# ---------------------------------------------------------------------------------------

class RandomizedHadamard(OrthogonalTransform):
    r"""The randomized Hadamard transform :math:`T = G_n\,\mathrm{diag}(s)` ([QuIP#] Alg. 3).

    ``forward(x) = G_n (s ⊙ x)`` and ``inverse(x) = s ⊙ (G_nᵀ x)``, with
    :math:`G_n = (H_K \otimes H_{2^k})/\sqrt n` the orthonormal Hadamard matrix of
    :func:`quipref.hadamard.hadamard_matrix` and s a uniform random ±1 vector.

    Parameters
    ----------
    n : int
        Size; must be K·2^k with K = 1 or a supported base size
        (:func:`quipref.hadamard.factor_dimension`).
    seed : int or numpy.random.Generator
        The signs are ``s = 1 - 2 b`` with ``b = rng.integers(0, 2, size=n)`` and
        ``rng = numpy.random.default_rng(seed)`` (a Generator is used as is, and advanced).

    Attributes
    ----------
    n : int
    signs : ndarray of int8, shape (n,)
        The ±1 diagonal s (read-only).

    Raises
    ------
    TypeError
        If n is not an integer or seed is neither a non-negative int nor a Generator.
    ValueError
        If n < 1 or n has no supported Hadamard size (the message of
        :func:`~quipref.hadamard.factor_dimension`, with the size to pad to).

    Notes
    -----
    Applied on both sides, the sign vectors are QuIP#'s S_V (input side, here ``T_in``)
    and S_U (output side, ``T_out``); its code names them the other way round
    (:ref:`papers-from-code`). With probability ≥ 1 − δ over the signs,
    :math:`T H T^T` is :math:`\sqrt{2\log(2n^2/\delta)}`-incoherent ([QuIP#] Lemma 3.1).

    The Hadamard transform is looked up as the class attribute ``_hadamard``, so
    :mod:`fast.incoherence` substitutes its Numba/CUDA transform by subclassing.

    Examples
    --------
    >>> T = RandomizedHadamard(12, seed=0)
    >>> x = np.arange(12.0)
    >>> bool(np.allclose(T.inverse(T.forward(x)), x))
    True
    """

    _hadamard = staticmethod(hadamard_transform)

    def __init__(self, n, seed=0):
        self.n = check_int(n, "n")
        factor_dimension(self.n)  # ValueError for sizes with no Hadamard matrix
        rng = check_seed(seed)
        bits = rng.integers(0, 2, size=self.n)
        self.signs = _readonly((1 - 2 * bits).astype(np.int8))

    def _signs_like(self, x):
        return array_module(x).asarray(self.signs, dtype=x.dtype)

    def _forward(self, x):
        return self._hadamard(x * self._signs_like(x))

    def _inverse(self, x):
        return self._hadamard(x, inverse=True) * self._signs_like(x)

    def state(self):
        return ({"type": "RandomizedHadamard", "version": STATE_VERSION, "n": self.n},
                {"signs": self.signs.copy()})

    @classmethod
    def from_state(cls, config, arrays):
        n = cls._check_config(config)
        factor_dimension(n)
        s = cls._get_array(arrays, "signs", (n,), cls.__name__)
        if s.dtype.kind not in "iuf" or not np.all(np.abs(s) == 1):
            raise ValueError(f"{cls.__name__} state array 'signs' must hold only +1 and -1")
        obj = cls.__new__(cls)
        obj.n = n
        obj.signs = _readonly(s.astype(np.int8))
        return obj


# ---------------------------------------------------------------------------------------
# Kronecker product of Haar-random orthogonal factors (QuIP).
# ---------------------------------------------------------------------------------------

def _index_dtype(n: int):
    """Smallest unsigned dtype holding indices 0..n-1 (permutations are stored compactly)."""
    return np.uint16 if n <= 2**16 else np.uint32


def kronecker_factor_sizes(n) -> tuple[int, int]:
    """QuIP's factor sizes ``(p1, p2)``, ``p1 * p2 = n``, for the Kronecker transform.

    The rule of QuIP's code (:ref:`papers-from-code`): list the prime factors of n in
    ascending order (with multiplicity); p1 is the product of those at even positions
    (0, 2, 4, ...), p2 of those at odd positions. It is close to √n only for smooth n.

    Parameters
    ----------
    n : int, n >= 1

    Returns
    -------
    (p1, p2) : tuple of int

    Examples
    --------
    >>> kronecker_factor_sizes(4096), kronecker_factor_sizes(11008), kronecker_factor_sizes(13)
    ((64, 64), (688, 16), (13, 1))
    """
    n = check_int(n, "n")
    primes = prime_factors(n)
    return math.prod(primes[0::2]), math.prod(primes[1::2])


def haar_orthogonal(p, seed=0) -> np.ndarray:
    r"""A Haar-random orthogonal matrix of shape (p, p).

    QR of a standard Gaussian matrix ``G = rng.standard_normal((p, p))`` with the sign
    fix that makes diag(R) positive: ``Q diag(sign(diag R))`` is Haar-distributed on
    O(p) (Mezzadri, "How to generate random matrices from the classical compact
    groups", Notices AMS 54 (2007)). QuIP's code samples SO(p) instead; the sign of
    the determinant is irrelevant for incoherence.

    Parameters
    ----------
    p : int, p >= 1
    seed : int or numpy.random.Generator

    Returns
    -------
    ndarray of float64, shape (p, p)
    """
    p = check_int(p, "p")
    rng = check_seed(seed)
    return _haar_from_normals(rng.standard_normal((p, p)))


def _haar_from_normals(G) -> np.ndarray:
    """``Q diag(sign(diag R))`` for ``G = QR``: Haar on O(p) when G has i.i.d. N(0, 1) entries."""
    Q, R = np.linalg.qr(G)
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)


class KroneckerOrthogonal(OrthogonalTransform):
    r"""QuIP's Kronecker transform :math:`T = P_{out}\,(B_1 \otimes B_2)\,P_{in}`.

    B1 (p1×p1) and B2 (p2×p2) are Haar-random orthogonal, (p1, p2) =
    :func:`kronecker_factor_sizes` (n), and P_in, P_out are uniformly random
    permutations, ``(P x)_i = x[perm[i]]`` ([QuIP] Sec. 4, Lemma 5; the
    ``pre_proj_extra = 1`` "noblock" variant of its code, :ref:`papers-from-code`).

    ``forward(x)``: permute by ``perm_in``, view as a (p1, p2) matrix X (row-major),
    form :math:`B_1 X B_2^T` (which is :math:`(B_1 \otimes B_2)\,\mathrm{vec}(X)` for
    row-major vec), flatten, permute by ``perm_out``. ``inverse`` undoes the steps
    in reverse order with :math:`B_1^T X B_2`. Cost O(n (p1 + p2)) per vector.

    Parameters
    ----------
    n : int, n >= 1
        Size (any n; a prime n gives factors (n, 1), i.e. one dense Haar matrix).
    seed : int or numpy.random.Generator
        A non-negative int < 2^64 (a Generator gives one: ``int(rng.integers(2**63))``).
        Everything is drawn from the portable stream of :mod:`quipref._stream` (SplitMix64
        in counter mode, fixed by this library rather than by NumPy's version): sub-stream
        ``j`` of ``seed`` gives ``perm_in`` (j = 0) and ``perm_out`` (j = 3) as
        :func:`quipref._stream.permutation`, and B1 (j = 1), B2 (j = 2) as the Haar QR
        (:func:`haar_orthogonal`'s sign fix) of a p x p matrix of
        :func:`quipref._stream.normals`, filled row-major.
    store_factors : bool
        What :meth:`state` saves. ``False`` (default): the seed only, as in the paper,
        where the orthogonal factors come from a seed; the factors are regenerated on
        load and checked against a stored fingerprint (the traces of B1 and B2, to
        1e-9: the normals and the QR are reproduced to float64 round-off, not bit for
        bit, across math libraries). ``True``: the permutations and the float64 factors
        themselves, bit-exact everywhere, at 64 (p1^2 + p2^2) + 32 n bits more;
        :attr:`QuantizedLinear.bits_per_weight <quipref.QuantizedLinear.bits_per_weight>`
        counts them.

    Attributes
    ----------
    n : int
    seed : int
    store_factors : bool
    factors : tuple of int
        (p1, p2).
    B1, B2 : ndarray of float64, shapes (p1, p1) and (p2, p2) (read-only)
    perm_in, perm_out : ndarray of int64, shape (n,) (read-only)

    Notes
    -----
    With probability ≥ 1 − δ the Kronecker transform makes H μ_H-incoherent with
    μ_H = A log(2Cn²/δ) and W μ_W-incoherent with μ_W = A² log(4Cmn/δ)², for unknown
    global constants A, C ([QuIP] Lemma 5; the μ_W form is quoted in [QuIP#] Sec. 2.3,
    the exact μ_H form is unverified, :ref:`papers-unverified`): a log² rate against the
    RHT's log, and not checkable with constants.
    """

    #: Largest factor size built: a dense p x p float64 factor of 16384 rows takes 2 GiB.
    MAX_FACTOR = 2**14

    def __init__(self, n, seed=0, *, store_factors: bool = False):
        self.n = check_int(n, "n")
        p1, p2 = kronecker_factor_sizes(self.n)
        self._check_factor_sizes(self.n, p1, p2)
        self.store_factors = check_bool(store_factors, "store_factors")
        rng = check_seed(seed)  # the usual seed errors (TypeError for -1, 1.5, "0")
        if seed is rng:  # a Generator: draw the integer seed of the portable stream from it
            seed = int(rng.integers(0, 2**63))
        self.seed = check_int(seed, "seed", 0, 2**64 - 1)
        self._generate(p1, p2)
        self._fingerprint = self._traces()

    def _generate(self, p1, p2):
        s = self.seed
        perm_in, perm_out = _stream.permutation(_stream.substream_key(s, 0), self.n), \
            _stream.permutation(_stream.substream_key(s, 3), self.n)
        B1, B2 = (_haar_from_normals(_stream.normals(_stream.substream_key(s, j), p * p).reshape(p, p))
                  for j, p in ((1, p1), (2, p2)))
        self._set(perm_in, B1, B2, perm_out)

    def _traces(self) -> list:
        return [float(np.trace(self.B1)), float(np.trace(self.B2))]

    @classmethod
    def _check_factor_sizes(cls, n, p1, p2, name="n"):
        if max(p1, p2) > cls.MAX_FACTOR:
            raise ValueError(
                f"{name}={n} gives Kronecker factors ({p1}, {p2}): a dense {max(p1, p2)} x {max(p1, p2)} "
                f"orthogonal factor ({max(p1, p2) ** 2 * 8 / 2**30:.3g} GiB) exceeds the limit of "
                f"{cls.MAX_FACTOR} rows; pad n to a size with smaller prime factors, or use "
                f"RandomizedHadamard")

    def _set(self, perm_in, B1, B2, perm_out):
        self.factors = (int(B1.shape[0]), int(B2.shape[0]))
        self.perm_in = _readonly(np.asarray(perm_in, dtype=np.int64))
        self.perm_out = _readonly(np.asarray(perm_out, dtype=np.int64))
        self.B1 = _readonly(np.asarray(B1, dtype=np.float64))
        self.B2 = _readonly(np.asarray(B2, dtype=np.float64))
        self._inv_in = _readonly(np.argsort(self.perm_in))
        self._inv_out = _readonly(np.argsort(self.perm_out))

    def _apply(self, x, first, A1, A2, last):
        """``last ∘ (X ↦ A1 X A2ᵀ) ∘ first`` along the last axis (permutations as index arrays)."""
        xp = array_module(x)
        p1, p2 = self.factors
        y = x[..., xp.asarray(first)].reshape(x.shape[:-1] + (p1, p2))
        y = xp.asarray(A1, dtype=x.dtype) @ y @ xp.asarray(A2, dtype=x.dtype).T
        return y.reshape(x.shape)[..., xp.asarray(last)]

    def _forward(self, x):
        return self._apply(x, self.perm_in, self.B1, self.B2, self.perm_out)

    def _inverse(self, x):
        return self._apply(x, self._inv_out, self.B1.T, self.B2.T, self._inv_in)

    #: state layouts read: 1 (factors always stored), 2 (seed, optionally the factors)
    _STATE_VERSIONS = (1, 2)
    #: fingerprint tolerance: traces of orthogonal p x p factors regenerated with another
    #: libm / LAPACK differ by ~p * 1e-16; a different stream changes them by O(1)
    _TRACE_TOL = 1e-9

    def state(self):
        arrays = {"perm_in": self.perm_in.astype(_index_dtype(self.n)), "B1": self.B1.copy(),
                  "B2": self.B2.copy(), "perm_out": self.perm_out.astype(_index_dtype(self.n))}
        cfg = {"type": "KroneckerOrthogonal", "version": 2, "n": self.n, "factors": list(self.factors)}
        if self.seed is None:  # read from a version 1 state: no seed to regenerate from
            cfg["version"] = 1
            return cfg, arrays
        cfg.update(seed=self.seed, store_factors=self.store_factors, traces=list(self._fingerprint))
        return cfg, (arrays if self.store_factors else {})

    @classmethod
    def from_state(cls, config, arrays):
        n = cls._check_config(config)
        name = cls.__name__
        if config["version"] == 2:
            want = {"type", "version", "n", "factors", "seed", "store_factors", "traces"}
            if set(config) != want:
                raise ValueError(f"{name} state must have exactly the keys {sorted(want)}, got {sorted(config)}")
            seed = check_int(config["seed"], "config['seed']", 0, 2**64 - 1)
            stored = check_bool(config["store_factors"], "config['store_factors']")
            traces = config["traces"]
            if not (isinstance(traces, (list, tuple)) and len(traces) == 2
                    and all(isinstance(t, numbers.Real) and not isinstance(t, bool) for t in traces)):
                raise ValueError(f"{name} state: 'traces' must be two numbers, got {traces!r}")
            if not stored:
                if arrays:
                    raise ValueError(f"{name} state stores the seed only, but arrays {sorted(arrays)} were given")
                obj = cls.__new__(cls)
                obj.n, obj.seed, obj.store_factors = n, seed, False
                p1, p2 = cls._check_factors(config, n)
                obj._generate(p1, p2)
                got = obj._traces()
                if any(not abs(a - float(b)) <= cls._TRACE_TOL for a, b in zip(got, traces)):
                    raise ValueError(
                        f"{name} state: the factors regenerated from seed {seed} have traces {got}, "
                        f"not the stored {list(traces)}: the file was written with another random "
                        f"stream (or is corrupt); re-save it with store_factors=True")
                obj._fingerprint = [float(t) for t in traces]
                return obj
        obj = cls._from_arrays(config, arrays, n)
        if config["version"] == 2:
            obj.seed, obj.store_factors = seed, True
            obj._fingerprint = [float(t) for t in traces]
            if any(not abs(a - float(b)) <= cls._TRACE_TOL for a, b in zip(obj._traces(), traces)):
                raise ValueError(f"{name} state: the stored factors do not match the stored 'traces'")
        else:
            obj.seed, obj.store_factors = None, True
        return obj

    @classmethod
    def _check_factors(cls, config, n):
        factors = config.get("factors")
        if (not isinstance(factors, (list, tuple)) or len(factors) != 2
                or not all(isinstance(p, numbers.Integral) and p >= 1 for p in factors)
                or factors[0] * factors[1] != n):
            raise ValueError(f"{cls.__name__} state: 'factors' must be two positive integers "
                             f"with product n = {n}, got {factors!r}")
        p1, p2 = (int(p) for p in factors)
        cls._check_factor_sizes(n, p1, p2, "config['n']")
        if (p1, p2) != kronecker_factor_sizes(n):
            raise ValueError(f"{cls.__name__} state: 'factors' {[p1, p2]} are not QuIP's sizes "
                             f"{list(kronecker_factor_sizes(n))} for n = {n}")
        return p1, p2

    @classmethod
    def _from_arrays(cls, config, arrays, n):
        p1, p2 = cls._check_factors(config, n)
        name = cls.__name__
        perms = {}
        for key in ("perm_in", "perm_out"):
            a = cls._get_array(arrays, key, (n,), name)
            if a.dtype.kind not in "iu" or not np.array_equal(np.sort(a), np.arange(n)):
                raise ValueError(f"{name} state array {key!r} is not a permutation of 0..{n - 1}")
            perms[key] = a.astype(np.int64)  # stored compactly (uint16/uint32)
        mats = {}
        for key, p in (("B1", p1), ("B2", p2)):
            B = cls._get_array(arrays, key, (p, p), name)
            if B.dtype.kind != "f" or not np.all(np.isfinite(B)):
                raise ValueError(f"{name} state array {key!r} must be finite floating point")
            B = B.astype(np.float64)
            # a corrupt factor is far from orthogonal; 1e-4 tolerates even float32 storage
            dev = float(np.abs(B.T @ B - np.eye(p)).max())
            if dev > 1e-4:
                raise ValueError(f"{name} state array {key!r} is not orthogonal "
                                 f"(max |B^T B - I| = {dev:.3g})")
            mats[key] = B
        obj = cls.__new__(cls)
        obj.n = n
        obj._set(perms["perm_in"], mats["B1"], mats["B2"], perms["perm_out"])
        return obj


# ---------------------------------------------------------------------------------------
# Saving and loading.
# ---------------------------------------------------------------------------------------

_TRANSFORMS = {"RandomizedHadamard": RandomizedHadamard,
               "KroneckerOrthogonal": KroneckerOrthogonal}


def _transform_from_state(config, arrays, classes: dict) -> OrthogonalTransform:
    """Dispatch on ``config["type"]`` among ``classes`` (each package passes its own)."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (from state()), got {type(config).__name__}")
    name = config.get("type")
    if name not in classes:
        raise ValueError(f"unknown transform type {name!r} in saved state; known: {sorted(classes)}")
    return classes[name].from_state(config, arrays)


def transform_from_state(config: dict, arrays: dict) -> OrthogonalTransform:
    """Rebuild a transform saved with ``T.state()``, bit-exactly and without drawing
    random numbers (dispatch on ``config["type"]``).

    Parameters
    ----------
    config : dict
        JSON-able, with ``type``, ``version`` and ``n``.
    arrays : dict of str -> ndarray

    Returns
    -------
    OrthogonalTransform

    Raises
    ------
    ValueError
        Unknown type or version, or arrays of the wrong shape/content.
    """
    return _transform_from_state(config, arrays, _TRANSFORMS)


# ---------------------------------------------------------------------------------------
# Processing W and H.
# ---------------------------------------------------------------------------------------

class Processed(NamedTuple):
    """``(W, H)``: the incoherence-processed weights (m, n) and Hessian (n, n)."""

    W: np.ndarray
    H: np.ndarray


def _check_transform(T, size: int, name: str, what: str):
    if not isinstance(T, OrthogonalTransform):
        raise TypeError(f"{name} must be an OrthogonalTransform (e.g. RandomizedHadamard(size, seed)), "
                        f"got {type(T).__name__}")
    if T.n != size:
        raise ValueError(f"{name} acts on {T.n} entries but W has {size} {what}; "
                         f"build it with n = {size}")
    return T


def _sides(X, T_left, T_right):
    """``T_left X T_rightᵀ`` for X of shape (a, b), with the row-vector convention."""
    return T_left.forward(T_right.forward(X).T).T


def incoherence_process(W, H, T_out, T_in) -> Processed:
    r"""Conjugate W and H by the transforms: :math:`\tilde W = T_{out} W T_{in}^T`,
    :math:`\tilde H = T_{in} H T_{in}^T` ([QuIP#] Sec. 2.3, Alg. 3; [QuIP] Alg. 1).

    The proxy loss is preserved: rounding :math:`\tilde W` against :math:`\tilde H` and
    mapping back with :func:`incoherence_unprocess` gives the same loss against H.

    Parameters
    ----------
    W : ndarray of shape (m, n)
    H : ndarray of shape (n, n)
        Symmetric PSD.
    T_out : OrthogonalTransform with ``T_out.n == m``
    T_in : OrthogonalTransform with ``T_in.n == n``

    Returns
    -------
    Processed
        ``(W, H)`` = (:math:`\tilde W` (m, n), :math:`\tilde H` (n, n)); H̃ is
        symmetrised, :math:`(\tilde H + \tilde H^T)/2`, to remove round-off asymmetry.

    Raises
    ------
    TypeError
        If a transform is not an :class:`OrthogonalTransform`.
    ValueError
        Bad W or H, or a transform of the wrong size.
    """
    W = check_weight(W)
    m, n = W.shape
    H = check_hessian(H, n)
    _check_transform(T_out, m, "T_out", "rows (out_features)")
    _check_transform(T_in, n, "T_in", "columns (in_features)")
    xp = array_module(W, H)
    W_t = xp.ascontiguousarray(_sides(W, T_out, T_in))
    H_t = _sides(H, T_in, T_in)
    H_t = xp.ascontiguousarray((H_t + H_t.T) / 2)
    return Processed(W_t, H_t)


def incoherence_unprocess(W_t, T_out, T_in):
    r"""Undo :func:`incoherence_process` on weights: :math:`W = T_{out}^T \tilde W T_{in}`.

    Parameters
    ----------
    W_t : ndarray of shape (m, n)
        Processed (e.g. quantized) weights.
    T_out : OrthogonalTransform with ``T_out.n == m``
    T_in : OrthogonalTransform with ``T_in.n == n``

    Returns
    -------
    ndarray of shape (m, n)
    """
    W_t = check_weight(W_t, "W_t")
    m, n = W_t.shape
    _check_transform(T_out, m, "T_out", "rows (out_features)")
    _check_transform(T_in, n, "T_in", "columns (in_features)")
    W = T_out.inverse(T_in.inverse(W_t).T).T
    return array_module(W).ascontiguousarray(W)


class Rescaled(NamedTuple):
    """``(W, H, d)``: rescaled weights (m, n), rescaled Hessian (n, n), scales d (n,)."""

    W: np.ndarray
    H: np.ndarray
    d: np.ndarray


def rescale(W, H) -> Rescaled:
    r"""QuIP's diagonal rescaling of the input channels (its code; :ref:`papers-from-code`).

    With :math:`H_0 = H / \max_{ij}|H_{ij}|`,

    .. math::

        d_j = \Big(\frac{\max(H_{0,jj},\,10^{-8})}{\max(\|W_{:,j}\|^2,\,10^{-8})}\Big)^{1/4}
        \ (\text{then } d_j \ge 10^{-8}),\qquad
        W_s = W\,\mathrm{diag}(d),\quad H_s = \mathrm{diag}(d)^{-1} H_0\,\mathrm{diag}(d)^{-1}.

    Since :math:`W x = W_s (\mathrm{diag}(d)^{-1} x)`, the proxy is preserved up to the
    normalisation: for any :math:`\hat W_s`,
    :math:`\ell_{H_s}(\hat W_s; W_s) = \ell_H(\hat W_s\,\mathrm{diag}(d)^{-1}; W)/\max|H_{ij}|`.
    Undo with ``W = W_s / d``.

    Parameters
    ----------
    W : ndarray of shape (m, n)
    H : ndarray of shape (n, n)
        Symmetric PSD, not all zero.

    Returns
    -------
    Rescaled
        ``(W, H, d)``, float64.

    Raises
    ------
    ValueError
        Bad shapes, NaN/Inf, non-PSD H, or H = 0.

    Notes
    -----
    When no clamp is active, d minimises :math:`\mathrm{tr}(H_s)\,\|W_s\|_F^2 =
    (\sum_j H_{jj}/d_j^2)(\sum_j d_j^2 \|W_{:,j}\|^2)` over positive diagonals (by
    Cauchy–Schwarz the minimum is :math:`(\sum_j \sqrt{H_{jj}}\,\|W_{:,j}\|)^2`), the
    product that the error bounds scale with. QuIP#'s code has the same option
    (``--rescale_WH``, off by default).
    """
    W = check_weight(W)
    m, n = W.shape
    H = check_hessian(H, n)
    xp = array_module(W, H)
    W = W.astype(np.float64)
    H = H.astype(np.float64)
    scale = float(xp.abs(H).max())
    if scale == 0:
        raise ValueError("H is all zeros (no input ever activated); there is nothing to rescale against")
    H0 = H / scale
    col2 = xp.sum(W * W, axis=0)
    d = (xp.maximum(xp.diag(H0), 1e-8) / xp.maximum(col2, 1e-8)) ** 0.25
    d = xp.maximum(d, 1e-8)
    W_s = W * d[None, :]
    H_s = H0 / d[:, None] / d[None, :]
    return Rescaled(W_s, (H_s + H_s.T) / 2, d)
