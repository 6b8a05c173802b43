"""CUDA trellis decode and fused decode-matvec (fast.cuda.trellis_decode) vs quipref.

GPU tests (marked ``gpu``; ``pytest -m gpu tests/gpu/test_trellis_decode_gpu.py``):

* ``decode`` must equal ``trellis.decode(codes).astype(float32)`` exactly (the module
  docstring of fast.cuda.trellis_decode argues why the GPU computes the same float64).
* ``MatvecPlan(z)`` is compared with two float64 references built from quipref's
  decode (never from the code under test):

  1. the *model*: the same products the kernel forms, in exact arithmetic:
     ``outscale * sum_j Cq_ij zq_j`` with Cq the fp16 weights the kernel feeds to the
     tensor cores (the unscaled code values of a scale = 1 trellis: 1MAD as the
     integers u - 510, 3INST exact, HYB rounded to fp16), zq = fp16(z) and outscale =
     float32(scale) (1MAD: float32(scale / 147.800537109375)). The products are exact in
     fp32, so the only error is the fp32 accumulation: each output is a sum of n
     products formed by mma steps (each adds 16 products to the accumulator: <= 16
     roundings, tensor cores truncate, so u = 2^-23), n / 16 accumulator steps, at most
     n / 16 partial sums added in the cross-warp reduction and the final multiply by
     outscale. First-order analysis: |y - model| <= N u S' with N = 16 + 2 n / 16 + 2 and
     S' = outscale * sum_j |Cq_ij| |zq_j|; we allow a factor 2 for second-order terms.
     A single wrong weight moves y by about S' / n, above this bound for every n tested
     (N u < 1 / n up to n ~ 2^11.5; at n = 4096 the margin is 4x).
  2. the plain reference ``z @ trellis.decode(codes).T``, with the looser bound that
     adds the input rounding: HYB weights 2^-11 relative (+ 2^-25 scale absolute when a
     LUT entry is below the fp16 normal range), float32 z 2^-11 relative (+ 2^-25
     absolute), and the 2^-24 of outscale; i.e. (e_w + e_z + e_w e_z + 2^-24 + N u) S
     + absolute terms, S = sum_j |w_ij| |z_j|.

  Outputs are poisoned (NaN) before each launch; codes are random uint16 words (every
  word string is a valid tail-biting stream), so no Viterbi is needed.

CPU tests (not marked: they run in the default suite): the kernel's data flow is
emulated in NumPy from ``relayout_codes`` and the window plan (the Python mirror of
the .cu's constexpr tables, checked equal to them when the source was written) and
must reproduce the reference states and matvec exactly; the arithmetic identities the
kernel relies on (the folded HYB sign, the 1MAD dp4a trick, the 3INST fp16 sum) are
checked on all 2^16 states.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fast.cuda import trellis_decode as TD
from fast.cuda._compile import gpu_available
from quipref.quantizers import _trellis_codes as codes_ref
from quipref.quantizers.trellis import Trellis, _unpack

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU visible to CuPy")

MATVEC_CODES = ("hyb", "1mad", "3inst")
U32 = 2.0**-23  # fp32 unit roundoff with truncation (tensor cores)


# ---------------------------------------------------------------------------------------
# Domain objects
# ---------------------------------------------------------------------------------------

def make_trellis(code, k, *, V=None, Q=9, scale=0.37, tail_biting=True, seed=0):
    """A trellis with an explicit random HYB LUT (no k-means: fast)."""
    V = V or (2 if code == "hyb" else 1)
    lut = None
    if code == "hyb":
        lut = np.random.default_rng(seed).standard_normal((2**Q, V)) * 0.97
        lut[0, 0] = 3e-6  # one entry below the fp16 normal range (subnormal path)
    return Trellis(16, k, V, code, Q=Q, tile=(16, 16), tail_biting=tail_biting,
                   scale=scale, lut=lut)


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def random_codes(rng, t, m, n):
    return rng.integers(0, 65536, size=(m // 16, (n // 16) * t.words_per_tile), dtype=np.uint16)


def unscaled(t):
    """The same trellis with scale 1: its value table is the unscaled code C."""
    return Trellis(t.L, t.k, t.V, t.code, Q=t.Q, tile=t.tile, tail_biting=t.tail_biting,
                   scale=1.0, lut=t.lut)


def kernel_weights(t, codes):
    """(Cq, outscale): the fp16 weights the matvec kernel multiplies, as float64, and
    its output scale, from quipref's decode of the scale-1 trellis."""
    C = unscaled(t).decode(codes)
    if t.code == "1mad":
        Cq = np.rint(C * codes_ref.MAD1_DIVISOR)  # the integers u - 510
        assert np.allclose(Cq, C * codes_ref.MAD1_DIVISOR, rtol=0, atol=1e-9)
        outscale = float(np.float32(t.scale / codes_ref.MAD1_DIVISOR))
    else:
        Cq = C.astype(np.float16).astype(np.float64)  # exact for 3INST
        outscale = float(np.float32(t.scale))
    return Cq, outscale


