"""E8P / RVQ on CuPy arrays (fast/kernels/e8p.cu) against the NumPy reference.

* encode: the CUDA search is the float64 scan of fast.quantizers.e8p; the contract is the
  one of tests/parity/test_e8p_parity.py (same distance as the brute force on every input,
  same codes on continuous inputs); decode is bit-identical.
* the fused decode-matvec ``MatvecPlan(q, codes, shape)(z) = z @ W~^T``: z is rounded to
  float16 (relative error <= 2^-11 per entry for |z| in the normal fp16 range), codeword
  entries are exact in fp16, products of two fp16 numbers are exact in fp32 and the
  tensor-core fp32 accumulation of n products errs by at most ~n 2^-22 of sum |z w|
  (allowing for non-IEEE accumulation inside the MMA); RVQ's 1/resid_scale is applied in
  fp32 at the end. So |y - y_ref| <= (2^-11 + n 2^-22) sum_c |z_c| |W~_rc| (+ 1e-30).
  With float16 z the first term vanishes; we keep the bound (it is the larger one only
  by the fp16 rounding term).
* the QuantizedLinear fused pipeline adds the fp32 RHT error, <= ~(log2 n + K sqrt K) 2^-24
  ||x|| per output (fast.incoherence docstring): far below the fp16 term.
"""
from __future__ import annotations

import numpy as np
import pytest

import fast
import quipref
from quipref.quantizers import E8P as RefE8P
from quipref.quantizers import RVQ as RefRVQ

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


def _dist(x, xh):
    return ((x.reshape(-1, 8) - xh.reshape(-1, 8)) ** 2).sum(axis=1)


@pytest.mark.parametrize("rows,scale", [(1, 1.0), (255, 0.7), (4097, 1 / 1.03), (20000, 2.5)])
def test_encode_equals_cpu_on_continuous_inputs(cp, rows, scale):
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, 16))
    got = fast.quantizers.E8P(scale).encode(cp.asarray(x))
    assert isinstance(got, cp.ndarray) and got.dtype == np.uint16 and got.shape == (rows, 2)
    np.testing.assert_array_equal(got.get(), fast.quantizers.E8P(scale).encode(x))
    if rows <= 300:  # the brute force is slow: check it on the small cases
        np.testing.assert_array_equal(got.get(), RefE8P(scale).encode(x))


def test_encode_same_distance_on_ties_and_extremes(cp):
    rng = np.random.default_rng(0)
    ties = rng.integers(-40, 41, size=(512, 8)) / 8.0            # 1/8 grid: exact ties
    extremes = np.array([[1e6, -1e6, 3, 0, 0, 0, 0, 1e-9], [0] * 8, [0.5] * 8, [-0.25] * 8], float)
    for x in (ties, extremes):
        q = RefE8P()
        got = q.decode(fast.quantizers.E8P().encode(cp.asarray(x)).get())
        ref = q.decode(q.encode(x))
        tol = 1e-12 * (1 + (x**2).sum(axis=1))
        assert np.all(np.abs(_dist(x, got) - _dist(x, ref)) <= tol)


def test_decode_bit_identical(cp):
    codes = np.random.default_rng(1).integers(0, 2**16, size=(33, 5)).astype(np.uint16)
    q = fast.quantizers.E8P(0.37)
    got = q.decode(cp.asarray(codes))
    assert isinstance(got, cp.ndarray)
    np.testing.assert_array_equal(got.get(), RefE8P(0.37).decode(codes))


@pytest.mark.parametrize("bits", [3, 4])
def test_rvq_on_cupy_equals_cpu(cp, bits):
    x = np.random.default_rng(bits).normal(size=(3000, 8))
    q = fast.quantizers.RVQ.from_rms(bits, 1.0)
    got = q.encode(cp.asarray(x))
    np.testing.assert_array_equal(got.get(), q.encode(x))
    np.testing.assert_array_equal(q.decode(got).get(), RefRVQ.from_rms(bits, 1.0).decode(q.encode(x)))


