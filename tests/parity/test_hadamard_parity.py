"""fast.hadamard (Numba) against quipref.hadamard (NumPy reference).

Tolerances, per row of length n = K * p, derived in the docstring of fast/hadamard.py:
both implementations satisfy, to first order in the unit roundoff u of the precision
they compute in,

    ||y - G_n x||_2 <= B(n, u) ||x||_2,    B(n, u) = (log2 p + (K-1) sqrt(K) + 2) u,

(log2 p butterfly stages; a K-term sum per output, gamma_{K-1} sum|z_i| for any
summation order; rounding of 1/sqrt(n) and of the product). So

* float64 vs float64: ||fast - ref|| <= 2 B(n, 2^-53) ||x||;
* float32 (fast computes in float32) vs the reference (float64, then rounded to float32,
  which adds at most 2^-24 ||y|| = 2^-24 ||x||):
  ||fast - ref|| <= (B(n, 2^-24) + 2^-24 + B(n, 2^-53)) ||x||;
* float16 (fast computes in float32, both round to float16 at the end, u16 = 2^-11):
  ||fast - ref|| <= (2 u16 + B(n, 2^-24) (1 + u16) + B(n, 2^-53)) ||x||.

A factor 1.01 covers the second-order terms (relative size ~B, below 1e-3 here). The
bounds are worst case (the K-stage term dominates for large K); they are not tuned.
"""
import inspect
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

import fast.hadamard as fh
import quipref.hadamard as qh

ALL_K = (1,) + qh.BASE_SIZES
U = {np.float64: 2.0 ** -53, np.float32: 2.0 ** -24, np.float16: 2.0 ** -11}


def B(n, u):
    K, p = qh.factor_dimension(n)
    return (math.log2(p) + (K - 1) * math.sqrt(K) + 2) * u


def parity_tol(n, dtype):
    b64, b32 = B(n, U[np.float64]), B(n, U[np.float32])
    if dtype == np.float64:
        return 1.01 * 2 * b64
    if dtype == np.float32:
        return 1.01 * (b32 + U[np.float32] + b64)
    return 1.01 * (2 * U[np.float16] + b32 * (1 + U[np.float16]) + b64)


# -- strategies named after the domain objects ---------------------------------------

@st.composite
def supported_sizes(draw, max_k=6):
    K = draw(st.sampled_from(ALL_K))
    k = draw(st.integers(0, max_k))
    return K * 2 ** k


batch_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
float_dtypes = st.sampled_from([np.float32, np.float64])


