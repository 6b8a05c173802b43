r"""Index coding of outlier positions: which entries of each row are outliers.

ICQuant (Li, Hanna, Fragouli, Diggavi, arXiv 2505.00850, abstract) stores the *positions*
of the top-γ weights of each row so that inliers and outliers can each have their own
quantization range; the abstract reports ≈0.3 bits per weight for this index (≈0.25 in
the COLM 2025 camera-ready abstract). The paper's exact code was not available to this
library; two codes are implemented here and measured against the entropy floor
(:func:`quipref.bounds.entropy_floor`):

**Gap code (default; this library's reconstruction).** For a row with sorted outlier
positions :math:`p_1 < \dots < p_K` the gaps are :math:`g_1 = p_1 + 1`,
:math:`g_i = p_i - p_{i-1}`. Each gap is written as B-bit symbols: a symbol
``u < M = 2^B - 1`` means "the next outlier is ``u + 1`` positions ahead", the *escape*
symbol ``M`` means "advance ``M`` positions, no outlier here". A gap ``g`` costs
``(g - 1) // M`` escapes and one terminal symbol. Nothing is written after the K-th
outlier, so the decoder must know K (ICQuant stores ``K = round(γ n)`` once per layer).
Expected cost for i.i.d. Bernoulli(γ) positions:
:math:`\gamma B / (1 - (1-\gamma)^{2^B-1})` bits per weight
(:func:`quipref.bounds.gap_code_overhead`).

**Enumerative code (alternative).** The row is cut into groups of ``g`` positions (the
last one shorter if ``g`` does not divide n). For each group: the number of outliers
``k`` in :math:`\lceil\log_2(g+1)\rceil` bits, then the rank of the k-subset in the
combinatorial number system, :math:`r = \sum_{i=1}^{k} \binom{c_i}{i}` for the sorted
in-group offsets :math:`c_1 < \dots < c_k`, in :math:`\lceil\log_2\binom{g}{k}\rceil`
bits (Knuth, TAOCP 4A §7.2.1.3, eq. (3); Cover, "Enumerative source encoding", IEEE
Trans. IT 1973). Self-delimiting: the decoder needs no count.

Bitstream layout (both codes): the rows' codes are concatenated; every field is written
least significant bit first (bit ``j`` of a field starting at stream bit ``s`` is stream
bit ``s + j``); stream bit ``t`` is bit ``t % 8`` of byte ``t // 8`` (the ``bitorder="little"``
of :func:`numpy.packbits`, as :func:`quipref.formats.pack_codes`). ``offsets[i]`` is the
first bit of row ``i`` (``offsets[m]`` = total bits), so rows decode independently.

The functions here are deliberately plain Python loops over the fields (readable; the
fast package has the Numba twins with identical bitstreams).
"""
from __future__ import annotations

import math
import numbers
import sys
from typing import NamedTuple

import numpy as np

from .._checks import check_bool_mask, check_choice, check_index_stream, check_int

__all__ = ["IndexStream", "gap_symbols", "gap_encode", "gap_decode", "gap_positions", "gap_bits",
           "enum_encode", "enum_decode", "enum_bits", "encode_mask", "decode_mask",
           "count_field_bits", "rank_subset", "unrank_subset", "MAX_GROUP", "MAX_B"]

#: largest enumerative group (binomial ranks < 2^63 stay exact in int64 / uint64)
MAX_GROUP = 64
#: largest gap-symbol width
MAX_B = 16

CODES = ("gap", "enumerative")


class IndexStream(NamedTuple):
    """An encoded mask: ``data`` (uint8 bytes), ``offsets`` (int64 (m + 1,), bit offsets of
    the rows; ``offsets[-1]`` is the exact number of bits) and the mask's ``shape``."""

    data: np.ndarray
    offsets: np.ndarray
    shape: tuple

    @property
    def nbits(self) -> int:
        """Exact number of index bits (without the padding of the last byte)."""
        return int(self.offsets[-1])


# ---------------------------------------------------------------------------------------
# bit I/O (LSB first)
# ---------------------------------------------------------------------------------------
class _BitWriter:
    def __init__(self):
        self.bits: list[int] = []

    def write(self, value: int, width: int):
        for j in range(width):
            self.bits.append((value >> j) & 1)

    def __len__(self):
        return len(self.bits)

    def tobytes(self) -> np.ndarray:
        return np.packbits(np.asarray(self.bits, dtype=np.uint8), bitorder="little")


def _read(data: np.ndarray, pos: int, width: int) -> int:
    v = 0
    for j in range(width):
        t = pos + j
        v |= ((int(data[t >> 3]) >> (t & 7)) & 1) << j
    return v


# ---------------------------------------------------------------------------------------
# gap code
# ---------------------------------------------------------------------------------------
def gap_symbols(positions, B: int) -> list:
    """The B-bit symbols of one row's sorted outlier positions (module docstring).

    Parameters
    ----------
    positions : sequence of int, strictly increasing, >= 0
    B : int, 1..16

    Returns
    -------
    list of int
        Symbols in ``[0, 2^B - 1]``; ``2^B - 1`` is the escape.
    """
    B = check_int(B, "B", 1, MAX_B)
    M = (1 << B) - 1
    out, prev = [], -1
    for p in positions:
        gap = int(p) - prev
        if gap < 1:
            raise ValueError("positions must be strictly increasing and >= 0")
        e, u = divmod(gap - 1, M)
        out.extend([M] * e)
        out.append(u)
        prev = int(p)
    return out


