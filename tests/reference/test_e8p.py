"""E8P, E81B and RVQ (QuIP#'s lattice codebooks) against their construction and the
published / independently checked numbers (reference notes §5, §6.1, §11 items 4, 16-18).

Statistical tests state their tolerance as ``z`` standard errors of the sample mean plus
the uncertainty of the quoted value (measured on 4e5 vectors, printed to 4 digits).
The 4e5-vector versions are marked ``slow``; the default run uses 5e4 / 2e4 vectors and
the fast encoder (which the parity tests hold to the brute force).
"""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quipref.hessian import proxy_loss
from quipref.ldlq import ldl, ldlq
from quipref.quantizers.base import quantizer_from_state
from quipref.quantizers.e8p import E8P, e8p_source_set
from quipref.quantizers.rvq import E81B, RVQ, e81b_codebook

# -- strategies named after the domain objects -------------------------------------------
scales = st.floats(0.05, 20.0)


@st.composite
def weight_groups(draw, max_groups=6, elements=st.floats(-6, 6)):
    """x of shape (..., 8k): 0-2 batch axes, k groups of 8 weights."""
    batch = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    k = draw(st.integers(1, max_groups))
    return draw(arrays(np.float64, tuple(batch) + (8 * k,), elements=elements))


def quarter_lattice_groups():
    """Inputs on the 1/8 grid: exact ties between codewords are common there."""
    return weight_groups(elements=st.integers(-24, 24).map(lambda i: i / 8))


def nearest_distance(x, C):
    """min_c ||x - c||^2 for every group of 8 (computed directly, not from the score)."""
    u = x.reshape(-1, 8)
    return np.array([((C - v) ** 2).sum(axis=1).min() for v in u])


def group_distance(x, xh):
    return ((x.reshape(-1, 8) - xh.reshape(-1, 8)) ** 2).sum(axis=1)


def dist_tol(x, s=1.0):
    """Round-off allowance for comparing distances in x units: the scores are float64
    in units of x / s with codewords of norm <= 4.1, so errors are ~1e-15 (s^2 + ||x||^2)."""
    return 1e-12 * (s * s + (x.reshape(-1, 8) ** 2).sum(axis=1))


# -- the source set S ----------------------------------------------------------------------
def test_source_set_is_the_abs_vectors_of_dhat8_in_the_ball_plus_29_pads():
    S = e8p_source_set()
    assert S.shape == (256, 8) and not S.flags.writeable
    # independent enumeration: all of D8-hat with entries in {-5/2..5/2} (2v odd in -5..5)
    twice = np.array(list(itertools.product((-5, -3, -1, 1, 3, 5), repeat=8)), dtype=np.int8)
    pts = twice[(twice.astype(np.int64).sum(1) % 4 == 0)]  # sum(v) = sum(2v)/2 even
    pts = pts[(pts.astype(np.int64) ** 2).sum(1) <= 40]  # ||v||^2 <= 10
    assert len(pts) == 29056  # reference notes §5.2
    absv = np.unique(np.abs(pts), axis=0) / 2.0  # np.unique sorts lexicographically
    assert len(absv) == 227
    np.testing.assert_array_equal(S[:227], absv)
    np.testing.assert_array_equal(S[0], [0.5] * 8)
    np.testing.assert_array_equal(S[1], [0.5] * 7 + [1.5])
    np.testing.assert_array_equal(S[226], [2.5, 1.5] + [0.5] * 6)
    assert int((S[:227].sum(1) % 2 == 1).sum()) == 120


def test_source_set_norm_histogram_and_padding():
    S = e8p_source_set()
    norms, counts = np.unique((S**2).sum(1), return_counts=True)
    assert dict(zip(norms.tolist(), counts.tolist())) == {2: 1, 4: 8, 6: 28, 8: 64, 10: 126, 12: 29}
    pad = S[227:]
    assert np.all(np.sort(pad, axis=1) == [0.5] * 3 + [1.5] * 5)
    assert np.all(pad.sum(1) == 9)  # odd: an odd number of sign flips is needed
    assert np.array_equal(np.flatnonzero(pad[0] == 0.5), [1, 2, 3])
    assert np.array_equal(np.flatnonzero(pad[-1] == 0.5), [2, 3, 7])
    assert len(np.unique(S, axis=0)) == 256


