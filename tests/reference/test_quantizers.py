"""Scalar quantizers: grids, rounding rules, Lloyd-Max, persistence."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quipref.quantizers import IntegerGrid, LloydMax, ScalarGrid, lloyd_max_gaussian, quantizer_from_state

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@given(bits=st.integers(1, 8), s=st.floats(0.01, 100), x=arrays(np.float64, st.integers(1, 50), elements=finite))
def test_scalar_grid_is_nearest_point_of_grid(bits, s, x):
    q = ScalarGrid.symmetric(bits, s)
    grid = -s + q.step * np.arange(2**bits)
    xh = q.quantize(x)
    best = np.abs(x[:, None] - grid[None, :]).min(axis=1)
    # nearest up to the round-off of t = (x - offset)/step: |t| <= 2^b, eps ~ 1e-16 relative
    assert np.all(np.abs(xh - x) <= best + 1e-9 * (s + np.abs(x)))
    assert xh.min() >= -s - 1e-12 * s and xh.max() <= s + 1e-12 * s


def test_quip_grid_two_bits_is_four_symmetric_points():
    q = ScalarGrid.symmetric(2, 3.0)
    np.testing.assert_allclose(q.decode(np.arange(4)), [-3, -1, 1, 3])
    assert q.bits_per_weight == 2.0


def test_quip_grid_scale_is_rho_rms():
    W = np.random.default_rng(0).normal(size=(8, 16)) * 2
    q = ScalarGrid.quip(W, 3, rho=2.4)
    np.testing.assert_allclose(-q.offset, 2.4 * np.sqrt(np.mean(W**2)) + 1e-16, rtol=1e-15)


def test_minmax_grid_per_row_contains_zero_and_endpoints():
    W = np.random.default_rng(1).normal(size=(5, 7))
    W[2] = 0.0  # a dead row gets the [-1, 1] grid
    q = ScalarGrid.minmax(W, 4)
    lev = q.decode(np.tile(np.arange(16), (5, 1)))
    lo, hi = np.minimum(W.min(1), 0), np.maximum(W.max(1), 0)
    lo[2], hi[2] = -1, 1
    # OPTQ rounds the zero point, which shifts the grid by at most half a step
    assert np.all(lev.min(1) <= lo + q.step / 2 + 1e-12)
    assert np.all(lev.max(1) >= hi - q.step / 2 - 1e-12)
    # ... and makes 0 exactly representable: offset + step * zero == 0
    assert np.all(np.abs(lev).min(1) == 0.0)
    assert q.decode(q.encode(W)).shape == W.shape


def test_minmax_requires_matching_rows():
    q = ScalarGrid.minmax(np.ones((3, 4)), 2)
    with pytest.raises(ValueError, match="per-row parameters for 3 rows"):
        q.encode(np.ones((4, 4)))


@given(x=arrays(np.float64, st.integers(1, 40), elements=finite))
def test_integer_grid_nearest_is_floor_half(x):
    c = IntegerGrid().encode(x)
    np.testing.assert_array_equal(c, np.floor(x + 0.5).astype(np.int64))


def test_stochastic_rounding_is_unbiased():
    # mean of floor(t + u) is t; 200k draws of a Bernoulli(0.3): sd 0.46/sqrt(2e5)=1e-3, 5 sd tolerance
    x = np.full(200_000, 0.3)
    c = IntegerGrid(rounding="stochastic").encode(x, np.random.default_rng(0))
    assert abs(c.mean() - 0.3) < 5 * np.sqrt(0.21 / x.size)


def test_stochastic_needs_rng():
    with pytest.raises(ValueError, match="random generator"):
        IntegerGrid(rounding="stochastic").encode(np.ones(3))


def test_stochastic_is_reproducible_per_seed():
    x = np.random.default_rng(3).normal(size=100) * 5
    q = ScalarGrid.symmetric(3, 4.0, rounding="stochastic")
    a = q.encode(x, np.random.default_rng(7))
    b = q.encode(x, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bits,mse", [(1, 0.3634), (2, 0.1175), (3, 0.03454), (4, 0.009497)])
def test_lloyd_max_matches_max_1960_table(bits, mse):
    # Max (1960) tabulates these to 4 significant digits; our MSE is computed in closed form
    assert lloyd_max_gaussian(bits)[2] == pytest.approx(mse, rel=1e-3)


def test_lloyd_max_monte_carlo_mse():
    # 1e6 N(0,1) samples; the per-sample squared error at 2 bits has sd < 0.2, so the mean's
    # sd < 2e-4: a 5-sd tolerance is 1e-3
    x = np.random.default_rng(0).normal(size=1_000_000)
    q = LloydMax(2)
    assert np.mean((q.quantize(x) - x) ** 2) == pytest.approx(0.11748, abs=1e-3)


def test_lloyd_max_levels_are_centroids_and_nearest():
    lev, thr, _ = lloyd_max_gaussian(3)
    np.testing.assert_allclose(thr, (lev[1:] + lev[:-1]) / 2)
    x = np.linspace(-4, 4, 1001)
    q = LloydMax(3, scale=1.0)
    nearest = lev[np.abs(x[:, None] - lev[None, :]).argmin(1)]
    np.testing.assert_allclose(q.quantize(x), nearest)


@pytest.mark.parametrize("q", [ScalarGrid.symmetric(3, 2.0), ScalarGrid.minmax(np.arange(12.).reshape(3, 4), 2),
                               IntegerGrid(0.5, "stochastic"), LloydMax(2, 1.5)])
def test_state_round_trip(q):
    cfg, arrays = q.state()
    q2 = quantizer_from_state(cfg, arrays)
    x = np.linspace(-5, 5, 12).reshape(3, 4)
    np.testing.assert_array_equal(q.encode(x, np.random.default_rng(0)), q2.encode(x, np.random.default_rng(0)))
    assert repr(q2).startswith(type(q).__name__)


@pytest.mark.parametrize("bad,err", [(0, ValueError), (9, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bits_out_of_range(bad, err):
    with pytest.raises(err, match="bits"):
        ScalarGrid.symmetric(bad, 1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN or Inf"):
        ScalarGrid.symmetric(2, 1.0).encode(np.array([0.0, np.nan]))
    with pytest.raises(TypeError, match="real numbers"):
        LloydMax(2).encode(np.array([1j]))
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        ScalarGrid(2, 0.0, 0.0)
    with pytest.raises(ValueError, match="rounding"):
        IntegerGrid(rounding="up")
    with pytest.raises(ValueError, match="unknown quantizer type"):
        quantizer_from_state({"type": "Nope"}, {})
