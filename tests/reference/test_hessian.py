"""Hessian accumulation, regularisation, damping and the proxy loss."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quipref.hessian import HessianAccumulator, damp_hessian, proxy_loss, regularize_hessian


@given(n=st.integers(1, 12), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5), seed=st.integers(0, 2**31))
def test_streaming_equals_batch_mean(n, sizes, seed):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(size=(k, n)).astype(np.float32) for k in sizes]
    acc = HessianAccumulator(n)
    for b in batches:
        acc.update(b)
    X = np.concatenate(batches).astype(np.float64)
    # float64 sums of float32 inputs: both sides are exact products summed in a different
    # order; relative difference ~ N * 2^-52
    np.testing.assert_allclose(acc.hessian(), X.T @ X / len(X), rtol=1e-12, atol=1e-14)
    assert acc.count == len(X)


def test_accumulator_accepts_leading_dims_and_rejects_bad_last_axis():
    acc = HessianAccumulator(3)
    acc.update(np.ones((2, 4, 3)))
    assert acc.count == 8
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        acc.update(np.ones((4, 2)))
    with pytest.raises(ValueError, match="no inputs"):
        HessianAccumulator(2).hessian()
    with pytest.raises(ValueError, match="NaN or Inf"):
        acc.update(np.array([[1.0, np.inf, 0.0]]))


def test_regularize_normalises_mean_diagonal():
    A = np.random.default_rng(0).normal(size=(6, 20))
    H = A @ A.T * 37.0
    R = regularize_hessian(H, 1e-2)
    assert np.mean(np.diag(R)) == pytest.approx(1.01, rel=1e-14)
    np.testing.assert_allclose(R - 1e-2 * np.eye(6), H / np.mean(np.diag(H)), rtol=1e-14)


def test_damp_handles_dead_inputs():
    H = np.diag([4.0, 0.0, 2.0])
    W = np.ones((2, 3))
    Hd, Wd, dead = damp_hessian(H, 0.01, W)
    np.testing.assert_array_equal(dead, [False, True, False])
    np.testing.assert_array_equal(Wd[:, 1], 0.0)
    # dead diag -> 1, then + 1% of the mean diag (4 + 1 + 2)/3
    np.testing.assert_allclose(np.diag(Hd), np.array([4.0, 1.0, 2.0]) + 0.01 * 7 / 3)


@given(m=st.integers(1, 6), n=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_proxy_loss_is_expected_output_error(m, n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(50, n))
    H = X.T @ X / 50
    W, Wh = rng.normal(size=(m, n)), rng.normal(size=(m, n))
    direct = np.mean(np.sum((X @ (Wh - W).T) ** 2, axis=1))
    assert proxy_loss(Wh, W, H) == pytest.approx(direct, rel=1e-10)


def test_proxy_loss_errors():
    H = np.eye(3)
    with pytest.raises(ValueError, match="W_hat has shape"):
        proxy_loss(np.zeros((2, 3)), np.zeros((3, 3)), H)
    with pytest.raises(ValueError, match="W has 3 columns"):
        proxy_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.eye(4))
    with pytest.raises(ValueError, match="not symmetric"):
        proxy_loss(np.zeros((2, 2)), np.zeros((2, 2)), np.array([[1.0, 1.0], [0.0, 1.0]]))


def test_non_psd_hessian_is_refused_with_advice():
    with pytest.raises(ValueError, match="not positive semi-definite.*regularize_hessian"):
        regularize_hessian(np.array([[1.0, 2.0], [2.0, 1.0]]))
