"""quipref.bounds: each function computes its formula (checked against an independent
computation), and the bounds hold on LDLQ runs where they are theorems.

Float tolerances: the closed forms are a handful of float64 operations (rel 1e-14);
where an eigendecomposition enters, independent routes (scipy.linalg.sqrtm, a dense
mask, numpy.linalg.norm) agree to ~n u cond(H^{1/2}) (rel 1e-10 for the matrices here,
whose condition numbers are <= 1e4).
"""
import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from quipref.bounds import (block_ldlq_bound, gaussian_distortion_rate, ldlq_average,
                            ldlq_worst_case, rht_mu_hessian, rht_mu_weights, rounding_average,
                            rounding_worst_case, trace_d_block_bound, trace_d_incoherence_bound)
from quipref.hessian import proxy_loss
from quipref.incoherence import RandomizedHadamard, incoherence_process, mu_hessian
from quipref.ldlq import ldl, ldlq
from quipref.quantizers import IntegerGrid

U64 = 2.0**-53
seeds = st.integers(0, 2**32 - 1)


def wishart_hessian(n, seed, ridge=1e-2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2 * n, n)) * np.exp(rng.normal(0, 1, n))
    H = X.T @ X / (2 * n)
    return H + ridge * np.mean(np.diag(H)) * np.eye(n)


# ---------------------------------------------------------------------------------------
# The formulas.
# ---------------------------------------------------------------------------------------

@given(seed=seeds, n=st.sampled_from([4, 8, 16]), g=st.sampled_from([1, 2, 4]), m=st.integers(1, 50))
def test_trace_d_forms_and_theorem_1_constants(seed, n, g, m):
    H = wishart_hessian(n, seed)
    _, D = ldl(H, g)
    trD = sum(np.trace(b) for b in D)
    Dfull = scipy.linalg.block_diag(*D)
    # D given as blocks, as a dense matrix, or (g = 1) as its diagonal: the same trace
    forms = [D, Dfull] + ([D[:, 0, 0]] if g == 1 else [])
    for form in forms:
        assert ldlq_worst_case(m, form) == pytest.approx(m * trD / 4, rel=1e-14)
        assert ldlq_average(m, form) == pytest.approx(m * trD / 12, rel=1e-14)
        assert ldlq_average(m, form, "stochastic") == pytest.approx(m * trD / 6, rel=1e-14)
    assert rounding_worst_case(m, H) == pytest.approx(m * np.trace(H) / 4, rel=1e-14)
    assert rounding_average(m, H) == pytest.approx(m * np.trace(H) / 12, rel=1e-14)
    assert rounding_average(m, H, "stochastic") == pytest.approx(m * np.trace(H) / 6, rel=1e-14)


@given(seed=seeds, n=st.sampled_from([4, 8, 16, 24]), g=st.sampled_from([1, 2, 4, 8]),
       mu=st.floats(1.0, 10.0), m=st.integers(1, 20), sigma2=st.floats(0.0, 3.0))
