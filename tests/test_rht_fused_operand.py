"""Host layout of the H_K operand of the fused RHT kernel (rht.cu, ``fused_a_frag``) -- CPU.

``fast.cuda.hadamard._fused_a_host`` builds H_K for the m16n8k16 tensor-core K-stage as
packed sign bits, expanded in the kernel by ``ONE | ((w << r) & 0x80008000)`` (ONE = +1
in fp16 or bf16). These tests re-assemble H_K from the words by the
fragment rules of the PTX ISA (mma.m16n8k16, .f16/.bf16 A operand: element a_i of a
lane with groupID g = lane >> 2 and threadID_in_group q = lane & 3 sits at row g for
i in {0, 1, 4, 5} and g + 8 otherwise, column 2q + (i & 1), plus 8 for i >= 4; a_{2j},
a_{2j+1} are the low and high halves of register j) -- written element by element here,
independently of the vectorised construction -- and emulate the K-stage Y = H_K B from
the fragments, including the zero-padded B rows that the +1 padding relies on.
"""
from __future__ import annotations

import numpy as np
import pytest

from fast.cuda import hadamard as fh
from quipref.hadamard import BASE_SIZES, base_matrix

ONE = {"f16": 0x3C00, "bf16": 0x3F80}


def _halves_to_float(h, kind):
    h = np.asarray(h, dtype=np.uint16)
    if kind == "f16":
        return h.view(np.float16).astype(np.float64)
    return (h.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _element_pos(lane, i):
    """(row, col) inside the 16 x 16 tile of A fragment element a_i of ``lane`` (PTX)."""
    g, q = lane >> 2, lane & 3
    row = g if (i < 2 or 4 <= i < 6) else g + 8
    col = 2 * q + (i & 1) + (8 if i >= 4 else 0)
    return row, col


def _registers(arr, kind, mi, kt, lane):
    """The 4 A registers (uint32) the kernel forms for (mi, kt, lane)."""
    w = int(arr[mi, kt, lane])
    one2 = ONE[kind] | (ONE[kind] << 16)
    return [(one2 | ((w << r) & 0x80008000)) & 0xFFFFFFFF for r in range(4)]  # rht.cu


def _reassemble(arr, kind, K):
    """(KP, KP) float matrix from the fragments; asserts every entry is written once."""
    kt_n = (K + 15) // 16
    kp = 16 * kt_n
    M = np.full((kp, kp), np.nan)
    for mi in range(kt_n):
        for kt in range(kt_n):
            for lane in range(32):
                regs = _registers(arr, kind, mi, kt, lane)
                for i in range(8):
                    half = (regs[i // 2] >> (16 * (i & 1))) & 0xFFFF
                    r, c = _element_pos(lane, i)
                    R, C = mi * 16 + r, kt * 16 + c
                    assert np.isnan(M[R, C]), f"entry ({R}, {C}) written twice"
                    M[R, C] = _halves_to_float([half], kind)[0]
    assert not np.isnan(M).any(), "some entries of H_K are in no fragment"
    return M


def _H(K, transpose):
    H = np.asarray(base_matrix(K), dtype=np.float64)
    return H.T if transpose else H


@pytest.mark.parametrize("kind", ("f16", "bf16"))
@pytest.mark.parametrize("transpose", (False, True))
@pytest.mark.parametrize("K", BASE_SIZES)
def test_rht_fused_a_reassembles_to_h_k(K, transpose, kind):
    """The packed signs give back H_K (or H_K^T) by the PTX fragment rules; every
    padding entry is +1; only the 8 sign bits of the 4 registers are used."""
    kt_n = (K + 15) // 16
    H = _H(K, transpose)
    a2 = fh._fused_a_host(K, transpose)
    assert a2.dtype == np.uint32 and a2.shape == (kt_n, kt_n, 32) and a2.flags.c_contiguous
    assert not (a2 & ~np.uint32(0xF000F000)).any(), "only bits 12-15 and 28-31 are used"
    M2 = _reassemble(a2, kind, K)
    np.testing.assert_array_equal(M2[:K, :K], H)
    pad = np.ones_like(M2, dtype=bool)
    pad[:K, :K] = False
    assert (M2[pad] == 1.0).all()


@pytest.mark.parametrize("K", (12, 52, 172))
def test_rht_fused_a_kstage_emulation(K):
    """Y = H_K B computed tile by tile from the fragments (per m-tile: sum over k-tiles
    of A_tile(mi, kt) @ B_tile(kt)), with B's padding rows K..KP-1 zero as
    fused_zero_pad leaves them, equals H_K B on the K stored rows: the +1 padding
    contributes exact zeros."""
    kt_n = (K + 15) // 16
    kp = 16 * kt_n
    rng = np.random.default_rng(K)
    B = np.zeros((kp, 64))
    B[:K] = rng.standard_normal((K, 64))
    want = _H(K, False) @ B[:K]
    M = _reassemble(fh._fused_a_host(K, False), "f16", K)
    Y = np.zeros((kp, 64))
    for mi in range(kt_n):
        for kt in range(kt_n):
            Y[mi * 16:(mi + 1) * 16] += (M[mi * 16:(mi + 1) * 16, kt * 16:(kt + 1) * 16]
                                         @ B[kt * 16:(kt + 1) * 16])
    np.testing.assert_allclose(Y[:K], want, rtol=0, atol=1e-12)
