"""Fast Hadamard transforms: Numba for NumPy inputs, CUDA (CuPy) for CuPy inputs.

Same public names and signatures as :mod:`quipref.hadamard`; the matrices
(:func:`sylvester`, :func:`base_matrix`, :func:`hadamard_matrix`) and
:func:`factor_dimension` are the reference ones, re-exported unchanged. Only the two
transforms are reimplemented:

* :func:`fwht` and :func:`hadamard_transform` on NumPy arrays run one Numba kernel,
  parallel over rows (``prange``): each row of length n = K * p is transformed in
  place by log2(p) butterfly stages per length-p block, then the K x K stage
  out[k] = sum_i H_K[k, i] * block[i] (contiguous length-p vector updates, so they
  vectorise), then one scaling by 1/sqrt(n).
* On CuPy arrays :func:`hadamard_transform` calls
  ``fast.cuda.hadamard.hadamard_transform`` (a raw CUDA kernel); :func:`fwht` falls
  back to the reference on the host.

Precision
---------
float64 input is computed in float64. float32 input is computed in float32 (it stays
float32 end to end: half the memory traffic and twice the SIMD width of float64), and
float16 input is computed in float32 and rounded to float16 at the end. Integer input
is computed in float64 (like the reference).

Error of the float32 path, per row, with u = 2^-24 and y = G_n x (so ||y|| = ||x||):
each butterfly stage is sqrt(2) times an orthogonal map, so a rounding of relative
size u in stage s, carried through the remaining stages, adds at most u ||x|| (after
the final 1/sqrt(n)) and the log2(p) stages add log2(p) u ||x||. The K x K stage
sums K terms +-z_i per output by recursive summation, |error| <= gamma_{K-1} sum |z_i|
with gamma_m = m u / (1 - m u), which in 2-norm gives at most (K-1) sqrt(K) u ||x||
(worst case, signs conspiring; typically ~sqrt(K) u ||x||). The scale factor
1/sqrt(n) is itself rounded to the compute dtype (u) and the product is rounded (u).
So, to first order in u,

    ||y_fast - G_n x||_2 <= (log2(p) + (K - 1) sqrt(K) + 2) * u * ||x||_2,

e.g. <= 1.3e-4 ||x|| for K = 172 in the worst case (~3e-7 ||x|| observed for Gaussian
x); for K = 1 it is (log2(n) + 2) u, i.e. ~log2(n) * 2^-24. The same bound with
u = 2^-53 holds for the float64 path and for the reference.
``tests/parity/test_hadamard_parity.py`` checks exactly this bound.

Compilation
-----------
One kernel, compiled lazily once per dtype (float32, float64) and cached on disk
(``cache=True``); inputs are always made C-contiguous 2-D (rows, n) first, so no other
specialisations are created. A single vector (rows = 1) runs on one thread.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from quipref._checks import is_cupy_array
from quipref.hadamard import (  # noqa: F401  (re-exported)
    BASE_SIZES,
    base_matrix,
    factor_dimension,
    hadamard_matrix,
    sylvester,
)
from quipref import hadamard as _reference
from quipref._contract import prepare_transform_input as _prepare

__all__ = list(_reference.__all__)


@njit(cache=True)
def _fwht_block(v, start, p):
    """In-place unnormalised Sylvester FWHT of v[start:start + p] (p a power of two)."""
    h = 1
    while h < p:
        for i in range(start, start + p, 2 * h):
            for j in range(i, i + h):
                a = v[j]
                b = v[j + h]
                v[j] = a + b
                v[j + h] = a - b
        h *= 2


@njit(parallel=True, cache=True)
def _transform_rows(work, H, scale):
    """Apply (H (x) H_p) * scale to every row of ``work`` (rows, K*p), C-contiguous.

    ``work`` is overwritten (it holds the FWHT of each block afterwards). For K = 1
    the result is ``work`` itself; otherwise a new array. ``H`` (K, K) and ``scale``
    have the dtype of ``work``; scale = 1 skips the scaling pass.
    """
    rows, n = work.shape
    K = H.shape[0]
    p = n // K
    if K == 1:
        for r in prange(rows):
            v = work[r]
            _fwht_block(v, 0, p)
            if scale != 1:
                for j in range(n):
                    v[j] *= scale
        return work
    out = np.empty_like(work)
    for r in prange(rows):
        v = work[r]
        o = out[r]
        for i in range(K):
            _fwht_block(v, i * p, p)
        for k in range(K):
            ok = k * p
            s = H[k, 0]
            for j in range(p):
                o[ok + j] = s * v[j]
            for i in range(1, K):
                s = H[k, i]
                vi = i * p
                for j in range(p):
                    o[ok + j] += s * v[vi + j]
            if scale != 1:
                for j in range(p):
                    o[ok + j] *= scale
    return out


def _run(x, out_dtype, K, p, H, scale):
    """Rows view, compute dtype, kernel call, original shape and dtype."""
    compute = np.float64 if out_dtype == np.float64 else np.float32
    shape = x.shape
    # one private, C-contiguous copy in the compute dtype; the kernel overwrites it
    work = np.array(x.reshape(-1, K * p), dtype=compute, order="C", copy=True)
    y = _transform_rows(work, np.ascontiguousarray(H, dtype=compute), compute(scale))
    return y.reshape(shape).astype(out_dtype, copy=False)


def fwht(x):
    """Unnormalised fast Walsh-Hadamard transform along the last axis (Numba).

    Same contract as :func:`quipref.hadamard.fwht`: y = H_p x along the last axis,
    p a power of two, any leading axes. Precision: float64 in float64; float32 and
    float16 in float32 (per row ||y - H_p x|| <= log2(p) 2^-24 ||H_p x||, as in the
    module docstring, with no scaling step); integers in float64. CuPy input goes
    to the reference (host round trip).

    Parameters
    ----------
    x : array_like, shape (..., p)

    Returns
    -------
    y : ndarray, shape (..., p), input float dtype (float64 for integer input).

    Raises
    ------
    TypeError
        If ``x`` is not real numeric.
    ValueError
        If ``x`` is 0-d, contains NaN/Inf, or p is not a power of two.
    """
    if is_cupy_array(x):
        return _reference.fwht(x)
    x, out_dtype, K, p = _prepare(x)
    if K != 1:
        # the reference raises the error (one message for both packages)
        return _reference.fwht(x)
    return _run(x, out_dtype, 1, p, np.ones((1, 1)), 1.0)


def hadamard_transform(x, *, inverse=False):
    """Orthonormal Hadamard transform along the last axis, n = K * 2^k (Numba / CUDA).

    Same contract as :func:`quipref.hadamard.hadamard_transform`:
    y = G_n x, or G_n^T x with ``inverse=True``, G_n = (H_K (x) H_p) / sqrt(n).
    Precision: float64 in float64; float32 and float16 in float32, with per-row error
    ||y - G_n x|| <= (log2(p) + (K-1) sqrt(K) + 2) 2^-24 ||x|| (module docstring);
    integers in float64.

    Parameters
    ----------
    x : array_like or cupy.ndarray, shape (..., n)
        CuPy arrays are transformed on the GPU by ``fast.cuda.hadamard``.
    inverse : bool, default False

    Returns
    -------
    y : ndarray, shape (..., n), input float dtype (float64 for integer input);
        a CuPy array for CuPy input.

    Raises
    ------
    TypeError
        If ``x`` is not real numeric.
    ValueError
        If ``x`` is 0-d, contains NaN/Inf, or n is not a supported size.
    """
    if is_cupy_array(x):
        from fast.cuda.hadamard import hadamard_transform as _cuda

        return _cuda(x, inverse=inverse)
    x, out_dtype, K, p = _prepare(x)
    H = base_matrix(K)
    if inverse:
        H = H.T
    return _run(x, out_dtype, K, p, H, 1.0 / np.sqrt(K * p))