# ---------------------------------------------------------------------------------------
# CPU: the kernel's data flow in NumPy
# ---------------------------------------------------------------------------------------

def _lane_run(unit, k, g, r):
    """Own words of lane group g for tile r of a unit, then the spill word."""
    own = [int(unit[(g * k + i) * TD.RT + r]) for i in range(k)]
    sp = int(unit[(((g + 1) & 7) * k) * TD.RT + r])
    return own + [sp]


# (A register, RR = tile row 2g + RR, S = slot: K pair d or d + 4)
_AREGS = ((0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 1, 1))


def emulate_fragments(t, codes):
    """Per tile, the 16 x 16 A matrix (fragment coordinates) of states the kernel
    decodes, and the maps fragment row -> tile row, fragment column -> tile column.

    Returns states (MT2, NJ, 2, 16, 16) int64 in fragment coordinates (-1 = never set),
    frag_row_to_tile (16,), frag_col_to_tile (16,).
    """
    k, V = t.k, t.V
    MT, NW = codes.shape
    NJ = NW // (16 * k)
    flat = TD.relayout_codes(codes, k, np)
    UW = 16 * k
    NI = (MT + 1) // 2
    assert flat.size == (NI * NJ + TD.SPARE_UNITS) * UW
    states = np.full((NI, NJ, TD.RT, 16, 16), -1, dtype=np.int64)
    for I in range(NI):
        for j in range(NJ):
            unit = flat[(I * NJ + j) * UW:(I * NJ + j + 1) * UW]
            for r in range(TD.RT):
                for lane in range(32):
                    g, d = lane >> 2, lane & 3
                    run = _lane_run(unit, k, g, r)
                    for _, RR, S in _AREGS:
                        frow, fpair = g + 8 * RR, d + 4 * S
                        for e in range(2):
                            wt = RR * 4 + S * 2 + (e if V == 1 else 0)
                            s = TD._window_state(run, k, V, wt, d)
                            assert states[I, j, r, frow, 2 * fpair + e] == -1
                            states[I, j, r, frow, 2 * fpair + e] = s
    frow_to_tile = np.array([2 * g for g in range(8)] + [2 * g + 1 for g in range(8)])
    fcol_to_tile = np.array([2 * TD._pi(k, p) + e for p in range(8) for e in range(2)])
    return states, frow_to_tile, fcol_to_tile


def reference_states(t, codes):
    """(MT, NJ, 16, 16) state of every weight in tile coordinates (V = 2: both weights of
    a step carry the step's state)."""
    MT, NW = codes.shape
    W = t.words_per_tile
    NJ = NW // W
    s = _unpack(codes.reshape(MT * NJ, W).astype(np.uint16), t.L, t.kV, t.n_steps, t.tail_biting)
    if t.V == 2:
        s = np.repeat(s, 2, axis=1)
    return s.reshape(MT, NJ, 16, 16)


@settings(max_examples=12)
@given(k=st.sampled_from([2, 3, 4]), V=st.sampled_from([1, 2]), mt=st.integers(1, 3),
       nj=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_relayout_and_windows_reproduce_the_reference_states(k, V, mt, nj, seed):
    """Every state the kernel extracts (relayout + window plan, per lane) equals the
    reference unpack, every tile position is produced exactly once, and the fragment
    maps are permutations; the pad tile row (odd m / 16) decodes zero words."""
    t = make_trellis("hyb" if V == 2 else "1mad", k)
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, t, 16 * mt, 16 * nj)
    states, frow, fcol = emulate_fragments(t, codes)
    assert sorted(frow) == list(range(16)) and sorted(fcol) == list(range(16))
    assert (states >= 0).all()
    NI, NJ = states.shape[:2]
    tiles = np.empty((2 * NI, NJ, 16, 16), dtype=np.int64)
    for r in range(TD.RT):
        tiles[r::2][:, :, frow[:, None], fcol[None, :]] = states[:, :, r]
    ref = reference_states(t, codes)
    np.testing.assert_array_equal(tiles[:mt], ref)
    if mt % 2:
        zero = reference_states(t, np.zeros((1, codes.shape[1]), dtype=np.uint16))
        np.testing.assert_array_equal(tiles[mt:], zero)


