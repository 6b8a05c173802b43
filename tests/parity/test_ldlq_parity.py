"""fast.ldlq against quipref.ldlq: same API, same codes (up to summation order), same errors.

Why codes can differ at all, and how far
----------------------------------------
``fast`` computes the factor ``U`` with the reference's own LAPACK calls, bit for bit, and
rounds with the reference's own arithmetic. What differs is the order in which the
feedback terms are added: the reference forms ``x_k = W_k + (W - Ŵ)_{:,<k} U_{<k,k}`` with
one gemv per column, fast with dgemm blocks of a binary tree plus an in-leaf running sum.
Any order of summing the k terms ``p_l = E_l U_lk`` (plus ``W_k``) in float64 is within
``γ_k Σ |p_l|`` of the exact sum (Higham, Accuracy and Stability, eq. (4.4):
``γ_k = k u / (1 - k u)``, ``u = 2^-53``; FMA or SIMD partial sums only shorten the
chains). So while a row's earlier codes agree (hence its earlier errors ``E`` are the
same numbers),

    |x_fast - x_ref| <= 2 γ_(k+1) S,   S = |W_k| + Σ_{l<k} |E_l| |U_lk|.

The rounding step is the same monotone computation on both sides (``t = (x - o) / s``,
``floor(t + 1/2)``, clip), so a code can differ only if the reference's ``x`` lies within
that distance of a rounding boundary. Rows are independent, so the test finds, for every
row whose codes differ, the *first* column where they do, and asserts that the
reference's own input to the quantizer there (recorded through a wrapper) is within
``TOL_FACTOR * 2 (k + 2) u S`` of a boundary (``TOL_FACTOR = 4`` absorbs the rounding of
``t`` itself and of ``S``). After that column the row legitimately follows another path,
so for the whole output the test checks instead that fast's result is a fixed point of
LDLQ (each code is Q of ``W + (W - Ŵ) U`` recomputed in float64, again up to the same
boundary distance) and that the LDLQ identity ``ℓ = Σ_k D_kk ||η_k||²`` holds for it.
Such rows must be rare: at most ``MAX_DIVERGED_ROWS`` per example (for random data the
chance that a value lands within ~1e-13 relative of a boundary is about that small; in
practice none occur in these tests).

Everything else is exact: the factor ``ldl``, equal codes give bit-equal ``W_hat``,
stochastic rounding consumes the Generator identically, and errors are the same types
with the same messages.
"""
from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quipref.quantizers import E8P, IntegerGrid, LloydMax, ScalarGrid

R = importlib.import_module("quipref.ldlq")  # (``import quipref.ldlq`` gives the function)
F = importlib.import_module("fast.ldlq")

U_ROUND = 2.0**-53
TOL_FACTOR = 4.0
MAX_DIVERGED_ROWS = 2


# ---------------------------------------------------------------------------------------
# domain objects
# ---------------------------------------------------------------------------------------
def spd_hessian(rng, n, kind):
    """SPD H: ``A A^T / k + δ I`` ("well": k = 2n, δ = 0.1; "ill": k = n/4 + 1 random
    directions with a decaying spectrum and δ = 1e-6, condition number ~1e6-1e8)."""
    if kind == "well":
        A = rng.standard_normal((n, 2 * n))
        H = A @ A.T / (2 * n) + 0.1 * np.eye(n)
    else:
        k = n // 4 + 1
        A = rng.standard_normal((n, k)) * np.logspace(0, -2, k)
        H = A @ A.T / k + 1e-6 * np.eye(n)
    return (H + H.T) / 2


def make_quantizer(kind, bits, W, rng):
    scale = float(np.sqrt(np.mean(W**2)))
    if kind == "int":
        return IntegerGrid(0.37 * scale)
    if kind == "int-stoch":
        return IntegerGrid(0.37 * scale, "stochastic")
    if kind == "sym":  # half width 1.2 RMS: clamping is active
        return ScalarGrid.symmetric(bits, 1.2 * scale)
    if kind == "sym-stoch":
        return ScalarGrid.symmetric(bits, 1.2 * scale, "stochastic")
    if kind == "minmax":  # per-row step and offset
        return ScalarGrid.minmax(W, bits)
    if kind == "minmax-stoch":
        return ScalarGrid.minmax(W, bits, "stochastic")
    if kind == "lloyd":
        return LloydMax(bits, scale)
    raise AssertionError(kind)


