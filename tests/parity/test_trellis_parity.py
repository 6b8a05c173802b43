"""fast.quantizers.trellis against quipref.quantizers.trellis: API, results, errors.

What is compared, and why exactly
---------------------------------
The Numba Viterbi performs the reference's float64 operations in the reference's order
(``d = (C[s,0]-y_0)^2``, then ``+= (C[s,j]-y_j)^2`` for j = 1..V-1, then ``d + best[g]``;
the minimum over predecessors keeps the first, i.e. smallest ``e``, like ``np.argmin``;
the final state is the first minimum). No FMA contraction happens (Numba compiles
without fast-math). So the path *cost* must be equal, and because ties are broken the
same way the *states* are equal too - a stronger property than the design contract's
"equal cost, ties may choose another path", which is what would remain if the kernel
ever changed its arithmetic (e.g. to float32). Packing, unpacking and decoding are
integer/bit manipulations and table look-ups: exactly equal.
"""
import importlib
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fast.quantizers.trellis as F
import quipref.quantizers.trellis as R

_spec = importlib.util.spec_from_file_location(
    "_trellis_reference_tests", Path(__file__).parents[1] / "reference" / "test_trellis.py")
_reftests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_reftests)

CODES_V = [("1mad", 1), ("3inst", 1), ("gaussian", 1), ("hyb", 2)]


def _sig(obj):
    return inspect.signature(obj, eval_str=True)


def test_same_public_names_and_signatures():
    assert F.__all__ == R.__all__
    for name in R.__all__:
        a, b = getattr(R, name), getattr(F, name)
        if callable(a):
            assert _sig(a) == _sig(b), name
    assert issubclass(F.Trellis, R.Trellis)
    for meth, fn in inspect.getmembers(R.Trellis, callable):
        if meth.startswith("_") and meth != "__init__":
            continue
        assert _sig(fn) == _sig(getattr(F.Trellis, meth)), meth
    for prop in ("dim", "T", "n_steps", "words_per_tile", "bits_per_weight", "table_rms"):
        assert getattr(F.Trellis(8, 2), prop) == getattr(R.Trellis(8, 2), prop)