def signals(shape, dtype, seed, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def assert_rows_close(y_fast, y_ref, x, tol):
    assert y_fast.shape == y_ref.shape == x.shape
    err = np.linalg.norm(y_fast.astype(np.float64) - y_ref.astype(np.float64), axis=-1)
    bound = tol * np.linalg.norm(x.astype(np.float64), axis=-1)
    assert np.all(err <= bound), (err.max(), bound.max() if bound.size else 0)


# -- API ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fwht", "hadamard_transform"])
def test_same_signature(name):
    assert inspect.signature(getattr(fh, name)) == inspect.signature(getattr(qh, name))
    assert getattr(fh, name) is not getattr(qh, name)  # really reimplemented


def test_same_public_names():
    assert list(fh.__all__) == list(qh.__all__)
    for name in ("BASE_SIZES", "sylvester", "base_matrix", "factor_dimension",
                 "hadamard_matrix"):
        assert getattr(fh, name) is getattr(qh, name)


# -- results -----------------------------------------------------------------------------

@settings(deadline=None, max_examples=60)
@given(n=supported_sizes(), batch=batch_shapes, dtype=float_dtypes,
       inverse=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
@example(n=12 * 64, batch=(3,), dtype=np.float32, inverse=False, seed=0)
@example(n=36 * 16, batch=(2, 2), dtype=np.float32, inverse=True, seed=1)
@example(n=172 * 64, batch=(2,), dtype=np.float32, inverse=False, seed=2)
@example(n=172 * 2, batch=(5,), dtype=np.float64, inverse=True, seed=3)
@example(n=28 * 1024, batch=(1,), dtype=np.float32, inverse=True, seed=4)
@example(n=4096, batch=(), dtype=np.float64, inverse=False, seed=5)
def test_hadamard_transform_parity(n, batch, dtype, inverse, seed):
    x = signals(batch + (n,), dtype, seed)
    y_fast = fh.hadamard_transform(x, inverse=inverse)
    y_ref = qh.hadamard_transform(x, inverse=inverse)
    assert y_fast.dtype == y_ref.dtype == dtype
    assert_rows_close(y_fast, y_ref, x, parity_tol(n, dtype))


@settings(deadline=None, max_examples=20)
@given(n=supported_sizes(max_k=5), inverse=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_hadamard_transform_parity_float16(n, inverse, seed):
    x = signals((3, n), np.float16, seed)
    y_fast = fh.hadamard_transform(x, inverse=inverse)
    y_ref = qh.hadamard_transform(x, inverse=inverse)
    assert y_fast.dtype == y_ref.dtype == np.float16
    assert_rows_close(y_fast, y_ref, x, parity_tol(n, np.float16))


@settings(deadline=None, max_examples=20)
@given(n=supported_sizes(max_k=7), inverse=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_parity_on_integer_valued_float32(n, inverse, seed):
    # |x| <= 100 and n <= 172*128 = 22016: every partial sum is an integer of magnitude
    # <= 100 n < 2^24, so the butterflies and K-sums are exact in float32 as well; the
    # only roundings are in the scale and the product. Fast: c64 = fl64(1/fl64(sqrt n))
    # (2 u64), rounded to float32 (u32), product rounded to float32 (u32); reference on
    # float64 input: c64 (2 u64) and a float64 product (u64). Hence per entry
    # |fast - ref| <= (2 u32 + 5 u64) |y| to first order -- much tighter than B.
    x = np.random.default_rng(seed).integers(-100, 101, size=(2, n)).astype(np.float32)
    y_fast = fh.hadamard_transform(x, inverse=inverse).astype(np.float64)
    y_ref = qh.hadamard_transform(x.astype(np.float64), inverse=inverse)
    tol = 1.01 * (2 * U[np.float32] + 5 * U[np.float64])
    assert np.all(np.abs(y_fast - y_ref) <= tol * np.abs(y_ref))


@settings(deadline=None, max_examples=25)
@given(k=st.integers(0, 12), batch=batch_shapes, dtype=float_dtypes,
       seed=st.integers(0, 2 ** 32 - 1))
def test_fwht_parity(k, batch, dtype, seed):
    # unnormalised: ||H_p x|| = sqrt(p) ||x||, error <= log2(p) u sqrt(p) ||x|| per
    # implementation, plus the reference's final rounding to dtype (u sqrt(p) ||x||).
    p = 2 ** k
    x = signals(batch + (p,), dtype, seed)
    y_fast, y_ref = fh.fwht(x), qh.fwht(x)
    assert y_fast.dtype == y_ref.dtype == dtype
    u = U[dtype]
    tol = 1.01 * math.sqrt(p) * (k * u + u + k * U[np.float64])
    assert_rows_close(y_fast, y_ref, x, tol)


def test_integer_input_and_lists():
    xi = np.arange(-6, 6, dtype=np.int32)
    for y_fast, y_ref in [(fh.hadamard_transform(xi), qh.hadamard_transform(xi)),
                          (fh.fwht(list(range(8))), qh.fwht(list(range(8))))]:
        assert y_fast.dtype == y_ref.dtype == np.float64
        np.testing.assert_allclose(y_fast, y_ref, rtol=0, atol=1e-13)


def test_non_contiguous_and_input_untouched():
    base = signals((6, 2 * 24), np.float32, 7)
    before = base.copy()
    x = base[::2, ::2]  # strided in both axes, n = 24
    y_fast = fh.hadamard_transform(x, inverse=True)
    np.testing.assert_array_equal(base, before)
    assert_rows_close(y_fast, qh.hadamard_transform(x, inverse=True), x,
                      parity_tol(24, np.float32))


def test_empty_batch():
    for dtype in (np.float32, np.float64):
        y = fh.hadamard_transform(np.zeros((0, 3, 20), dtype=dtype))
        assert y.shape == (0, 3, 20) and y.dtype == dtype


# -- errors ------------------------------------------------------------------------------

BAD_INPUTS = [
    np.array([1.0, np.nan, 0.0, 1.0]),
    np.array([[1.0, 2.0], [np.inf, 0.0]], dtype=np.float32),
    np.ones(4, dtype=complex),
    np.ones(4, dtype=bool),
    np.array(["a", "b"]),
    None,
    "abcd",
    np.float64(3.0),
    np.ones((2, 0)),
    np.ones((2, 7)),
    np.ones(10920),
    np.ones(24),  # fine for hadamard_transform, not for fwht
]


@pytest.mark.parametrize("name", ["fwht", "hadamard_transform"])
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=range(len(BAD_INPUTS)))
def test_same_exceptions(name, bad):
    outcomes = []
    for module in (qh, fh):
        try:
            getattr(module, name)(bad)
            outcomes.append(None)
        except Exception as e:  # noqa: BLE001 - comparing what both packages raise
            outcomes.append((type(e), str(e)))
    assert outcomes[0] == outcomes[1]
    if not (name == "hadamard_transform" and bad is BAD_INPUTS[-1]):
        assert outcomes[0] is not None and outcomes[0][0] in (TypeError, ValueError)
