"""quipref.hadamard against the mathematics: Hadamard property, Kronecker structure,
factorisation rule, exact integer arithmetic, round trips, and the error contract.

Error bounds used below (u = 2^-53, float64; derivations in fast/hadamard.py):

* transform, Gaussian input: ||y - G_n x|| <= (log2 p + (K-1) sqrt(K) + 2) u ||x||
  (log2 p butterfly stages, each adding at most u ||x|| after normalisation; K-term sums
  by any summation order, gamma_{K-1} sum|z_i| per output, i.e. (K-1) sqrt(K) u ||x|| in
  2-norm; rounding of the constant 1/sqrt(n) and of the product).
* dense G_n @ x in float64: entries of G_n are rounded (+-1/fl(sqrt n), relative 2u each;
  ||Delta G x|| <= 2u || |G| |x| || <= 2u sqrt(n) ||x|| because || |G| ||_2 = ||J||/sqrt(n)
  = sqrt(n)), and the matvec adds gamma_n |G| |x| (<= n u sqrt(n) ||x|| in 2-norm).
  These worst-case bounds are loose (observed errors are ~1e-16 ||x||) but they are
  rigorous, so the tests cannot be flaky; a wrong matrix or index order gives O(||x||).
* integer-valued input: the butterflies and the K x K sums are exact in float64 (all
  partial sums are integers < 2^53), so y_i = fl(c * S_i) with c = fl(1/fl(sqrt n)) and
  S the exact integer (H_K (x) H_p) x: three roundings, so per entry
  |y_i - S_i / sqrt(n)| <= 3.01 u |S_i| / sqrt(n). The comparison value S_i / sqrt(n)
  is computed in long double where that is wider than double (else add its own 2u).
The factor 1.01 on first-order bounds covers the O(u^2) terms (relative ~1e-13 here).
"""
import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

from quipref import _hadamard_bases as bases
from quipref.hadamard import (
    BASE_SIZES,
    base_matrix,
    factor_dimension,
    fwht,
    hadamard_matrix,
    hadamard_transform,
    sylvester,
)

U64 = 2.0 ** -53
ALL_K = (1,) + BASE_SIZES


def transform_bound(n, u):
    K, p = factor_dimension(n)
    return 1.01 * (math.log2(p) + (K - 1) * math.sqrt(K) + 2) * u


def dense_bound(n, u):
    return 1.01 * (n * math.sqrt(n) + 2 * math.sqrt(n)) * u


def scaled_exactly(S, n):
    """S / sqrt(n) as accurately as this platform allows, and its relative error bound."""
    if np.finfo(np.longdouble).eps < 1e-18:  # x86 80-bit extended: error ~2^-63
        return S.astype(np.longdouble) / np.sqrt(np.longdouble(n)), 2.0 ** -60
    return S / math.sqrt(n), 2.01 * U64


def int_kron_matvec(n, x):
    """Exact (H_K (x) H_p) x in int64 for integer x (rows along the last axis)."""
    K, p = factor_dimension(n)
    M = np.kron(base_matrix(K).astype(np.int64), sylvester(p).astype(np.int64))
    return x @ M.T


# -- strategies named after the domain objects ---------------------------------------

@st.composite
def supported_sizes(draw, max_k=4):
    K = draw(st.sampled_from(ALL_K))
    k = draw(st.integers(0, max_k))
    return K * 2 ** k


batch_shapes = st.lists(st.integers(0, 3), min_size=0, max_size=2).map(tuple)


# -- Sylvester ---------------------------------------------------------------------------

@pytest.mark.parametrize("p", [2 ** k for k in range(11)])
def test_sylvester_is_scipy_hadamard_and_symmetric(p):
    H = sylvester(p)
    assert H.dtype == np.int8 and H.shape == (p, p)
    np.testing.assert_array_equal(H, scipy.linalg.hadamard(p))
    np.testing.assert_array_equal(H, H.T)
    Hf = H.astype(np.float64)  # small integers: float64 products and sums are exact
    np.testing.assert_array_equal(Hf @ Hf, p * np.eye(p))


def test_sylvester_recursion():
    H4 = sylvester(4)
    np.testing.assert_array_equal(sylvester(8), np.block([[H4, H4], [H4, -H4]]))


@pytest.mark.parametrize("p, exc", [(3, ValueError), (12, ValueError), (0, ValueError),
                                    (-2, ValueError), (2.0, TypeError), (True, TypeError),
                                    ("4", TypeError)])
def test_sylvester_rejects(p, exc):
    with pytest.raises(exc, match="p must be"):
        sylvester(p)


# -- base matrices -----------------------------------------------------------------------

