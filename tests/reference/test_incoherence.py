"""quipref.incoherence against its definitions and QuIP/QuIP#'s incoherence results.

Catalogue items (reference notes §11): 12 (proxy invariance, exact inverse), 14 (Lemma
3.1 tail check; spiky/diagonal inputs become exactly 1-incoherent), 15 (incoherence
lowers tr(D)), plus the transform interface: orthogonality, the matrices the
docstrings promise, seeding, state round trips and errors.

Floating-point tolerances use u = 2^-53 (float64 unit round-off). A product of an
orthogonal transform with a vector, computed by an FWHT, a K x K stage or a dense
p x p product, has normwise relative error <= c * u with c <= n (each output is a sum
of at most n rounded terms); we use that crude c = n throughout.
"""
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import quipref.incoherence as inc
from quipref.hadamard import factor_dimension, hadamard_matrix
from quipref.hessian import proxy_loss
from quipref.incoherence import (KroneckerOrthogonal, OrthogonalTransform, RandomizedHadamard,
                                 haar_orthogonal, incoherence_process, incoherence_unprocess,
                                 kronecker_factor_sizes, mu_hessian, mu_weights, rescale,
                                 transform_from_state)
from quipref.bounds import rht_mu_hessian, rht_mu_weights, trace_d_incoherence_bound
from quipref.ldlq import ldl, ldlq
from quipref.quantizers import IntegerGrid

U64 = 2.0**-53

# Sizes with a Hadamard matrix: powers of two and K * 2^k for several base sizes K.
RHT_SIZES = [1, 2, 4, 16, 64, 12, 24, 48, 20, 40, 28, 56, 36, 52, 60, 108, 116, 124, 140, 156, 172, 256]
KRON_SIZES = [1, 2, 3, 7, 12, 13, 48, 64, 100, 101, 210]


# ---------------------------------------------------------------------------------------
# Strategies named after the domain objects.
# ---------------------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)
rht_sizes = st.sampled_from(RHT_SIZES)
kron_sizes = st.sampled_from(KRON_SIZES)


@st.composite
def transforms(draw, n=None):
    """A RandomizedHadamard or KroneckerOrthogonal of size n (drawn if not given)."""
    kind = draw(st.sampled_from(["rht", "kron"]))
    if kind == "rht":
        return RandomizedHadamard(draw(rht_sizes) if n is None else n, seed=draw(seeds))
    return KroneckerOrthogonal(draw(kron_sizes) if n is None else n, seed=draw(seeds))