def _random_codes(rng, kind, m, k):
    if kind == "e8p":
        return rng.integers(0, 2**16, size=(m, k)).astype(np.uint16)
    if kind == "rvq4":
        return rng.integers(0, 2**32, size=(m, k), dtype=np.uint64).astype(np.uint32)
    return rng.integers(0, 2**24, size=(m, k)).astype(np.uint32)


def _quantizer(kind, scale):
    if kind == "e8p":
        return fast.quantizers.E8P(scale)
    return fast.quantizers.RVQ(4 if kind == "rvq4" else 3, scale)


@pytest.mark.parametrize("kind", ["e8p", "rvq4", "rvq3"])
@pytest.mark.parametrize("m,n", [(8, 256), (13, 296), (64, 2048), (200, 4104), (1024, 1024)])
def test_matvec_plan_equals_reference(cp, kind, m, n):
    from fast.cuda.e8p import MatvecPlan

    rng = np.random.default_rng(m * 7 + n)
    q = _quantizer(kind, 0.031)
    codes = _random_codes(rng, kind, m, n // 8)
    W = RefE8P(0.031).decode(codes) if kind == "e8p" else \
        RefRVQ(q.bits, 0.031).decode(codes)
    plan = MatvecPlan(q, codes, (m, n))
    for b in (1, 2, 5, 8, 11):
        for dt in (np.float32, np.float16):
            z = rng.normal(size=(b, n)).astype(dt)
            out = cp.full((b, m), np.nan, dtype=cp.float32)      # poisoned
            y = plan(cp.asarray(z), out=out).get()
            assert np.isfinite(y).all(), (kind, m, n, b, dt)
            zf = z.astype(np.float64)
            ref = zf @ W.T
            bound = (2.0**-11 + n * 2.0**-22) * (np.abs(zf) @ np.abs(W).T) + 1e-30
            err = np.abs(y - ref)
            assert np.all(err <= bound), (kind, m, n, b, dt, float((err / bound).max()))
    y1 = plan(cp.asarray(rng.normal(size=n).astype(np.float32)))
    assert y1.shape == (m,)


@pytest.mark.parametrize("kind", ["e8p", "rvq4", "rvq3"])
@pytest.mark.parametrize("m,n", [(13, 296), (200, 4104), (512, 2048)])
@pytest.mark.parametrize("rg", [1, 2])
def test_matvec_both_tile_heights_equal_reference(cp, kind, m, n, rg):
    """Both tile heights (rg = 1: 3 blocks per SM, rg = 2: 2) of every stage-2 kind: the
    same bound as test_matvec_plan_equals_reference."""
    from fast.cuda.e8p import MatvecPlan

    rng = np.random.default_rng(m + n + rg)
    q = _quantizer(kind, 0.031)
    codes = _random_codes(rng, kind, m, n // 8)
    W = RefE8P(0.031).decode(codes) if kind == "e8p" else RefRVQ(q.bits, 0.031).decode(codes)
    plan = MatvecPlan(q, codes, (m, n), rg=rg)
    for b in (1, 3, 8, 9):
        for dt in (np.float32, np.float16):
            z = rng.normal(size=(b, n)).astype(dt)
            y = plan(cp.asarray(z), out=cp.full((b, m), np.nan, dtype=cp.float32)).get()
            zf = z.astype(np.float64)
            ref = zf @ W.T
            bound = (2.0**-11 + n * 2.0**-22) * (np.abs(zf) @ np.abs(W).T) + 1e-30
            err = np.abs(y - ref)
            assert np.all(err <= bound), (kind, m, n, rg, b, dt, float((err / bound).max()))


def test_matvec_plan_out_argument(cp):
    """out: filled and returned for (b, m) and, with a 1-D z, (m,); wrong dtype, shape or
    layout is a clear error."""
    from fast.cuda.e8p import MatvecPlan

    rng = np.random.default_rng(3)
    m, n = 40, 512
    codes = _random_codes(rng, "e8p", m, n // 8)
    plan = MatvecPlan(_quantizer("e8p", 0.05), codes, (m, n))
    z = cp.asarray(rng.normal(size=(3, n)).astype(np.float32))
    want = plan(z).get()
    out = cp.full((3, m), np.nan, dtype=cp.float32)
    assert plan(z, out=out) is out
    np.testing.assert_array_equal(out.get(), want)
    out1 = cp.full(m, np.nan, dtype=cp.float32)
    assert plan(z[1], out=out1) is out1
    np.testing.assert_array_equal(out1.get(), want[1])
    with pytest.raises(TypeError):
        plan(z, out=cp.empty((3, m), dtype=cp.float64))
    with pytest.raises(ValueError):
        plan(z, out=cp.empty((3, m + 1), dtype=cp.float32))
    with pytest.raises(ValueError):
        plan(z, out=cp.empty((m, 3), dtype=cp.float32).T)


def test_matvec_plan_layout_is_exact_bits(cp):
    from fast.cuda.e8p import MatvecPlan

    m, n = 256, 4096
    for kind, bits in (("e8p", 2), ("rvq3", 3), ("rvq4", 4)):
        codes = _random_codes(np.random.default_rng(0), kind, m, n // 8)
        plan = MatvecPlan(_quantizer(kind, 1.0), codes, (m, n))
        assert plan.bytes * 8 == m * n * bits


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("m,n", [(64, 192), (256, 1024), (48, 4096)])
def test_layer_fused_matvec_equals_reference(cp, bits, m, n):
    W, H = quipref.datasets.synthetic_layer(m, n, n_tokens=max(2 * n, 1024), seed=bits)
    layer = fast.quantize_linear(W, H, "quip#", bits, seed=1)
    assert layer.cuda_matvec() is not None
    Wh = layer.dequantize()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, n))
    for dt in (np.float32, np.float16):
        xd = x.astype(dt)
        y = layer.matvec(cp.asarray(xd))
        assert isinstance(y, cp.ndarray) and y.dtype == np.float32 and y.shape == (4, m)
        ref = xd.astype(np.float64) @ Wh.T
        # in the processed domain the plan errs by e_r <= (2^-11 + n 2^-22) sum_c |z_c||W~_rc|
        # (module docstring); the output transform is orthogonal, so ||y - ref||_2 <= ||e||_2
        # plus the two fp32 RHTs, <= ~(log2 n + K sqrt K + 1) 2^-24 ||x|| ||W~||_F each
        # (< 1e-5 ||x|| ||W~||_F for K <= 12).
        Wt = layer.processed_weights()
        z = layer.input_transform.forward(xd.astype(np.float64))
        e = (2.0**-11 + n * 2.0**-22) * (np.abs(z) @ np.abs(Wt).T)
        err = np.linalg.norm(y.get() - ref, axis=1)
        bound = np.linalg.norm(e, axis=1) + 1e-5 * np.linalg.norm(xd.astype(np.float64), axis=1) * np.linalg.norm(Wt)
        assert np.all(err <= bound), (bits, m, n, dt, err / bound)
    y1 = layer.matvec(cp.asarray(x[0].astype(np.float32)))
    assert y1.shape == (m,)
    y64 = layer.matvec(cp.asarray(x))            # float64 input: the exact reference path
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64.get(), x @ Wh.T, rtol=1e-9, atol=1e-9 * np.abs(x @ Wh.T).max())


@pytest.mark.parametrize("bits", [2, 4])
def test_quantize_linear_on_gpu_matches_cpu(cp, bits):
    """BlockLDLQ(E8P / RVQ) on CuPy arrays: same recipe, same seed. The GPU lazy batch sums
    the feedback in another order than the CPU one (float64 round-off ~1e-13 relative), so
    a code can differ only where an input lies that close to a Voronoi boundary: we require
    >= 99.9 % equal codes and the same proxy loss to 1e-6 relative."""
    W, H = quipref.datasets.synthetic_layer(128, 512, n_tokens=2048, seed=5)
    cpu = fast.quantize_linear(W, H, "quip#", bits, seed=3)
    gpu = fast.quantize_linear(cp.asarray(W), cp.asarray(H), "quip#", bits, seed=3)
    assert isinstance(gpu.codes, cp.ndarray)
    assert np.mean(gpu.codes.get() == cpu.codes) >= 0.999
    la = quipref.proxy_loss(cpu.dequantize(), W, H)
    lb = quipref.proxy_loss(gpu.dequantize().get(), W, H)
    assert abs(la - lb) <= 1e-6 * la
