"""Fast index coding: the same functions as :mod:`quipref.quantizers.index_coding`, with
the same bitstreams, in Numba, parallel over rows.

Encoding runs in two parallel passes: the exact bit count of every row (so that the row
offsets are a prefix sum), then every row writes its fields into its own range of a
one-byte-per-bit buffer, which :func:`numpy.packbits` packs (``bitorder="little"``, the
reference's layout). Rows never share a buffer entry, so the parallel writes do not race
(rows *do* share bytes of the packed stream when their lengths are not multiples of 8,
which is why the packing is a separate pass). Decoding reads each row from its own bit
offset, rows in parallel; a corrupt stream raises the reference's ``ValueError``.
"""
from __future__ import annotations

import math

import sys

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from quipref.quantizers import index_coding as _ref
from quipref.quantizers.index_coding import *  # noqa: F401,F403
from quipref.quantizers.index_coding import CODES, MAX_B, MAX_GROUP, IndexStream, __all__  # noqa: F401
from quipref._checks import check_bool_mask, check_index_stream, check_int
from quipref._contract import decode_mask_with, encode_mask_with

# binomial coefficients C(a, b) for 0 <= a, b <= 64 (exact: C(64, 32) < 2^63)
_BINOM = np.zeros((MAX_GROUP + 1, MAX_GROUP + 1), dtype=np.int64)
for _a in range(MAX_GROUP + 1):
    for _b in range(_a + 1):
        _BINOM[_a, _b] = math.comb(_a, _b)
# rank width ceil(log2 C(L, k)) and count width ceil(log2(L + 1))
_RANK_W = np.array([[(math.comb(a, b) - 1).bit_length() if b <= a else 0 for b in range(MAX_GROUP + 1)]
                    for a in range(MAX_GROUP + 1)], dtype=np.int64)
_COUNT_W = np.array([a.bit_length() for a in range(MAX_GROUP + 1)], dtype=np.int64)


@njit(cache=True, inline="always")
def _put(bits, pos, value, width):
    for j in range(width):
        bits[pos + j] = (value >> j) & 1
    return pos + width


@njit(cache=True, inline="always")
def _get(data, pos, width):
    v = 0
    for j in range(width):
        t = pos + j
        v |= np.int64((data[t >> 3] >> (t & 7)) & 1) << j
    return v


# -- gap code -------------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def _gap_row_bits(words, B, out):
    """Bits of every row; ``words`` is the mask viewed as uint64 (8 entries per word, entry
    t of a word in byte t, which holds 0 or 1: little-endian), so runs of 8 inliers cost
    one test and each outlier one trailing-zero count."""
    M = (1 << B) - 1
    for i in prange(words.shape[0]):
        prev, s = -1, 0
        for w in range(words.shape[1]):
            v = words[i, w]
            while v != 0:  # one iteration per outlier: byte index of the lowest set bit
                j = 8 * w + (trailing_zeros(v) >> 3)
                s += (j - prev - 1) // M + 1
                prev = j
                v &= v - np.uint64(1)
        out[i] = s * B


@njit(parallel=True, cache=True)
def _gap_write(words, B, offsets, bits):
    M = (1 << B) - 1
    for i in prange(words.shape[0]):
        pos, prev = offsets[i], -1
        for w in range(words.shape[1]):
            v = words[i, w]
            while v != 0:
                j = 8 * w + (trailing_zeros(v) >> 3)
                e = (j - prev - 1) // M
                for _ in range(e):
                    pos = _put(bits, pos, M, B)
                pos = _put(bits, pos, (j - prev - 1) - e * M, B)
                prev = j
                v &= v - np.uint64(1)