def llm_like_hessian(n, seed, ridge=1e-2):
    """E[x x^T] of inputs with log-normal channel scales and a few outlier channels
    (axis-aligned structure, as in LLM activations), plus a relative ridge."""
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.normal(0.0, 1.0, n))
    scales[rng.choice(n, size=max(1, n // 16), replace=False)] *= 20.0
    mix = np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n)  # mild correlations
    X = rng.standard_normal((4 * n, n)) @ mix * scales
    H = X.T @ X / X.shape[0]
    return H + ridge * np.mean(np.diag(H)) * np.eye(n)


def loss_rtol(H):
    """Relative tolerance for comparing two float64 evaluations of a proxy loss that
    are equal in exact arithmetic, when up to 4 orthogonal transforms of length n were
    applied in between: each perturbs E or H by a relative n*u in 2-norm, and a relative
    perturbation eps of H changes l = tr(E H E^T) >= lambda_min ||E||_F^2 by at most
    eps * cond(H) relatively; 16 = 4 applications x (2 for E appearing twice + margin)."""
    n = H.shape[0]
    return 16 * n * U64 * np.linalg.cond(H)


# ---------------------------------------------------------------------------------------
# mu_H and mu_W.
# ---------------------------------------------------------------------------------------

def test_mu_extremes():
    n = 16
    # distinct eigenvalues, axis-aligned eigenvectors: Q is a signed identity, mu = sqrt(n)
    assert mu_hessian(np.diag(np.arange(1.0, n + 1))) == pytest.approx(math.sqrt(n), rel=1e-15)
    # eigenvectors = columns of the orthonormal Hadamard matrix: all entries +-1/sqrt(n)
    G = hadamard_matrix(n)
    H = G @ np.diag(np.arange(1.0, n + 1)) @ G.T
    # eigenvector error <= ||dH|| / gap ~ n u lambda_max / 1, times sqrt(n): ~1e-13
    assert mu_hessian(H) == pytest.approx(1.0, abs=1e-10)
    W = np.zeros((3, 5))
    W[1, 2] = -7.0
    assert mu_weights(W) == pytest.approx(math.sqrt(15), rel=1e-15)
    assert mu_weights(np.full((3, 5), -2.0)) == pytest.approx(1.0, rel=1e-15)


@given(seed=seeds, m=st.integers(1, 20), n=st.integers(1, 20))
def test_mu_between_one_and_worst_case(seed, m, n):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    A = rng.standard_normal((n, n))
    H = A @ A.T
    # mu >= 1 (a unit vector has an entry >= 1/sqrt(n)); mu <= sqrt(dim); round-off 1e-12
    assert 1 - 1e-12 <= mu_weights(W) <= math.sqrt(m * n) * (1 + 1e-12)
    assert 1 - 1e-12 <= mu_hessian(H) <= math.sqrt(n) * (1 + 1e-12)


def test_mu_weights_no_overflow_and_errors():
    assert mu_weights(np.full((2, 2), 1e300)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="all zeros"):
        mu_weights(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        mu_weights(np.ones(3))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        mu_hessian(-np.eye(3))
    with pytest.raises(ValueError, match="square"):
        mu_hessian(np.ones((2, 3)))


# ---------------------------------------------------------------------------------------
# The transforms: orthogonality, explicit matrices, application along the last axis.
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", RHT_SIZES)
def test_rht_is_hadamard_times_signs(n):
    T = RandomizedHadamard(n, seed=n)
    M = T.matrix()
    # entries +-1/sqrt(n); the transform's rounding is <= n u relative per column
    np.testing.assert_allclose(M, hadamard_matrix(n) * T.signs[None, :], rtol=0, atol=n * U64)
    np.testing.assert_allclose(M @ M.T, np.eye(n), rtol=0, atol=4 * n * U64)
    assert T.signs.dtype == np.int8 and set(np.unique(T.signs)) <= {-1, 1}


@pytest.mark.parametrize("n", KRON_SIZES)
def test_kronecker_is_permuted_kron_of_haar_factors(n):
    T = KroneckerOrthogonal(n, seed=n)
    p1, p2 = T.factors
    assert (p1, p2) == kronecker_factor_sizes(n)
    I = np.eye(n)
    expected = I[T.perm_out] @ np.kron(T.B1, T.B2) @ I[T.perm_in]  # (P x)_i = x[perm[i]]
    M = T.matrix()
    # two dense products of lengths p1 and p2: error <= (p1 + p2) u per entry (entries <= 1)
    np.testing.assert_allclose(M, expected, rtol=0, atol=4 * (p1 + p2) * U64)
    np.testing.assert_allclose(M @ M.T, np.eye(n), rtol=0, atol=4 * n * U64)
    for B in (T.B1, T.B2):
        np.testing.assert_allclose(B @ B.T, np.eye(B.shape[0]), rtol=0, atol=4 * B.shape[0] * U64)


@pytest.mark.parametrize("n, factors", [
    (4096, (64, 64)), (768, (48, 16)), (5120, (160, 32)), (8192, (128, 64)),
    (11008, (688, 16)), (13824, (96, 144)), (28672, (448, 64)),  # reference notes §2.2
    (13, (13, 1)), (1, (1, 1)), (2, (2, 1)), (12, (6, 2)),
])
def test_kronecker_factor_sizes_follow_quip_rule(n, factors):
    assert kronecker_factor_sizes(n) == factors


@given(T=transforms(), seed=seeds, lead=st.sampled_from([(), (3,), (2, 3)]))
def test_forward_inverse_along_last_axis(T, seed, lead):
    n = T.n
    x = np.random.default_rng(seed).standard_normal(lead + (n,))
    y = T.forward(x)
    assert y.shape == x.shape and y.dtype == np.float64
    M = T.matrix()
    # forward is T x for every vector along the last axis (tolerance: n u ||x|| per vector)
    ref = x @ M.T
    err = np.linalg.norm(y - ref, axis=-1)
    assert np.all(err <= 4 * n * U64 * np.linalg.norm(x, axis=-1) + 1e-300)
    # exact inverse: rtol 1e-12 normwise (two applications: <= 2 n u <= 6e-14 for n <= 256)
    back = T.inverse(y)
    assert np.all(np.linalg.norm(back - x, axis=-1) <= 1e-12 * np.linalg.norm(x, axis=-1))
    back2 = T.forward(T.inverse(x))
    assert np.all(np.linalg.norm(back2 - x, axis=-1) <= 1e-12 * np.linalg.norm(x, axis=-1))
    # orthogonal: norms preserved
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)


@pytest.mark.parametrize("make", [lambda: RandomizedHadamard(48, 1), lambda: KroneckerOrthogonal(48, 1)])
def test_dtypes_kept(make):
    T = make()
    x = np.random.default_rng(0).standard_normal((3, 48))
    assert T.forward(x.astype(np.float32)).dtype == np.float32
    assert T.inverse(x.astype(np.float32)).dtype == np.float32
    xi = np.arange(48)
    assert T.forward(xi).dtype == np.float64  # integers are promoted, as everywhere
    # float32 result is the float64 one rounded, up to the float32 transform error
    y32 = T.forward(x.astype(np.float32)).astype(np.float64)
    y64 = T.forward(x.astype(np.float32).astype(np.float64))
    assert np.all(np.linalg.norm(y32 - y64, axis=-1) <= 48 * 2.0**-24 * np.linalg.norm(x, axis=-1))


# ---------------------------------------------------------------------------------------
# Randomness: seeds, Generators, distribution.
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, n", [(RandomizedHadamard, 48), (KroneckerOrthogonal, 48),
                                    (RandomizedHadamard, 64), (KroneckerOrthogonal, 13)])
