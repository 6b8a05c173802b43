"""The E8P matvec decode of fast/kernels/e8p.cu (``e8p_decode``), emulated step by step in
NumPy on the tables ``fast.cuda.e8p.decode_tables`` builds, equals the reference codebook on all
65,536 codes and every lane.

The kernel's steps per code (16-bit code c = a << 8 | s in a 32-bit word of two codes):
prmt the byte offsets [lane offset, code byte, 0, 0] of the abs entry of a and the sign
entry of s in the replicated table (row e = 256 bytes: 16 copies x 8-byte abs entry, then
16 copies x 8-byte sign entry), XOR the two 8-byte entries, prmt each byte under the fp16
high byte 0x5C and subtract 264 in fp16. This test mirrors those steps (the replication
layout, the prmt selectors, the fp16 arithmetic, exact here) so that a wrong table or
selector fails on the CPU; the GPU tests (tests/gpu/test_e8p_gpu.py) check the kernel.
"""
import numpy as np
import pytest

from quipref.quantizers.e8p import _unit_codebook

SEL_ABS = (0x6614, 0x6634)   # code 0 / code 1 of the word: [lane byte 0, a byte, 0, 0]
SEL_SGN = (0x6605, 0x6625)   # [lane byte 1, s byte, 0, 0]
SEL_PAIR = (0x4140, 0x4342)  # [x byte 0|2, 0x5C, x byte 1|3, 0x5C]


def prmt(a, b, sel):
    """PTX prmt.b32 (default mode) on uint32 arrays: byte k of the result is byte
    ``(sel >> 4k) & 7`` of the 8-byte value b:a."""
    src = (np.asarray(b, dtype=np.uint64) << np.uint64(32)) | np.asarray(a, dtype=np.uint64)
    out = np.zeros(np.shape(src), dtype=np.uint64)
    for k in range(4):
        idx = (sel >> (4 * k)) & 7
        out |= ((src >> np.uint64(8 * idx)) & np.uint64(0xFF)) << np.uint64(8 * k)
    return out.astype(np.uint32)


def smem_image():
    from fast.cuda.e8p import decode_tables

    tab = decode_tables()                           # (256, 4): abs.x, abs.y, sign.x, sign.y
    img = np.zeros((256, 16, 4), dtype=np.uint32)
    for e in range(256):                       # the kernel's fill: thread e writes row e
        lane = e & 31
        for i in range(16):
            c = (i + lane) & 15
            img[e, c] = tab[e, [0, 1, 0, 1]] if c < 8 else tab[e, [2, 3, 2, 3]]
    return img.reshape(-1).view(np.uint8)


def lds64(img, off):
    assert np.all(off % 8 == 0) and np.all(off + 8 <= img.size)
    w = img.view(np.uint32)
    return w[off // 4], w[off // 4 + 1]


def decode_v4(codes0, codes1, lane, img):
    word = codes0.astype(np.uint32) | (codes1.astype(np.uint32) << np.uint32(16))
    lw = np.uint32((lane & 15) * 8 | ((128 + (lane & 15) * 8) << 8))
    out = []
    for hi in (0, 1):
        A = lds64(img, prmt(word, lw, SEL_ABS[hi]).astype(np.int64))
        S = lds64(img, prmt(word, lw, SEL_SGN[hi]).astype(np.int64))
        x = (A[0] ^ S[0], A[1] ^ S[1])
        w = np.zeros((word.size, 8))
        for wi, (xi, sel) in enumerate(((0, SEL_PAIR[0]), (0, SEL_PAIR[1]), (1, SEL_PAIR[0]), (1, SEL_PAIR[1]))):
            h2 = prmt(x[xi], np.uint32(0x5C5C5C5C), sel)
            lo = (h2 & 0xFFFF).astype(np.uint16).view(np.float16)
            hi16 = (h2 >> 16).astype(np.uint16).view(np.float16)
            w[:, wi] = lo - np.float16(264)      # sub.rn.f16x2: exact here
            w[:, wi + 4] = hi16 - np.float16(264)
        out.append(w)
    return out


@pytest.mark.parametrize("lane", [0, 7, 15, 16, 31])
def test_v4_decode_equals_codebook_on_every_code(lane):
    ref = _unit_codebook()
    img = smem_image()
    assert img.size == 65536
    codes = np.arange(65536, dtype=np.uint32)
    partner = np.roll(codes, 12345 + lane)      # the other code of the 32-bit word
    w0, w1 = decode_v4(codes, partner, lane, img)
    np.testing.assert_array_equal(w0, ref[codes])
    np.testing.assert_array_equal(w1, ref[partner])


def test_v4_lane_offsets_are_conflict_free():
    """The 16 lanes of one LDS.64 phase read 16 distinct bank pairs for any entries."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        e = rng.integers(0, 256, size=16)
        for base in (0, 128):
            off = e * 256 + base + np.arange(16) * 8
            banks = (off // 4) % 32
            assert len(set(banks.tolist())) == 16 and np.all(banks % 2 == 0)