# -- the codebook and the 16-bit layout ---------------------------------------------------
def test_codebook_facts():
    C = E8P().codebook()
    assert C.shape == (65536, 8)
    assert len(np.unique(C, axis=0)) == 65536
    n2 = (C**2).sum(1)
    assert n2.min() == 0.5 and n2.max() == 16.5
    assert n2.mean() == pytest.approx(9.5703125, abs=0)  # notes: mean 9.57
    # all in E8 + 1/4: y = c - 1/4 is all-integer or all-half-integer, with an even sum
    y2 = 2 * (C - 0.25)
    assert np.all(y2 == np.round(y2))
    par = np.mod(y2, 2)
    assert np.all(par == par[:, :1])
    assert np.all(np.mod(y2.sum(1), 4) == 0)


def test_codebook_is_the_shifted_dhat8_orbits_of_S():
    """The set {+-1/4 + s * a : a in S, s a sign vector with sum(s * a) even}, built
    independently of the layout, is exactly the decoded codebook."""
    S = e8p_source_set()
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=8)))
    orbit = (signs[None, :, :] * S[:, None, :]).reshape(-1, 8)
    orbit = orbit[np.mod(orbit.sum(1), 2) == 0]
    assert len(orbit) == 256 * 128
    built = np.concatenate([orbit + 0.25, orbit - 0.25])
    C = E8P().codebook()
    key = lambda A: np.sort((A * 4 + 11).astype(np.int64) @ (23 ** np.arange(8)))  # digits 0..22
    np.testing.assert_array_equal(key(built), key(C))


def test_code_layout_repository_convention():
    q = E8P()
    np.testing.assert_array_equal(q.decode(np.array([0], np.uint16)), [0.75] * 8)
    np.testing.assert_array_equal(q.decode(np.array([1], np.uint16)), [0.25] * 8)
    np.testing.assert_array_equal(q.decode(np.array([256], np.uint16)), [0.75] * 7 + [-1.25])
    # for every code: shift -1/4 iff the sign byte has odd popcount; |c - shift| = S[c >> 8]
    codes = np.arange(65536)
    C = q.codebook()
    odd = np.array([bin(b).count("1") % 2 for b in range(256)])[codes & 0xFF]
    shift = np.where(odd == 1, -0.25, 0.25)[:, None]
    np.testing.assert_array_equal(np.abs(C - shift), e8p_source_set()[codes >> 8])
    # the effective sign bits (sign byte XOR parity) are the minus signs relative to the
    # base vector S[a] with coordinate 7 negated for odd sums
    base = e8p_source_set()[codes >> 8].copy()
    base[base.sum(1) % 2 == 1, 7] *= -1
    flips = (np.sign(C - shift) != np.sign(base)).astype(np.int64) @ (1 << np.arange(8))
    np.testing.assert_array_equal(flips, (codes & 0xFF) ^ odd)


def test_decode_shapes_and_codebook_rows():
    q = E8P(0.7)
    codes = np.random.default_rng(0).integers(0, 65536, size=(3, 2, 5)).astype(np.uint16)
    xh = q.decode(codes)
    assert xh.shape == (3, 2, 40) and xh.dtype == np.float64
    np.testing.assert_array_equal(xh.reshape(-1, 8), q.codebook()[codes.reshape(-1)])
    np.testing.assert_array_equal(q.codebook(), 0.7 * E8P().codebook())


