r"""QTIP's trellis quantizer, fast: the same API as :mod:`quipref.quantizers.trellis`.

Read the reference module first: it defines the trellis, Alg. 4, the packing and the
tile layout. This module keeps its public names, signatures, validation (the same
private helpers) and results, and replaces the inner loops with Numba:

* **Viterbi** (:func:`bitshift_viterbi`, :func:`tail_biting_viterbi`,
  :meth:`Trellis.encode`): one sequence per ``prange`` iteration (sequences are
  independent), both passes of Alg. 4 inside it. Per step the ``E = 2^{kV}``-way minimum
  runs as ``E - 1`` passes over the ``G = 2^{L-kV}`` groups (contiguous loads,
  compare-and-select: SIMD), then the ``2^L`` squared distances are added to the group
  minima. The arithmetic is the reference's, in float64 and in the same order
  (``d = sum_j (C[s, j] - y_j)^2`` in component order, then ``d + best[g]``; ties to the
  smallest ``e`` and the smallest final state), so the states are identical to the
  reference's, not only their cost.
* **Packing / unpacking / decode**: bit loops per sequence, parallel over sequences;
  decode reads each state from its own ``L``-bit window (random access) and looks up
  the value table.

CuPy input to the encode side (:func:`bitshift_viterbi`, :func:`tail_biting_viterbi`,
:meth:`Trellis.encode`, :meth:`Trellis.encode_sequences`) runs the CUDA Viterbi of
:mod:`fast.cuda.viterbi` (``fast/kernels/viterbi.cu``: float32 dynamic program, both
passes of Alg. 4 in one launch, codes computed in-kernel for 1MAD/3INST/HYB, packing on
the device) and returns CuPy. Its walks are optimal for float32 costs: their cost equals
the reference's to float32 accuracy, and near-ties may select another walk (compare
costs, not paths). Parameters the kernel does not cover (L > 16, V > 2, kV > 8) fall
back to copying to the host and running the Numba path, as do the other CuPy inputs
(packing, unpacking, decoding); the result is returned as CuPy.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from quipref._checks import check_int, is_cupy_array
from quipref.quantizers import trellis as _ref
from quipref._checks import TRELLIS_MAX_L as _MAX_L
from quipref._checks import TRELLIS_MAX_V as _MAX_V
from quipref._checks import check_trellis_overlap as _check_overlap
from quipref._checks import check_trellis_sequences as _check_sequences
from quipref._checks import check_trellis_states as _check_states
from quipref._checks import check_trellis_step as _check_step
from quipref._checks import check_trellis_table as _check_table
from quipref._checks import check_trellis_tail_length as _check_tail_length  # noqa: F401
from quipref._checks import check_trellis_words as _check_words
from quipref._checks import trellis_stream_bits as _stream_bits
from quipref.quantizers.trellis import (CODES, ViterbiResult, code_1mad, code_3inst,  # noqa: F401
                                        code_hyb, code_table, gaussian_lut, hyb_lut)


def _result(states, cost, single):
    return ViterbiResult(states[0], cost[0]) if single else ViterbiResult(states, cost)

__all__ = list(_ref.__all__)

_INF = np.inf


# ---------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _viterbi_one(Y, tab, Kp, Vp, start_top, end_low, states, back, cost, best):
    """Viterbi for one sequence Y (S, V) against tab (V, N); writes ``states`` (S,).

    ``Kp`` and ``Vp`` are tuples of length ``kV`` and ``V``: their lengths are
    compile-time constants, so Numba compiles one specialisation per (kV, V) with the
    inner loops over ``E = 2^{kV}`` and ``V`` unrolled (with a runtime E or V, LLVM did
    not vectorise the loops over states: 5-10x slower).
    ``start_top``/``end_low`` < 0 mean unconstrained. ``back`` (S, G), ``cost`` (N,) and
    ``best`` (G,) are work buffers. Returns the path cost.
    """
    kV = len(Kp)
    E = 1 << kV
    V = len(Vp)
    S = Y.shape[0]
    N = tab.shape[1]
    G = N >> kV
    # t = 0: d = sum_j (C[s, j] - y_j)^2, components in order (as the reference)
    for s in range(N):
        d = tab[0, s] - Y[0, 0]
        d = d * d
        for j in range(1, V):
            dj = tab[j, s] - Y[0, j]
            d += dj * dj
        cost[s] = d
    if start_top >= 0:
        for s in range(N):
            if (s >> kV) != start_top:
                cost[s] = _INF
    for t in range(1, S):
        bt = back[t]
        # best[g] = min_e cost[e G + g]: the first minimum (smallest e), like np.argmin
        for g in range(G):
            b = cost[g]
            a = 0
            for e in range(1, E):
                c = cost[e * G + g]
                if c < b:
                    b = c
                    a = e
            best[g] = b
            bt[g] = a
        # cost'[s] = ||C[s] - y_t||^2 + best[s >> kV], s = g E + e
        y = Y[t]
        for g in range(G):
            bg = best[g]
            for e in range(E):
                s = g * E + e
                d = tab[0, s] - y[0]
                d = d * d
                for j in range(1, V):
                    dj = tab[j, s] - y[j]
                    d += dj * dj
                cost[s] = d + bg
    if end_low >= 0:
        for s in range(N):
            if (s & (G - 1)) != end_low:
                cost[s] = _INF
    last = 0
    total = cost[0]
    for s in range(1, N):
        if cost[s] < total:
            total = cost[s]
            last = s
    states[S - 1] = last
    for t in range(S - 1, 0, -1):
        g = states[t] >> kV
        states[t - 1] = np.int64(back[t, g]) * G + g
    return total


@numba.njit(cache=True, parallel=True)
def _viterbi_batch(X, tab, Kp, Vp, start_top, end_low, tail_biting, back_probe):
    """Viterbi (or Alg. 4 when ``tail_biting``) for every row of X (B, T); parallel over B.

    ``start_top``/``end_low``: (B,) int64, entries < 0 mean unconstrained (ignored when
    ``tail_biting``). ``back_probe`` is a 0-length array giving the backpointer dtype.
    """
    B, T = X.shape
    kV = len(Kp)
    V = len(Vp)
    N = tab.shape[1]
    S = T // V
    G = N >> kV
    states = np.empty((B, S), dtype=np.int64)
    costs = np.empty(B, dtype=np.float64)
    for b in prange(B):
        back = np.empty((S, G), dtype=back_probe.dtype)
        cost = np.empty(N, dtype=np.float64)
        best = np.empty(G, dtype=np.float64)
        Y = X[b].reshape(S, V)
        if tail_biting:
            r = S // 2
            Yr = np.empty((S, V), dtype=np.float64)
            for t in range(S):  # Yr[t] = Y[t - r]: np.roll by r steps
                src = t - r
                if src < 0:
                    src += S
                for j in range(V):
                    Yr[t, j] = Y[src, j]
            rot = np.empty(S, dtype=np.int64)
            _viterbi_one(Yr, tab, Kp, Vp, -1, -1, rot, back, cost, best)
            o = rot[r] >> kV
            costs[b] = _viterbi_one(Y, tab, Kp, Vp, o, o, states[b], back, cost, best)
        else:
            costs[b] = _viterbi_one(Y, tab, Kp, Vp, start_top[b], end_low[b], states[b],
                                    back, cost, best)
    return states, costs


@numba.njit(cache=True, parallel=True)
def _pack_batch(states, L, kV, nbits, n_words):
    B, S = states.shape
    out = np.zeros((B, n_words), dtype=np.uint16)
    for b in prange(B):
        pos = 0
        for i in range(L):  # x_0, MSB first
            if pos < nbits and (states[b, 0] >> (L - 1 - i)) & 1:
                out[b, pos >> 4] |= np.uint16(1 << (15 - (pos & 15)))
            pos += 1
        for t in range(1, S):  # low kV bits of x_t, MSB first
            for i in range(kV):
                if pos < nbits and (states[b, t] >> (kV - 1 - i)) & 1:
                    out[b, pos >> 4] |= np.uint16(1 << (15 - (pos & 15)))
                pos += 1
    return out


@numba.njit(cache=True, inline="always")
def _window(words, b, start, L, nbits):
    """The L-bit window of row b starting at bit ``start`` (circular over nbits bits)."""
    s = 0
    p = start
    for i in range(L):
        if p >= nbits:
            p -= nbits
        s = (s << 1) | ((np.int64(words[b, p >> 4]) >> (15 - (p & 15))) & 1)
        p += 1
    return s


@numba.njit(cache=True, parallel=True)
def _unpack_batch(words, L, kV, S, nbits):
    B = words.shape[0]
    out = np.empty((B, S), dtype=np.int64)
    for b in prange(B):
        for t in range(S):
            out[b, t] = _window(words, b, t * kV, L, nbits)
    return out


@numba.njit(cache=True, parallel=True)
def _decode_batch(words, table, L, kV, S, nbits):
    """Words (B, W) -> values (B, S V): each state from its own window, then the table."""
    B = words.shape[0]
    V = table.shape[1]
    out = np.empty((B, S * V), dtype=np.float64)
    for b in prange(B):
        for t in range(S):
            s = _window(words, b, t * kV, L, nbits)
            for j in range(V):
                out[b, t * V + j] = table[s, j]
    return out


# ---------------------------------------------------------------------------------------
# Wrappers (validated inputs -> kernels)
# ---------------------------------------------------------------------------------------
def _back_probe(kV):
    return np.empty(0, dtype=np.min_scalar_type((1 << kV) - 1))  # as the reference


def _viterbi_fast(X, table, kV, start_top=None, end_low=None, tail_biting=False):
    B = X.shape[0]
    V = table.shape[1]
    tab = np.ascontiguousarray(table.T)  # (V, N): one contiguous row per component
    neg = np.full(B, -1, dtype=np.int64)
    st = neg if start_top is None else np.ascontiguousarray(start_top, dtype=np.int64)
    en = neg if end_low is None else np.ascontiguousarray(end_low, dtype=np.int64)
    return _viterbi_batch(np.ascontiguousarray(X), tab, (0,) * kV, (0,) * V,
                          st, en, bool(tail_biting), _back_probe(kV))


def _gpu():
    """:mod:`fast.cuda.viterbi`, imported on first CuPy input only."""
    from ..cuda import viterbi

    return viterbi


def _on_gpu(X, table, kV, start_top, end_low, tail_biting) -> ViterbiResult:
    """Validated CuPy ``X`` (B, T) and host ``table``: the CUDA Viterbi when it supports
    the trellis, else the Numba path on a host copy; CuPy results either way."""
    import cupy

    L, V = table.shape[0].bit_length() - 1, table.shape[1]
    gv = _gpu()
    if gv.supported(L, kV, V, X.shape[1] // V):
        return ViterbiResult(*gv.viterbi_table(X, table, kV, start_top, end_low, tail_biting))
    r = _viterbi_fast(X.get(), table, kV, start_top, end_low, tail_biting)
    return ViterbiResult(cupy.asarray(r[0]), cupy.asarray(r[1]))


def bitshift_viterbi(X, table, k, start_top=None, end_low=None) -> ViterbiResult:
    """Numba version of :func:`quipref.quantizers.trellis.bitshift_viterbi` (same result).

    CuPy ``X``: the CUDA Viterbi (:mod:`fast.cuda.viterbi`, float32 search, float64
    cost of the walk found; see the module docstring), CuPy results.
    """
    table, L, V = _check_table(table)
    X, single = _check_sequences(X, V)
    kV = _check_step(L, k, V)
    B = X.shape[0]
    start_top = _check_overlap(start_top, B, L - kV, "start_top")
    end_low = _check_overlap(end_low, B, L - kV, "end_low")
    if is_cupy_array(X):
        return _result(*_on_gpu(X, table, kV, start_top, end_low, False), single)
    return _result(*_viterbi_fast(X, table, kV, start_top, end_low), single)


def tail_biting_viterbi(X, table, k) -> ViterbiResult:
    """Numba version of :func:`quipref.quantizers.trellis.tail_biting_viterbi` (same result).

    CuPy ``X``: both passes of Alg. 4 in one CUDA launch (:mod:`fast.cuda.viterbi`),
    CuPy results.
    """
    table, L, V = _check_table(table)
    X, single = _check_sequences(X, V)
    kV = _check_step(L, k, V)
    _check_tail_length(X.shape[1] // V, kV, L)
    if is_cupy_array(X):
        return _result(*_on_gpu(X, table, kV, None, None, True), single)
    return _result(*_viterbi_fast(X, table, kV, tail_biting=True), single)


def pack_states(states, L, k, V=1, tail_biting=True):
    """Numba version of :func:`quipref.quantizers.trellis.pack_states`."""
    if is_cupy_array(states):
        import cupy

        return cupy.asarray(pack_states(states.get(), L, k, V, tail_biting))
    L = check_int(L, "L", 1, _MAX_L)
    V = check_int(V, "V", 1, _MAX_V)
    kV = _check_step(L, k, V)
    s, single = _check_states(states, L, kV, bool(tail_biting))
    nbits = _stream_bits(s.shape[1], L, kV, bool(tail_biting))
    w = _pack_batch(np.ascontiguousarray(s), L, kV, nbits, -(-nbits // 16))
    return w[0] if single else w


def unpack_states(words, L, k, V=1, *, n_steps, tail_biting=True):
    """Numba version of :func:`quipref.quantizers.trellis.unpack_states`."""
    if is_cupy_array(words):
        import cupy

        return cupy.asarray(unpack_states(words.get(), L, k, V, n_steps=n_steps,
                                          tail_biting=tail_biting))
    L = check_int(L, "L", 1, _MAX_L)
    V = check_int(V, "V", 1, _MAX_V)
    kV = _check_step(L, k, V)
    S = check_int(n_steps, "n_steps", 1)
    if tail_biting:
        _check_tail_length(S, kV, L)
    nbits = _stream_bits(S, L, kV, bool(tail_biting))
    w, single = _check_words(words, -(-nbits // 16))
    s = _unpack_batch(np.ascontiguousarray(w), L, kV, S, nbits)
    return s[0] if single else s


class Trellis(_ref.Trellis):
    __doc__ = _ref.Trellis.__doc__

    def encode(self, x, rng=None):
        """Codes of ``x`` (m, c T_y): uint16 of shape (m / T_x, c * words_per_tile).

        Each tile is one sequence, quantized by (tail-biting) Viterbi and packed, as in
        :meth:`quipref.quantizers.Trellis.encode`. ``rng`` is unused (the trellis is
        deterministic). CuPy input runs the CUDA Viterbi and packing
        (:mod:`fast.cuda.viterbi`) and returns CuPy codes.
        """
        if is_cupy_array(x):
            if not self._gpu_supported():  # the Numba path on the host, CuPy out
                import cupy

                return cupy.asarray(self.encode(x.get(), rng))
            x = self._check_block(x)
            mt = x.shape[0] // self.tile[0]
            states, build = self._gpu_states(self._tiles_to_sequences(x))
            return _gpu().pack(states, self.L, self.kV, self.tail_biting, build).reshape(mt, -1)
        return super().encode(x, rng)

    def decode(self, codes):
        if is_cupy_array(codes):
            import cupy

            return cupy.asarray(self.decode(codes.get()))
        return super().decode(codes)

    decode.__doc__ = _ref.Trellis.decode.__doc__

    def pack(self, states) -> np.ndarray:
        return pack_states(states, self.L, self.k, self.V, self.tail_biting)

    pack.__doc__ = _ref.Trellis.pack.__doc__

    def unpack(self, words) -> np.ndarray:
        return unpack_states(words, self.L, self.k, self.V, n_steps=self.n_steps,
                             tail_biting=self.tail_biting)

    unpack.__doc__ = _ref.Trellis.unpack.__doc__

    # -- CUDA encode (CuPy input) -----------------------------------------------------
    def _gpu_supported(self) -> bool:
        return _gpu().supported(self.L, self.kV, self.V, self.n_steps)

    def _gpu_states(self, X):
        """(B, T) CuPy sequences -> ((B, S) CuPy int64 walks, the kernel build used)."""
        return _gpu().encode_states(X, L=self.L, kV=self.kV, V=self.V, code=self.code, Q=self.Q,
                                    scale=self.scale, table=self.value_table(), lut=self.lut,
                                    tail_biting=self.tail_biting)

    # -- Numba hooks -------------------------------------------------------------------
    def _encode_impl(self, X):
        if is_cupy_array(X):  # encode_sequences on CuPy input
            if self._gpu_supported():
                return self._gpu_states(X)[0]
            import cupy

            return cupy.asarray(self._encode_impl(X.get()))
        return _viterbi_fast(X, self.value_table(), self.kV, tail_biting=self.tail_biting)[0]

    def _pack_impl(self, states):
        nbits = _stream_bits(self.n_steps, self.L, self.kV, self.tail_biting)
        return _pack_batch(np.ascontiguousarray(states), self.L, self.kV, nbits, -(-nbits // 16))

    def _decode_words_impl(self, words):
        nbits = _stream_bits(self.n_steps, self.L, self.kV, self.tail_biting)
        return _decode_batch(np.ascontiguousarray(words), np.ascontiguousarray(self.value_table()),
                             self.L, self.kV, self.n_steps, nbits)