@pytest.mark.parametrize("K", ALL_K)
def test_base_matrix_is_hadamard(K):
    H = base_matrix(K)
    assert H.dtype == np.int8 and H.shape == (K, K)
    assert set(np.unique(H).tolist()) <= {-1, 1}
    Hi = H.astype(np.int64)
    np.testing.assert_array_equal(Hi @ Hi.T, K * np.eye(K, dtype=np.int64))
    np.testing.assert_array_equal(Hi.T @ Hi, K * np.eye(K, dtype=np.int64))


def test_base_matrix_is_cached_and_read_only():
    H = base_matrix(172)
    assert base_matrix(172) is H
    with pytest.raises(ValueError):
        H[0, 0] = 1


def test_base_matrix_symmetry_pattern():
    # Paley II matrices are symmetric, Paley I and Williamson ones are not: the inverse
    # transform must use H_K^T, and the round-trip tests below exercise both kinds.
    symmetric = {K for K in ALL_K if np.array_equal(base_matrix(K), base_matrix(K).T)}
    assert symmetric == {1, 36, 52, 124}


@pytest.mark.parametrize("K", [24, 40, 44, 2, 4, 0, -12])
def test_base_matrix_rejects_unsupported(K):
    with pytest.raises(ValueError, match="K must be"):
        base_matrix(K)


@pytest.mark.parametrize("K", [12.0, "12", None, True])
def test_base_matrix_rejects_non_integers(K):
    with pytest.raises(TypeError, match="K must be a positive integer"):
        base_matrix(K)


@pytest.mark.parametrize("q", [3, 7, 11, 19, 27, 59, 5, 13, 17, 25, 61])
def test_gf_quadratic_character(q):
    # chi is a multiplicative character of order 2: exactly (q-1)/2 non-zero squares,
    # and the subtraction table is that of an abelian group (a - a = 0, a - 0 = a).
    chi, diff = bases.gf_quadratic_character(q)
    assert chi[0] == 0 and (chi == 1).sum() == (q - 1) // 2 and (chi == -1).sum() == (q - 1) // 2
    np.testing.assert_array_equal(np.diag(diff), 0)
    np.testing.assert_array_equal(diff[:, 0], np.arange(q))
    # chi(-1) = (-1)^((q-1)/2): the Jacobsthal matrix is skew for q = 3 mod 4, symmetric
    # for q = 1 mod 4 -- the property each Paley construction relies on.
    Q = chi[diff].astype(np.int64)
    sign = 1 if q % 4 == 1 else -1
    np.testing.assert_array_equal(Q.T, sign * Q)
    np.testing.assert_array_equal(Q @ Q.T, q * np.eye(q, dtype=np.int64) - 1)


@pytest.mark.parametrize("n", [29, 39, 43])
def test_williamson_blocks(n):
    blocks = bases.williamson_blocks(n)
    total = np.zeros((n, n), dtype=np.int64)
    for M in blocks:
        np.testing.assert_array_equal(M, M.T)  # symmetric circulant
        np.testing.assert_array_equal(np.roll(M[0], 1), M[1])
        total += M @ M
    np.testing.assert_array_equal(total, 4 * n * np.eye(n, dtype=np.int64))


def test_not_a_prime_power():
    with pytest.raises(ValueError, match="not a prime power"):
        bases.gf_quadratic_character(15)


# -- factor_dimension --------------------------------------------------------------------

FACTOR_TABLE = {
    11008: (172, 64), 28672: (28, 1024), 14336: (28, 512), 12288: (12, 1024),
    576: (36, 16), 384: (12, 32), 1536: (12, 128), 768: (12, 64), 5120: (20, 256),
    13824: (108, 128), 4096: (1, 4096), 22016: (172, 128), 15360: (60, 256),
    27648: (108, 256), 8192: (1, 8192), 10240: (20, 512), 57344: (28, 2048),
    6656: (52, 128), 17920: (140, 128), 19968: (156, 128), 6144: (12, 512), 192: (12, 16),
    1: (1, 1), 2: (1, 2), 12: (12, 1), 116: (116, 1), 248: (124, 2),
}


@pytest.mark.parametrize("n, expected", sorted(FACTOR_TABLE.items()))
def test_factor_dimension_table(n, expected):
    assert factor_dimension(n) == expected
    assert factor_dimension(np.int64(n)) == expected


@pytest.mark.parametrize("K", ALL_K)
def test_factor_dimension_every_supported_size(K):
    for k in range(16):
        Kf, p = factor_dimension(K * 2 ** k)
        assert Kf * p == K * 2 ** k and p & (p - 1) == 0
        # a base size that is itself 2^j times a smaller one does not exist, so K is unique
        assert Kf == K


