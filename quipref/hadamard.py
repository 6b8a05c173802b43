"""Hadamard matrices and the orthonormal Hadamard transform for n = K * 2^k.

QuIP# makes weights and Hessians incoherent with the randomized Hadamard transform
(RHT). This module provides the deterministic part of it: Hadamard matrices of the
sizes that occur in real models and a fast transform along the last axis. The random
signs live in :mod:`quipref.incoherence`.

Every supported length n is written n = K * p with p = 2^k a power of two and K = 1
or a base size in :data:`BASE_SIZES`. The orthonormal Hadamard matrix is

    G_n = (H_K (x) H_p) / sqrt(n),        G_n G_n^T = I,

where H_p is the Sylvester matrix (H_1 = [1], H_2p = [[H_p, H_p], [H_p, -H_p]]), H_K is
the K x K matrix from :func:`base_matrix`, and the K-block is the major index: entry
i = a * p + b of a vector belongs to block a. Applying G_n to x costs
O(n log p + n K) instead of O(n^2): view x as a (K, p) matrix X, then

    G_n x = vec(H_K X H_p) / sqrt(n),

i.e. a fast Walsh-Hadamard transform (FWHT) of each row of X, then H_K times the
result, then one scaling by 1 / sqrt(n) [QuIPSharp]_ (Section 3, Appendix F.3).

Which K is used follows QuIP#'s rule (first K of 172, 156, 140, 124, 116, 108, 60, 52,
36, 28, 20, 12 that divides n, with n / K a power of two), but the matrices H_K are
built here from the classical constructions (see :mod:`quipref._hadamard_bases`), so
G_n is *a* valid orthonormal Hadamard matrix but not entry-for-entry QuIP#'s.

References
----------
.. [QuIPSharp] A. Tseng, J. Chee, Q. Sun, V. Kuleshov, C. De Sa, "QuIP#: Even better
   LLM quantization with Hadamard incoherence and lattice codebooks", ICML 2024,
   arXiv:2402.04396.
"""
from __future__ import annotations

import functools

import numpy as np

from quipref import _hadamard_bases
from quipref._checks import check_array, check_int, is_cupy_array, prime_factors, to_numpy

__all__ = [
    "BASE_SIZES",
    "sylvester",
    "base_matrix",
    "factor_dimension",
    "hadamard_matrix",
    "fwht",
    "hadamard_transform",
]

#: Base sizes K (besides K = 1) for which a Hadamard matrix H_K is built in.
BASE_SIZES = (12, 20, 28, 36, 52, 60, 108, 116, 124, 140, 156, 172)

# The order in which factor_dimension tries the base sizes (QuIP#'s order, largest first).
_SEARCH_ORDER = (172, 156, 140, 124, 116, 108, 60, 52, 36, 28, 20, 12)


# ---------------------------------------------------------------------------------------
# Small helpers (also used by fast.hadamard, so both packages fail the same way).
# ---------------------------------------------------------------------------------------

def _is_power_of_two(m: int) -> bool:
    return m >= 1 and (m & (m - 1)) == 0


def _format_factors(n: int) -> str:
    """'2^3 * 3 * 5 * 7 * 13' for n = 10920 (for error messages; n is a layer width)."""
    primes = prime_factors(n)
    parts = [f"{p}^{primes.count(p)}" if primes.count(p) > 1 else f"{p}" for p in sorted(set(primes))]
    return " * ".join(parts) if parts else "1"


def _next_supported(n: int) -> tuple[int, int, int]:
    """Smallest supported size >= n, as (size, K, p)."""
    best = None
    for K in (1,) + BASE_SIZES:
        p = 1
        while K * p < n:
            p *= 2
        if best is None or K * p < best[0]:
            best = (K * p, K, p)
    return best


