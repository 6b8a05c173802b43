r"""QTIP's trellis-coded quantizer: the bitshift trellis, Viterbi, tail-biting, packing.

The trellis
-----------
An ``(L, k, V)`` *bitshift trellis* has :math:`2^L` states; state ``s`` carries a value
``C[s]`` in :math:`\mathbb{R}^V` (the *code*, :mod:`._trellis_codes`). One step emits
``kV`` new bits: state ``s`` may be followed by

.. math::  s' = \big((s \ll kV) \bmod 2^L\big) \;|\; c, \qquad 0 \le c < 2^{kV},

so consecutive states share ``L - kV`` bits and every state is an ``L``-bit window that
slides ``kV`` bits per step along one bit string ([QTIP] Sec. 3.1). A sequence of ``T``
weights is cut into ``S = T / V`` vectors :math:`y_0 .. y_{S-1}` and quantized to the walk
:math:`x_0 .. x_{S-1}` minimising :math:`\sum_t \|C[x_t] - y_t\|^2` ([QTIP] Sec. 2.3).

Viterbi (:func:`bitshift_viterbi`)
----------------------------------
With ``E = 2^{kV}`` (branching) and ``G = 2^{L-kV}`` (groups), the predecessors of ``s``
are ``e G + (s >> kV)``, ``e < E``: all states with the same ``s >> kV`` share them. One
step is therefore ``best[g] = min_e cost[e G + g]`` (G minima over E candidates) and
``cost'[s] = ||C[s] - y_t||^2 + best[s >> kV]``: :math:`O(2^L)` work per step,
:math:`O(2^L T)` in all, independent of k ([QTIP] Sec. 2.3). The backpointer
``argmin_e`` fits in ``kV`` bits. Ties go to the smallest ``e`` and the smallest final state.

Tail-biting (:func:`tail_biting_viterbi`, [QTIP] Alg. 4)
--------------------------------------------------------
A walk is *tail-biting* when its last state's low ``L - kV`` bits equal its first
state's top ``L - kV`` bits, ``(x_{S-1} & (G-1)) == (x_0 >> kV)``: the bit string is then
circular and a sequence costs exactly ``S kV = kT`` bits. Exact tail-biting Viterbi costs
:math:`O(4^L T)`; QTIP's approximation uses two ordinary passes:

1. rotate the sequence right by ``r = floor(S/2)`` steps (``r V`` weights) and run Viterbi;
2. read the overlap ``O = x'_r >> kV`` (the bits shared across the wrap point: the
   rotated state that covers the original first vector);
3. run Viterbi on the original sequence with the start constrained to ``x_0 >> kV == O``
   and the end to ``x_{S-1} & (G-1) == O`` (infinite cost elsewhere).

Packing (:func:`pack_states`)
-----------------------------
Write ``x_0``'s ``L`` bits MSB first, then the low ``kV`` bits of ``x_1 .. x_{S-1}``; with
tail-biting drop the last ``L - kV`` bits (they repeat the first ones), leaving ``kT``
bits; pad to a multiple of 16 and cut into uint16 words, MSB first (stream bit 0 is bit
15 of word 0). Decoding (:func:`unpack_states`) treats the ``kT`` bits as circular: state
``t`` is the ``L``-bit window starting at bit ``t kV`` (wrapping), so **every weight
decodes on its own** from at most ``ceil(L/16) + 1`` words. Without tail-biting the
stream keeps all ``kT + L - kV`` bits and no window wraps.

Tiles and codes (:class:`Trellis`)
----------------------------------
QTIP quantizes ``T_x x T_y = 16 x 16`` tiles of the weight matrix as sequences of
``T = 256`` ([QTIP] Sec. 4): ``encode`` takes ``x`` of shape ``(m, c T_y)`` with ``m`` a
multiple of ``T_x`` (BlockLDLQ passes ``(m, 16)`` blocks, ``c = 1``), cuts it into tiles,
flattens each tile row-major (output row outer, input column inner; with V = 2 one step
is two horizontally adjacent weights), and returns uint16 codes of shape
``(m / T_x, c W)`` with ``W = ceil(kT / 16)`` words per tile (32 for k = 2): the words of
tile ``(i, j)`` are ``codes[i, j W:(j+1) W]``. Concatenating blocks along the last axis
(what :func:`quipref.ldlq.ldlq` does) therefore gives the same array as encoding the
whole matrix at once, and ``codes.reshape(-1, W)`` lists the tiles in row-major order over
(tile row along m, tile column along n), the order of QTIP's released code without its kernels. The
MMA-fragment permutation of the CUDA kernels is not applied here.

References
----------
.. [QTIP] Tseng, Sun, Hou, De Sa. "QTIP: Quantization with Trellises and Incoherence
   Processing", NeurIPS 2024 (arXiv 2406.11235): Sec. 2.3 (TCQ, Viterbi), 3.1 (bitshift
   trellis, codes), 3.2 and Alg. 4 (tail-biting), 4 (16 x 16 tiles, BlockLDLQ).
.. [MG10] Mao, Gray. "Stationary and trellis encoding for IID sources and simulation",
   IEEE Trans. Inf. Theory 2010 (the bitshift / RPTC trellis).
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from .._checks import array_module, check_array, check_bits, check_bool, check_int, to_numpy
from .._checks import (TRELLIS_MAX_L as _MAX_L, TRELLIS_MAX_V as _MAX_V,  # noqa: F401  (validators: quipref._checks)
                       check_trellis_step as _check_step,
                       check_trellis_table as _check_table,
                       check_trellis_sequences as _check_sequences,
                       check_trellis_overlap as _check_overlap,
                       check_trellis_tail_length as _check_tail_length,
                       check_trellis_path as _check_path,
                       check_trellis_states as _check_states,
                       trellis_stream_bits as _stream_bits,
                       check_trellis_words as _check_words,
                       check_trellis_lut as _check_lut,
                       check_trellis_tile as _check_tile)
from ._trellis_codes import (HYB_Q, code_1mad, code_3inst, code_hyb, gaussian_lut,
                             hyb_lut, table_rms)
from .base import Quantizer

__all__ = [
    "Trellis", "ViterbiResult", "CODES",
    "bitshift_viterbi", "tail_biting_viterbi", "pack_states", "unpack_states",
    "code_table", "code_1mad", "code_3inst", "code_hyb", "hyb_lut", "gaussian_lut",
]

#: The state -> value codes :class:`Trellis` accepts: ``"1mad"``, ``"3inst"`` ([QTIP] Alg. 1,
#: 2; V = 1), ``"hyb"`` (Alg. 3, hashed 2^Q x V LUT) and ``"gaussian"`` (a seeded random
#: Gaussian table of all 2^L states: the RPTC codebook of [QTIP] Table 1).
CODES = ("1mad", "3inst", "hyb", "gaussian")


class ViterbiResult(NamedTuple):
    """``(states, cost)``: the walk, shape (S,) or (B, S) int64, and its squared error,
    shape () or (B,) float64 (``sum_t ||C[x_t] - y_t||^2``)."""

    states: np.ndarray
    cost: np.ndarray


# ---------------------------------------------------------------------------------------
# Codes
# ---------------------------------------------------------------------------------------
def code_table(code: str, L: int, V: int = 1, Q: int = HYB_Q, lut=None) -> np.ndarray:
    """The unscaled value table ``C`` of shape (2^L, V) for a named code.

    ``lut`` is the (2^Q, V) LUT for ``"hyb"`` and the (2^L, V) table for ``"gaussian"``
    (see :func:`hyb_lut`, :func:`gaussian_lut`); ignored for 1MAD/3INST.
    """
    s = np.arange(2**L, dtype=np.int64)
    if code == "1mad":
        return code_1mad(s)[:, None]
    if code == "3inst":
        return code_3inst(s)[:, None]
    if code == "hyb":
        return code_hyb(s, lut, Q)
    if code == "gaussian":
        return np.asarray(lut, dtype=np.float64).reshape(2**L, V).copy()
    raise ValueError(f"code must be one of {CODES}, got {code!r}")


# ---------------------------------------------------------------------------------------
# Viterbi (reference: vectorised over states and sequences, loop over time)
# ---------------------------------------------------------------------------------------
def _sq_dist(table: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``||C[s] - y_b||^2`` for all (b, s): shape (B, 2^L). Components added in order."""
    d = table[None, :, 0] - y[:, 0, None]
    d = d * d
    for j in range(1, table.shape[1]):
        e = table[None, :, j] - y[:, j, None]
        d += e * e
    return d