@settings(max_examples=8)
@given(code=st.sampled_from(MATVEC_CODES), k=st.sampled_from([2, 3, 4]),
       mt=st.integers(1, 3), nj=st.integers(1, 3), b=st.integers(1, 8),
       seed=st.integers(0, 2**32 - 1))
def test_fragment_mma_emulation_matches_reference_matvec(code, k, mt, nj, b, seed):
    """The m16n8k16 fragment semantics (A = decoded tile in fragment coordinates, B[2p+e,
    col] = z[col, 16 j + 2 PI(p) + e], D row g -> tile row 2g, row g + 8 -> 2g + 1)
    reproduce z @ W^T of quipref's decode exactly (float64, same values)."""
    t = make_trellis(code, k)
    rng = np.random.default_rng(seed)
    m, n = 16 * mt, 16 * nj
    codes = random_codes(rng, t, m, n)
    z = rng.standard_normal((b, n))
    states, frow, fcol = emulate_fragments(t, codes)
    table = t.value_table()  # (2^16, V): scale * C[state]
    NI, NJ = states.shape[:2]
    y = np.zeros((b, 32 * NI))
    for I in range(NI):
        for j in range(NJ):
            for r in range(TD.RT):
                A = np.empty((16, 16))
                for col in range(16):
                    comp = (fcol[col] & 1) if t.V == 2 else 0  # V = 2: step component
                    A[:, col] = table[states[I, j, r, :, col], comp]
                B = z[:, 16 * j + fcol].T  # (16 K, b)
                D = A @ B  # (16 frag rows, b)
                y[:, (2 * I + r) * 16 + frow] += D.T
    want = z @ t.decode(codes).T
    np.testing.assert_allclose(y[:, :m], want, rtol=1e-12, atol=1e-12)


def test_kernel_arithmetic_identities_on_all_states():
    """The bit tricks of the kernel, emulated with NumPy integer / float16 arithmetic,
    give the reference code values on all 2^16 states."""
    s = np.arange(2**16, dtype=np.uint64)
    M = np.uint64(0xFFFFFFFF)
    # HYB: entry e = (h >> 6) & 1023 of the 1024-row table = LUT row with the sign folded
    lut = np.random.default_rng(3).standard_normal((512, 2))
    h = (s * s + s) & M
    e = ((h & np.uint64(0xFFC0)) * np.uint64(2)) >> np.uint64(7)  # byte offset / 128
    lut2 = TD._hyb_lut2(lut).view(np.float16).reshape(1024, 2).astype(np.float64)
    want = codes_ref.code_hyb(s.astype(np.int64), lut).astype(np.float16).astype(np.float64)
    np.testing.assert_array_equal(lut2[e.astype(np.int64)], want)
    # 1MAD: dp4a(x, 0x01010101, 0x64006400) + (dp4a(x', ...) << 16) is half2(1024 + u,
    # 1024 + u'); subtracting 1534 in fp16 gives u - 510 exactly
    x = (np.uint64(codes_ref.MAD1_A) * s + np.uint64(codes_ref.MAD1_B)) & M
    u = sum((x >> np.uint64(8 * i)) & np.uint64(0xFF) for i in range(4))
    low = (np.uint64(0x6400) + u).astype(np.uint16)  # the low half of the packed word
    assert int(u.max()) < 1024
    v = (low.view(np.float16) + np.float16(-1534.0)).astype(np.float64)
    np.testing.assert_array_equal(v, u.astype(np.float64) - 510)
    np.testing.assert_array_equal(v / codes_ref.MAD1_DIVISOR, codes_ref.code_1mad(s.astype(np.int64)))
    assert np.uint32(0xE5FE).astype(np.uint16).view(np.float16) == np.float16(-1534.0)
    # 3INST: PRMT 0x5410 / 0x7632 pick the low / high halves; their fp16 sum is the code
    y = (((np.uint64(codes_ref.INST3_A) * s + np.uint64(codes_ref.INST3_B)) & M)
         & np.uint64(codes_ref.INST3_MASK)) ^ np.uint64(codes_ref.INST3_XOR)
    lo = (y & np.uint64(0xFFFF)).astype(np.uint16).view(np.float16)
    hi = (y >> np.uint64(16)).astype(np.uint16).view(np.float16)
    np.testing.assert_array_equal((lo + hi).astype(np.float64), codes_ref.code_3inst(s.astype(np.int64)))


