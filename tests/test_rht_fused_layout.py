"""Host layouts of the H_K operand of the fused RHT kernel (-DRHT_FUSED_A, rht.cu) -- CPU.

``fast.cuda.hadamard._fused_a_host`` builds H_K for the m16n8k16 tensor-core K-stage in
three layouts: 0 row-major halves (default), 1 the A registers in mma fragment order
(one 16-byte load per lane and k-tile), 2 packed sign bits expanded in the kernel by
``ONE | ((w << r) & 0x80008000)``. These tests re-assemble H_K from each layout by the
fragment rules of the PTX ISA (mma.m16n8k16, .f16/.bf16 A operand: element a_i of a
lane with groupID g = lane >> 2 and threadID_in_group q = lane & 3 sits at row g for
i in {0, 1, 4, 5} and g + 8 otherwise, column 2q + (i & 1), plus 8 for i >= 4; a_{2j},
a_{2j+1} are the low and high halves of register j) -- written element by element here,
independently of the vectorised construction -- and emulate the K-stage Y = H_K B from
the fragments, including the zero-padded B rows that layout 2's +1 padding relies on.
The variant builds are also compiled with NVRTC (no GPU needed).
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


def _registers(arr, layout, kind, mi, kt, lane):
    """The 4 A registers (uint32) the kernel forms for (mi, kt, lane)."""
    if layout == 1:
        return [int(arr[mi, kt, lane, r]) for r in range(4)]
    w = int(arr[mi, kt, lane])
    one2 = ONE[kind] | (ONE[kind] << 16)
    return [(one2 | ((w << r) & 0x80008000)) & 0xFFFFFFFF for r in range(4)]  # rht.cu


def _reassemble(arr, layout, kind, K):
    """(KP, KP) float matrix from the fragments; asserts every entry is written once."""
    kt_n = (K + 15) // 16
    kp = 16 * kt_n
    M = np.full((kp, kp), np.nan)
    for mi in range(kt_n):
        for kt in range(kt_n):
            for lane in range(32):
                regs = _registers(arr, layout, kind, mi, kt, lane)
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


@pytest.mark.parametrize("K", BASE_SIZES)
def test_rht_fused_a_layout0_is_row_major(K):
    for kind in ("f16", "bf16"):
        A = fh._fused_a_host(K, False, kind, 0)
        kp = 16 * ((K + 15) // 16)
        assert A.dtype == np.uint16 and A.shape == (kp, kp)
        M = _halves_to_float(A.ravel(), kind).reshape(kp, kp)
        np.testing.assert_array_equal(M[:K, :K], _H(K, False))
        assert not M[K:].any() and not M[:, K:].any()


@pytest.mark.parametrize("kind", ("f16", "bf16"))
@pytest.mark.parametrize("transpose", (False, True))
@pytest.mark.parametrize("K", (12, 28, 36, 60, 116, 172))
def test_rht_fused_a_fragment_layouts_reassemble(K, transpose, kind):
    """Layouts 1 and 2 give back H_K (or H_K^T) by the PTX fragment rules; padding is 0
    (layout 1, as layout 0) or +1 (layout 2)."""
    kt_n = (K + 15) // 16
    H = _H(K, transpose)
    a1 = fh._fused_a_host(K, transpose, kind, 1)
    assert a1.dtype == np.uint32 and a1.shape == (kt_n, kt_n, 32, 4) and a1.flags.c_contiguous
    M1 = _reassemble(a1, 1, kind, K)
    np.testing.assert_array_equal(M1[:K, :K], H)
    assert not M1[K:].any() and not M1[:, K:].any()
    # layout 1 is exactly layout 0's bits, rearranged (bit-identical mma operands)
    a0 = fh._fused_a_host(K, transpose, kind, 0)
    np.testing.assert_array_equal(_halves_to_float(a0.ravel(), kind).reshape(M1.shape), M1)

    a2 = fh._fused_a_host(K, transpose, kind, 2)
    assert a2.dtype == np.uint32 and a2.shape == (kt_n, kt_n, 32) and a2.flags.c_contiguous
    assert not (a2 & ~np.uint32(0xF000F000)).any(), "only bits 12-15 and 28-31 are used"
    M2 = _reassemble(a2, 2, kind, K)
    np.testing.assert_array_equal(M2[:K, :K], H)
    pad = np.ones_like(M2, dtype=bool)
    pad[:K, :K] = False
    assert (M2[pad] == 1.0).all()


@pytest.mark.parametrize("K", (12, 52, 172))
def test_rht_fused_a_kstage_emulation(K):
    """Y = H_K B computed tile by tile from the fragments (per m-tile: sum over k-tiles
    of A_tile(mi, kt) @ B_tile(kt)), with B's padding rows K..KP-1 zero as
    fused_zero_pad leaves them, equals H_K B on the K stored rows for every layout --
    in particular layout 2's +1 padding contributes exact zeros."""
    kt_n = (K + 15) // 16
    kp = 16 * kt_n
    rng = np.random.default_rng(K)
    B = np.zeros((kp, 64))
    B[:K] = rng.standard_normal((K, 64))
    want = _H(K, False) @ B[:K]
    for layout in (0, 1, 2):
        arr = fh._fused_a_host(K, False, "f16", layout)
        if layout == 0:
            M = _halves_to_float(arr.ravel(), "f16").reshape(kp, kp)
        else:
            M = _reassemble(arr, layout, "f16", K)
        Y = np.zeros((kp, 64))
        for mi in range(kt_n):
            for kt in range(kt_n):
                Y[mi * 16:(mi + 1) * 16] += (M[mi * 16:(mi + 1) * 16, kt * 16:(kt + 1) * 16]
                                             @ B[kt * 16:(kt + 1) * 16])
        np.testing.assert_allclose(Y[:K], want, rtol=0, atol=1e-12)


def test_rht_fused_a_layout_option():
    assert fh._fused_a_layout(("-DRHT_FUSED=1",)) == fh._FUSED_A == 0
    assert fh._fused_a_layout(("-DRHT_FUSED=1", "-DRHT_FUSED_A=1")) == 1
    assert fh._fused_a_layout(("-DRHT_FUSED_A=2",)) == 2
    with pytest.raises(ValueError):
        fh._fused_a_layout(("-DRHT_FUSED_A=3",))
    # the default build units carry no layout option: they use the kernel's default
    for opts, _ in fh.builds():
        assert not any(o.startswith("-DRHT_FUSED_A") for o in opts)


def _require_nvrtc():
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # CuPy missing, or libnvrtc cannot be loaded
        pytest.skip(f"NVRTC is not available: {exc}")


@pytest.mark.parametrize("layout", (1, 2))
@pytest.mark.parametrize("unit", (1, 2), ids=("fp16", "fp32"))
def test_rht_fused_a_variant_builds_compile(unit, layout):
    """The variant build units the benchmark and the GPU tests load compile with NVRTC
    and contain every fused kernel."""
    _require_nvrtc()
    from fast.cuda._compile import KERNEL_DIR, nvrtc_compile

    opts = (f"-DRHT_FUSED={unit}", f"-DRHT_FUSED_A={layout}")
    ptx = nvrtc_compile(KERNEL_DIR / "rht.cu", options=opts).decode()
    tag = "h" if unit == 1 else "f"
    missing = [lp for lp in fh._FUSED_LOGP if f".entry rht_fused_{tag}_p{lp}(" not in ptx]
    assert not missing, f"{opts}: no kernels for logp {missing}"