def _mask_words(mask: np.ndarray) -> np.ndarray:
    """The boolean mask (m, n) as uint64 words (m, ceil(n / 8)), padded with False."""
    m, n = mask.shape
    if n % 8 or not mask.flags.c_contiguous:
        padded = np.zeros((m, -(-n // 8) * 8), dtype=np.bool_)
        padded[:, :n] = mask
        mask = padded
    return mask.view(np.uint8).view("<u8").reshape(m, -1)


@njit(parallel=True, cache=True)
def _gap_read(data, offsets, counts, B, mask, err, info):
    M = (1 << B) - 1
    n = mask.shape[1]
    for i in prange(mask.shape[0]):
        pos, bit, found = -1, offsets[i], 0
        while found < counts[i]:
            if bit + B > offsets[i + 1]:
                err[i], info[i] = 1, found
                break
            u = _get(data, bit, B)
            bit += B
            if u == M:
                pos += M
                continue
            pos += u + 1
            if pos >= n:
                err[i], info[i] = 2, pos
                break
            mask[i, pos] = True
            found += 1


@njit(parallel=True, cache=True)
def _gap_positions(data, offsets, k, B, out):
    """Positions (m, k) of a stream whose rows all hold k outliers (no checks)."""
    M = (1 << B) - 1
    for i in prange(out.shape[0]):
        pos, bit, found = -1, offsets[i], 0
        while found < k:
            u = _get(data, bit, B)
            bit += B
            if u == M:
                pos += M
            else:
                pos += u + 1
                out[i, found] = pos
                found += 1


def _pack(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits, bitorder="little")


def gap_encode(mask, B: int) -> IndexStream:
    """Same as :func:`quipref.quantizers.index_coding.gap_encode` (identical bytes)."""
    mask = np.ascontiguousarray(check_bool_mask(mask))
    B = check_int(B, "B", 1, MAX_B)
    m = mask.shape[0]
    words = _mask_words(mask)
    rb = np.empty(m, dtype=np.int64)
    _gap_row_bits(words, B, rb)
    offsets = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(rb, out=offsets[1:])
    bits = np.zeros(int(offsets[-1]), dtype=np.uint8)
    _gap_write(words, B, offsets, bits)
    return IndexStream(_pack(bits), offsets, mask.shape)


def gap_decode(data, offsets, counts, n: int, B: int) -> np.ndarray:
    """Same as :func:`quipref.quantizers.index_coding.gap_decode` (same mask, same errors)."""
    B = check_int(B, "B", 1, MAX_B)
    n = check_int(n, "n", 0, 2**40)
    m = np.asarray(offsets).shape[0] - 1
    data, offsets = check_index_stream(data, offsets, m)
    counts = np.ascontiguousarray(np.broadcast_to(np.asarray(counts, dtype=np.int64), (m,)))
    mask = np.zeros((m, n), dtype=bool)
    err = np.zeros(m, dtype=np.int64)
    info = np.zeros(m, dtype=np.int64)
    _gap_read(np.ascontiguousarray(data), offsets, counts, B, mask, err, info)
    bad = np.flatnonzero(err)
    if bad.size:
        i = int(bad[0])
        if err[i] == 1:
            raise ValueError(f"corrupt index stream: row {i} ends after {info[i]} of {counts[i]} outliers")
        raise ValueError(f"corrupt index stream: row {i} decodes position {info[i]} >= n = {n}")
    return mask


def gap_positions(data, offsets, k: int, B: int) -> np.ndarray:
    """Outlier positions (m, k), int64, of a gap-coded stream with k outliers in every row
    (the "position decode": no mask is formed). The stream must be valid (see
    :func:`gap_decode` for a checked decode)."""
    B = check_int(B, "B", 1, MAX_B)
    m = np.asarray(offsets).shape[0] - 1
    data, offsets = check_index_stream(data, offsets, m)
    k = check_int(k, "k", 0, 2**40)
    out = np.empty((m, k), dtype=np.int64)
    _gap_positions(np.ascontiguousarray(data), offsets, k, B, out)
    return out


# -- enumerative code -----------------------------------------------------------------------
@njit(parallel=True, cache=True)
def _enum_row_bits(mask, g, rank_w, count_w, out):
    n = mask.shape[1]
    for i in prange(mask.shape[0]):
        s = 0
        for a in range(0, n, g):
            L = min(g, n - a)
            k = 0
            for j in range(a, a + L):
                k += mask[i, j]
            s += count_w[L] + rank_w[L, k]
        out[i] = s


@njit(parallel=True, cache=True)
def _enum_write(mask, g, rank_w, count_w, binom, offsets, bits):
    n = mask.shape[1]
    for i in prange(mask.shape[0]):
        pos = offsets[i]
        for a in range(0, n, g):
            L = min(g, n - a)
            k, r = 0, 0
            for c in range(L):
                if mask[i, a + c]:
                    k += 1
                    r += binom[c, k]
            pos = _put(bits, pos, k, count_w[L])
            pos = _put(bits, pos, r, rank_w[L, k])


@njit(parallel=True, cache=True)
def _enum_read(data, offsets, g, rank_w, count_w, binom, mask, err, info):
    n = mask.shape[1]
    for i in prange(mask.shape[0]):
        bit = offsets[i]
        for a in range(0, n, g):
            L = min(g, n - a)
            k = _get(data, bit, count_w[L])
            bit += count_w[L]
            if k > L:
                err[i], info[i] = 1, a
                break
            r = _get(data, bit, rank_w[L, k])
            bit += rank_w[L, k]
            c = L
            for t in range(k, 0, -1):
                c -= 1
                while c >= 0 and binom[c, t] > r:
                    c -= 1
                if c < 0:
                    break
                r -= binom[c, t]
                mask[i, a + c] = True
            if c < 0 or r != 0:
                err[i] = 2
                break
        if err[i] == 0 and bit != offsets[i + 1]:
            err[i], info[i] = 3, bit


def enum_encode(mask, g: int) -> IndexStream:
    """Same as :func:`quipref.quantizers.index_coding.enum_encode` (identical bytes)."""
    mask = np.ascontiguousarray(check_bool_mask(mask))
    g = check_int(g, "g", 1, MAX_GROUP)
    m = mask.shape[0]
    rb = np.empty(m, dtype=np.int64)
    _enum_row_bits(mask, g, _RANK_W, _COUNT_W, rb)
    offsets = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(rb, out=offsets[1:])
    bits = np.zeros(int(offsets[-1]), dtype=np.uint8)
    _enum_write(mask, g, _RANK_W, _COUNT_W, _BINOM, offsets, bits)
    return IndexStream(_pack(bits), offsets, mask.shape)


def enum_decode(data, offsets, n: int, g: int) -> np.ndarray:
    """Same as :func:`quipref.quantizers.index_coding.enum_decode` (same mask; a corrupt
    stream raises ``ValueError``)."""
    g = check_int(g, "g", 1, MAX_GROUP)
    n = check_int(n, "n", 0, 2**40)
    m = np.asarray(offsets).shape[0] - 1
    data, offsets = check_index_stream(data, offsets, m)
    mask = np.zeros((m, n), dtype=bool)
    err = np.zeros(m, dtype=np.int64)
    info = np.zeros(m, dtype=np.int64)
    _enum_read(np.ascontiguousarray(data), offsets, g, _RANK_W, _COUNT_W, _BINOM, mask, err, info)
    bad = np.flatnonzero(err)
    if bad.size:
        i = int(bad[0])
        if err[i] == 1:
            raise ValueError(f"corrupt index stream: row {i} group at {info[i]} claims more outliers than "
                             "the group has")
        if err[i] == 2:
            raise ValueError("corrupt index stream: enumerative rank out of range")
        raise ValueError(f"corrupt index stream: row {i} ends at bit {info[i]}, offsets say {offsets[i + 1]}")
    return mask


def encode_mask(mask, code: str = "gap", param: int = 5) -> IndexStream:
    """Same as :func:`quipref.quantizers.index_coding.encode_mask` (the Numba codecs)."""
    return encode_mask_with(sys.modules[__name__], mask, code, param)


def decode_mask(data, offsets, n: int, code: str = "gap", param: int = 5, counts=None) -> np.ndarray:
    """Same as :func:`quipref.quantizers.index_coding.decode_mask` (the Numba codecs)."""
    return decode_mask_with(sys.modules[__name__], data, offsets, n, code, param, counts)