def _factor(n: int, name: str) -> tuple[int, int]:
    """factor_dimension with the argument's name in the error message."""
    for K in _SEARCH_ORDER:
        if n % K == 0 and _is_power_of_two(n // K):
            return K, n // K
    if _is_power_of_two(n):
        return 1, n
    size, K, p = _next_supported(n)
    form = f"2^{p.bit_length() - 1}" if K == 1 else f"{K}*2^{p.bit_length() - 1}"
    sizes = ", ".join(str(k) for k in (1,) + BASE_SIZES)
    raise ValueError(
        f"{name}={n} = {_format_factors(n)} is not a supported Hadamard size: supported "
        f"sizes are K*2^k with K in {{{sizes}}} and k >= 0. Pad the dimension to a "
        f"supported size, e.g. the next one, {size} = {form}"
    )


def _prepare(x, name: str = "x"):
    """Validate the input of a transform along the last axis.

    Returns ``(x, out_dtype, K, p)``: ``x`` as returned by
    :func:`quipref._checks.check_array` (float32 or float64), the dtype of the result
    (the input dtype for float16/32/64, float64 for integers) and n = K * p.
    """
    x_in = x
    x = check_array(x, name, ndim=None)
    if x.ndim == 0:
        raise ValueError(
            f"{name} must have at least 1 dimension (the transform runs along the last "
            f"axis), got a 0-d array; pass {name}.reshape(1) for a single number"
        )
    in_dtype = getattr(x_in, "dtype", None)
    if in_dtype is None:
        in_dtype = np.asarray(x_in).dtype
    out_dtype = np.dtype(in_dtype) if np.dtype(in_dtype).kind == "f" else np.dtype(np.float64)
    n = x.shape[-1]
    if n < 1:
        raise ValueError(f"{name} must have a last axis of length >= 1, got shape {x.shape}")
    K, p = _factor(n, f"{name}.shape[-1]")
    return x, out_dtype, K, p


# ---------------------------------------------------------------------------------------
# Matrices.
# ---------------------------------------------------------------------------------------

def sylvester(p) -> np.ndarray:
    """Sylvester Hadamard matrix of order p (a power of two), natural order.

    H_1 = [1] and H_2p = [[H_p, H_p], [H_p, -H_p]]; equivalently
    H_p[i, j] = (-1)^popcount(i & j). H_p is symmetric and H_p H_p = p I.

    Parameters
    ----------
    p : int
        Order, a power of two (1, 2, 4, ...).

    Returns
    -------
    H : ndarray of int8, shape (p, p)
        Entries +1 and -1.

    Raises
    ------
    TypeError
        If ``p`` is not an integer.
    ValueError
        If ``p`` is not a positive power of two.

    Notes
    -----
    Equal to ``scipy.linalg.hadamard(p)``. Memory is p^2 bytes.
    """
    p = check_int(p, "p")
    if not _is_power_of_two(p):
        raise ValueError(
            f"p must be a power of two, got p={p}; for other sizes use "
            f"hadamard_matrix(n) with n = K*2^k"
        )
    H = np.ones((1, 1), dtype=np.int8)
    while H.shape[0] < p:
        H = np.block([[H, H], [H, -H]])
    return H


@functools.lru_cache(maxsize=None)
def _base_matrix_cached(K: int) -> np.ndarray:
    if K == 1:
        H = np.ones((1, 1), dtype=np.int8)
    else:
        _, construct, parameter = _hadamard_bases.CONSTRUCTIONS[K]
        H = construct(parameter)
    H.flags.writeable = False  # shared by every caller through the cache
    return H


def base_matrix(K) -> np.ndarray:
    """Hadamard matrix H_K of a base size: H_K H_K^T = K I, entries +-1.

    ==========================  ==============================================
    K                           construction
    ==========================  ==============================================
    1                           [1]
    12, 20, 28, 60, 108, 140    Paley I from GF(q), q = K - 1 = 3 (mod 4)
                                (q = 27 = 3^3 uses GF(27) arithmetic)
    36, 52, 124                 Paley II from GF(q), q = K/2 - 1 = 1 (mod 4)
                                (q = 25 = 5^2 uses GF(25) arithmetic)
    116, 156, 172               Williamson array of four symmetric circulant
                                matrices of order K/4 = 29, 39, 43 [2]_
    ==========================  ==============================================

    Paley I gives H = [[1, 1^T], [-1, Q + I]] with Q[a, b] = chi(a - b) the
    Jacobsthal matrix of the quadratic character chi of GF(q); Paley II gives
    H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]] with the conference matrix
    C = [[0, 1^T], [1, Q]] [1]_. The Williamson matrices are not searched for:
    their first rows are a table of published solutions (n = 29: Baumert 1966;
    n = 43: Williamson 1944 / Hall's tables; n = 39: London 2013; see
    :mod:`quipref._hadamard_bases` for the references), checked by the tests.

    Only K = 1, 36, 52 and 124 give symmetric matrices here, so in general
    H_K^T != H_K and the inverse transform needs the transpose.

    Parameters
    ----------
    K : int
        1 or one of :data:`BASE_SIZES`.

    Returns
    -------
    H : ndarray of int8, shape (K, K)
        Read-only (it is cached); copy it before modifying.

    Raises
    ------
    TypeError
        If ``K`` is not an integer.
    ValueError
        If ``K`` is not 1 or a base size.

    References
    ----------
    .. [1] R. E. A. C. Paley, "On orthogonal matrices", J. Math. Phys. 12 (1933),
       311-320.
    .. [2] J. Williamson, "Hadamard's determinant theorem and the sum of four
       squares", Duke Math. J. 11 (1944), 65-81.
    """
    K = check_int(K, "K")
    if K != 1 and K not in BASE_SIZES:
        raise ValueError(
            f"K must be 1 or one of the base sizes {BASE_SIZES}, got K={K}; for "
            f"n = K*2^k use hadamard_matrix(n), which factors n for you"
        )
    return _base_matrix_cached(K)


def factor_dimension(n) -> tuple[int, int]:
    """Write n = K * p with p a power of two and K = 1 or a base size.

    The base sizes are tried in the order 172, 156, 140, 124, 116, 108, 60, 52, 36, 28,
    20, 12 (QuIP#'s order); the first K that divides n with n / K a power of two is
    taken, else K = 1 when n itself is a power of two.

    Parameters
    ----------
    n : int
        A dimension (n >= 1).

    Returns
    -------
    K : int
        1 or an element of :data:`BASE_SIZES`.
    p : int
        A power of two, p = n / K.

    Raises
    ------
    TypeError
        If ``n`` is not an integer.
    ValueError
        If n < 1, or if n has no such factorisation; the message gives the prime
        factorisation of n, the supported forms and the next supported size to pad to.

    Examples
    --------
    >>> factor_dimension(11008)     # Llama-2-7B MLP width
    (172, 64)
    >>> factor_dimension(28672)     # Llama-2-70B MLP width
    (28, 1024)
    >>> factor_dimension(4096)
    (1, 4096)
    """
    return _factor(check_int(n, "n"), "n")


def hadamard_matrix(n) -> np.ndarray:
    """Dense orthonormal Hadamard matrix G_n = (H_K (x) H_p) / sqrt(n).

    (K, p) = :func:`factor_dimension` (n); the K-block is the major index. G_n is
    orthogonal (G_n G_n^T = I) and :func:`hadamard_transform` (x) equals G_n @ x
    along the last axis. Meant for tests and teaching: it takes 8 n^2 bytes.

    Parameters
    ----------
    n : int
        A supported size (see :func:`factor_dimension`).

    Returns
    -------
    G : ndarray of float64, shape (n, n)

    Raises
    ------
    TypeError, ValueError
        As :func:`factor_dimension`.
    """
    K, p = factor_dimension(n)
    H = np.kron(base_matrix(K).astype(np.float64), sylvester(p).astype(np.float64))
    return H / np.sqrt(K * p)


# ---------------------------------------------------------------------------------------
# Transforms.
# ---------------------------------------------------------------------------------------

def _fwht_float64(y: np.ndarray) -> np.ndarray:
    """Unnormalised Sylvester FWHT along the last axis of a float64 array (a copy).

    Stage with half-width h: in every block of 2h consecutive entries, the pair
    (u, v) = (first half, second half) becomes (u + v, u - v). After the stages
    h = 1, 2, 4, ..., p/2 the result is H_p y (natural order): the last stage applies
    [[I, I], [I, -I]] to the two halves, each of which already holds H_{p/2} of its half.
    """
    p = y.shape[-1]
    lead = y.shape[:-1]
    h = 1
    while h < p:
        blocks = y.reshape(*lead, p // (2 * h), 2, h)
        u, v = blocks[..., 0, :], blocks[..., 1, :]
        y = np.stack([u + v, u - v], axis=-2).reshape(*lead, p)
        h *= 2
    return y


def fwht(x):
    """Unnormalised fast Walsh-Hadamard transform along the last axis.

    y = H_p x for every vector x along the last axis, with H_p the Sylvester matrix
    (:func:`sylvester`), in O(p log p) additions. Since H_p H_p = p I, the inverse is
    fwht(y) / p.

    Parameters
    ----------
    x : array_like, shape (..., p)
        Real numbers; p a power of two. Any number of leading (batch) axes.

    Returns
    -------
    y : ndarray, shape (..., p)
        Computed in float64; returned in the input dtype when it is float16/32/64,
        float64 for integer input.

    Raises
    ------
    TypeError
        If ``x`` is not real numeric (complex, bool, object).
    ValueError
        If ``x`` is 0-d, contains NaN/Inf, or p is not a power of two.
    """
    if is_cupy_array(x):
        import cupy

        return cupy.asarray(fwht(to_numpy(x)))
    x, out_dtype, K, p = _prepare(x)
    if K != 1:
        raise ValueError(
            f"fwht needs a power-of-two length along the last axis, got "
            f"x.shape[-1]={x.shape[-1]} = {K}*{p}; use hadamard_transform for K*2^k sizes"
        )
    y = _fwht_float64(x.astype(np.float64))
    return y.astype(out_dtype, copy=False)


def hadamard_transform(x, *, inverse=False):
    """Orthonormal Hadamard transform along the last axis, for every n = K * 2^k.

    y = G_n x (``inverse=False``) or y = G_n^T x (``inverse=True``) for every vector x
    along the last axis, with G_n = (H_K (x) H_p) / sqrt(n) (see
    :func:`hadamard_matrix`). G_n is orthogonal, so the two are inverse to each other
    and both preserve Euclidean norms. H_K is not symmetric for most K, so the two
    directions differ.

    Computation: view x as (..., K, p); FWHT along the p axis; multiply by H_K (or
    H_K^T) along the K axis; scale once by 1/sqrt(n). Cost O(n (log p + K)) per vector.

    Parameters
    ----------
    x : array_like, shape (..., n)
        Real numbers, any number of leading (batch) axes; n must be supported
        (:func:`factor_dimension`). A CuPy array is copied to the host and back.
    inverse : bool, default False
        Apply G_n^T instead of G_n.

    Returns
    -------
    y : ndarray, shape (..., n)
        Computed in float64; returned in the input dtype when it is float16/32/64,
        float64 for integer input.

    Raises
    ------
    TypeError
        If ``x`` is not real numeric (complex, bool, object).
    ValueError
        If ``x`` is 0-d, contains NaN/Inf, or n = x.shape[-1] is not a supported size
        (the message gives the next supported size to pad to).

    References
    ----------
    .. [1] A. Tseng, J. Chee, Q. Sun, V. Kuleshov, C. De Sa, "QuIP#: Even better LLM
       quantization with Hadamard incoherence and lattice codebooks", ICML 2024,
       arXiv:2402.04396, Section 3 and Appendix F.3.

    Examples
    --------
    >>> x = np.arange(12.0)
    >>> y = hadamard_transform(x)
    >>> bool(np.allclose(hadamard_transform(y, inverse=True), x))
    True
    >>> bool(np.isclose(np.linalg.norm(y), np.linalg.norm(x)))
    True
    """
    if is_cupy_array(x):
        import cupy

        return cupy.asarray(hadamard_transform(to_numpy(x), inverse=inverse))
    x, out_dtype, K, p = _prepare(x)
    lead = x.shape[:-1]
    z = _fwht_float64(x.astype(np.float64).reshape(*lead, K, p))  # H_p on each block
    H = base_matrix(K).astype(np.float64)
    if inverse:
        H = H.T
    y = (H @ z).reshape(*lead, K * p)  # H_K along the K axis (broadcasts over lead)
    y *= 1.0 / np.sqrt(K * p)
    return y.astype(out_dtype, copy=False)