QUANTIZER_KINDS = ["int", "int-stoch", "sym", "sym-stoch", "minmax", "minmax-stoch", "lloyd"]


@st.composite
def ldlq_problems(draw, max_m=23, sizes=(1, 5, 8, 24, 40, 72, 96, 130)):
    """(W, H, quantizer, g, seed, leaf): odd m, n not a multiple of the leaf, g | n."""
    m = draw(st.integers(1, max_m))
    n = draw(st.sampled_from(sizes))
    g = draw(st.sampled_from([b for b in (1, 2, 4, 8) if n % b == 0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    H = spd_hessian(rng, n, draw(st.sampled_from(["well", "ill"])))
    W = rng.standard_normal((m, n)) * draw(st.sampled_from([1.0, 1e-3, 50.0]))
    q = make_quantizer(draw(st.sampled_from(QUANTIZER_KINDS)), draw(st.integers(2, 4)), W, rng)
    leaf = draw(st.sampled_from([8, 16, F.LEAF]))  # small leaves: deep trees at small n
    return W, H, q, g, draw(st.integers(0, 2**16)), leaf


# ---------------------------------------------------------------------------------------
# the comparison rule
# ---------------------------------------------------------------------------------------
class Recorder:
    """Wraps a quantizer and records every input to ``encode`` (the reference's x_k)."""

    def __init__(self, q):
        self.q, self.inputs = q, []
        self.dim = getattr(q, "dim", 1)
        self.stochastic = getattr(q, "stochastic", False)

    def encode(self, x, rng=None):
        self.inputs.append(np.array(x, copy=True) if not hasattr(x, "get") else x.get())
        return self.q.encode(x, rng)

    def decode(self, codes):
        return self.q.decode(codes)


def reference_uniforms(seed, m, n, g):
    """The uniforms the reference's stochastic rounding used, as (m, n)."""
    u = np.random.default_rng(seed).random((n // g, m, g))
    return u.transpose(1, 0, 2).reshape(m, n)


def boundary_distance(q, x, u=None):
    """Distance (in units of x) from x to the nearest point where Q's code changes."""
    x = np.asarray(x, dtype=np.float64)
    if isinstance(q, LloydMax):
        th = np.asarray(q.thresholds) * q.scale
        return np.min(np.abs(x[..., None] - th), axis=-1)
    m = x.shape[0]
    if isinstance(q, ScalarGrid):
        step = np.broadcast_to(q.step, (m,))[:, None]
        offset = np.broadcast_to(q.offset, (m,))[:, None]
    else:
        step, offset = np.full((m, 1), q.step), np.zeros((m, 1))
    t = (x - offset) / step
    s = t + (u if q.stochastic else 0.5)
    # the code changes where floor(s) does; a slack of a few ulps of s for computing t
    return np.maximum(np.abs(s - np.round(s)) - 4 * np.spacing(np.abs(s) + 1), 0) * step


def summation_tol(W, W_hat, U):
    """``TOL_FACTOR * 2 (k + 2) u (|W_k| + Σ_l |E_l| |U_lk|)`` for every entry (m, n)."""
    n = W.shape[1]
    S = np.abs(W) + np.abs(W - W_hat) @ np.abs(U)
    return TOL_FACTOR * 2 * (np.arange(n) + 2) * U_ROUND * S


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def assert_ldlq_parity(W, H, q, g, seed, fast_result):
    """The rule of the module docstring. Returns the number of diverged rows.

    ``W``, ``H`` may be CuPy arrays: the reference then runs on the same device arrays
    (same cuSOLVER factor), and everything is compared on the host.
    """
    rec = Recorder(q)
    ref = R.ldlq(W, H, rec, g, seed=seed)
    U, D = (_host(a) for a in R.ldl(H, g))
    ref = R.LDLQResult(_host(ref.W_hat), _host(ref.codes))
    W = _host(W).astype(np.float64)
    H = _host(H).astype(np.float64)
    m, n = W.shape
    X_ref = np.concatenate(rec.inputs, axis=1)  # (m, n): the reference's inputs to Q
    fc, fw = _host(fast_result.codes), _host(fast_result.W_hat)
    assert fc.dtype == ref.codes.dtype and fc.shape == ref.codes.shape
    assert fw.dtype == np.float64 and fw.shape == W.shape
    uni = reference_uniforms(seed, m, n, g) if q.stochastic else None
    tol_ref = summation_tol(W, ref.W_hat, U)

    same_rows = np.all(fc == ref.codes, axis=1)
    # rows that agree are bit-identical
    np.testing.assert_array_equal(fw[same_rows], ref.W_hat[same_rows])
    diverged = np.flatnonzero(~same_rows)
    assert len(diverged) <= MAX_DIVERGED_ROWS, f"{len(diverged)} rows diverged"
    for i in diverged:
        k = int(np.flatnonzero(fc[i] != ref.codes[i])[0])
        d = boundary_distance(q, X_ref[i:i + 1, k:k + 1], None if uni is None else uni[i:i + 1, k:k + 1])
        assert d[0, 0] <= tol_ref[i, k], (
            f"row {i}, column {k}: codes differ but the reference's x is {d[0, 0]:.3g} from a "
            f"rounding boundary, more than the summation-order bound {tol_ref[i, k]:.3g}")

    # fast's output is an LDLQ fixed point: codes = Q(W + (W - Ŵ) U) up to the bound
    X_fast = W + (W - fw) @ U
    recoded = _host(q.encode(X_fast, None)) if not q.stochastic else None
    if q.stochastic:
        t_codes = np.clip(np.floor(_t(q, X_fast) + uni), 0, _hi(q)) if isinstance(q, ScalarGrid) \
            else np.floor(_t(q, X_fast) + uni)
        recoded = t_codes.astype(fc.dtype)
    off = recoded != fc
    if off.any():
        d = boundary_distance(q, X_fast, uni)
        tol_fast = summation_tol(W, fw, U) + 4 * np.spacing(np.abs(X_fast) + 1)
        assert np.all(d[off] <= tol_fast[off]), "fast's codes are not Q of its own feedback"
    # ... and satisfies the exact LDLQ identity  l = sum_k tr(eta_k D_k eta_k^T)
    eta = (fw - W) @ (U + np.eye(n))
    loss = np.trace((fw - W) @ H @ (fw - W).T)
    blocks = eta.reshape(m, n // g, g)
    ident = np.einsum("mbi,bij,mbj->", blocks, D, blocks)
    assert np.isclose(loss, ident, rtol=1e-6, atol=1e-12 * (1 + abs(loss)))
    return len(diverged)


def _t(q, x):
    m = x.shape[0]
    if isinstance(q, ScalarGrid):
        return (x - np.broadcast_to(q.offset, (m,))[:, None]) / np.broadcast_to(q.step, (m,))[:, None]
    return x / q.step


def _hi(q):
    return q.levels - 1


# ---------------------------------------------------------------------------------------
# same API
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", R.__all__)
def test_same_names_and_signatures(name):
    assert hasattr(F, name)
    a, b = getattr(R, name), getattr(F, name)
    if callable(a) and not inspect.isclass(a):
        assert inspect.signature(a) == inspect.signature(b)
    assert sorted(F.__all__) == sorted(R.__all__)


# ---------------------------------------------------------------------------------------
# same results
# ---------------------------------------------------------------------------------------
@settings(max_examples=40)
@given(ldlq_problems())
def test_ldlq_matches_reference(problem):
    W, H, q, g, seed, leaf = problem
    old = F.LEAF
    F.LEAF = leaf
    try:
        res = F.ldlq(W, H, q, g, seed=seed)
    finally:
        F.LEAF = old
    assert isinstance(res, R.LDLQResult)
    assert isinstance(res.W_hat, np.ndarray) and isinstance(res.codes, np.ndarray)
    assert assert_ldlq_parity(W, H, q, g, seed, res) <= MAX_DIVERGED_ROWS


@pytest.mark.parametrize("g", [1, 4])  # (the hypothesis test above draws g in {1, 2, 4, 8})
@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_ldlq_matches_reference_larger(kind, g):
    """n = 200 (three leaves of 64 and a remainder), m odd, clamping active, both H kinds."""
    rng = np.random.default_rng(1000 + g)
    m, n = 31, 200
    for hkind in ("well", "ill"):
        H = spd_hessian(rng, n, hkind)
        W = rng.standard_normal((m, n))
        q = make_quantizer(kind, 3, W, rng)
        res = F.ldlq(W, H, q, g, seed=7)
        assert assert_ldlq_parity(W, H, q, g, 7, res) == 0


@given(st.integers(1, 40), st.sampled_from([1, 2, 4, 8]), st.integers(0, 2**32 - 1))
def test_ldl_is_bit_identical(nb, g, seed):
    rng = np.random.default_rng(seed)
    n = nb * g
    H = spd_hessian(rng, n, "ill" if seed % 2 else "well")
    U_r, D_r = R.ldl(H, g)
    U_f, D_f = F.ldl(H, g)
    np.testing.assert_array_equal(U_f, U_r)
    np.testing.assert_array_equal(D_f, D_r)


def test_stochastic_consumes_the_generator_identically():
    rng = np.random.default_rng(3)
    W, H = rng.standard_normal((9, 80)), spd_hessian(rng, 80, "well")
    q = ScalarGrid.symmetric(2, 1.0, "stochastic")
    g_ref, g_fast = np.random.default_rng(11), np.random.default_rng(11)
    a = R.ldlq(W, H, q, 4, seed=g_ref)
    b = F.ldlq(W, H, q, 4, seed=g_fast)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert g_ref.random() == g_fast.random()


def test_float32_and_integer_inputs():
    rng = np.random.default_rng(5)
    H = spd_hessian(rng, 48, "well")
    W = rng.standard_normal((7, 48)).astype(np.float32)
    q = ScalarGrid.minmax(W, 3)
    for Wx, Hx in ((W, H), (W, H.astype(np.float32)), (np.round(W * 10).astype(np.int32), H)):
        res = F.ldlq(Wx, Hx, q)
        assert assert_ldlq_parity(np.asarray(Wx, np.float64), Hx, q, 1, 0, res) == 0


def test_diagonal_hessian_is_plain_rounding():
    rng = np.random.default_rng(6)
    W = rng.standard_normal((5, 70))
    q = ScalarGrid.symmetric(3, 1.5)
    res = F.ldlq(W, np.diag(rng.uniform(0.5, 2, 70)), q)
    np.testing.assert_array_equal(res.codes, q.encode(W))


@settings(max_examples=15)
@given(st.integers(1, 15), st.sampled_from([5, 40, 130]), st.integers(0, 3),
       st.sampled_from(["sym", "minmax", "int", "lloyd"]), st.integers(0, 2**32 - 1))
def test_greedy_and_ldlq_rg_match_reference(m, n, n_passes, kind, seed):
    rng = np.random.default_rng(seed)
    H = spd_hessian(rng, n, "ill" if seed % 2 else "well")
    W = rng.standard_normal((m, n))
    q = make_quantizer(kind, 3, W, rng)
    start = R.ldlq(W, H, q).W_hat
    a = R.greedy_passes(W, H, q, start, n_passes)
    b = F.greedy_passes(W, H, q, start, n_passes)
    assert b.codes.dtype == a.codes.dtype
    _assert_greedy_parity(W, H, q, start, n_passes, a, b)
    a = R.ldlq_rg(W, H, q, n_passes)
    b = F.ldlq_rg(W, H, q, n_passes)
    if not np.array_equal(a.codes, b.codes):  # only through a boundary case (checked above)
        diverged = np.flatnonzero(np.any(a.codes != b.codes, axis=1))
        assert len(diverged) <= MAX_DIVERGED_ROWS
    else:
        np.testing.assert_array_equal(a.W_hat, b.W_hat)


def _assert_greedy_parity(W, H, q, start, n_passes, a, b):
    """Greedy: same rule, with the target ``ŵ - (E H_i) / H_ii`` in place of x."""
    same = np.all(a.codes == b.codes, axis=1)
    np.testing.assert_array_equal(b.W_hat[same], a.W_hat[same])
    diverged = np.flatnonzero(~same)
    assert len(diverged) <= MAX_DIVERGED_ROWS
    if len(diverged):
        rec = Recorder(q)
        R.greedy_passes(W, H, rec, start, n_passes)
        targets = np.concatenate(rec.inputs[1:], axis=1)  # (m, passes * n)
        n = W.shape[1]
        S = np.abs(W).max() + np.abs(W - start).max() * np.abs(H).sum(0) / np.diag(H)
        tol = TOL_FACTOR * 2 * (n + 2) * U_ROUND * np.tile(S, targets.shape[1] // n)
        for i in diverged:
            d = boundary_distance(q, targets[i:i + 1])[0]
            assert np.any(d <= tol), f"row {i} diverged with no target near a boundary"


# ---------------------------------------------------------------------------------------
# block greedy passes (g > 1): same rule, with "near a tie between two codewords"
# ---------------------------------------------------------------------------------------
class StepRecorder:
    """Wraps a quantizer and records every ``encode`` call: (input x, output codes), both
    copied to the host. The reference and fast call ``encode`` in the same order (initial
    codes block by block, then block by block in each pass), so step s of one is step s
    of the other until a row's codes first differ."""

    def __init__(self, q):
        self.q, self.steps = q, []
        self.dim = getattr(q, "dim", 1)
        self.stochastic = False

    def encode(self, x, rng=None):
        c = self.q.encode(x, rng)
        self.steps.append((_host(x).copy(), _host(c).copy()))
        return c

    def decode(self, codes):
        return self.q.decode(codes)


def assert_block_greedy_parity(W, H, q, start, n_passes, g, a, b):
    """fast vs reference block greedy passes (``a``: reference, ``b``: fast).

    Rows whose final codes agree must be bit-identical (``W_hat = decode(codes)`` on both
    sides). A row may diverge only through a near tie, at its *first* differing step s:

    * before s the row's codes, hence its ``Ŵ`` and ``E = Ŵ - W``, are the same numbers on
      both sides (rows never interact), so the two targets ``x_r`` (reference) and ``x_f``
      (fast) at step s differ only by the order of the sums in ``E H_{:,b}`` and by the two
      g x g solves: with ``S = (3 e_max + 2 c_max) Σ_l |H_lb|`` (``|E_l| <= e_max =
      max|W_i| + c_max``, in-panel changes ``|Δ_l| <= 2 c_max``, ``c_max`` the largest
      |entry| of Ŵ seen in either run) the sums differ by ``<= 2 (n + P + 2) u S`` entrywise (Higham
      (4.4) for both orders, plus one rounding of ``E_start + Δ`` against ``E``), the solve
      maps that through ``||H_bb^{-1}||_2``, and each backward-stable solve adds
      ``<= 3 g u κ(H_bb) ||step||``; TOL_FACTOR covers the rounding of the bound itself.
      The measured ``δ = ||x_r - x_f||`` must be within that;
    * both codes are (up to the quantizer's own round-off ``ε`` in squared distance) nearest
      codewords to their targets, so ``||x_r - c_f|| <= ||x_r - c_r|| + 2 δ + ε / (2 (a + δ))``
      (triangle inequality twice): the reference's target is within ``2 δ`` of a tie.
    """
    a_codes, b_codes = _host(a.codes), _host(b.codes)
    assert b_codes.dtype == a_codes.dtype and b_codes.shape == a_codes.shape
    same = np.all(a_codes.reshape(a_codes.shape[0], -1) == b_codes.reshape(b_codes.shape[0], -1), axis=1)
    np.testing.assert_array_equal(_host(b.W_hat)[same], _host(a.W_hat)[same])
    diverged = np.flatnonzero(~same)
    assert len(diverged) <= MAX_DIVERGED_ROWS, f"{len(diverged)} rows diverged"
    if not len(diverged):
        return 0
    ra, rb = StepRecorder(q), StepRecorder(q)
    R.greedy_passes(W, H, ra, start, n_passes, g)
    F.greedy_passes(W, H, rb, start, n_passes, g)
    W, H = _host(W).astype(np.float64), _host(H).astype(np.float64)
    m, n = W.shape
    nb = n // g
    P = F._panel_size(g, F.PANEL)
    # every entry of Ŵ during the runs is an entry of the start or of a decoded code
    c_max = max([float(np.abs(_host(start)).max())]
                + [float(np.abs(_host(q.decode(c))).max()) for _, c in ra.steps + rb.steps])
    for i in diverged:
        s = next((s for s, (x, y) in enumerate(zip(ra.steps, rb.steps))
                  if not np.array_equal(x[1][i], y[1][i])), None)
        assert s is not None, f"row {i}: the results differ but no step's codes do"
        assert s >= nb, f"row {i}: the initial codes of the same W_hat differ"
        k = (s % nb) * g
        blk = slice(k, k + g)
        x_r, x_f = ra.steps[s][0][i], rb.steps[s][0][i]
        e_max = np.abs(W[i]).max() + c_max
        S = (3 * e_max + 2 * c_max) * np.abs(H[:, blk]).sum(axis=0)
        Hbb = H[blk, blk]
        inv_norm = 1.0 / np.linalg.eigvalsh(Hbb)[0]
        kappa = np.linalg.cond(Hbb)
        step = c_max + np.abs(x_r).max()  # bounds |step| = |Ŵ_b - x| entrywise
        tol_delta = TOL_FACTOR * (inv_norm * np.linalg.norm(2 * (n + P + 2) * U_ROUND * S)
                                  + 2 * 3 * g * U_ROUND * kappa * np.sqrt(g) * step
                                  + U_ROUND * np.linalg.norm(x_r))
        delta = np.linalg.norm(x_r - x_f)
        assert delta <= tol_delta, f"row {i}, step {s}: targets differ by {delta:.3g} > {tol_delta:.3g}"
        c_r = _host(q.decode(ra.steps[s][1]))[i]
        c_f = _host(q.decode(rb.steps[s][1]))[i]
        d_r, d_f = np.linalg.norm(x_r - c_r), np.linalg.norm(x_r - c_f)
        eps = TOL_FACTOR * 2 * (g + 2) * U_ROUND * (np.linalg.norm(x_r) + np.linalg.norm(c_r)
                                                    + np.linalg.norm(c_f))**2
        slack = 2 * delta + (eps / (2 * (d_r + delta)) if d_r + delta > 0 else np.sqrt(eps))
        assert d_f - d_r <= slack + 8 * U_ROUND * (d_r + d_f), (
            f"row {i}, step {s}: codes differ but the reference's target is {d_f - d_r:.3g} "
            f"closer to its codeword than to fast's (allowed {slack:.3g})")
    return len(diverged)


def block_quantizer(kind, W, rng):
    """(quantizer, allowed block sizes) for the block greedy tests."""
    scale = float(np.sqrt(np.mean(W**2)))
    if kind == "e8p":
        return E8P.from_rms(scale), (8, 16)
    if kind == "sym":
        return ScalarGrid.symmetric(2, 1.2 * scale), (2, 4, 8)
    if kind == "minmax":
        return ScalarGrid.minmax(W, 3), (2, 4, 8)
    if kind == "lloyd":
        return LloydMax(2, scale), (2, 4, 8)
    if kind == "int":
        return IntegerGrid(0.37 * scale), (2, 4, 8)
    raise AssertionError(kind)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 9), st.sampled_from([16, 48, 80]), st.integers(0, 3),
       st.sampled_from(["e8p", "e8p", "sym", "minmax", "lloyd", "int"]), st.data(),
       st.sampled_from([16, 32, F.PANEL]), st.integers(0, 2**32 - 1))
def test_block_greedy_passes_match_reference(m, n, n_passes, kind, data, panel, seed):
    """g > 1: fast's lazy-batch passes (panels of 16 / 32 / 128 columns) against the
    reference, from the BlockLDLQ output, on well- and ill-conditioned H."""
    rng = np.random.default_rng(seed)
    H = spd_hessian(rng, n, "ill" if seed % 2 else "well")
    W = rng.standard_normal((m, n)) * data.draw(st.sampled_from([1.0, 1e-3, 50.0]))
    q, sizes = block_quantizer(kind, W, rng)
    g = data.draw(st.sampled_from([s for s in sizes if n % s == 0]))
    start = R.ldlq(W, H, q, g).W_hat
    a = R.greedy_passes(W, H, q, start, n_passes, g)
    old = F.PANEL
    F.PANEL = panel
    try:
        b = F.greedy_passes(W, H, q, start, n_passes, g)
        assert isinstance(b, R.LDLQResult) and isinstance(b.W_hat, np.ndarray)
        assert assert_block_greedy_parity(W, H, q, start, n_passes, g, a, b) <= MAX_DIVERGED_ROWS
    finally:
        F.PANEL = old


def test_block_greedy_parity_rule_rejects_a_real_difference(monkeypatch):
    """The rule is not vacuous: a "fast" whose targets for one row are off by far more
    than round-off fails it, and so does a result whose codes no run produced."""
    rng = np.random.default_rng(5)
    n, m = 32, 9
    H = spd_hessian(rng, n, "well")
    W = rng.standard_normal((m, n))
    q = E8P.from_rms(1.0)
    start = R.ldlq(W, H, q, 8).W_hat
    a = R.greedy_passes(W, H, q, start, 1, 8)
    codes = a.codes.copy()
    codes[2, 1] ^= 0x5A5A  # another codeword
    with pytest.raises(AssertionError, match="no step's codes do"):
        assert_block_greedy_parity(W, H, q, start, 1, 8, a, R.LDLQResult(q.decode(codes), codes))

    class ShiftRow2:  # a wrong target for row 2 in every pass step (not the initial codes)
        def __init__(self, q):
            self.q, self.dim, self.stochastic, self.calls = q, q.dim, False, 0

        def encode(self, x, rng=None):
            self.calls += 1
            if self.calls > n // 8:
                x = x.copy()
                x[2] += 0.5
            return self.q.encode(x, rng)

        def decode(self, c):
            return self.q.decode(c)

    real = F.greedy_passes
    monkeypatch.setattr(F, "greedy_passes", lambda W, H, q, s, p, g: real(W, H, ShiftRow2(q), s, p, g))
    b = F.greedy_passes(W, H, q, start, 1, 8)
    assert np.flatnonzero(np.any(a.codes != b.codes, axis=1)).tolist() == [2]
    with pytest.raises(AssertionError, match="targets differ"):
        assert_block_greedy_parity(W, H, q, start, 1, 8, a, b)


def test_block_greedy_g1_is_the_scalar_pass():
    """``block_size=1`` (explicit) is today's pass in both packages, bit for bit."""
    rng = np.random.default_rng(21)
    n = 40
    H = spd_hessian(rng, n, "well")
    W = rng.standard_normal((6, n))
    q = ScalarGrid.symmetric(3, 1.2)
    start = R.ldlq(W, H, q).W_hat
    for mod in (R, F):
        x = mod.greedy_passes(W, H, q, start, 2)
        y = mod.greedy_passes(W, H, q, start, 2, 1)
        np.testing.assert_array_equal(x.W_hat, y.W_hat)
        np.testing.assert_array_equal(x.codes, y.codes)


def test_block_greedy_larger_e8p():
    """n = 264 > two panels of 128, m = 13, E8P g = 8, 2 passes, both H kinds."""
    for hkind, seed in (("well", 31), ("ill", 32)):
        rng = np.random.default_rng(seed)
        n = 264
        H = spd_hessian(rng, n, hkind)
        W = rng.standard_normal((13, n))
        q = E8P.from_rms(1.0)
        start = R.ldlq(W, H, q, 8).W_hat
        a = R.greedy_passes(W, H, q, start, 2, 8)
        b = F.greedy_passes(W, H, q, start, 2, 8)
        assert a.codes.shape == (13, n // 8) and a.codes.dtype == np.uint16
        assert assert_block_greedy_parity(W, H, q, start, 2, 8, a, b) == 0


# ---------------------------------------------------------------------------------------
# same errors
# ---------------------------------------------------------------------------------------
class Dim2:
    dim = 2
    stochastic = False

    def encode(self, x, rng=None):
        return np.zeros(x.shape[:-1] + (x.shape[-1] // 2,), np.int64)

    def decode(self, c):
        return np.zeros(c.shape[:-1] + (2 * c.shape[-1],))


def _bad_inputs():
    rng = np.random.default_rng(0)
    n = 12
    H = spd_hessian(rng, n, "well")
    W = rng.standard_normal((5, n))
    q = ScalarGrid.symmetric(2, 1.0)
    Wnan = W.copy()
    Wnan[2, 3] = np.nan
    Hinf = H.copy()
    Hinf[0, 0] = np.inf
    notpsd = H - 2 * np.linalg.eigvalsh(H)[-1] * np.eye(n)
    v = rng.standard_normal(n)
    singular = np.outer(v, v)
    asym = H.copy()
    asym[0, 1] += 1.0
    return [
        ("nan W", (Wnan, H, q), {}),
        ("inf H", (W, Hinf, q), {}),
        ("non-PSD H", (W, notpsd, q), {}),
        ("singular H", (W, singular, q), {}),
        ("asymmetric H", (W, asym, q), {}),
        ("H wrong n", (W, H[:-1, :-1], q), {}),
        ("H not square", (W, H[:, :-1], q), {}),
        ("W 1-D", (W[0], H, q), {}),
        ("W empty", (W[:0], H, q), {}),
        ("W complex", (W.astype(complex), H, q), {}),
        ("W string", ("W", H, q), {}),
        ("g does not divide n", (W, H, q, 5), {}),
        ("g zero", (W, H, q, 0), {}),
        ("g bool", (W, H, q, True), {}),
        ("g float", (W, H, q, 2.0), {}),
        ("not a quantizer", (W, H, object()), {}),
        ("g not a multiple of dim", (W, H, Dim2(), 3), {}),
        ("per-row grid of other m", (W, H, ScalarGrid(2, np.ones(4), np.zeros(4))), {}),
        ("negative seed", (W, H, ScalarGrid.symmetric(2, 1.0, "stochastic")), {"seed": -1}),
        ("seed not an int", (W, H, IntegerGrid(1.0, "stochastic")), {"seed": "x"}),
    ]


@pytest.mark.parametrize("name,args,kw", _bad_inputs(), ids=[b[0] for b in _bad_inputs()])
def test_ldlq_same_errors(name, args, kw):
    with pytest.raises(Exception) as ref_exc:
        R.ldlq(*args, **kw)
    with pytest.raises(type(ref_exc.value)) as fast_exc:
        F.ldlq(*args, **kw)
    assert type(fast_exc.value) is type(ref_exc.value)
    assert str(fast_exc.value) == str(ref_exc.value)


_LDL_CASES = ["inf H", "non-PSD H", "singular H", "asymmetric H", "H not square", "W 1-D"]


@pytest.mark.parametrize("name", _LDL_CASES)
def test_ldl_same_errors(name):
    H = {b[0]: b[1][1] for b in _bad_inputs()}[name] if name != "W 1-D" else _bad_inputs()[7][1][0]
    for g in (1, 5):
        with pytest.raises(Exception) as ref_exc:
            R.ldl(H, g)
        with pytest.raises(type(ref_exc.value)) as fast_exc:
            F.ldl(H, g)
        assert str(fast_exc.value) == str(ref_exc.value)


@pytest.mark.parametrize("case", ["shape", "stochastic", "dim2", "negative passes", "nan W_hat"])
def test_greedy_same_errors(case):
    rng = np.random.default_rng(1)
    W, H = rng.standard_normal((4, 10)), spd_hessian(rng, 10, "well")
    q = ScalarGrid.symmetric(2, 1.0)
    args = {
        "shape": (W, H, q, W[:, :5]),
        "stochastic": (W, H, ScalarGrid.symmetric(2, 1.0, "stochastic"), W),
        "dim2": (W, H, Dim2(), W),
        "negative passes": (W, H, q, W, -1),
        "nan W_hat": (W, H, q, np.full_like(W, np.nan)),
    }[case]
    with pytest.raises(Exception) as ref_exc:
        R.greedy_passes(*args)
    with pytest.raises(type(ref_exc.value)) as fast_exc:
        F.greedy_passes(*args)
    assert str(fast_exc.value) == str(ref_exc.value)


def test_boundary_distance_helper():
    q = ScalarGrid(2, 1.0, 0.0)
    x = np.array([[0.5, 0.75, 1.5 + 1e-9]])
    d = boundary_distance(q, x)
    assert d[0, 0] == 0 and abs(d[0, 1] - 0.25) < 1e-12 and d[0, 2] < 2e-9
