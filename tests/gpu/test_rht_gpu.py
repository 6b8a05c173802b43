"""CUDA Hadamard transform / RHT (fast.cuda.hadamard) against the NumPy reference.

Run on a GPU machine with ``pytest -m gpu tests/gpu/test_rht_gpu.py``; skipped elsewhere.

Tolerance (derived, not tuned). Write n = K p and let m = log2(p) + K + 2: every output
y_i = sum_j G_ij x_j (|G_ij| = 1/sqrt(n)) is formed by log2(p) butterfly additions, a
K-term sum (sequential in the column pass; inside the tensor core for the fused kernel)
and two multiplies (1/sqrt(n), the sign). Standard first-order error analysis of
summation gives

    |y_i - ref_i| <= m * u * sum_j |G_ij| |x_j| = m * u * ||x||_1 / sqrt(n)

with u the unit roundoff of the arithmetic: 2^-53 for float64, and for float32 we use
2^-23 rather than 2^-24 because tensor cores accumulate fp32 with truncation (Fasi et
al. 2021), not round-to-nearest. float16 outputs add one final rounding, |ref_i| 2^-11
(plus 2^-24 absolute for subnormals). The fp16 / fp32 inputs themselves are exact in
the fused kernel (fp16 input: exact fp16 operands; fp32 input: split into three bf16
planes whose sum is exact), so no input-rounding term appears. The bound is worst-case;
we allow a factor 2 for the second-order terms and check every element.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fast.cuda._compile import gpu_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU visible to CuPy"),
]

from quipref import hadamard as ref  # noqa: E402
from quipref.hadamard import BASE_SIZES  # noqa: E402

DTYPES = (np.float16, np.float32, np.float64)
UNIT = {np.dtype(np.float16): 2.0**-23, np.dtype(np.float32): 2.0**-23,
        np.dtype(np.float64): 2.0**-53}


def _sizes():
    sizes = {2**k for k in range(0, 16)} | {2**16}
    for K in BASE_SIZES:
        sizes |= {K * 2**k for k in (0, 1, 2, 4, 6)}
    # every fused p (2^4 .. 2^11) with a small and a mid-size K, the largest sizes of the
    # issue, and the shared-memory edge cases (fits in fp16 but not in fp32, and neither)
    sizes |= {12 * 2**k for k in range(3, 12)} | {28 * 2**k for k in range(3, 12)}
    sizes |= {172 * 2**7, 140 * 2**8, 108 * 2**8, 156 * 2**7, 60 * 2**9, 20 * 2**10}
    return sorted(sizes)


SIZES = _sizes()


def _rows_for(n):
    return max(1, min(5, (1 << 20) // n))


def _tol(x64, ref_y, dtype, K, p):
    m = (p.bit_length() - 1) + K + 2
    n = K * p
    l1 = np.abs(x64).sum(axis=-1, keepdims=True) / math.sqrt(n)
    tol = 2.0 * m * UNIT[np.dtype(dtype)] * l1
    if np.dtype(dtype) == np.float16:
        tol = tol + 2.0**-11 * np.abs(ref_y) + 2.0**-24
    return tol


def _random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _signs(rng, n):
    return np.where(rng.standard_normal(n) >= 0, 1.0, -1.0)


def _check(got, want, x64, dtype, K, p, what):
    import cupy

    assert isinstance(got, cupy.ndarray), what
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == want.shape, what
    g = cupy.asnumpy(got).astype(np.float64)
    assert np.all(np.isfinite(g)), f"{what}: non-finite output"
    err = np.abs(g - want)
    tol = _tol(x64, want, dtype, K, p)
    bad = err > tol
    if bad.any():
        i = np.unravel_index(np.argmax(err / tol), err.shape)
        pytest.fail(f"{what}: {int(bad.sum())} elements out of tolerance; worst at {i}: "
                    f"got {g[i]!r}, want {want[i]!r}, err {err[i]:.3g} > tol {tol[i]:.3g}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", SIZES)
def test_transform_and_rht_match_reference(n, dtype):
    """hadamard_transform (both directions) and rht (both directions, random signs)."""
    import cupy

    from fast.cuda.hadamard import hadamard_transform, rht

    K, p = ref.factor_dimension(n)
    rng = np.random.default_rng(n * 7 + np.dtype(dtype).itemsize)
    x = _random(rng, (_rows_for(n), n), dtype)
    x64 = x.astype(np.float64)
    s = _signs(rng, n)
    xd = cupy.asarray(x)
    for inverse in (False, True):
        want = ref.hadamard_transform(x64, inverse=inverse)
        _check(hadamard_transform(xd, inverse=inverse), want, x64, dtype, K, p,
               f"hadamard_transform(n={n}, inverse={inverse})")
    want = ref.hadamard_transform(x64 * s)
    _check(rht(xd, s), want, x64, dtype, K, p, f"rht(n={n})")
    want = s * ref.hadamard_transform(x64, inverse=True)
    _check(rht(xd, cupy.asarray(s), inverse=True), want, x64, dtype, K, p, f"rht(n={n}, inverse)")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [4096, 14336, 11008, 12 * 64, 28 * 2**11, 2**15, 24, 1])
def test_every_element_written(n, dtype):
    """Poison the output with NaN, run each path (single launch and multi-pass): all
    elements must be overwritten with the right values."""
    import cupy

    from fast.cuda.hadamard import _transform_2d, pack_signs

    K, p = ref.factor_dimension(n)
    rng = np.random.default_rng(n)
    x = _random(rng, (3, n), dtype)
    x64 = x.astype(np.float64)
    s = _signs(rng, n)
    xd = cupy.asarray(x)
    sd = pack_signs(s.astype(np.int8))
    for multipass in (False, True):
        for inverse in (False, True):
            out = cupy.full(x.shape, np.nan, dtype=dtype)
            _transform_2d(xd, out, K, p, sd, inverse, 1.0 / math.sqrt(n), multipass=multipass)
            want = (s * ref.hadamard_transform(x64, inverse=True) if inverse
                    else ref.hadamard_transform(x64 * s))
            _check(out, want, x64, dtype, K, p,
                   f"_transform_2d(n={n}, multipass={multipass}, inverse={inverse})")


def test_round_trip_and_norm():
    import cupy

    from fast.cuda.hadamard import hadamard_transform, rht

    rng = np.random.default_rng(0)
    for n in (4096, 11008, 14336, 28672, 57344, 96):
        x = cupy.asarray(rng.standard_normal((4, n)))
        s = cupy.asarray(_signs(rng, n))
        y = rht(x, s)
        back = rht(y, s, inverse=True)
        assert float(cupy.abs(back - x).max()) < 1e-12
        assert abs(float(cupy.linalg.norm(y)) - float(cupy.linalg.norm(x))) < 1e-10 * float(cupy.linalg.norm(x))
        y32 = hadamard_transform(x.astype(np.float32))
        b32 = hadamard_transform(y32, inverse=True)
        assert float(cupy.abs(b32 - x).max()) < 1e-5


def test_batch_shapes_strides_alignment_and_ints():
    import cupy

    from fast.cuda.hadamard import fwht, hadamard_transform

    rng = np.random.default_rng(3)
    n = 12 * 64
    x = rng.standard_normal((2, 3, n)).astype(np.float32)
    got = hadamard_transform(cupy.asarray(x))
    assert got.shape == (2, 3, n) and got.dtype == np.float32
    np.testing.assert_allclose(cupy.asnumpy(got), ref.hadamard_transform(x.astype(np.float64)),
                               rtol=0, atol=1e-5)
    # non-contiguous (transposed) and misaligned (offset by one element) inputs
    big = cupy.asarray(rng.standard_normal((n, 5)).astype(np.float32))
    xt = big.T
    np.testing.assert_allclose(cupy.asnumpy(hadamard_transform(xt)),
                               ref.hadamard_transform(cupy.asnumpy(xt).astype(np.float64)),
                               rtol=0, atol=1e-5)
    flat = cupy.asarray(rng.standard_normal(2 * n + 1).astype(np.float16))
    mis = flat[1:].reshape(2, n)
    assert mis.data.ptr % 16 != 0
    want = ref.hadamard_transform(cupy.asnumpy(mis).astype(np.float64))
    np.testing.assert_allclose(cupy.asnumpy(hadamard_transform(mis)).astype(np.float64), want,
                               rtol=2e-3, atol=2e-3)
    # integers are transformed in float64
    xi = cupy.arange(3 * 16, dtype=cupy.int32).reshape(3, 16)
    yi = hadamard_transform(xi)
    assert yi.dtype == np.float64
    np.testing.assert_allclose(cupy.asnumpy(yi), ref.hadamard_transform(cupy.asnumpy(xi)), atol=1e-12)
    # fwht is unnormalised
    xf = rng.standard_normal((3, 256))
    np.testing.assert_allclose(cupy.asnumpy(fwht(cupy.asarray(xf))), ref.fwht(xf), atol=1e-10)
    # empty batch
    e = hadamard_transform(cupy.zeros((0, 4096), dtype=cupy.float16))
    assert e.shape == (0, 4096) and e.dtype == np.float16


def test_errors_match_reference():
    import cupy

    from fast.cuda.hadamard import fwht, hadamard_transform, rht

    def same_error(fn_fast, fn_ref, xd, xh):
        with pytest.raises(Exception) as e_ref:
            fn_ref(xh)
        with pytest.raises(type(e_ref.value)) as e_fast:
            fn_fast(xd)
        assert str(e_fast.value) == str(e_ref.value)

    bad = np.ones((2, 10920))
    same_error(hadamard_transform, ref.hadamard_transform, cupy.asarray(bad), bad)
    nan = np.ones((2, 16))
    nan[1, 3] = np.nan
    same_error(hadamard_transform, ref.hadamard_transform, cupy.asarray(nan), nan)
    zero_d = np.float64(1.0)
    same_error(hadamard_transform, ref.hadamard_transform, cupy.asarray(zero_d), zero_d)
    cplx = np.ones((2, 16), dtype=np.complex64)
    same_error(hadamard_transform, ref.hadamard_transform, cupy.asarray(cplx), cplx)
    same_error(fwht, ref.fwht, cupy.asarray(np.ones(24)), np.ones(24))
    with pytest.raises(TypeError):
        hadamard_transform(np.ones(16))  # host arrays belong to quipref / fast
    x = cupy.ones((2, 16), dtype=cupy.float32)
    with pytest.raises(ValueError, match="signs must have shape"):
        rht(x, cupy.ones(8))
    with pytest.raises(ValueError):
        rht(x, cupy.ones((2, 16)))
    s = np.ones(16)
    s[0] = np.inf
    with pytest.raises(ValueError, match="signs"):
        rht(x, s)
    s[0] = 0.5
    with pytest.raises(ValueError, match=r"only \+1 and -1"):
        rht(x, s)
    with pytest.raises(TypeError):
        rht(x, np.ones(16, dtype=bool))


def test_random_shapes_hypothesis():
    hypothesis = pytest.importorskip("hypothesis")
    import cupy
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fast.cuda.hadamard import rht

    @st.composite
    def hadamard_sizes(draw):
        K = draw(st.sampled_from((1,) + BASE_SIZES))
        k = draw(st.integers(0, 10 if K > 1 else 14))
        return K * 2**k

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(n=hadamard_sizes(), lead=st.lists(st.integers(0, 3), min_size=0, max_size=2),
           dtype=st.sampled_from(DTYPES), inverse=st.booleans(), seed=st.integers(0, 2**16))
    def check(n, lead, dtype, inverse, seed):
        rng = np.random.default_rng(seed)
        x = _random(rng, tuple(lead) + (n,), dtype)
        x64 = x.astype(np.float64)
        s = _signs(rng, n)
        want = (s * ref.hadamard_transform(x64, inverse=True) if inverse
                else ref.hadamard_transform(x64 * s))
        K, p = ref.factor_dimension(n)
        _check(rht(cupy.asarray(x), s, inverse=inverse), want, x64, dtype, K, p,
               f"rht(shape={x.shape}, {np.dtype(dtype).name}, inverse={inverse})")

    check()


def test_pack_signs_layout():
    import cupy

    from fast.cuda.hadamard import pack_signs

    rng = np.random.default_rng(5)
    for n in (1, 12, 31, 32, 33, 4096, 11008):
        s = _signs(rng, n)
        bits = cupy.asnumpy(pack_signs(cupy.asarray(s)))
        assert bits.dtype == np.uint32 and bits.size == (n + 31) // 32
        got = (bits[np.arange(n) // 32] >> (np.arange(n) % 32).astype(np.uint32)) & 1
        np.testing.assert_array_equal(got, (s < 0).astype(np.uint32))


# -------------------------------------------------------------------------------------
# The fused kernel (H_K as packed sign bits) on every K / p path it serves
# -------------------------------------------------------------------------------------

def _fused_cases():
    """(n, dtype) pairs that run the fused kernel: K = 172 at every fused p it fits
    (p = 16..128; 11008 = 172*64 is the benchmark size), and other K on the same code:
    one-warp blocks (12*16, 12*64), KT = 8 (124*64), 28*512 = 14336 (p9, 16 warps), the
    non-aliased C path with more units than warps (172*128, 156*128), p8, p10, p11."""
    from fast.cuda.hadamard import plan

    cases = []
    for n in (172 * 16, 172 * 32, 172 * 64, 172 * 128, 12 * 16, 12 * 64, 124 * 64,
              28 * 512, 156 * 128, 108 * 256, 28 * 1024, 12 * 2048):
        for dtype in (np.float16, np.float32):
            if plan(dtype, n)[0].startswith("rht_fused_"):
                cases.append(pytest.param(n, dtype, id=f"{n}-{np.dtype(dtype).name}"))
    return cases


@pytest.mark.parametrize("n,dtype", _fused_cases())
def test_fused_kernel_matches_reference(n, dtype):
    """For 1, 5 and 37 rows (one row per block, so 37 is no multiple of anything), both
    directions with and without signs, poisoned outputs: every element within the
    derived tolerance of the float64 reference (a wrong fragment index or sign bit of
    the packed H_K operand cannot pass)."""
    import cupy

    from fast.cuda.hadamard import _passes, _TAG, _transform_2d, pack_signs

    K, p = ref.factor_dimension(n)
    ((name, opts, kind, prm),) = _passes(_TAG[np.dtype(dtype)], K, p)
    assert kind == "fused"
    rng = np.random.default_rng(n)
    s = _signs(rng, n)
    sd = pack_signs(s)
    for rows in (1, 5, 37):
        x = _random(rng, (rows, n), dtype)
        x64 = x.astype(np.float64)
        xd = cupy.asarray(x)
        for signs, inverse in ((None, False), (None, True), (sd, False), (sd, True)):
            if signs is None:
                want = ref.hadamard_transform(x64, inverse=inverse)
            elif inverse:
                want = s * ref.hadamard_transform(x64, inverse=True)
            else:
                want = ref.hadamard_transform(x64 * s)
            out = cupy.full(x.shape, np.nan, dtype=dtype)
            _transform_2d(xd, out, K, p, signs, inverse, 1.0 / math.sqrt(n))
            _check(out, want, x64, dtype, K, p,
                   f"{name} rows={rows} signs={signs is not None} inverse={inverse}")