# -- nearest-codeword encode ---------------------------------------------------------------
@given(x=weight_groups(), s=scales)
def test_encode_is_nearest_codeword(x, s):
    q = E8P(s)
    codes = q.encode(x)
    assert codes.dtype == np.uint16 and codes.shape == x.shape[:-1] + (x.shape[-1] // 8,)
    got = group_distance(x, q.decode(codes))
    best = nearest_distance(x, q.codebook())
    assert np.all(got <= best + dist_tol(x, s))


@given(x=quarter_lattice_groups())
def test_encode_is_nearest_on_tie_heavy_inputs(x):
    q = E8P()
    got = group_distance(x, q.quantize(x))
    np.testing.assert_allclose(got, nearest_distance(x, q.codebook()), rtol=0, atol=1e-12)


def test_codewords_encode_to_themselves():
    q = E8P(1.3)
    codes = np.random.default_rng(1).integers(0, 65536, size=500).astype(np.uint16)
    x = q.decode(codes[:, None])
    np.testing.assert_array_equal(q.encode(x)[:, 0], codes)  # distinct codewords: no ties


@given(x=weight_groups(), s=scales)
def test_scale_is_a_codebook_multiplier(x, s):
    q = E8P(s)
    np.testing.assert_array_equal(q.encode(x), E8P().encode(x / s))
    np.testing.assert_array_equal(q.decode(q.encode(x)), s * E8P().decode(q.encode(x)))


def test_from_rms_and_constants():
    q = E8P.from_rms(2.0)
    assert q.scale == pytest.approx(2.0 / 1.03)
    assert E8P.from_rms(2.0, rho=0.9).scale == pytest.approx(2.0 / 0.9)
    assert E8P().bits_per_weight == 2.0 and E8P.dim == 8 and not E8P().stochastic


def test_state_round_trip():
    for q in (E8P(0.37), E81B(1.5), RVQ(3, 0.8), RVQ(4, 1.2, 3.0)):
        r = quantizer_from_state(*q.state())
        assert type(r) is type(q) and r.state() == q.state()
    assert "E8P(scale=0.37)" == repr(E8P(0.37))


@pytest.mark.parametrize("make", [E8P, E81B, lambda: RVQ(3), lambda: RVQ(4)])
def test_input_errors(make):
    q = make()
    with pytest.raises(ValueError, match=r"last axis \(12\) must be a multiple of 8"):
        q.encode(np.zeros((2, 12)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        q.encode(np.array([0.0] * 7 + [np.nan]))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        q.encode(np.float64(1.0))
    with pytest.raises(TypeError, match="real numbers"):
        q.encode(np.zeros(8, dtype=complex))
    with pytest.raises(ValueError, match=r"outside \[0, "):
        q.decode(np.array([[q.n_codes]]))
    with pytest.raises(ValueError, match=r"outside \[0, "):
        q.decode(np.array([-1]))
    with pytest.raises(TypeError, match="integer array"):
        q.decode(np.array([1.0]))
    with pytest.raises(ValueError, match="finite and > 0"):
        type(q)(scale=0.0)


def test_rvq_bits_out_of_range():
    with pytest.raises(ValueError, match="bits must be between 3 and 4"):
        RVQ(2)


# -- Gaussian MSE (notes §5.5, §5.6, §11 item 18) -----------------------------------------
def _mse_stats(q, n, seed):
    x = np.random.default_rng(seed).normal(size=(n, 8))
    e = ((q.quantize(x).reshape(n, 8) - x) ** 2).mean(axis=1)
    return e.mean(), e.std(ddof=1) / np.sqrt(n), e


def _assert_matches_quoted(mean, se, sd, quoted, z=4.0):
    """Quoted values: 4e5 vectors (standard error sd / sqrt(4e5)), 4 digits (+-5e-5)."""
    tol = z * np.hypot(se, sd / np.sqrt(4e5)) + 5e-5
    assert abs(mean - quoted) <= tol, f"MSE {mean:.5f} vs quoted {quoted} (tolerance {tol:.1e})"


def _fast():
    from fast.quantizers.e8p import E8P as FE8P
    from fast.quantizers.rvq import RVQ as FRVQ

    return FE8P, FRVQ


@pytest.mark.parametrize("kind,quoted,n", [
    ("e8p", 0.0914, 50_000), ("rvq3", 0.0295, 20_000), ("rvq4", 0.0096, 20_000)])
def test_gaussian_mse_default_sample(kind, quoted, n):
    FE8P, FRVQ = _fast()
    q = {"e8p": FE8P(1 / 1.03), "rvq3": FRVQ(3, 1 / 0.98, 2.04), "rvq4": FRVQ(4, 1 / 1.03, 3.45)}[kind]
    mean, se, e = _mse_stats(q, n, seed=11)
    _assert_matches_quoted(mean, se, e.std(), quoted)
    # the reference brute force agrees with the fast encoder on a subsample
    ref = {"e8p": E8P(1 / 1.03), "rvq3": RVQ(3, 1 / 0.98, 2.04), "rvq4": RVQ(4, 1 / 1.03, 3.45)}[kind]
    x = np.random.default_rng(11).normal(size=(n, 8))[:200]
    np.testing.assert_array_equal(ref.encode(x), q.encode(x))


def test_paper_rho_is_worse_than_gaussian_optimum_paired():
    """Notes §5.5 / S1: on N(0, 1), rho = 0.9 gives 0.0990 and rho = 1.03 gives 0.0914.
    Same samples for both (paired), so the difference is measured much more precisely."""
    FE8P, _ = _fast()
    x = np.random.default_rng(5).normal(size=(50_000, 8))
    e = [((FE8P(1 / r).quantize(x).reshape(x.shape) - x) ** 2).mean(1) for r in (0.9, 1.03)]
    diff = e[0] - e[1]
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert diff.mean() > 4 * se
    assert abs(diff.mean() - (0.0990 - 0.0914)) <= 4 * se + 2e-4


@pytest.mark.slow
@pytest.mark.parametrize("kind,quoted", [("e8p", 0.0914), ("rvq3", 0.0295), ("rvq4", 0.0096)])
def test_gaussian_mse_4e5(kind, quoted):
    FE8P, FRVQ = _fast()
    q = {"e8p": FE8P(1 / 1.03), "rvq3": FRVQ(3, 1 / 0.98, 2.04), "rvq4": FRVQ(4, 1 / 1.03, 3.45)}[kind]
    mean, se, e = _mse_stats(q, 400_000, seed=12)
    _assert_matches_quoted(mean, se, e.std(), quoted)
    assert abs(mean - quoted) < 1e-3


@pytest.mark.slow
def test_gaussian_mse_scale_sweep_4e5():
    """The table of notes §5.5 (rho = RMS of the data fed to the unit codebook)."""
    FE8P, _ = _fast()
    table = {0.80: 0.1164, 0.85: 0.1062, 0.90: 0.0990, 0.95: 0.0943, 1.00: 0.0919,
             1.03: 0.0914, 1.05: 0.0915, 1.10: 0.0928, 1.20: 0.0998}
    x = np.random.default_rng(13).normal(size=(400_000, 8))
    got = {}
    for rho, quoted in table.items():
        e = ((FE8P(1 / rho).quantize(x).reshape(x.shape) - x) ** 2).mean(1)
        got[rho] = e.mean()
        _assert_matches_quoted(e.mean(), e.std(ddof=1) / np.sqrt(len(e)), e.std(), quoted)
    assert min(got, key=got.get) in (1.03, 1.05)


# -- E81B and RVQ -------------------------------------------------------------------------
def test_e81b_construction():
    C = e81b_codebook()
    assert C.shape == (256, 8) and len(np.unique(C, axis=0)) == 256
    n2 = (C**2).sum(1)
    assert (n2 == 0).sum() == 1 and (n2 == 2).sum() == 240 and (n2 == 4).sum() == 15
    # in E8: all-integer or all-half-integer, even sum
    par = np.mod(2 * C, 2)
    assert np.all(par == par[:, :1]) and np.all(np.mod(C.sum(1), 2) == 0)
    big = C[n2 == 4]
    assert not any(np.array_equal(b, [0] * 7 + [-2]) for b in big)
    assert sorted(map(tuple, C)) == list(map(tuple, C))  # our order: lexicographic
    assert E81B().bits_per_weight == 1.0


@given(x=weight_groups(), s=scales)
def test_e81b_encode_is_nearest(x, s):
    q = E81B(s)
    codes = q.encode(x)
    assert codes.dtype == np.uint8
    got = group_distance(x, q.decode(codes))
    assert np.all(got <= nearest_distance(x, q.codebook()) + dist_tol(x, s))


@pytest.mark.parametrize("bits", [3, 4])
def test_rvq_layout_and_stages(bits):
    rng = np.random.default_rng(bits)
    x = rng.normal(size=(4, 24)) * 1.7
    q = RVQ(bits, scale=1.7 / 1.0, resid_scale=2.5)
    codes = q.encode(x)
    assert codes.dtype == np.uint32 and codes.shape == (4, 3)
    assert q.bits_per_weight == float(bits)
    sh = 16 if bits == 4 else 8
    first, second = codes >> sh, codes & ((1 << sh) - 1)
    u = x / q.scale
    np.testing.assert_array_equal(first, E8P().encode(u))
    resid = (u - E8P().decode(first)) * 2.5
    second_q = E8P() if bits == 4 else E81B()
    np.testing.assert_array_equal(second, second_q.encode(resid))
    np.testing.assert_array_equal(
        q.decode(codes), q.scale * (E8P().decode(first) + second_q.decode(second) / 2.5))


def test_rvq_defaults_and_from_rms():
    assert RVQ(4).resid_scale == 3.45 and RVQ(3).resid_scale == 2.04
    q = RVQ.from_rms(3, 2.0)
    assert q.scale == pytest.approx(2.0 / 0.98) and q.resid_scale == 2.04
    assert RVQ.from_rms(4, 1.0, rho=0.98, resid_scale=3.0).resid_scale == 3.0


@given(x=weight_groups(max_groups=3), s=scales)
def test_rvq3_is_never_worse_than_its_first_stage(x, s):
    # E81B contains 0, so the nearest second-stage point is no farther than 0 from the
    # scaled residual. (E8P does not contain 0: RVQ4 can lose to E8P on single groups.)
    q = RVQ(3, s)
    d = group_distance(x, q.quantize(x))
    d1 = group_distance(x, E8P(s).quantize(x))
    assert np.all(d <= d1 + dist_tol(x, s))


# -- BlockLDLQ with E8P (notes §6.1) -------------------------------------------------------
@pytest.mark.parametrize("make", [lambda rms: E8P.from_rms(rms), lambda rms: RVQ.from_rms(4, rms)])
def test_blockldlq_exact_identity_with_e8p(make):
    rng = np.random.default_rng(3)
    m, n, g = 12, 48, 8
    A = rng.normal(size=(n, 3 * n)) * rng.uniform(0.2, 3.0, size=(n, 1))
    H = A @ A.T / (3 * n) + 0.05 * np.eye(n)
    W = rng.normal(size=(m, n))
    q = make(np.sqrt(np.mean(W**2)))
    res = ldlq(W, H, q, block_size=g)
    assert res.codes.shape == (m, n // 8)
    np.testing.assert_array_equal(res.W_hat, q.decode(res.codes))
    U, D = ldl(H, g)
    loss_blocks = 0.0
    for b, k in enumerate(range(0, n, g)):
        xk = W[:, k:k + g] + (W[:, :k] - res.W_hat[:, :k]) @ U[:k, k:k + g]
        np.testing.assert_array_equal(q.quantize(xk), res.W_hat[:, k:k + g])
        eta = res.W_hat[:, k:k + g] - xk
        loss_blocks += np.trace(eta @ D[b] @ eta.T)
    assert proxy_loss(res.W_hat, W, H) == pytest.approx(loss_blocks, rel=1e-9)