def test_seeded_determinism(cls, n):
    a, b = cls(n, seed=7), cls(n, seed=7)
    np.testing.assert_array_equal(a.matrix(), b.matrix())
    # a Generator is used as is: the same stream gives the same transform (the Kronecker
    # transform draws one integer seed from it for its portable stream)
    c = cls(n, seed=np.random.default_rng(7))
    if cls is KroneckerOrthogonal:
        a = cls(n, seed=int(np.random.default_rng(7).integers(0, 2**63)))
    np.testing.assert_array_equal(a.matrix(), c.matrix())
    # a different seed gives a different transform (P(equal) = 2^-n for the signs)
    assert not np.array_equal(a.matrix(), cls(n, seed=8).matrix())
    # a shared Generator advances: two draws from it differ
    g = np.random.default_rng(0)
    assert not np.array_equal(cls(n, seed=g).matrix(), cls(n, seed=g).matrix())


def test_signs_are_documented_draw_and_fair():
    n = 1024
    T = RandomizedHadamard(n, seed=3)
    bits = np.random.default_rng(3).integers(0, 2, size=n)
    np.testing.assert_array_equal(T.signs, 1 - 2 * bits)
    total = sum(int(RandomizedHadamard(n, seed=s).signs.sum()) for s in range(10))
    # sum of N = 10240 independent fair +-1: sd = sqrt(N) ~ 101; 5 sd (P(false fail) ~ 6e-7)
    assert abs(total) <= 5 * math.sqrt(10 * n)


def test_haar_factor_has_symmetric_diagonal():
    # Without the sign fix, Householder QR gives Q_11 = -|g_1|/||g|| < 0 always; with it,
    # Q is Haar and each diagonal entry has mean 0 and variance 1/p. The entries of one
    # draw are dependent, but the variance of their average is at most the average of
    # their variances, 1/p; N independent draws -> sd of the grand mean <= 1/sqrt(p N).
    # Assert |mean| <= 5 sd (a missing sign fix gives about -0.4, i.e. 36 sd).
    p, N = 4, 2000
    rng = np.random.default_rng(0)
    diag_means = [np.mean(np.diag(haar_orthogonal(p, rng))) for _ in range(N)]
    assert abs(np.mean(diag_means)) <= 5 / math.sqrt(p * N)
    # first-entry marginal: E[B_11^2] = 1/p for a uniform unit vector; Var(B_11^2) =
    # 3/(p(p+2)) - 1/p^2 = 0.021875 for p = 4 -> sd of the mean 0.0033; 5 sd
    sq = [haar_orthogonal(p, rng)[0, 0] ** 2 for _ in range(N)]
    assert abs(np.mean(sq) - 1 / p) <= 5 * math.sqrt((3 / (p * (p + 2)) - 1 / p**2) / N)