def test_matvec_support_and_errors_without_gpu():
    np_codes = np.zeros((1, 32), dtype=np.uint16)
    ok = make_trellis("hyb", 2)
    assert TD.matvec_support(ok) is None
    bad = [Trellis(16, 2, 1, "gaussian", seed=0), Trellis(12, 2, 1, "1mad"),
           Trellis(16, 2, 1, "1mad", tile=(8, 32)), Trellis(16, 2, 1, "1mad", tail_biting=False),
           Trellis(16, 5, 1, "1mad"), Trellis(16, 1, 1, "3inst"),
           make_trellis("hyb", 2, V=1), make_trellis("hyb", 2, Q=8)]
    for t in bad:
        reason = TD.matvec_support(t)
        assert isinstance(reason, str) and reason
        with pytest.raises(ValueError):
            TD.MatvecPlan(t, np_codes, (16, 16))
    with pytest.raises(TypeError):
        TD.matvec_support("not a trellis")
    with pytest.raises(TypeError):  # host codes: the CUDA path needs CuPy
        TD.MatvecPlan(ok, np_codes, (16, 16))
    with pytest.raises(TypeError):
        TD.decode(ok, np_codes)
    with pytest.raises(ValueError):
        TD.decode(Trellis(16, 2, 1, "gaussian", seed=0), np_codes)


# ---------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


DECODE_CASES = (
    [("1mad", k, 1, True) for k in (1, 2, 3, 4, 8)]
    + [("3inst", k, 1, True) for k in (2, 3, 4, 7)]
    + [("hyb", k, 2, True) for k in (2, 3, 4, 8)]
    + [("hyb", 2, 1, True), ("hyb", 3, 1, True)]
    + [("1mad", 2, 1, False), ("3inst", 3, 1, False), ("hyb", 2, 2, False), ("hyb", 4, 2, False)]
)
DECODE_SHAPES = [(16, 16), (48, 80), (256, 4096), (32, 16)]


@gpu
@needs_gpu
@pytest.mark.parametrize("code,k,V,tb", DECODE_CASES)
@pytest.mark.parametrize("shape", DECODE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_decode_equals_reference(cp, code, k, V, tb, shape):
    t = make_trellis(code, k, V=V, tail_biting=tb, scale=0.37 + k / 100)
    rng = np.random.default_rng(_seed(code, k, V, tb, shape))
    codes = random_codes(rng, t, *shape)
    want = t.decode(codes).astype(np.float32)
    out = cp.full(shape, np.nan, dtype=cp.float32)
    got = TD.decode(t, cp.asarray(codes), out=out)
    assert got is out
    got = got.get()
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"{len(bad)} of {got.size} values differ, first at {tuple(bad[0])}: "
                           f"got {got[tuple(bad[0])]!r}, want {want[tuple(bad[0])]!r}")


@gpu
@needs_gpu
def test_decode_other_dtypes_and_errors(cp):
    t = make_trellis("3inst", 2)
    codes = random_codes(np.random.default_rng(1), t, 32, 48)
    want = t.decode(codes).astype(np.float32)
    got = TD.decode(t, cp.asarray(codes.astype(np.int32)))  # any integer dtype in range
    np.testing.assert_array_equal(got.get(), want)
    bad = codes.astype(np.int32)
    bad[0, 0] = -1                                 # a word outside [0, 65535]
    with pytest.raises(ValueError):
        TD.decode(t, cp.asarray(bad))
    with pytest.raises(TypeError):
        TD.decode(t, cp.asarray(codes, dtype=cp.float32))
    with pytest.raises(ValueError):
        TD.decode(t, cp.asarray(codes[:, :-1]))
    with pytest.raises(ValueError):
        TD.decode(t, cp.asarray(codes), out=cp.empty((32, 47), dtype=cp.float32))
    with pytest.raises(TypeError):
        TD.decode(t, cp.asarray(codes), out=cp.empty((32, 48), dtype=cp.float64))
    with pytest.raises(ValueError):
        TD.decode(Trellis(16, 2, 1, "gaussian", seed=0), cp.asarray(codes))


