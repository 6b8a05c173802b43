"""fast.incoherence against quipref.incoherence.

fast's RandomizedHadamard differs from the reference only in the Hadamard transform it
calls (``_hadamard``); the ±1 sign multiplications are exact in every float dtype. So
its forward/inverse differ from the reference's by exactly the difference of the two
Hadamard transforms, whose per-row bound is derived in fast/hadamard.py and checked in
test_hadamard_parity.py: with B(n, u) = (log2 p + (K-1) sqrt(K) + 2) u for n = K p,

* float64: ||fast - ref|| <= 2 B(n, 2^-53) ||x||;
* float32 (fast computes in float32; the reference in float64, rounded to float32 at the
  end, which adds <= 2^-24 ||x||): ||fast - ref|| <= (B(n, 2^-24) + 2^-24 + B(n, 2^-53)) ||x||.

A factor 1.01 covers second-order terms. Everything else (signs, Kronecker factors,
state) must be identical.
"""
import inspect
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fast.incoherence as fi
import quipref.incoherence as qi
from quipref.hadamard import BASE_SIZES, factor_dimension

U = {np.float64: 2.0**-53, np.float32: 2.0**-24}


def B(n, u):
    K, p = factor_dimension(n)
    return (math.log2(p) + (K - 1) * math.sqrt(K) + 2) * u


def parity_tol(n, dtype):
    if dtype == np.float64:
        return 1.01 * 2 * B(n, U[np.float64])
    return 1.01 * (B(n, U[np.float32]) + U[np.float32] + B(n, U[np.float64]))


@st.composite
def supported_sizes(draw, max_k=6):
    return draw(st.sampled_from((1,) + BASE_SIZES)) * 2 ** draw(st.integers(0, max_k))


seeds = st.integers(0, 2**32 - 1)
batch_shapes = st.sampled_from([(), (1,), (3,), (2, 3)])
float_dtypes = st.sampled_from([np.float32, np.float64])


# ---------------------------------------------------------------------------------------
# Same API.
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", qi.__all__)
def test_same_public_names_and_signatures(name):
    a, b = getattr(qi, name), getattr(fi, name)
    if inspect.isclass(a):
        assert issubclass(b, a)
        for meth in ("__init__", "forward", "inverse", "matrix", "state", "from_state"):
            if hasattr(a, meth):
                assert inspect.signature(getattr(b, meth)) == inspect.signature(getattr(a, meth))
    elif callable(a):
        assert inspect.signature(b) == inspect.signature(a)
    else:
        assert a == b
    assert set(fi.__all__) == set(qi.__all__)


def test_fast_rht_uses_the_fast_transform():
    import fast.hadamard

    assert fi.RandomizedHadamard._hadamard is fast.hadamard.hadamard_transform
    assert fi.RandomizedHadamard is not qi.RandomizedHadamard
    assert fi.KroneckerOrthogonal is qi.KroneckerOrthogonal  # no Hadamard in it


# ---------------------------------------------------------------------------------------
# Same transform, same results.
# ---------------------------------------------------------------------------------------

@given(n=supported_sizes(), seed=seeds, shape=batch_shapes, dtype=float_dtypes, data=st.data())
def test_rht_forward_inverse_match_reference(n, seed, shape, dtype, data):
    Tf, Tr = fi.RandomizedHadamard(n, seed), qi.RandomizedHadamard(n, seed)
    np.testing.assert_array_equal(Tf.signs, Tr.signs)  # same seed, same signs
    x = np.random.default_rng(data.draw(seeds)).standard_normal(shape + (n,)).astype(dtype)
    norm = np.linalg.norm(x.astype(np.float64), axis=-1)
    tol = parity_tol(n, dtype)
    for method in ("forward", "inverse"):
        yf, yr = getattr(Tf, method)(x), getattr(Tr, method)(x)
        assert yf.dtype == yr.dtype == dtype and yf.shape == yr.shape == x.shape
        err = np.linalg.norm(yf.astype(np.float64) - yr.astype(np.float64), axis=-1)
        assert np.all(err <= tol * norm + 1e-300), (method, float(np.max(err / np.maximum(norm, 1e-300))), tol)


@given(m=supported_sizes(max_k=4), n=supported_sizes(max_k=4), seed=seeds)
def test_incoherence_process_matches_reference(m, n, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    A = rng.standard_normal((n, n))
    H = A @ A.T / n + 1e-2 * np.eye(n)
    Wf, Hf = fi.incoherence_process(W, H, fi.RandomizedHadamard(m, 1), fi.RandomizedHadamard(n, 2))
    Wr, Hr = qi.incoherence_process(W, H, qi.RandomizedHadamard(m, 1), qi.RandomizedHadamard(n, 2))
    # two applications per side; orthogonal maps carry earlier errors unchanged in norm,
    # so the Frobenius difference is <= (tol_m + tol_n) ||W||_F (resp. 2 tol_n ||H||_F)
    tm, tn = parity_tol(m, np.float64), parity_tol(n, np.float64)
    assert np.linalg.norm(Wf - Wr) <= (tm + tn) * np.linalg.norm(W)
    assert np.linalg.norm(Hf - Hr) <= 2 * tn * np.linalg.norm(H)
    back = fi.incoherence_unprocess(Wf, fi.RandomizedHadamard(m, 1), fi.RandomizedHadamard(n, 2))
    assert np.linalg.norm(back - W) <= 1e-12 * np.linalg.norm(W)  # exact inverse, rtol 1e-12


# ---------------------------------------------------------------------------------------
# Saved states load in either package.
# ---------------------------------------------------------------------------------------

@given(n=supported_sizes(), seed=seeds)
def test_states_cross_load(n, seed):
    for T in (fi.RandomizedHadamard(n, seed), qi.RandomizedHadamard(n, seed), qi.KroneckerOrthogonal(n, seed)):
        cfg, arrays = T.state()
        Tf, Tr = fi.transform_from_state(cfg, arrays), qi.transform_from_state(cfg, arrays)
        name = type(T).__name__
        assert type(Tf) is getattr(fi, name) and type(Tr) is getattr(qi, name)
        assert Tf.state()[0] == Tr.state()[0] == cfg
        for k, v in arrays.items():
            np.testing.assert_array_equal(Tf.state()[1][k], v)
            np.testing.assert_array_equal(Tr.state()[1][k], v)


# ---------------------------------------------------------------------------------------
# Same errors.
# ---------------------------------------------------------------------------------------

def _error(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - comparing exception type and message
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("case", ["bad-size", "zero-size", "float-size", "bad-seed", "bad-x", "nan-x",
                                  "bad-state"])
def test_same_errors(case):
    def run(mod):
        if case == "bad-size":
            return _error(mod.RandomizedHadamard, 10)
        if case == "zero-size":
            return _error(mod.RandomizedHadamard, 0)
        if case == "float-size":
            return _error(mod.RandomizedHadamard, 2.0)
        if case == "bad-seed":
            return _error(mod.RandomizedHadamard, 8, -3)
        if case == "bad-x":
            return _error(mod.RandomizedHadamard(8).forward, np.ones((2, 9)))
        if case == "nan-x":
            return _error(mod.RandomizedHadamard(8).inverse, np.full(8, np.nan))
        cfg, arrays = mod.RandomizedHadamard(8).state()
        return _error(mod.transform_from_state, {**cfg, "version": 7}, arrays)

    got_f, got_r = run(fi), run(qi)
    assert got_r is not None and got_f == got_r