def _viterbi_chunk(Y, table, kV, start_top, end_low):
    """Viterbi on Y of shape (B, S, V). Returns (states (B, S) int64, cost (B,))."""
    B, S, _ = Y.shape
    N = table.shape[0]
    L = N.bit_length() - 1
    E, G = 1 << kV, 1 << (L - kV)
    all_states = np.arange(N)
    back = np.zeros((B, S, G), dtype=np.min_scalar_type(E - 1))

    cost = _sq_dist(table, Y[:, 0])
    if start_top is not None:  # x_0 must have top bits O: x_0 >> kV == O
        cost[(all_states[None, :] >> kV) != start_top[:, None]] = np.inf
    for t in range(1, S):
        c = cost.reshape(B, E, G)  # predecessor p = e*G + g, g = low L-kV bits of p
        arg = np.argmin(c, axis=1)  # first minimum: smallest e on ties
        best = np.take_along_axis(c, arg[:, None, :], axis=1)[:, 0, :]
        back[:, t] = arg
        # state s = g*E + e' has predecessor group g = s >> kV
        cost = _sq_dist(table, Y[:, t]) + np.repeat(best, E, axis=1)
    if end_low is not None:  # x_{S-1} must have low bits O
        cost[(all_states[None, :] & (G - 1)) != end_low[:, None]] = np.inf

    states = np.empty((B, S), dtype=np.int64)
    states[:, -1] = np.argmin(cost, axis=1)
    total = cost[np.arange(B), states[:, -1]]
    rows = np.arange(B)
    for t in range(S - 1, 0, -1):
        g = states[:, t] >> kV
        states[:, t - 1] = back[rows, t, g].astype(np.int64) * G + g
    return states, total