# ---------------------------------------------------------------------------------------
# state() / from_state: bit-exact, no random draws, refuses bad input.
# ---------------------------------------------------------------------------------------

@given(T=transforms(), seed=seeds)
def test_state_round_trip_is_bit_exact(T, seed):
    cfg, arrays = T.state()
    cfg2 = json.loads(json.dumps(cfg))  # JSON-able
    arrays2 = {k: np.array(v) for k, v in arrays.items()}
    T2 = transform_from_state(cfg2, arrays2)
    assert type(T2) is type(T) and T2.n == T.n
    x = np.random.default_rng(seed).standard_normal((2, T.n))
    np.testing.assert_array_equal(T2.forward(x), T.forward(x))
    np.testing.assert_array_equal(T2.inverse(x), T.inverse(x))
    assert type(T).from_state(cfg2, arrays2).state()[0] == cfg


def test_from_state_draws_no_random_numbers(monkeypatch):
    saved = [T.state() for T in (RandomizedHadamard(12, 0), KroneckerOrthogonal(12, 0))]

    def boom(*a, **k):
        raise AssertionError("from_state must not draw random numbers")

    monkeypatch.setattr(inc, "check_seed", boom)
    monkeypatch.setattr(np.random, "default_rng", boom)
    for cfg, arrays in saved:
        transform_from_state(cfg, arrays)


def test_from_state_refuses_bad_state():
    cfg, arrays = RandomizedHadamard(12, 0).state()
    with pytest.raises(ValueError, match="unknown transform type"):
        transform_from_state({**cfg, "type": "Nope"}, arrays)
    with pytest.raises(ValueError, match="version"):
        transform_from_state({**cfg, "version": 99}, arrays)
    with pytest.raises(TypeError, match="dict"):
        transform_from_state([cfg], arrays)
    with pytest.raises(ValueError, match="missing"):
        transform_from_state(cfg, {})
    with pytest.raises(ValueError, match="shape"):
        transform_from_state(cfg, {"signs": np.ones(13, np.int8)})
    bad = arrays["signs"].copy()
    bad[0] = 0
    with pytest.raises(ValueError, match=r"\+1 and -1"):
        transform_from_state(cfg, {"signs": bad})
    with pytest.raises(ValueError, match="supported|Hadamard|pad"):
        transform_from_state({**cfg, "n": 10}, {"signs": np.ones(10, np.int8)})

    cfg, arrays = KroneckerOrthogonal(12, 0, store_factors=True).state()
    with pytest.raises(ValueError, match="factors"):
        transform_from_state({**cfg, "factors": [5, 2]}, arrays)
    with pytest.raises(ValueError, match="permutation"):
        transform_from_state(cfg, {**arrays, "perm_in": np.zeros(12, np.int64)})
    with pytest.raises(ValueError, match="orthogonal"):
        transform_from_state(cfg, {**arrays, "B1": 2 * arrays["B1"]})
    with pytest.raises(ValueError, match="a 'KroneckerOrthogonal', not a RandomizedHadamard"):
        RandomizedHadamard.from_state(cfg, arrays)


# ---------------------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------------------

def test_constructor_errors():
    with pytest.raises(ValueError) as exc:
        RandomizedHadamard(10)
    with pytest.raises(ValueError) as ref:
        factor_dimension(10)
    assert str(exc.value) == str(ref.value)  # the message of factor_dimension, unchanged
    for cls in (RandomizedHadamard, KroneckerOrthogonal):
        with pytest.raises(ValueError, match=">= 1"):
            cls(0)
        for bad in (2.5, True, "8", None):
            with pytest.raises(TypeError, match="positive integer"):
                cls(bad)
        for bad in (-1, 1.5, "x"):
            with pytest.raises(TypeError, match="seed"):
                cls(12, seed=bad)