class Reference:
    """quipref's decode of one (trellis, codes) pair, computed once: W (scaled, float64),
    the kernel's fp16 weights Cq and its outscale (module docstring)."""

    def __init__(self, t, codes):
        self.t = t
        self.n = codes.shape[1] // t.words_per_tile * 16
        self.W = t.decode(codes)
        self.Cq, self.outscale = kernel_weights(t, codes)

    def bounds(self, z):
        """(model, tol_model, ref, tol_ref) for z (b, n), elementwise."""
        t, n, W, Cq = self.t, self.n, self.W, self.Cq
        zq = z.astype(np.float16).astype(np.float64)
        model = self.outscale * (zq @ Cq.T)
        N = 16 + 2 * (n // 16) + 2
        tol_model = 2.0 * N * U32 * self.outscale * (np.abs(zq) @ np.abs(Cq).T) + 1e-30
        z64 = z.astype(np.float64)
        ref = z64 @ W.T
        S = np.abs(z64) @ np.abs(W).T
        e_w = 2.0**-11 if t.code == "hyb" else 0.0
        e_z = 2.0**-11 if z.dtype == np.float32 else 0.0
        tol_ref = (e_w + e_z + e_w * e_z + 2.0**-24 + 2.0 * N * U32) * S
        if e_w:  # LUT entries below the fp16 normal range: 2^-25 absolute (times scale)
            tol_ref = tol_ref + 2.0**-25 * t.scale * np.abs(z64).sum(axis=1, keepdims=True)
        if e_z:  # z below the fp16 normal range
            tol_ref = tol_ref + 2.0**-25 * np.abs(W).sum(axis=1)[None, :]
        return model, tol_model, ref, tol_ref + 1e-30


def _check_matvec(got, ref, z, what=""):
    model, tol_m, want_r, tol_r = ref.bounds(z)
    assert not np.isnan(got).any(), f"{what}: {np.isnan(got).sum()} outputs never written"
    for name, want, tol in (("model", model, tol_m), ("reference", want_r, tol_r)):
        err = np.abs(got - want)
        worst = np.unravel_index(np.argmax(err / tol), err.shape)
        assert (err <= tol).all(), (
            f"{what}: {int((err > tol).sum())} of {err.size} outputs off the {name}; worst "
            f"{worst}: got {got[worst]!r}, want {want[worst]!r}, |err| {err[worst]:.3e} > "
            f"tol {tol[worst]:.3e} (max err/tol {float((err / tol).max()):.2f})")


MATVEC_SHAPES = [(16, 16), (48, 80), (96, 528), (256, 4096)]


@gpu
@needs_gpu
@pytest.mark.parametrize("code", MATVEC_CODES)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("zdtype", [np.float16, np.float32], ids=["z16", "z32"])
@pytest.mark.parametrize("shape", MATVEC_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matvec_matches_reference(cp, code, k, zdtype, shape):
    m, n = shape
    t = make_trellis(code, k, scale=0.21 + 0.1 * k)
    rng = np.random.default_rng(_seed(code, k, shape))
    codes = random_codes(rng, t, m, n)
    plan = TD.MatvecPlan(t, cp.asarray(codes), shape)
    ref = Reference(t, codes)
    for b in (1, 2, 3, 5, 8):
        z = rng.standard_normal((b, n)).astype(zdtype)
        out = cp.full((b, m), np.nan, dtype=cp.float32)
        got = plan(cp.asarray(z), out=out)
        assert got is out
        _check_matvec(got.get().astype(np.float64), ref, z, f"{code} k={k} {shape} b={b}")


@gpu
@needs_gpu
@pytest.mark.parametrize("code", MATVEC_CODES)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("shape", [(96, 528), (48, 80), (64, 256)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_matvec_every_split_between_warps(cp, code, k, shape):
    """Force 1..many active warps: rows split across warps (partials, counters, the
    last-arriver reduction), warps spanning several row groups, complete rows. Repeated
    launches are bitwise identical (deterministic reduction; counters reset)."""
    m, n = shape
    t = make_trellis(code, k)
    rng = np.random.default_rng(7 + k)
    codes = random_codes(rng, t, m, n)
    plan = TD.MatvecPlan(t, cp.asarray(codes), shape)
    ref = Reference(t, codes)
    for b in (1, 3, 8):
        z = rng.standard_normal((b, n)).astype(np.float16)
        zd = cp.asarray(z)
        for warps in sorted({1, 2, 3, 5, 7, 13, 64, plan.U - 1, plan.U, plan.U + 5}):
            if warps < 1:
                continue
            outs = []
            for _ in range(2):
                y = cp.full((b, m), np.nan, dtype=cp.float32)
                plan._launch(zd, y, max_warps=warps)
                outs.append(y.get())
            np.testing.assert_array_equal(outs[0], outs[1])
            _check_matvec(outs[0].astype(np.float64), ref, z,
                          f"{code} k={k} {shape} b={b} warps={warps}")
        cp.cuda.Device().synchronize()


@gpu
@needs_gpu
@settings(max_examples=10)
@given(code=st.sampled_from(MATVEC_CODES), k=st.sampled_from([2, 3, 4]),
       mt=st.integers(1, 7), nj=st.integers(1, 40), b=st.integers(1, 8),
       z32=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_matvec_random_shapes(cp, code, k, mt, nj, b, z32, seed):
    m, n = 16 * mt, 16 * nj
    t = make_trellis(code, k, scale=0.05 + (seed % 100) / 50)
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, t, m, n)
    z = (rng.standard_normal((b, n)) * 3).astype(np.float32 if z32 else np.float16)
    y = TD.MatvecPlan(t, cp.asarray(codes), (m, n))(cp.asarray(z))
    _check_matvec(y.get().astype(np.float64), Reference(t, codes), z, f"{code} k={k} {(m, n)} b={b}")


@gpu
@needs_gpu
@settings(max_examples=10)
@given(code=st.sampled_from(MATVEC_CODES), k=st.sampled_from([2, 3, 4]), V=st.sampled_from([1, 2]),
       mt=st.integers(1, 6), nj=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_decode_random_shapes(cp, code, k, V, mt, nj, seed):
    if code != "hyb":
        V = 1
    t = make_trellis(code, k, V=V, scale=0.1 + (seed % 97) / 13)
    codes = random_codes(np.random.default_rng(seed), t, 16 * mt, 16 * nj)
    np.testing.assert_array_equal(TD.decode(t, cp.asarray(codes)).get(),
                                  t.decode(codes).astype(np.float32))


@gpu
@needs_gpu
def test_matvec_batches_beyond_8_vectors_and_errors(cp):
    t = make_trellis("hyb", 2)
    rng = np.random.default_rng(5)
    m, n = 64, 160
    codes = random_codes(rng, t, m, n)
    plan = TD.MatvecPlan(t, cp.asarray(codes), (m, n))
    ref = Reference(t, codes)
    z = rng.standard_normal((11, n)).astype(np.float16)
    _check_matvec(plan(cp.asarray(z)).get().astype(np.float64), ref, z, "b=11")
    y1 = plan(cp.asarray(z[3]))  # 1-D in, 1-D out
    assert y1.shape == (m,)
    _check_matvec(y1.get()[None].astype(np.float64), ref, z[3:4], "1-D")
    zs = cp.asarray(np.ascontiguousarray(rng.standard_normal((4, 2 * n)).astype(np.float32)))[:, ::2]
    _check_matvec(plan(zs).get().astype(np.float64), ref, zs.get(), "strided z")
    with pytest.raises(ValueError):
        plan(cp.zeros((2, n + 16), dtype=cp.float16))
    with pytest.raises(TypeError):
        plan(cp.zeros((2, n), dtype=cp.float64))
    with pytest.raises(TypeError):
        plan(np.zeros((2, n), dtype=np.float16))
    with pytest.raises(ValueError):
        plan(cp.zeros((2, n), dtype=cp.float16), out=cp.empty((2, m + 1), dtype=cp.float32))
    with pytest.raises(ValueError):
        TD.MatvecPlan(t, cp.asarray(codes), (m, n + 16))
    with pytest.raises(ValueError):
        TD.MatvecPlan(t, cp.asarray(codes), (m + 16, n))


@gpu
@needs_gpu
def test_matvec_inside_cuda_graph(cp):
    """_launch is capture-safe: a captured launch replays to the same result."""
    t = make_trellis("hyb", 2)
    rng = np.random.default_rng(13)
    m, n = 256, 4096
    codes = random_codes(rng, t, m, n)
    plan = TD.MatvecPlan(t, cp.asarray(codes), (m, n))
    z = cp.asarray(rng.standard_normal((1, n)).astype(np.float16))
    want = plan(z).get()
    stream = cp.cuda.Stream(non_blocking=True)
    y = cp.full((1, m), np.nan, dtype=cp.float32)
    with stream:
        plan._launch(z, y)  # workspace for this stream, before capture
        stream.synchronize()
        y.fill(np.nan)
        stream.begin_capture()
        plan._launch(z, y)
        graph = stream.end_capture()
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_array_equal(y.get(), want)


# ---------------------------------------------------------------------------------------
# The shared-memory ring of the matvec; its CPU emulation (ring index arithmetic) is
# tests/test_trellis_ring_emulation.py
# ---------------------------------------------------------------------------------------

# GPU: m = 80, 112 (odd tile-row count: a pad row, m not a multiple of 32), odd NJ
# (65, 257 units per row group); split warps cut row groups in the middle and many
# units per warp make the ring wrap many times
RING_SHAPES = [(80, 1040), (112, 4112)]


def _ring_warp_counts(U):
    return sorted({1, 2, 5, 13, max(1, U // 7), U - 1, U} - {0})


@gpu
@needs_gpu
@pytest.mark.parametrize("code", MATVEC_CODES)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("zdtype", [np.float16, np.float32], ids=["z16", "z32"])
def test_ring_matvec_matches_reference_for_warp_splits(cp, code, k, zdtype):
    """Rings that wrap many times, against the float64 references, for several warp
    splits, b = 1 and 8; a repeated launch is bitwise identical (deterministic split-K
    reduction, counters reset)."""
    t = make_trellis(code, k, scale=0.17 + 0.1 * k)
    rng = np.random.default_rng(_seed("ring", code, k, str(zdtype)))
    for shape in RING_SHAPES:
        m, n = shape
        codes = random_codes(rng, t, m, n)
        dc = cp.asarray(codes)
        plan = TD.MatvecPlan(t, dc, shape)
        ref = Reference(t, codes)
        for b in (1, 8):
            z = (rng.standard_normal((b, n)) * 2).astype(zdtype)
            zd = cp.asarray(z)
            got = plan(zd, out=cp.full((b, m), np.nan, dtype=cp.float32)).get()
            _check_matvec(got.astype(np.float64), ref, z, f"ring {code} k={k} {shape} b={b}")
            for warps in _ring_warp_counts(plan.U):
                outs = []
                for p in (plan, plan):
                    y = cp.full((b, m), np.nan, dtype=cp.float32)
                    p._launch(zd, y, max_warps=warps)
                    outs.append(y.get())
                what = f"ring {code} k={k} {shape} b={b} warps={warps}"
                _check_matvec(outs[0].astype(np.float64), ref, z, what)
                np.testing.assert_array_equal(outs[0], outs[1], err_msg=what)
        cp.cuda.Device().synchronize()


@gpu
@needs_gpu
@settings(max_examples=16, deadline=None)
@given(code=st.sampled_from(MATVEC_CODES), k=st.sampled_from([2, 3, 4]),
       mt=st.integers(1, 7), nj=st.integers(1, 40), b=st.sampled_from([1, 2, 5, 8]),
       z32=st.booleans(), warps=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_matvec_random_shapes_and_warp_splits(cp, code, k, mt, nj, b, z32, warps, seed):
    m, n = 16 * mt, 16 * nj
    t = make_trellis(code, k, scale=0.05 + (seed % 100) / 50)
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, t, m, n)
    z = (rng.standard_normal((b, n)) * 3).astype(np.float32 if z32 else np.float16)
    plan = TD.MatvecPlan(t, cp.asarray(codes), (m, n))
    zd = cp.asarray(z)
    ref = Reference(t, codes)
    _check_matvec(plan(zd).get().astype(np.float64), ref, z, f"ring {code} k={k} {(m, n)} b={b}")
    y = cp.full((b, m), np.nan, dtype=cp.float32)
    plan._launch(zd, y, max_warps=warps)
    _check_matvec(y.get().astype(np.float64), ref, z, f"ring {code} k={k} {(m, n)} b={b} warps={warps}")