@pytest.mark.parametrize("n, factors, nxt", [
    (10920, "2^3 * 3 * 5 * 7 * 13", "11008 = 172*2^6"),
    (7, "7", "8 = 2^3"),
    (44, "2^2 * 11", "48 = 12*2^2"),
    (3 * 5 * 7 * 2 ** 5, "2^5 * 3 * 5 * 7", "3456 = 108*2^5"),
])
def test_factor_dimension_unsupported_message(n, factors, nxt):
    with pytest.raises(ValueError) as info:
        factor_dimension(n)
    msg = str(info.value)
    assert f"n={n} = {factors}" in msg
    assert "K*2^k with K in {1, 12, 20, 28, 36, 52, 60, 108, 116, 124, 140, 156, 172}" in msg
    assert f"Pad the dimension to a supported size, e.g. the next one, {nxt}" in msg
    size = int(nxt.split(" ")[0])
    factor_dimension(size)  # the suggested size really is supported
    assert all(_unsupported(m) for m in range(n, size))  # ... and it is the next one


def _unsupported(m):
    try:
        factor_dimension(m)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("n, exc", [(0, ValueError), (-12, ValueError), (12.0, TypeError),
                                    ("12", TypeError), (None, TypeError), (True, TypeError)])
def test_factor_dimension_rejects(n, exc):
    with pytest.raises(exc, match="n must be a positive integer"):
        factor_dimension(n)


# -- dense matrix ------------------------------------------------------------------------

@pytest.mark.parametrize("n", sorted({K * 2 ** k for K in BASE_SIZES for k in range(5)}
                                     | {2 ** k for k in range(13)}))
def test_hadamard_matrix_is_orthogonal(n):
    # G = S / sqrt(n) with S a +-1 matrix, so G G^T = I  <=>  S S^T = n I. Checking the
    # sign pattern S exactly (float32 dot products of +-1 entries are integers <= 4096 <
    # 2^24, hence exact) and |G| = fl(1/fl(sqrt n)) entrywise is a complete check and
    # cheaper than a float64 G @ G.T; the float64 product is then checked against the
    # bound (n + 4) u of its rounding (entries off by 2u relative, gamma_n for the sums).
    G = hadamard_matrix(n)
    assert G.shape == (n, n) and G.dtype == np.float64
    np.testing.assert_array_equal(np.abs(G), 1 / np.sqrt(n))
    S = np.sign(G).astype(np.float32)
    np.testing.assert_array_equal(S @ S.T, n * np.eye(n, dtype=np.float32))
    if n <= 1024:
        assert np.abs(G @ G.T - np.eye(n)).max() <= (n + 4) * U64 * 1.01


def test_hadamard_matrix_kronecker_layout():
    # the K-block is the major index: rows a*p .. a*p + p - 1 belong to block a
    K, p = 12, 4
    G = hadamard_matrix(K * p) * math.sqrt(K * p)
    H = base_matrix(K)
    S = sylvester(p)
    for a in range(K):
        for b in range(K):
            np.testing.assert_array_equal(G[a * p:(a + 1) * p, b * p:(b + 1) * p], H[a, b] * S)


# -- transforms --------------------------------------------------------------------------

@settings(deadline=None, max_examples=40)
@given(n=supported_sizes(max_k=4), batch=batch_shapes, seed=st.integers(0, 2 ** 32 - 1),
       inverse=st.booleans())
def test_transform_equals_dense_matrix(n, batch, seed, inverse):
    x = np.random.default_rng(seed).standard_normal(batch + (n,))
    G = hadamard_matrix(n)
    expected = x @ (G if inverse else G.T)  # row-vector form of G x and G^T x
    y = hadamard_transform(x, inverse=inverse)
    assert y.shape == x.shape and y.dtype == np.float64
    err = np.linalg.norm(y - expected, axis=-1)
    tol = (transform_bound(n, U64) + dense_bound(n, U64)) * np.linalg.norm(x, axis=-1)
    assert np.all(err <= tol)


@settings(deadline=None, max_examples=40)
@given(n=supported_sizes(max_k=5), seed=st.integers(0, 2 ** 32 - 1), inverse=st.booleans())
def test_transform_exact_on_integers(n, seed, inverse):
    xi = np.random.default_rng(seed).integers(-1000, 1001, size=(3, n))
    S = int_kron_matvec(n, xi) if not inverse else _int_kron_matvec_t(n, xi)
    y = hadamard_transform(xi.astype(np.float64), inverse=inverse)
    exact, slack = scaled_exactly(S, n)
    assert np.all(np.abs(y - exact) <= (3.01 * U64 + slack) * np.abs(exact))