@pytest.mark.parametrize("T", [RandomizedHadamard(16, 0), KroneckerOrthogonal(16, 0)])
def test_application_errors(T):
    for x in (np.ones(15), np.ones((3, 17)), np.float64(1.0)):
        with pytest.raises(ValueError, match=r"shape \(\.\.\., 16\)"):
            T.forward(x)
        with pytest.raises(ValueError, match=r"shape \(\.\.\., 16\)"):
            T.inverse(x)
    x = np.ones(16)
    x[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        T.forward(x)
    with pytest.raises(TypeError, match="real numbers"):
        T.forward(np.ones(16, complex))


def test_process_shape_errors():
    W, H = np.ones((8, 12)), np.eye(12)
    Tm, Tn = RandomizedHadamard(8), KroneckerOrthogonal(12)
    with pytest.raises(ValueError, match="T_out acts on 12 entries but W has 8 rows"):
        incoherence_process(W, H, Tn, Tn)
    with pytest.raises(ValueError, match="T_in acts on 8 entries but W has 12 columns"):
        incoherence_process(W, H, Tm, Tm)
    with pytest.raises(TypeError, match="OrthogonalTransform"):
        incoherence_process(W, H, np.eye(8), Tn)
    with pytest.raises(ValueError, match="H has shape"):
        incoherence_process(W, np.eye(8), Tm, Tn)
    with pytest.raises(ValueError, match="T_out acts on 12"):
        incoherence_unprocess(W, Tn, Tn)
    with pytest.raises(TypeError, match="OrthogonalTransform"):
        incoherence_unprocess(W, Tm, None)
    assert isinstance(Tm, OrthogonalTransform)


# ---------------------------------------------------------------------------------------
# Item 12: the proxy is invariant and the inverse is exact.
# ---------------------------------------------------------------------------------------

@given(seed=seeds, kinds=st.sampled_from(["rht", "kron", "mixed"]),
       shape=st.sampled_from([(8, 16), (12, 48), (13, 20), (24, 12), (1, 64)]))
def test_incoherence_process_preserves_proxy(seed, kinds, shape):
    m, n = shape
    rng = np.random.default_rng(seed)
    make = {"rht": RandomizedHadamard, "kron": KroneckerOrthogonal}
    out_cls = make["kron" if kinds == "mixed" else kinds]
    in_cls = make["rht" if kinds == "mixed" else kinds]
    try:
        T_out, T_in = out_cls(m, seed=rng), in_cls(n, seed=rng)
    except ValueError:  # m or n without a Hadamard size: use the Kronecker transform there
        T_out, T_in = KroneckerOrthogonal(m, seed=rng), KroneckerOrthogonal(n, seed=rng)
    W = rng.standard_normal((m, n))
    H = llm_like_hessian(n, seed)
    W_t, H_t = incoherence_process(W, H, T_out, T_in)
    np.testing.assert_array_equal(H_t, H_t.T)
    # an arbitrary "quantized" W~ and its image in the original coordinates
    W_hat_t = W_t + 0.1 * rng.standard_normal((m, n))
    W_hat = incoherence_unprocess(W_hat_t, T_out, T_in)
    l_t = proxy_loss(W_hat_t, W_t, H_t)
    l = proxy_loss(W_hat, W, H)
    assert l == pytest.approx(l_t, rel=loss_rtol(H))
    # the inverse is exact: rtol 1e-12 normwise (4 applications: 4 n u <= 1.2e-14)
    back = incoherence_unprocess(W_t, T_out, T_in)
    assert np.linalg.norm(back - W) <= 1e-12 * np.linalg.norm(W)
    # ... and W~ = T_out W T_in^T, H~ = T_in H T_in^T as dense matrices
    Mo, Mi = T_out.matrix(), T_in.matrix()
    np.testing.assert_allclose(W_t, Mo @ W @ Mi.T, rtol=0, atol=8 * max(m, n) * U64 * np.abs(W).sum())
    np.testing.assert_allclose(H_t, Mi @ H @ Mi.T, rtol=0, atol=8 * n * U64 * np.abs(H).sum())


def test_ldlq_after_processing_has_same_loss_in_both_coordinates():
    m, n = 16, 48
    rng = np.random.default_rng(0)
    W, H = rng.standard_normal((m, n)), llm_like_hessian(n, 0)
    T_out, T_in = RandomizedHadamard(m, 1), RandomizedHadamard(n, 2)
    W_t, H_t = incoherence_process(W, H, T_out, T_in)
    W_hat_t, _ = ldlq(W_t, H_t, IntegerGrid(0.25))
    W_hat = incoherence_unprocess(W_hat_t, T_out, T_in)
    assert proxy_loss(W_hat, W, H) == pytest.approx(proxy_loss(W_hat_t, W_t, H_t), rel=loss_rtol(H))


# ---------------------------------------------------------------------------------------
# Item 14 (cheap checks): adversarial inputs become (exactly) incoherent.
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("m, n", [(64, 64), (12, 48), (16, 20), (1, 64)])
def test_rht_makes_spiky_weights_exactly_one_incoherent(m, n):
    W = np.zeros((m, n))
    W[m // 3, n // 2] = 5.0
    assert mu_weights(W) == pytest.approx(math.sqrt(m * n), rel=1e-15)
    W_t, _ = incoherence_process(W, np.eye(n), RandomizedHadamard(m, 1), RandomizedHadamard(n, 2))
    # every entry is +-5/sqrt(mn), each computed with relative error <= (m + n) u
    assert mu_weights(W_t) == pytest.approx(1.0, abs=4 * (m + n) * U64)


@pytest.mark.parametrize("n", [16, 64, 48, 60])
def test_rht_makes_diagonal_hessian_exactly_one_incoherent(n):
    H = np.diag(np.arange(1.0, n + 1))  # axis-aligned, distinct eigenvalues (gap 1)
    assert mu_hessian(H) == pytest.approx(math.sqrt(n), rel=1e-15)
    _, H_t = incoherence_process(np.ones((1, n)), H, RandomizedHadamard(1), RandomizedHadamard(n, 3))
    # exact H~ has eigenvectors T e_j, entries +-1/sqrt(n): mu = 1. Davis-Kahan: the
    # computed eigenvectors are off by <= ||dH||/gap <= (4 n u n)/1 ~ 4e-12 (n = 64),
    # times sqrt(n) in mu: ~3e-11; assert 1e-9.
    assert mu_hessian(H_t) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("m, n", [(64, 64), (48, 13), (100, 210)])
def test_kronecker_incoherence_of_spikes_is_product_of_factor_maxima(m, n):
    # Deterministic facts behind "mu falls": for a spike E_ij, T_out E_ij T_in^T is the
    # outer product of column i of T_out and column j of T_in (unit vectors), so
    # mu_W = sqrt(mn) max|col_i| max|col_j|; for diagonal H with distinct eigenvalues
    # the eigenvectors are the columns of T, and max|B1 (x) B2| = max|B1| max|B2|.
    To, Ti = KroneckerOrthogonal(m, 5), KroneckerOrthogonal(n, 6)
    W = np.zeros((m, n))
    W[1, 2] = 1.0
    W_t, _ = incoherence_process(W, np.eye(n), To, Ti)
    Mo, Mi = To.matrix(), Ti.matrix()
    expected = math.sqrt(m * n) * np.abs(Mo[:, 1]).max() * np.abs(Mi[:, 2]).max()
    assert mu_weights(W_t) == pytest.approx(expected, rel=1e-12)
    assert mu_weights(W_t) < math.sqrt(m * n)  # a.s.: a Haar vector is not a signed axis
    H = np.diag(np.arange(1.0, n + 1))
    _, H_t = incoherence_process(W, H, To, Ti)
    expected = math.sqrt(n) * np.abs(Ti.B1).max() * np.abs(Ti.B2).max()
    assert mu_hessian(H_t) == pytest.approx(expected, abs=1e-9)  # Davis-Kahan as above
    if n > 1:
        assert mu_hessian(H_t) < math.sqrt(n)


# ---------------------------------------------------------------------------------------
# Item 14: the Lemma 3.1 tail check.
# ---------------------------------------------------------------------------------------

def _adversarial_hessians(n, rng):
    """Inputs an RHT must fix: axis-aligned eigenvectors (diagonal), eigenvectors equal
    to Hadamard columns (a sign-less G_n maps them to axes: mu = sqrt(n)), and a Haar
    eigenbasis (mu ~ sqrt(4 log n), close to the lemma's rate). Distinct eigenvalues."""
    lam = np.logspace(0, 3, n)
    G = hadamard_matrix(n)
    Q = haar_orthogonal(n, rng)
    return {"diagonal": np.diag(lam), "hadamard-basis": G.T @ np.diag(lam) @ G,
            "haar-basis": Q @ np.diag(lam) @ Q.T}


def _adversarial_weights(m, n, rng):
    E = np.zeros((m, n))
    E[0, 0] = 1.0
    return {"spike": E, "hadamard-spike": hadamard_matrix(m).T @ E @ hadamard_matrix(n),
            "gaussian": rng.standard_normal((m, n))}


def _tail_check(n, m, delta, trials):
    """Count draws with mu above the Lemma 3.1 rates and compare with delta.

    The lemma says P(mu_H > rht_mu_hessian(n, delta)) <= delta for every H (same for W).
    Under that null, the count over independent sign draws is stochastically below
    Binomial(trials, delta); we fail only above its 1 - 1e-6 quantile, so a correct
    implementation fails with probability < 1e-6 per input. The check has teeth: each
    input's unprocessed (or sign-less processed) mu exceeds the rate, so a missing
    transform or missing signs gives count = trials.
    """
    rng = np.random.default_rng(1234)
    limit = stats.binom.ppf(1 - 1e-6, trials, delta)
    rate_h, rate_w = rht_mu_hessian(n, delta), rht_mu_weights(m, n, delta)
    report = {}
    G_n = hadamard_matrix(n)
    for name, H in _adversarial_hessians(n, rng).items():
        if name != "haar-basis":  # the teeth: without random signs mu would be sqrt(n) > rate
            sign_less = G_n @ H @ G_n.T
            assert max(mu_hessian(H), mu_hessian(sign_less)) > rate_h
        mus = []
        for t in range(trials):
            T = RandomizedHadamard(n, seed=rng)
            mus.append(mu_hessian(T.forward(T.forward(H).T).T))
        count = int(np.sum(np.array(mus) > rate_h))
        report[f"H {name}"] = (count, max(mus), rate_h)
        assert count <= limit, (name, count, limit)
    G_m = hadamard_matrix(m)
    for name, W in _adversarial_weights(m, n, rng).items():
        if name != "gaussian":
            assert max(mu_weights(W), mu_weights(G_m @ W @ G_n.T)) > rate_w
        mus = []
        for t in range(trials):
            W_t, _ = incoherence_process(W, np.eye(n), RandomizedHadamard(m, seed=rng),
                                         RandomizedHadamard(n, seed=rng))
            mus.append(mu_weights(W_t))
        count = int(np.sum(np.array(mus) > rate_w))
        report[f"W {name}"] = (count, max(mus), rate_w)
        assert count <= limit, (name, count, limit)
    return report


def test_lemma_3_1_tail():
    # n = m = 64, delta = 0.05: rates 4.90 (H; worst possible 8) and 25.4 (W; worst 64).
    # 150 draws: the Binomial(150, 0.05) 1-1e-6 quantile is 24 (16 %).
    report = _tail_check(64, 64, 0.05, 150)
    print(report)


@pytest.mark.slow
def test_lemma_3_1_tail_large():
    report = _tail_check(256, 128, 0.01, 1000)
    print(report)


# ---------------------------------------------------------------------------------------
# Item 15: incoherence lowers tr(D).
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [16, 64, 48])
def test_rht_of_diagonal_hessian_lowers_trace_d_and_meets_lemma_2(n):
    # Theorem-level facts: for diagonal H, D = H; after conjugation tr(D~) <= tr(H~) =
    # tr(H) (D_kk <= H_kk), strictly since H~ is not diagonal; and H~ is exactly
    # 1-incoherent, so QuIP's Lemma 2 gives tr(D~) <= tr(H^{1/2})^2 / n.
    lam = np.logspace(-2, 2, n)
    H = np.diag(lam)
    _, D0 = ldl(H)
    assert D0.sum() == pytest.approx(lam.sum(), rel=1e-15)
    tol = 4 * n * U64 * np.linalg.cond(H)  # Cholesky backward error amplified by cond(H)
    for seed in range(5):
        _, H_t = incoherence_process(np.ones((1, n)), H, RandomizedHadamard(1), RandomizedHadamard(n, seed))
        _, D = ldl(H_t)
        assert D.sum() < lam.sum()
        assert D.sum() <= trace_d_incoherence_bound(H, 1.0) * (1 + tol)


@pytest.mark.parametrize("cls", [RandomizedHadamard, KroneckerOrthogonal])
def test_incoherence_lowers_trace_d_on_average(cls):
    # Not a theorem (reference notes §11 item 15): on an LLM-like H with outlier
    # channels, the mean tr(D) over 16 transforms is below tr(D) of the raw H. We assert
    # mean + 3 standard errors < before, and mu_H(mean) falls.
    n = 64
    H = llm_like_hessian(n, 11)
    before = ldl(H)[1].sum()
    after, mus = [], []
    for seed in range(16):
        T = cls(n, seed)
        H_t = incoherence_process(np.ones((1, n)), H, KroneckerOrthogonal(1), T).H
        after.append(ldl(H_t)[1].sum())
        mus.append(mu_hessian(H_t))
    mean, se = np.mean(after), np.std(after, ddof=1) / np.sqrt(len(after))
    print(f"{cls.__name__}: tr(D) {before:.4g} -> {mean:.4g} +- {se:.2g}; "
          f"mu_H {mu_hessian(H):.3g} -> {np.mean(mus):.3g}")
    assert mean + 3 * se < before
    assert np.mean(mus) < mu_hessian(H)


# ---------------------------------------------------------------------------------------
# QuIP's diagonal rescaling.
# ---------------------------------------------------------------------------------------

@given(seed=seeds, m=st.integers(1, 12), n=st.integers(1, 24))
def test_rescale_preserves_proxy_and_minimises_product(seed, m, n):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n)) * np.exp(rng.normal(0, 1, n))
    H = llm_like_hessian(n, seed)
    W_s, H_s, d = rescale(W, H)
    scale = np.abs(H).max()
    np.testing.assert_array_equal(H_s, H_s.T)
    # the proxy is preserved up to the normalisation by max|H_ij|: for any W^_s,
    # l_{H_s}(W^_s; W_s) = l_H(W^_s / d; W) / max|H|. Only elementwise scalings happen
    # in between (relative error a few u per entry), amplified by cond as in loss_rtol.
    W_hat_s = W_s + 0.1 * rng.standard_normal((m, n)) * d
    assert proxy_loss(W_hat_s, W_s, H_s) * scale == pytest.approx(
        proxy_loss(W_hat_s / d, W, H), rel=loss_rtol(H))
    np.testing.assert_allclose(W_s / d, W, rtol=4 * U64)
    # no clamp active here, so d attains the Cauchy-Schwarz minimum of
    # tr(H_s) ||W_s||_F^2 = (sum_j sqrt(H0_jj) ||W_j||)^2, below d = 1 and random d
    H0 = H / scale
    col = np.linalg.norm(W, axis=0)
    assert np.all(np.diag(H0) > 1e-8) and np.all(col**2 > 1e-8)
    product = np.trace(H_s) * np.sum(W_s**2)
    assert product == pytest.approx(np.sum(np.sqrt(np.diag(H0)) * col) ** 2, rel=1e-12)
    for dd in (np.ones(n), np.exp(rng.normal(0, 1, n))):
        other = np.sum(np.diag(H0) / dd**2) * np.sum((W * dd) ** 2)
        assert product <= other * (1 + 1e-12)


def test_rescale_dead_column_and_errors():
    W = np.ones((3, 4))
    W[:, 1] = 0.0
    W_s, H_s, d = rescale(W, np.eye(4))
    assert np.all(np.isfinite(H_s)) and np.all(d > 0)
    assert d[1] == pytest.approx((1.0 / 1e-8) ** 0.25)  # the 1e-8 clamp on ||W_j||^2
    with pytest.raises(ValueError, match="all zeros"):
        rescale(W, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="H has shape"):
        rescale(W, np.eye(3))
