r"""Fast E8P: the same quantizer as :class:`quipref.quantizers.E8P` (same codes, same
constructor and methods), with an exact nearest-codeword search in Numba.

The search (exact, re-derived)
------------------------------
Every codeword is ``v + t`` with ``t = ±¼`` and ``v`` a point of :math:`\hat D_8` whose
absolute vector lies in the source set S (256 vectors). So the nearest codeword is the
better of two searches, one per shift, each for the nearest point to ``y = x / scale - t``
among the :math:`\hat D_8` points with absolute vector in S. Each search takes one of two
exact routes:

1. **Lattice decoder.** The nearest point of the whole coset :math:`\hat D_8` is
   ``½ + (nearest point of D8 to y - ½)``, and the nearest point of
   :math:`D_8 = \{w \in \mathbb{Z}^8 : \mathbf 1^T w \text{ even}\}` is found in O(8)
   (Conway & Sloane): round every coordinate; if the sum is odd, round the coordinate
   with the largest rounding error the other way. If that point's absolute vector is in
   S (a lookup table over :math:`\{½, 3/2, 5/2\}^8`), it is also the nearest point of the
   subset, and we are done. This happens for about two thirds of Gaussian inputs at the
   default scale.
2. **Scan of the 256 absolute vectors** otherwise. For a fixed absolute vector ``a`` only
   the signs are free, with the constraint that the number of minus signs has the parity
   of ``sum(a)``. Since :math:`\|y - v\|^2 = \|y\|^2 - 2 y^T v + \|a\|^2`: without the
   constraint the best signs are ``sign(y)``, giving :math:`y^T v = \sum_i |y_i| a_i`; with
   the wrong parity an odd number of signs must go against ``sign(y)``, flipping
   coordinate ``j`` costs :math:`2|y_j| a_j` and costs add, so the best is one flip of
   :math:`\arg\min_j |y_j| a_j`. That is 8 multiply-adds and a running minimum per
   absolute vector (vectorised across the 256 of them), 2,048 per shift instead of
   65,536 × 8 for the brute force.

(The repository's own exact search uses the same sign symmetry differently: it reflects
``x`` to the positive orthant and scans 1,366 candidate points per shift.) The winning
``(a, signs, shift)`` becomes the repository-layout code: the effective sign bits are the
minus signs of ``v`` relative to the base vector (``S[a]`` with coordinate 7 negated when
``sum(S[a])`` is odd), and bit 0 is toggled for the ``-¼`` shift so that the sign byte's
parity encodes the shift.

It agrees with the brute force **in distance** on every input, and in the code wherever
the codebook's symmetries make exact ties (a zero entry or two entries of equal magnitude
in a group of 8, e.g. ``x = 0``): those groups are re-encoded by the reference brute
force, which takes the lowest code (:func:`_resolve_ties`). Other exact ties need an
input on a bisector hyperplane of two codewords (probability 0 on continuous data). Scores are float64 whatever the
input dtype (as in the reference); entries of ``x / scale`` beyond about 1e150 overflow
the squared norms (the reference's brute force overflows near 1e307).

Parallel over vectors (``prange`` over chunks of 256 vectors, each with its own
scratch); compiled once and cached on disk. Decode is a parallel table gather,
bit-identical to the reference (``scale * table[code]``). About 1.3 µs per vector on one
core at the Gaussian-optimal scale (0.7 µs at rho = 0.9), against about 600 µs for the
reference brute force.

CuPy input runs on the GPU (:mod:`fast.cuda.e8p`): the same float64 scan over the 2 x 256
(shift, absolute vector) candidates in a CUDA kernel, one thread per 8-vector, and decode
as a gather from the unit codebook kept on the device (bit-identical).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from quipref._checks import array_module, is_cupy_array
from quipref.quantizers import e8p as _ref
from quipref._contract import check_codes, check_vectors, e8p_search_tables, nearest_brute_force  # noqa: F401
from quipref._contract import e8p_unit_codebook as _unit_codebook
from quipref.quantizers.e8p import e8p_source_set  # noqa: F401  (re-exported)

__all__ = ["E8P", "e8p_source_set"]


_CHUNK = 256


@njit(cache=True)
def _scan(ay, ysq, negpar, ST, sq_norms, odd_sum, dot, mn):
    """Route 2: best (distance, abs index) over the 256 absolute vectors for one shift.

    ``ay = |y|``, ``ysq = ||y||^2``, ``negpar`` = parity of the minus signs of y.
    ``ST`` is S transposed (8, 256) so the inner loops run over contiguous a.
    """
    for a in range(256):
        v = ay[0] * ST[0, a]
        dot[a] = v
        mn[a] = v
    for i in range(1, 8):
        yi = ay[i]
        for a in range(256):
            v = yi * ST[i, a]
            dot[a] += v
            mn[a] = min(mn[a], v)
    best_d = np.inf
    best_a = 0
    for a in range(256):
        dd = dot[a]
        if negpar != odd_sum[a]:  # wrong parity: flip the cheapest sign
            dd -= 2.0 * mn[a]
        d = ysq - 2.0 * dd + sq_norms[a]
        if d < best_d:
            best_d = d
            best_a = a
    return best_d, best_a


@njit(parallel=True, cache=True)
def _e8p_nearest(u, ST, sq_norms, odd_sum, lut, out):
    """Repository-layout E8P code of the nearest codeword for every row of ``u`` (N, 8)."""
    n = u.shape[0]
    nchunk = (n + _CHUNK - 1) // _CHUNK
    for ch in prange(nchunk):
        dot = np.empty(256)
        mn = np.empty(256)
        y = np.empty(8)
        w = np.empty(8)
        e = np.empty(8)
        for t in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            best_d = np.inf
            best_a = 0
            best_p = 0
            best_neg = 0
            for p in range(2):  # p = 0: shift +1/4, p = 1: shift -1/4
                shift = 0.25 if p == 0 else -0.25
                ysq = 0.0
                neg = 0  # bit i: y_i < 0
                negpar = 0
                big = False
                for i in range(8):
                    y[i] = u[t, i] - shift
                    ysq += y[i] * y[i]
                    if y[i] < 0.0:
                        neg |= 1 << i
                        negpar ^= 1
                    if abs(y[i]) > 4.0:  # the nearest D8-hat point is outside S
                        big = True
                # route 1: nearest point of D8-hat = 1/2 + nearest point of D8 to y - 1/2
                a = -1
                if not big:
                    wsum = 0
                    jmax = 0
                    emax = -1.0
                    for i in range(8):
                        z = y[i] - 0.5
                        w[i] = np.floor(z + 0.5)
                        e[i] = z - w[i]
                        wsum += int(w[i])
                        if abs(e[i]) > emax:
                            emax = abs(e[i])
                            jmax = i
                    if wsum % 2 != 0:  # odd sum: round the worst coordinate the other way
                        w[jmax] += 1.0 if e[jmax] > 0.0 else -1.0
                    key = 0
                    pw = 1
                    d = 0.0
                    vneg = 0
                    inside = True
                    for i in range(8):
                        v = w[i] + 0.5
                        k = int(abs(v))  # |v| = k + 1/2
                        if k > 2:
                            inside = False
                            k = 0
                        key += k * pw
                        pw *= 3
                        d += (y[i] - v) * (y[i] - v)
                        if v < 0.0:
                            vneg |= 1 << i
                    if inside:
                        a = lut[key]
                    if a >= 0:
                        if d < best_d:
                            best_d = d
                            best_a = a
                            best_p = p
                            best_neg = vneg
                        continue
                # route 2: scan the 256 absolute vectors
                for i in range(8):
                    w[i] = abs(y[i])
                d, a = _scan(w, ysq, negpar, ST, sq_norms, odd_sum, dot, mn)
                if d < best_d:
                    mask = neg
                    if negpar != odd_sum[a]:
                        mnv = np.inf
                        arg = 0
                        for i in range(8):
                            vv = w[i] * ST[i, a]
                            if vv < mnv:
                                mnv = vv
                                arg = i
                        mask ^= 1 << arg
                    best_d = d
                    best_a = a
                    best_p = p
                    best_neg = mask
            # minus signs relative to the base vector (coordinate 7 pre-negated for odd sums)
            sigma_eff = best_neg ^ (odd_sum[best_a] << 7)
            out[t] = (best_a << 8) | (sigma_eff ^ best_p)


@njit(parallel=True, cache=True)
def _gather_scaled(table, codes, scale, out):
    """out[t, :] = scale * table[codes[t], :]."""
    d = table.shape[1]
    for t in prange(codes.shape[0]):
        c = codes[t]
        for i in range(d):
            out[t, i] = scale * table[c, i]


def _tables():
    """(S^T (8, 256), ||S_a||^2, sum(S_a) mod 2, base-3 lookup {1/2,3/2,5/2}^8 -> a or -1)."""
    S = e8p_source_set()
    odd = (S.sum(axis=1) % 2).astype(np.int64)
    lut = np.full(3**8, -1, dtype=np.int64)
    digits = (S - 0.5).astype(np.int64)  # entries 0, 1, 2
    lut[digits @ (3 ** np.arange(8))] = np.arange(256)
    return np.ascontiguousarray(S.T), (S**2).sum(axis=1), odd, lut


_TABLES = None


def gather_decode(codes, table, scale, dim):
    """Decode validated int64 NumPy codes (..., k) with a (K, dim) table: (..., dim k)."""
    flat = np.ascontiguousarray(codes.reshape(-1))
    out = np.empty((flat.shape[0], dim), dtype=np.float64)
    _gather_scaled(table, flat, float(scale), out)
    return out.reshape(codes.shape[:-1] + (codes.shape[-1] * dim,))


def _resolve_ties(u, scale, out):
    """Re-encode with the reference brute force (ties: the lowest code) every 8-vector
    where the codebook's symmetries make exact ties: a zero entry, or two entries of
    equal magnitude (the codebook is closed under coordinate permutations and, across
    the two shifts, under negation, so such inputs have several nearest codewords; e.g.
    ``x = 0``). Elsewhere a tie needs ``x`` on a bisector hyperplane of two codewords
    (probability 0 for continuous data) and only the distance is guaranteed to match.
    NumPy or CuPy (``u`` decides)."""
    xp = array_module(u)
    a = xp.sort(xp.abs(u), axis=1)
    tie = (a[:, 0] == 0) | xp.any(a[:, 1:] == a[:, :-1], axis=1)
    if bool(tie.any()):
        idx = xp.nonzero(tie)[0]
        out = out.copy()
        out[idx] = nearest_brute_force(u[idx] / scale, *e8p_search_tables()).astype(out.dtype)
    return out


class E8P(_ref.E8P):
    __doc__ = _ref.E8P.__doc__ + """
    Fast version: ``encode`` is the exact search of :mod:`fast.quantizers.e8p` (Numba on
    NumPy input, CUDA on CuPy input; agrees with the brute force in distance, and in the
    code on the symmetric ties such as ``x = 0``) and ``decode`` a gather (bit-identical).
    """

    def encode(self, x, rng=None):
        global _TABLES
        u, code_shape = check_vectors(x, self.dim, "E8P")
        if is_cupy_array(u):
            from ..cuda.e8p import encode as _encode_cuda

            out = _encode_cuda(u, self.scale)
        else:
            if _TABLES is None:
                _TABLES = _tables()
            out = np.empty(u.shape[0], dtype=np.int64)
            _e8p_nearest(np.ascontiguousarray(u / self.scale), *_TABLES, out)
        out = _resolve_ties(u, self.scale, out)
        return out.astype(np.uint16).reshape(code_shape)

    def decode(self, codes):
        c = check_codes(codes, self.n_codes, "E8P")
        if is_cupy_array(c):
            from ..cuda.e8p import decode_table

            out = self.scale * decode_table(c.device.id, "e8p")[c.reshape(-1)]
            return out.reshape(c.shape[:-1] + (c.shape[-1] * self.dim,))
        return gather_decode(c, _unit_codebook(), self.scale, self.dim)