def gap_encode(mask, B: int) -> IndexStream:
    """Gap-code every row of a boolean ``mask`` (m, n) with B-bit symbols.

    Returns
    -------
    IndexStream
        Bytes, row bit offsets (m + 1,), shape. Row i costs ``B * len(gap_symbols(...))``.

    Raises
    ------
    TypeError, ValueError
        ``mask`` not a 2-D boolean array; ``B`` not an integer in 1..16.
    """
    mask = check_bool_mask(mask)
    B = check_int(B, "B", 1, MAX_B)
    w = _BitWriter()
    offsets = np.zeros(mask.shape[0] + 1, dtype=np.int64)
    for i, row in enumerate(mask):
        for s in gap_symbols(np.flatnonzero(row), B):
            w.write(s, B)
        offsets[i + 1] = len(w)
    return IndexStream(w.tobytes(), offsets, mask.shape)


def gap_decode(data, offsets, counts, n: int, B: int) -> np.ndarray:
    """Inverse of :func:`gap_encode`: the boolean mask (m, n).

    Parameters
    ----------
    data : ndarray of uint8
    offsets : ndarray of int (m + 1,)
        Row bit offsets.
    counts : int or ndarray of int (m,)
        Outliers per row (the gap code does not store it).
    n : int
        Row length.
    B : int

    Raises
    ------
    ValueError
        A corrupt stream: a position past ``n - 1``, symbols running past the row's bits.
    """
    B = check_int(B, "B", 1, MAX_B)
    n = check_int(n, "n", 0, 2**40)
    m = np.asarray(offsets).shape[0] - 1
    data, offsets = check_index_stream(data, offsets, m)
    counts = np.broadcast_to(np.asarray(counts, dtype=np.int64), (m,))
    M = (1 << B) - 1
    mask = np.zeros((m, n), dtype=bool)
    for i in range(m):
        pos, bit, found = -1, int(offsets[i]), 0
        while found < counts[i]:
            if bit + B > offsets[i + 1]:
                raise ValueError(f"corrupt index stream: row {i} ends after {found} of {counts[i]} outliers")
            u = _read(data, bit, B)
            bit += B
            if u == M:
                pos += M
                continue
            pos += u + 1
            if pos >= n:
                raise ValueError(f"corrupt index stream: row {i} decodes position {pos} >= n = {n}")
            mask[i, pos] = True
            found += 1
    return mask


def gap_positions(data, offsets, k: int, B: int) -> np.ndarray:
    """Outlier positions (m, k), int64, of a gap-coded stream with ``k`` outliers in every
    row (the "position decode": what a decoder pairs with the k outlier codes of a row).

    Raises
    ------
    ValueError
        A row whose symbols end before its k-th outlier.
    """
    B = check_int(B, "B", 1, MAX_B)
    k = check_int(k, "k", 0, 2**40)
    m = np.asarray(offsets).shape[0] - 1
    data, offsets = check_index_stream(data, offsets, m)
    M = (1 << B) - 1
    out = np.zeros((m, k), dtype=np.int64)
    for i in range(m):
        pos, bit, found = -1, int(offsets[i]), 0
        while found < k:
            if bit + B > offsets[i + 1]:
                raise ValueError(f"corrupt index stream: row {i} ends after {found} of {k} outliers")
            u = _read(data, bit, B)
            bit += B
            pos += M if u == M else u + 1
            if u != M:
                out[i, found] = pos
                found += 1
    return out