def _int_kron_matvec_t(n, x):
    K, p = factor_dimension(n)
    M = np.kron(base_matrix(K).astype(np.int64), sylvester(p).astype(np.int64))
    return x @ M


@pytest.mark.parametrize("K", ALL_K)
def test_inverse_round_trip_and_isometry(K):
    rng = np.random.default_rng(K)
    n = K * 8
    x = rng.standard_normal((4, n))
    y = hadamard_transform(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=2 * transform_bound(n, U64))
    for back in (hadamard_transform(y, inverse=True),
                 hadamard_transform(hadamard_transform(x, inverse=True))):
        err = np.linalg.norm(back - x, axis=-1)
        assert np.all(err <= 2.02 * transform_bound(n, U64) * np.linalg.norm(x, axis=-1))


def test_inverse_is_not_forward_for_non_symmetric_k():
    x = np.random.default_rng(0).standard_normal(12)
    assert not np.allclose(hadamard_transform(x), hadamard_transform(x, inverse=True))


def test_transform_power_of_two_is_scaled_fwht():
    x = np.random.default_rng(1).standard_normal((2, 3, 256))
    np.testing.assert_allclose(hadamard_transform(x), fwht(x) / 16, rtol=0, atol=1e-13)


@settings(deadline=None, max_examples=25)
@given(k=st.integers(0, 10), batch=batch_shapes, seed=st.integers(0, 2 ** 32 - 1))
def test_fwht_equals_sylvester_matrix(k, batch, seed):
    p = 2 ** k
    xi = np.random.default_rng(seed).integers(-1000, 1001, size=batch + (p,))
    # integer inputs: every partial sum is an integer < 2^53, so the FWHT is exact
    expected = xi @ sylvester(p).astype(np.int64)
    np.testing.assert_array_equal(fwht(xi), expected)
    np.testing.assert_array_equal(fwht(fwht(xi)), p * xi)


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="fwht needs a power-of-two length"):
        fwht(np.ones(12))
    with pytest.raises(ValueError, match=r"x.shape\[-1\]=10920"):
        fwht(np.ones(10920))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("func", [hadamard_transform, fwht])
def test_dtype_is_preserved(dtype, func):
    x = np.random.default_rng(2).standard_normal((3, 64)).astype(dtype)
    y = func(x)
    assert y.dtype == dtype and y.shape == x.shape
    ref = func(x.astype(np.float64))
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=0,
                               atol=np.finfo(dtype).eps * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8])
def test_integer_input_gives_float64(dtype):
    x = np.arange(24).astype(dtype)
    y = hadamard_transform(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, hadamard_transform(np.arange(24.0)), rtol=1e-15)
    assert hadamard_transform([1, 2, 3, 4]).dtype == np.float64  # lists work too


def test_input_is_not_modified_and_non_contiguous_ok():
    x = np.random.default_rng(3).standard_normal((4, 48))
    x0 = x.copy()
    y = hadamard_transform(x[:, ::2])  # length 24, strided
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_allclose(y, hadamard_transform(np.ascontiguousarray(x[:, ::2])))


def test_empty_batch():
    y = hadamard_transform(np.zeros((0, 12), dtype=np.float32))
    assert y.shape == (0, 12) and y.dtype == np.float32


@pytest.mark.parametrize("func", [hadamard_transform, fwht])
@pytest.mark.parametrize("bad, exc, match", [
    (np.array([1.0, np.nan, 0.0, 1.0]), ValueError, "NaN or Inf"),
    (np.array([1.0, np.inf, 0.0, 1.0]), ValueError, "NaN or Inf"),
    (np.ones(4, dtype=complex), TypeError, "real numbers"),
    (np.ones(4, dtype=bool), TypeError, "real numbers"),
    (np.array(["a", "b"]), TypeError, "real numbers"),
    (None, TypeError, "real numeric array"),
    (np.float64(3.0), ValueError, "at least 1 dimension"),
    (np.ones((2, 0)), ValueError, "last axis of length >= 1"),
    (np.ones((2, 7)), ValueError, r"x.shape\[-1\]=7 = 7 is not a supported"),
])
def test_bad_input(func, bad, exc, match):
    with pytest.raises(exc, match=match):
        func(bad)


def test_unsupported_length_message_names_the_fix():
    with pytest.raises(ValueError) as info:
        hadamard_transform(np.ones((2, 10920)))
    msg = str(info.value)
    assert "x.shape[-1]=10920 = 2^3 * 3 * 5 * 7 * 13" in msg and "11008 = 172*2^6" in msg