def test_spectral_bounds_match_independent_computation(seed, n, g, mu, m, sigma2):
    if n % g:
        g = 1
    H = wishart_hessian(n, seed)
    S = scipy.linalg.sqrtm(H).real  # independent route to H^{1/2} (Schur method)
    tr_sqrt = np.trace(S)
    assert trace_d_incoherence_bound(H, mu, g) == pytest.approx(mu**2 * g / n * tr_sqrt**2, rel=1e-10)
    mask = np.kron(np.eye(n // g), np.ones((g, g)))  # M_D = I_N (x) 1_{g x g}
    assert trace_d_block_bound(H, g) == pytest.approx(tr_sqrt * np.linalg.norm(S * mask, 2), rel=1e-10)
    # Thm 4.1 = m sigma^2 x Lemma B.1 (ii)
    assert block_ldlq_bound(m, H, mu, sigma2, g) == pytest.approx(
        g * m * mu**2 * sigma2 * tr_sqrt**2 / n, rel=1e-10, abs=0)


def test_rates_and_distortion_rate_values():
    # closed forms, each written out independently
    assert rht_mu_hessian(4096, 0.01) == pytest.approx(math.sqrt(2 * math.log(2 * 4096**2 / 0.01)), rel=1e-15)
    assert rht_mu_weights(4096, 11008, 0.01) == pytest.approx(2 * math.log(4 * 4096 * 11008 / 0.01), rel=1e-15)
    assert rht_mu_hessian(1, 1.0) == pytest.approx(math.sqrt(2 * math.log(2)), rel=1e-15)
    assert gaussian_distortion_rate(2) == 0.0625
    assert gaussian_distortion_rate(0) == 1.0
    assert gaussian_distortion_rate(1.5) == pytest.approx(0.125, rel=1e-15)
    # the RHT rates shrink as delta grows, and grow (slowly) with the size
    assert rht_mu_hessian(64, 0.5) < rht_mu_hessian(64, 0.01) < rht_mu_hessian(4096, 0.01)
    # a 4096-wide layer at delta = 1 %: mu_H ~ 6.4 against the worst case sqrt(n) = 64
    assert 6 < rht_mu_hessian(4096, 0.01) < 7


def test_rounding_baselines_dominate_ldlq():
    # D_kk <= H_kk makes every LDLQ bound at most its plain-rounding counterpart
    H = wishart_hessian(32, 0)
    _, D = ldl(H)
    assert ldlq_worst_case(5, D) < rounding_worst_case(5, H)
    assert ldlq_average(5, D) < rounding_average(5, H)


# ---------------------------------------------------------------------------------------
# The bounds hold on LDLQ runs.
# ---------------------------------------------------------------------------------------

@given(seed=seeds, n=st.sampled_from([16, 64]), m=st.sampled_from([1, 8, 32]), rht=st.booleans())
def test_nearest_ldlq_below_the_chain_of_bounds(seed, n, m, rht):
    # l <= (m/4) tr(D)  [Thm 1, deterministic for nearest]
    #   <= (m/4) (mu^2/n) tr(H^1/2)^2  [Lemma 2, mu from eigh]  and  <= (m/4) tr(H)
    H = wishart_hessian(n, seed)
    rng = np.random.default_rng(seed)
    W = rng.uniform(-50, 50, (m, n))
    if rht:
        W, H = incoherence_process(W, H, RandomizedHadamard(m, seed=rng), RandomizedHadamard(n, seed=rng))
    _, D = ldl(H)
    loss = proxy_loss(ldlq(W, H, IntegerGrid()).W_hat, W, H)
    # float slack: evaluating l and factorising H, relative ~ 4 (n+1) u cond(H) (x4 for
    # the eigendecompositions in the spectral bound); |eta| <= 1/2 + ulp(50)
    tol = 16 * (n + 1) * U64 * np.linalg.cond(H) + 1e-12
    assert loss <= ldlq_worst_case(m, D) * (1 + tol)
    assert ldlq_worst_case(m, D) <= m / 4 * trace_d_incoherence_bound(H, mu_hessian(H)) * (1 + tol)
    assert ldlq_worst_case(m, D) <= rounding_worst_case(m, H) * (1 + tol)
    # the same chain via Thm 4.1 with g = 1 and sigma^2 = 1/4 (|eta|^2 <= 1/4 pointwise)
    assert loss <= block_ldlq_bound(m, H, mu_hessian(H), 0.25, 1) * (1 + tol)


@given(seed=seeds, g=st.sampled_from([2, 4, 8]), m=st.sampled_from([1, 8]))
def test_block_ldlq_nearest_below_theorem_4_1(seed, g, m):
    # Deterministic nearest rounding of a g-block: ||Q(x) - x||^2 <= g/4, so
    # (Q(x)-x)(Q(x)-x)^T <= (g/4) I_g and Thm 4.1 holds pointwise with sigma^2 = g/4.
    n = 32
    H = wishart_hessian(n, seed)
    W = np.random.default_rng(seed).uniform(-50, 50, (m, n))
    loss = proxy_loss(ldlq(W, H, IntegerGrid(), g).W_hat, W, H)
    tol = 16 * (n + 1) * U64 * np.linalg.cond(H) + 1e-12
    assert loss <= block_ldlq_bound(m, H, mu_hessian(H), g / 4, g) * (1 + tol)


@pytest.mark.parametrize("g", [1, 4, 8])
def test_block_ldlq_stochastic_mean_below_theorem_4_1(g):
    # Stochastic rounding to the integers, coordinate by coordinate: the error vector has
    # independent coordinates with variance f(1 - f) <= 1/4, so E[(Q(x)-x)(Q(x)-x)^T]
    # <= I/4 and Thm 4.1 bounds E[l] with sigma^2 = 1/4 (on an RHT-processed H). The
    # sound one-sided test of "E[l] <= bound" from 40 runs fails only on evidence against
    # it: mean - 6 se > bound (6 ~ the 1 - 1e-6 quantile of Student's t with 39 dof, se
    # estimated from the runs), so a correct implementation fails with prob. < 1e-6.
    # It has teeth only if the bound is not absurdly loose: we also print the ratio.
    n, m, runs = 64, 8, 40
    rng = np.random.default_rng(g)
    H = wishart_hessian(n, g)
    W = rng.uniform(-50, 50, (m, n))
    W, H = incoherence_process(W, H, RandomizedHadamard(m, seed=rng), RandomizedHadamard(n, seed=rng))
    Q = IntegerGrid(rounding="stochastic")
    losses = np.array([proxy_loss(ldlq(W, H, Q, g, seed=rng).W_hat, W, H) for _ in range(runs)])
    lower = losses.mean() - 6 * losses.std(ddof=1) / math.sqrt(runs)
    bound = block_ldlq_bound(m, H, mu_hessian(H), 0.25, g)
    print(f"g={g}: mean l = {losses.mean():.4g}, Thm 4.1 bound = {bound:.4g}, "
          f"ratio {losses.mean() / bound:.3f}")
    assert lower <= bound


# ---------------------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------------------

def test_errors():
    H = np.eye(4)
    with pytest.raises(TypeError, match="positive integer"):
        ldlq_worst_case(1.5, np.ones(4))
    with pytest.raises(TypeError, match="positive integer"):
        ldlq_worst_case(True, np.ones(4))
    with pytest.raises(ValueError, match=">= 1"):
        rounding_worst_case(0, H)
    with pytest.raises(ValueError, match="rounding"):
        ldlq_average(1, np.ones(4), "up")
    with pytest.raises(ValueError, match="negative"):
        ldlq_worst_case(1, -np.ones(4))
    with pytest.raises(ValueError, match="square"):
        ldlq_worst_case(1, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(n // g, g, g\)"):
        ldlq_worst_case(1, np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        ldlq_worst_case(1, np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="must divide"):
        trace_d_incoherence_bound(H, 1.0, 3)
    with pytest.raises(ValueError, match="> 0"):
        trace_d_incoherence_bound(H, 0.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        trace_d_block_bound(-H, 1)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        rht_mu_hessian(8, 1.5)
    with pytest.raises(ValueError, match="> 0"):
        rht_mu_weights(8, 8, 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        block_ldlq_bound(1, H, 1.0, -1.0, 1)
    with pytest.raises(ValueError, match=">= 0"):
        gaussian_distortion_rate(-1)
    with pytest.raises(TypeError, match="real number"):
        gaussian_distortion_rate("2")


def test_nearest_rounding_can_exceed_the_stochastic_worst_case():
    # (m/4) tr(H) is the worst case of stochastic rounding; deterministic nearest errors
    # can align with H's off-diagonal mass: W = 0.49 rounds to 0, eta = -0.49 in both columns
    H = np.array([[1.0, 0.9], [0.9, 1.0]])
    W = np.full((1, 2), 0.49)
    loss = proxy_loss(np.floor(W + 0.5), W, H)
    assert loss == pytest.approx(0.49**2 * 3.8, rel=1e-14)
    assert loss > rounding_worst_case(1, H)