def gap_bits(mask, B: int) -> np.ndarray:
    """Exact gap-code bits of each row (m,): ``B`` times the number of symbols, computed
    from the gaps without encoding (``sum over gaps of ((g - 1) // M + 1)``)."""
    mask = check_bool_mask(mask)
    B = check_int(B, "B", 1, MAX_B)
    M = (1 << B) - 1
    out = np.zeros(mask.shape[0], dtype=np.int64)
    for i, row in enumerate(mask):
        p = np.flatnonzero(row)
        gaps = np.diff(np.concatenate(([-1], p)))
        out[i] = B * int(np.sum((gaps - 1) // M + 1))
    return out


# ---------------------------------------------------------------------------------------
# enumerative code
# ---------------------------------------------------------------------------------------
def count_field_bits(g: int) -> int:
    """Width of a group's outlier-count field: ``ceil(log2(g + 1))``."""
    return int(g).bit_length()


def rank_subset(offsets) -> int:
    r"""Combinatorial-number-system rank :math:`\sum_{i=1}^{k} \binom{c_i}{i}` of a sorted
    k-subset ``c_1 < ... < c_k`` (0-based offsets); a bijection onto ``[0, C(g, k))``."""
    return sum(math.comb(int(c), i + 1) for i, c in enumerate(offsets))


def unrank_subset(rank: int, k: int, g: int) -> list:
    """Inverse of :func:`rank_subset` for k-subsets of ``range(g)`` (greedy: for i = k..1 the
    largest c with ``C(c, i) <= rank``)."""
    out = []
    c = g
    for i in range(k, 0, -1):
        c -= 1
        while c >= 0 and math.comb(c, i) > rank:
            c -= 1
        if c < 0:
            raise ValueError("corrupt index stream: enumerative rank out of range")
        rank -= math.comb(c, i)
        out.append(c)
    if rank != 0:
        raise ValueError("corrupt index stream: enumerative rank out of range")
    return out[::-1]


def _groups(n: int, g: int):
    for s in range(0, n, g):
        yield s, min(g, n - s)


def enum_encode(mask, g: int) -> IndexStream:
    """Enumerative code of every row of ``mask`` (m, n) in groups of ``g`` (1..64) positions.

    Per group of length ``L`` (``g``, or ``n mod g`` for the last): the count ``k`` in
    ``ceil(log2(L + 1))`` bits, then :func:`rank_subset` in ``ceil(log2 C(L, k))`` bits.

    Raises
    ------
    TypeError, ValueError
        ``mask`` not a 2-D boolean array; ``g`` not an integer in 1..64.
    """
    mask = check_bool_mask(mask)
    g = check_int(g, "g", 1, MAX_GROUP)
    m, n = mask.shape
    w = _BitWriter()
    offsets = np.zeros(m + 1, dtype=np.int64)
    for i in range(m):
        for s, L in _groups(n, g):
            sub = np.flatnonzero(mask[i, s:s + L])
            k = len(sub)
            w.write(k, count_field_bits(L))
            w.write(rank_subset(sub), (math.comb(L, k) - 1).bit_length())
        offsets[i + 1] = len(w)
    return IndexStream(w.tobytes(), offsets, mask.shape)


def enum_decode(data, offsets, n: int, g: int) -> np.ndarray:
    """Inverse of :func:`enum_encode`: the boolean mask (m, n).

    Raises
    ------
    ValueError
        A corrupt stream (a count larger than the group, a rank out of range, a row whose
        fields do not end exactly at its offset).
    """
    g = check_int(g, "g", 1, MAX_GROUP)
    n = check_int(n, "n", 0, 2**40)
    m = np.asarray(offsets).shape[0] - 1
    data, offsets = check_index_stream(data, offsets, m)
    mask = np.zeros((m, n), dtype=bool)
    for i in range(m):
        bit = int(offsets[i])
        for s, L in _groups(n, g):
            cw = count_field_bits(L)
            k = _read(data, bit, cw)
            bit += cw
            if k > L:
                raise ValueError(f"corrupt index stream: row {i} group at {s} claims {k} > {L} outliers")
            rw = (math.comb(L, k) - 1).bit_length()
            r = _read(data, bit, rw)
            bit += rw
            for c in unrank_subset(r, k, L):
                mask[i, s + c] = True
        if bit != offsets[i + 1]:
            raise ValueError(f"corrupt index stream: row {i} ends at bit {bit}, offsets say {offsets[i + 1]}")
    return mask


def enum_bits(mask, g: int) -> np.ndarray:
    """Exact enumerative-code bits of each row (m,), without encoding."""
    mask = check_bool_mask(mask)
    g = check_int(g, "g", 1, MAX_GROUP)
    m, n = mask.shape
    out = np.zeros(m, dtype=np.int64)
    for i in range(m):
        for s, L in _groups(n, g):
            k = int(mask[i, s:s + L].sum())
            out[i] += count_field_bits(L) + (math.comb(L, k) - 1).bit_length()
    return out


# ---------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------
def _encode_mask_with(codec, mask, code, param) -> IndexStream:
    """The dispatch of :func:`encode_mask` over ``codec`` (a module with ``gap_encode`` /
    ``enum_encode``: this one, or :mod:`fast.quantizers.index_coding`)."""
    check_choice(code, "index_code", CODES)
    return codec.gap_encode(mask, param) if code == "gap" else codec.enum_encode(mask, param)


def _decode_mask_with(codec, data, offsets, n, code, param, counts) -> np.ndarray:
    """The dispatch of :func:`decode_mask` over ``codec`` (see :func:`_encode_mask_with`)."""
    check_choice(code, "index_code", CODES)
    if code == "gap":
        if counts is None:
            raise ValueError("the gap code does not store the outlier counts: pass counts=(m,) or an int")
        return codec.gap_decode(data, offsets, counts, n, param)
    return codec.enum_decode(data, offsets, n, param)


def encode_mask(mask, code: str = "gap", param: int = 5) -> IndexStream:
    """``gap_encode(mask, B=param)`` or ``enum_encode(mask, g=param)``."""
    return _encode_mask_with(sys.modules[__name__], mask, code, param)


def decode_mask(data, offsets, n: int, code: str = "gap", param: int = 5, counts=None) -> np.ndarray:
    """Inverse of :func:`encode_mask` (``counts`` per row needed by the gap code only)."""
    return _decode_mask_with(sys.modules[__name__], data, offsets, n, code, param, counts)