@st.composite
def viterbi_problems(draw):
    V = draw(st.sampled_from([1, 2]))
    k = draw(st.integers(1, 3 if V == 1 else 2))
    kV = k * V
    L = draw(st.integers(max(kV, 2), 10))
    S = draw(st.integers(max(2, -(-L // kV)), 40))
    B = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "coarse", "1mad"]))
    if kind == "1mad" and V == 1:  # a computed code: many exactly equal values
        table = R.code_1mad(np.arange(2**L))[:, None]
    else:
        table = rng.standard_normal((2**L, V))
        if kind == "coarse":  # values on a 0.5 grid: exact ties between paths
            table = np.round(2 * table) / 2
    X = rng.standard_normal((B, S * V)) * draw(st.sampled_from([0.5, 1.0, 3.0]))
    return L, k, V, table, X, rng


def _same(a, b):
    np.testing.assert_array_equal(a.cost, b.cost)  # identical arithmetic: equal costs
    np.testing.assert_array_equal(a.states, b.states)  # and the same tie-breaking


@given(viterbi_problems())
def test_viterbi_parity(p):
    L, k, V, table, X, rng = p
    _same(R.bitshift_viterbi(X, table, k), F.bitshift_viterbi(X, table, k))
    _same(R.bitshift_viterbi(X[0], table, k), F.bitshift_viterbi(X[0], table, k))
    G = 2 ** (L - k * V)
    top = rng.integers(0, G, X.shape[0])
    low = rng.integers(0, G, X.shape[0])
    _same(R.bitshift_viterbi(X, table, k, top, low), F.bitshift_viterbi(X, table, k, top, low))
    _same(R.bitshift_viterbi(X, table, k, start_top=int(top[0])),
          F.bitshift_viterbi(X, table, k, start_top=int(top[0])))


@given(viterbi_problems())
def test_tail_biting_parity(p):
    L, k, V, table, X, _ = p
    a, b = R.tail_biting_viterbi(X, table, k), F.tail_biting_viterbi(X, table, k)
    _same(a, b)
    G = 2 ** (L - k * V)
    assert np.all((b.states[:, -1] & (G - 1)) == (b.states[:, 0] >> (k * V)))


@given(viterbi_problems(), st.booleans())
def test_pack_unpack_parity(p, tail_biting):
    L, k, V, table, X, rng = p
    f = R.tail_biting_viterbi if tail_biting else R.bitshift_viterbi
    s = f(X, table, k).states
    S = s.shape[1]
    w = R.pack_states(s, L, k, V, tail_biting)
    np.testing.assert_array_equal(F.pack_states(s, L, k, V, tail_biting), w)
    np.testing.assert_array_equal(F.pack_states(s[0], L, k, V, tail_biting), w[0])
    # any words decode (with tail-biting every bit string is a circular walk)
    rand = rng.integers(0, 2**16, w.shape).astype(np.uint16)
    if not tail_biting:
        rand = w
    for words in (w, rand):
        np.testing.assert_array_equal(
            F.unpack_states(words, L, k, V, n_steps=S, tail_biting=tail_biting),
            R.unpack_states(words, L, k, V, n_steps=S, tail_biting=tail_biting))


@given(st.sampled_from(CODES_V), st.integers(3, 9), st.integers(1, 3), st.integers(1, 3),
       st.integers(0, 2**32 - 1), st.sampled_from([(16, 16), (4, 8), (8, 4)]), st.booleans())
def test_quantizer_parity(code_v, L, mt, nt, seed, tile, tail_biting):
    code, V = code_v
    k = 2 if L >= 2 * V else 1
    kw = dict(tile=tile, tail_biting=tail_biting, scale=0.9, seed=seed % 2)
    if tail_biting and (tile[0] * tile[1] // V) * k * V < L:
        return
    qr = R.Trellis(L, k, V, code, **kw)
    qf = F.Trellis(L, k, V, code, **kw)
    np.testing.assert_array_equal(qf.value_table(), qr.value_table())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((mt * tile[0], nt * tile[1]))
    c = qr.encode(x)
    np.testing.assert_array_equal(qf.encode(x), c)
    np.testing.assert_array_equal(qf.decode(c), qr.decode(c))
    if tail_biting:  # random words are valid codes too
        c2 = rng.integers(0, 2**16, c.shape).astype(np.uint16)
        np.testing.assert_array_equal(qf.decode(c2), qr.decode(c2))
    seqs = x.reshape(-1)[: (x.size // qr.T) * qr.T].reshape(-1, qr.T)
    s = qf.encode_sequences(seqs)
    np.testing.assert_array_equal(s, qr.encode_sequences(seqs))
    np.testing.assert_array_equal(qf.pack(s), qr.pack(s))
    np.testing.assert_array_equal(qf.unpack(qf.pack(s)), s)
    np.testing.assert_array_equal(qf.decode_states(s), qr.decode_states(s))


def test_state_crosses_packages():
    for code, V in CODES_V:
        qf = F.Trellis(8, 2, V, code, seed=3, scale=0.7)
        qr = R.Trellis.from_state(*qf.state())
        qf2 = F.Trellis.from_state(*qr.state())
        assert type(qf2) is F.Trellis
        x = np.random.default_rng(0).standard_normal((16, 32))
        np.testing.assert_array_equal(qr.encode(x), qf2.encode(x))


def test_ldlq_with_fast_trellis_matches_reference():
    ldlq_r = importlib.import_module("quipref.ldlq").ldlq
    ldlq_f = importlib.import_module("fast.ldlq").ldlq
    rng = np.random.default_rng(0)
    n, m = 64, 48
    X = rng.standard_normal((4 * n, n))
    H = X.T @ X / (4 * n) + 1e-2 * np.eye(n)
    W = rng.standard_normal((m, n))
    for code, V in (("1mad", 1), ("hyb", 2)):
        a = ldlq_r(W, H, R.Trellis(8, 2, V, code), 16)
        b = ldlq_f(W, H, F.Trellis(8, 2, V, code), 16)
        np.testing.assert_array_equal(F.Trellis(8, 2, V, code).decode(b.codes), b.W_hat)
        la = np.trace((a.W_hat - W) @ H @ (a.W_hat - W).T)
        lb = np.trace((b.W_hat - W) @ H @ (b.W_hat - W).T)
        # fast.ldlq sums the feedback in another order, so a Viterbi input can move by a
        # few ulps; a path changes only at a near-tie (never seen here: codes were equal)
        assert lb == pytest.approx(la, rel=0.02)


# ---------------------------------------------------------------------------------------
# Errors: the same exception type and message in both packages
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,exc,msg", _reftests.BAD_CONSTRUCTORS)
def test_constructor_errors_identical(kw, exc, msg):
    errs = []
    for cls in (R.Trellis, F.Trellis):
        with pytest.raises(exc, match=msg) as e:
            cls(**{"L": 8, **kw})
        errs.append((type(e.value), str(e.value)))
    assert errs[0] == errs[1]


def test_call_errors_identical():
    ref = _reftests.bad_calls(R, R.Trellis)
    fst = _reftests.bad_calls(F, F.Trellis)
    assert len(ref) == len(fst)
    for (fr, exc, msg), (ff, _, _) in zip(ref, fst):
        with pytest.raises(exc, match=msg) as er:
            fr()
        with pytest.raises(exc, match=msg) as ef:
            ff()
        assert type(er.value) is type(ef.value) and str(er.value) == str(ef.value)


# ---------------------------------------------------------------------------------------
# CuPy input: not accelerated yet (host reference), but CuPy in -> CuPy out
# ---------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_cupy_in_cupy_out():
    import cupy

    q = F.Trellis(8, 2, 2, "hyb")
    x = np.random.default_rng(0).standard_normal((32, 32))
    c = q.encode(cupy.asarray(x))
    assert isinstance(c, cupy.ndarray)
    np.testing.assert_array_equal(c.get(), q.encode(x))
    xh = q.decode(c)
    assert isinstance(xh, cupy.ndarray)
    np.testing.assert_array_equal(xh.get(), q.decode(q.encode(x)))
    r = F.tail_biting_viterbi(cupy.asarray(x.reshape(4, 256)), q.value_table(), 2)
    np.testing.assert_array_equal(r.states.get(), R.tail_biting_viterbi(x.reshape(4, 256), q.value_table(), 2).states)


# ---------------------------------------------------------------------------------------
# Throughput (run by hand: PYTHONPATH=. python tests/parity/test_trellis_parity.py)
# ---------------------------------------------------------------------------------------
def benchmark(n_tiles=256, repeats=5):  # pragma: no cover
    """Weights/s of ``Trellis.encode`` (Alg. 4: two Viterbi passes per 16x16 tile, + packing)
    for fast (1 thread and all threads) and the reference, best of ``repeats``."""
    import time

    import numba

    def best(f, n):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    x = np.random.default_rng(0).standard_normal((16 * n_tiles // 16, 16 * 16))
    threads = numba.get_num_threads()
    for L in (8, 10, 12, 16):
        for code, V in (("1mad", 1), ("hyb", 2)):
            qf, qr = F.Trellis(L, 2, V, code), R.Trellis(L, 2, V, code)
            xs = x if L < 16 else x[:64]
            qf.encode(xs[:16, :16])
            row = [f"L={L:2d} k=2 {code:5s} V={V}"]
            for th in sorted({1, threads}):
                numba.set_num_threads(th)
                row.append(f"fast {th} thr {xs.size / best(lambda: qf.encode(xs), repeats):9.0f} w/s")
            numba.set_num_threads(threads)
            xr = xs[:64] if L < 12 else xs[:16]
            row.append(f"reference {xr.size / best(lambda: qr.encode(xr), 2):8.0f} w/s")
            print(" | ".join(row), flush=True)


if __name__ == "__main__":  # pragma: no cover
    benchmark()