def _viterbi(X, table, kV, start_top=None, end_low=None):
    """Plain/constrained Viterbi on validated X (B, T); chunks the batch to bound memory."""
    B, T = X.shape
    V = table.shape[1]
    S = T // V
    L = table.shape[0].bit_length() - 1
    Y = X.reshape(B, S, V)
    per_seq = S * (1 << (L - kV)) + 4 * (1 << L) * 8  # backpointers + a few cost rows
    chunk = max(1, (1 << 26) // per_seq)
    states = np.empty((B, S), dtype=np.int64)
    cost = np.empty(B, dtype=np.float64)
    for b0 in range(0, B, chunk):
        sl = slice(b0, b0 + chunk)
        states[sl], cost[sl] = _viterbi_chunk(
            Y[sl], table, kV,
            None if start_top is None else start_top[sl],
            None if end_low is None else end_low[sl])
    return states, cost


def _tail_biting(viterbi, X, table, kV):
    """QTIP Alg. 4 with a given Viterbi implementation ``viterbi(X, table, kV, start, end)``."""
    B, T = X.shape
    V = table.shape[1]
    S = T // V
    r = S // 2
    X_rot = np.roll(X.reshape(B, S, V), r, axis=1).reshape(B, T)  # X_rot[t] = X[t - r]
    rot_states, _ = viterbi(X_rot, table, kV, None, None)
    overlap = rot_states[:, r] >> kV  # top L-kV bits of the state covering X[0]
    return viterbi(X, table, kV, overlap, overlap)


def _result(states, cost, single):
    if single:
        return ViterbiResult(states[0], cost[0])
    return ViterbiResult(states, cost)


def bitshift_viterbi(X, table, k, start_top=None, end_low=None) -> ViterbiResult:
    r"""Optimal walk of the bitshift trellis for one or a batch of sequences.

    Parameters
    ----------
    X : ndarray of shape (T,) or (B, T)
        Sequences; ``T`` must be a multiple of ``V = table.shape[1]``.
    table : ndarray of shape (2^L, V) (or (2^L,) for V = 1)
        The value of each state (:meth:`Trellis.value_table`).
    k : int
        Bits per weight; each step consumes ``kV`` bits.
    start_top, end_low : int or int ndarray of shape (B,), optional
        Constraints ``x_0 >> kV == start_top`` and ``x_{S-1} & (2^(L-kV) - 1) == end_low``
        (the pieces of Alg. 4). ``None``: unconstrained.

    Returns
    -------
    ViterbiResult
        ``states`` int64 of shape (S,) or (B, S), ``S = T / V``, and ``cost``, the minimal
        ``sum_t ||C[x_t] - X[t V:(t+1) V]||^2`` (``inf`` if the constraints are infeasible).

    Notes
    -----
    Time :math:`O(2^L T)`, memory :math:`O(2^{L-kV} T / V)` backpointers per sequence.
    Ties: smallest predecessor index ``e``, then smallest final state.
    """
    table, L, V = _check_table(table)
    X, single = _check_sequences(X, V)
    kV = _check_step(L, k, V)
    B = X.shape[0]
    start_top = _check_overlap(start_top, B, L - kV, "start_top")
    end_low = _check_overlap(end_low, B, L - kV, "end_low")
    return _result(*_viterbi(X, table, kV, start_top, end_low), single)


def tail_biting_viterbi(X, table, k) -> ViterbiResult:
    """Tail-biting walk by QTIP's two-pass approximation (Alg. 4; see the module docstring).

    Same parameters as :func:`bitshift_viterbi` (no constraints). The result satisfies
    ``(states[..., -1] & (2^(L-kV) - 1)) == (states[..., 0] >> kV)``; its cost is at
    least the unconstrained optimum and, in general, slightly above the best tail-biting
    walk (QTIP Table 2: equal to 4 digits for k >= 2 at L = 12).
    """
    table, L, V = _check_table(table)
    X, single = _check_sequences(X, V)
    kV = _check_step(L, k, V)
    _check_tail_length(X.shape[1] // V, kV, L)
    return _result(*_tail_biting(_viterbi, X, table, kV), single)


# ---------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------
def _bits_to_words(bits: np.ndarray, n_words: int) -> np.ndarray:
    """(B, nbits) 0/1 -> (B, n_words) uint16, MSB first, zero padded."""
    B, nbits = bits.shape
    padded = np.zeros((B, 16 * n_words), dtype=np.uint8)
    padded[:, :nbits] = bits
    by = np.packbits(padded, axis=1, bitorder="big").astype(np.uint16)  # (B, 2 W)
    return (by[:, 0::2] << 8) | by[:, 1::2]


def _words_to_bits(words: np.ndarray) -> np.ndarray:
    """(B, W) uint16 -> (B, 16 W) 0/1, MSB first."""
    by = np.stack([words >> 8, words & 0xFF], axis=-1).astype(np.uint8).reshape(words.shape[0], -1)
    return np.unpackbits(by, axis=1, bitorder="big")


def _pack(states, L, kV, tail_biting):
    B, S = states.shape
    shifts = np.arange(L - 1, -1, -1)
    first = (states[:, :1] >> shifts) & 1  # (B, L): x_0, MSB first
    low = np.arange(kV - 1, -1, -1)
    rest = ((states[:, 1:, None] >> low) & 1).reshape(B, (S - 1) * kV)  # low kV bits of x_t
    bits = np.concatenate([first, rest], axis=1).astype(np.uint8)  # L + (S-1) kV bits
    nbits = _stream_bits(S, L, kV, tail_biting)
    return _bits_to_words(bits[:, :nbits], -(-nbits // 16))  # tail-biting: drop L-kV bits


def _unpack(words, L, kV, S, tail_biting):
    bits = _words_to_bits(words).astype(np.int64)
    nbits = _stream_bits(S, L, kV, tail_biting)
    pos = (np.arange(S)[:, None] * kV + np.arange(L)[None, :]) % nbits  # (S, L) windows
    weights = 1 << np.arange(L - 1, -1, -1)
    return bits[:, pos] @ weights  # (B, S): state t = window starting at bit t kV


def pack_states(states, L, k, V=1, tail_biting=True):
    r"""Pack trellis walks into 16-bit words (see the module docstring).

    Parameters
    ----------
    states : int ndarray of shape (S,) or (B, S)
        Walks of the ``(L, k, V)`` bitshift trellis (tail-biting if ``tail_biting``).
    L, k, V : int
    tail_biting : bool
        Drop the last ``L - kV`` bits (they repeat the first ones): ``S kV`` bits per
        walk. Otherwise all ``S kV + L - kV`` bits are kept.

    Returns
    -------
    ndarray of uint16, shape (W,) or (B, W), ``W = ceil(nbits / 16)`` (zero padded)

    Raises
    ------
    ValueError
        If a walk breaks the trellis (or the tail-biting condition): packing it would lose
        information.
    """
    L = check_int(L, "L", 1, _MAX_L)
    V = check_int(V, "V", 1, _MAX_V)
    kV = _check_step(L, k, V)
    s, single = _check_states(states, L, kV, bool(tail_biting))
    w = _pack(s, L, kV, bool(tail_biting))
    return w[0] if single else w


def unpack_states(words, L, k, V=1, *, n_steps, tail_biting=True):
    """Inverse of :func:`pack_states`: state ``t`` is the ``L``-bit window at bit ``t kV``.

    With ``tail_biting`` the ``n_steps kV``-bit stream is read circularly. Each state is
    computed from its own window only, so any weight decodes independently.

    Returns
    -------
    int64 ndarray of shape (n_steps,) or (B, n_steps)
    """
    L = check_int(L, "L", 1, _MAX_L)
    V = check_int(V, "V", 1, _MAX_V)
    kV = _check_step(L, k, V)
    S = check_int(n_steps, "n_steps", 1)
    if tail_biting:
        _check_tail_length(S, kV, L)
    nbits = _stream_bits(S, L, kV, bool(tail_biting))
    w, single = _check_words(words, -(-nbits // 16))
    s = _unpack(w, L, kV, S, bool(tail_biting))
    return s[0] if single else s


# ---------------------------------------------------------------------------------------
# The quantizer
# ---------------------------------------------------------------------------------------
class Trellis(Quantizer):
    r"""QTIP's trellis-coded quantizer on ``T_x x T_y`` tiles (tail-biting bitshift trellis).

    Parameters
    ----------
    L : int
        State bits (1..20); the trellis has :math:`2^L` states. QTIP uses 16; the CPU is
        practical up to about 12.
    k : int
        Bits per weight (1..8); ``k V <= L``.
    V : int
        Weights per trellis step (1..16): 1 for 1MAD/3INST, 2 for QTIP's HYB (any V
        for ``"gaussian"`` and ``"hyb"``); must divide ``T_y``.
    code : {"1mad", "3inst", "hyb", "gaussian"}
        State -> value code (:mod:`quipref.quantizers._trellis_codes`).
    Q : int
        LUT bits of ``"hyb"`` (9 in QTIP; 1..15). Ignored by the other codes.
    tile : (int, int)
        ``(T_x, T_y)``: tile rows (along m, output features) and columns (along n, input
        features). ``T = T_x T_y`` weights form one trellis sequence. QTIP: (16, 16).
    tail_biting : bool
        Alg. 4 tail-biting walks, exactly ``kT`` bits per tile (default), or plain Viterbi
        with ``kT + L - kV`` bits per tile.
    scale : float
        Values are ``scale * C[state]``. To quantize incoherence-processed weights
        ``W~`` the way QTIP does, use ``scale = RMS(W~) / (table_rms * 0.9)``
        (``scale_override = 0.9`` of QTIP's released code, :ref:`papers-from-code`).
    seed : int or numpy.random.Generator
        Seeds the LUT of ``"hyb"`` (:func:`hyb_lut`) and ``"gaussian"`` (:func:`gaussian_lut`).
    lut : ndarray, optional
        An explicit LUT instead of the seeded one: shape (2^Q, V) for ``"hyb"``, (2^L, V)
        for ``"gaussian"`` (e.g. a fine-tuned or released one).

    Attributes
    ----------
    dim : int
        ``T_y``: :func:`quipref.ldlq.ldlq` must be called with ``block_size`` a multiple of
        it (QTIP: ``block_size = 16``).
    words_per_tile : int
        ``ceil(nbits / 16)``: 16 k for 16 x 16 tiles with tail-biting.
    bits_per_weight : float
        ``16 words_per_tile / T``: exactly ``k`` for QTIP's tiles with tail-biting.

    Notes
    -----
    ``encode(x)`` takes ``x`` of shape ``(m, c T_y)``, ``m`` a multiple of ``T_x``, and
    returns uint16 codes of shape ``(m / T_x, c * words_per_tile)``; tile ``(i, j)`` is
    flattened row-major into one sequence and its words are
    ``codes[i, j W:(j+1) W]`` (module docstring). ``decode`` inverts the layout. This
    departs from the scalar quantizers' "codes of shape (..., n / dim)": one code word
    covers a whole tile, i.e. ``T_x`` rows. The search runs in float64 on the given
    values (the released code casts the targets to fp16).
    """

    stochastic = False

    def __init__(self, L: int = 16, k: int = 2, V: int = 1, code: str = "1mad", *,
                 Q: int = HYB_Q, tile=(16, 16), tail_biting: bool = True,
                 scale: float = 1.0, seed=0, lut=None):
        self.L = check_int(L, "L", 1, _MAX_L)
        self.V = check_int(V, "V", 1, _MAX_V)
        self.k = check_bits(k, 1, 8, "k")
        self.kV = _check_step(self.L, self.k, self.V)
        if code not in CODES:
            raise ValueError(f"code must be one of {CODES}, got {code!r}")
        if code in ("1mad", "3inst") and self.V != 1:
            raise ValueError(f"code {code!r} is scalar: it needs V = 1, got V = {self.V}")
        self.code = code
        self.Q = check_int(Q, "Q", 1, 15)
        self.tile = _check_tile(tile)
        if self.tile[1] % self.V:
            raise ValueError(f"V = {self.V} must divide the tile width T_y = {self.tile[1]}")
        self.tail_biting = check_bool(tail_biting, "tail_biting")
        if self.tail_biting:
            _check_tail_length(self.n_steps, self.kV, self.L)
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        self.scale = scale
        if isinstance(seed, np.random.Generator):
            self.seed = None
        elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TypeError(
                f"seed must be a non-negative integer or a numpy.random.Generator, got {seed!r}")
        else:
            self.seed = int(seed)
        if code in ("1mad", "3inst"):
            if lut is not None:
                raise ValueError(f"code {code!r} is computed: it takes no lut")
            self.lut = None
        elif code == "hyb":
            if lut is not None:
                self.lut = _check_lut(lut, (2**self.Q, self.V))
            else:  # a Generator seeds the k-means through one drawn integer
                s = self.seed if self.seed is not None else int(seed.integers(2**63))
                self.lut = np.array(hyb_lut(self.Q, self.V, s))
        else:  # gaussian
            if lut is not None:
                self.lut = _check_lut(lut, (2**self.L, self.V))
            elif self.seed is not None:
                self.lut = gaussian_lut(self.L, self.V, self.seed)
            else:
                self.lut = seed.standard_normal((2**self.L, self.V))
        self._table = None

    # -- geometry ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Columns of input a code covers: the tile width ``T_y``."""
        return self.tile[1]

    @property
    def T(self) -> int:
        """Weights per sequence (tile): ``T_x T_y``."""
        return self.tile[0] * self.tile[1]

    @property
    def n_steps(self) -> int:
        """Trellis steps per sequence: ``T / V``."""
        return self.T // self.V

    @property
    def words_per_tile(self) -> int:
        """uint16 words per tile: ``ceil(kT / 16)`` with tail-biting (16 k for 16 x 16
        tiles), ``ceil((kT + L - kV) / 16)`` without."""
        return -(-_stream_bits(self.n_steps, self.L, self.kV, self.tail_biting) // 16)

    def codes_shape(self, shape) -> tuple:
        """``(m / T_x, (n / T_y) * words_per_tile)``: one run of words per tile."""
        m, n = (int(s) for s in shape)
        Tx, Ty = self.tile
        if m % Tx or n % Ty:
            raise ValueError(f"({m}, {n}) is not a whole number of {Tx} x {Ty} tiles")
        return (m // Tx, (n // Ty) * self.words_per_tile)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight, padding included: ``k`` for 16x16 tail-biting tiles."""
        return 16.0 * self.words_per_tile / self.T

    @property
    def code_bits(self) -> int:
        """Codes are 16-bit words (``words_per_tile`` per tile): 16."""
        return 16

    @property
    def side_bits(self) -> int:
        """The float64 ``scale`` kept in the config: 64 bits (a LUT is a state array)."""
        return 64

    # -- values ------------------------------------------------------------------------
    def value_table(self) -> np.ndarray:
        """The (2^L, V) table ``scale * C[state]`` used by encode and decode (read-only)."""
        if self._table is None:
            t = self.scale * code_table(self.code, self.L, self.V, self.Q, self.lut)
            t.setflags(write=False)
            self._table = t
        return self._table

    @property
    def table_rms(self) -> float:
        """RMS of the *unscaled* code over all states (1.000 1MAD, 1.244 3INST, ~0.969 HYB)."""
        return table_rms(self.value_table()) / self.scale

    # -- sequences ---------------------------------------------------------------------
    def encode_sequences(self, X) -> np.ndarray:
        """Walks (states) for sequences X of shape (T,) or (B, T): Alg. 4 if tail-biting,
        else plain Viterbi. Returns int64 states of shape (S,) or (B, S)."""
        X, single = _check_sequences(X, self.V)
        if X.shape[1] != self.T:
            raise ValueError(f"X must have sequences of length T = {self.T}, got {X.shape[1]}")
        s = self._encode_impl(X)
        return s[0] if single else s

    def decode_states(self, states) -> np.ndarray:
        """Values of walks: (S,) or (B, S) states -> (T,) or (B, T) float64."""
        s = np.asarray(to_numpy(states))
        if s.dtype.kind not in "iu" or s.ndim not in (1, 2):
            raise TypeError(f"states must be a 1-D or 2-D integer array, got {s.dtype} {s.shape}")
        if s.size and (s.min() < 0 or s.max() >= 2**self.L):
            raise ValueError(f"states must lie in [0, 2^L) = [0, {2**self.L})")
        single = s.ndim == 1
        s = s.reshape(-1, s.shape[-1])
        out = self.value_table()[s].reshape(s.shape[0], -1)
        return out[0] if single else out

    def pack(self, states) -> np.ndarray:
        """:func:`pack_states` with this trellis' parameters."""
        return pack_states(states, self.L, self.k, self.V, self.tail_biting)

    def unpack(self, words) -> np.ndarray:
        """:func:`unpack_states` with this trellis' parameters."""
        return unpack_states(words, self.L, self.k, self.V, n_steps=self.n_steps,
                             tail_biting=self.tail_biting)

    # -- implementation hooks (fast overrides these) ------------------------------------
    def _encode_impl(self, X):
        """Validated (B, T) float64 -> (B, S) int64 states."""
        if self.tail_biting:
            return _tail_biting(_viterbi, X, self.value_table(), self.kV)[0]
        return _viterbi(X, self.value_table(), self.kV)[0]

    def _pack_impl(self, states):
        return _pack(states, self.L, self.kV, self.tail_biting)

    def _decode_words_impl(self, words):
        """(B, W) uint16 -> (B, T) float64 values."""
        s = _unpack(words, self.L, self.kV, self.n_steps, self.tail_biting)
        return self.value_table()[s].reshape(words.shape[0], self.T)

    # -- tiles -------------------------------------------------------------------------
    def _check_block(self, x):
        x = check_array(x, "x", ndim=2, dtype=np.float64)
        Tx, Ty = self.tile
        m, n = x.shape
        if m == 0 or n == 0 or m % Tx or n % Ty:
            raise ValueError(
                f"x has shape ({m}, {n}); the trellis quantizes {Tx} x {Ty} tiles, so x "
                f"must be (m, n) with m a positive multiple of {Tx} and n of {Ty} (pad W, "
                f"or call ldlq with block_size a multiple of {Ty})"
            )
        return x

    def _check_codes(self, codes):
        c = codes if array_module(codes) is not np else np.asarray(codes)
        if c.dtype.kind not in "iu":
            raise TypeError(f"codes must be an integer (uint16) array, got dtype {c.dtype}")
        W = self.words_per_tile
        if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0 or c.shape[1] % W:
            raise ValueError(
                f"codes must have shape (m / {self.tile[0]}, c * {W}) ({W} words per "
                f"{self.tile[0]} x {self.tile[1]} tile), got shape {tuple(c.shape)}"
            )
        c = np.asarray(to_numpy(c))
        if c.min() < 0 or c.max() > 0xFFFF:
            raise ValueError("codes must hold 16-bit words in [0, 65535]")
        return c.astype(np.uint16)

    def _tiles_to_sequences(self, x):
        Tx, Ty = self.tile
        m, n = x.shape
        return x.reshape(m // Tx, Tx, n // Ty, Ty).transpose(0, 2, 1, 3).reshape(-1, Tx * Ty)

    def _sequences_to_tiles(self, seqs, mt, nt):
        Tx, Ty = self.tile
        return seqs.reshape(mt, nt, Tx, Ty).transpose(0, 2, 1, 3).reshape(mt * Tx, nt * Ty)

    # -- the contract ------------------------------------------------------------------
    def encode(self, x, rng=None):
        """Codes of ``x`` (m, c T_y): uint16 of shape (m / T_x, c * words_per_tile).

        Each tile is one sequence, quantized by (tail-biting) Viterbi and packed.
        ``rng`` is unused (the trellis is deterministic). CuPy input is processed on the
        host and returned as CuPy.
        """
        xp = array_module(x)
        x = to_numpy(self._check_block(x))
        mt = x.shape[0] // self.tile[0]
        states = self._encode_impl(np.ascontiguousarray(self._tiles_to_sequences(x)))
        codes = self._pack_impl(states).reshape(mt, -1)
        return codes if xp is np else xp.asarray(codes)

    def decode(self, codes):
        """Values of codes (m / T_x, c * words_per_tile) -> float64 (m, c T_y)."""
        xp = array_module(codes)
        c = self._check_codes(codes)
        mt, nt = c.shape[0], c.shape[1] // self.words_per_tile
        vals = self._decode_words_impl(c.reshape(mt * nt, self.words_per_tile))
        out = self._sequences_to_tiles(vals, mt, nt)
        return out if xp is np else xp.asarray(out)

    # -- persistence -------------------------------------------------------------------
    def state(self):
        cfg = {"type": "Trellis", "L": self.L, "k": self.k, "V": self.V, "code": self.code,
               "Q": self.Q, "tile": list(self.tile), "tail_biting": self.tail_biting,
               "scale": self.scale, "seed": self.seed}
        arrays = {}
        if self.lut is not None:  # float16 when that is exact (the seeded HYB LUT): 16 bits/entry
            half = self.lut.astype(np.float16)
            arrays["lut"] = half if np.array_equal(half.astype(np.float64), self.lut) else self.lut
        return cfg, arrays

    @classmethod
    def from_state(cls, config, arrays):
        obj = cls(config["L"], config["k"], config["V"], config["code"], Q=config["Q"],
                  tile=tuple(config["tile"]), tail_biting=config["tail_biting"],
                  scale=config["scale"], seed=config["seed"] if config["seed"] is not None else 0,
                  lut=arrays.get("lut"))
        if config["seed"] is None:  # seeded by a Generator: the LUT (stored) is what counts
            obj.seed = None
        return obj
