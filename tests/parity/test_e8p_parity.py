"""fast.quantizers E8P / E81B / RVQ (Numba) against quipref.quantizers (NumPy brute force).

Contract (design.md §3): decode is bit-identical; encode picks a nearest codeword, so the
fast codes must give the *same distance* as the reference's on every input. Codes are
equal on continuous random inputs and on the ties the codebook's symmetries create (a
zero or a repeated magnitude in a group, e.g. x = 0: both take the lowest code); they may
differ only on other exact ties (x on a bisector of two codewords). Distances are compared within float64 round-off of the scores:
both searches score in units of x / s with codewords of norm <= 4.1, so a wrong pick
could only hide below ~1e-15 (s^2 + ||x||^2); we allow 1e-12 (s^2 + ||x||^2).
"""
import inspect

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fast.quantizers.e8p as fe
import fast.quantizers.rvq as fr
import quipref.quantizers.e8p as qe
import quipref.quantizers.rvq as qr

PAIRS = [(qe.E8P, fe.E8P), (qr.E81B, fr.E81B), (qr.RVQ, fr.RVQ)]

# -- strategies named after the domain objects -------------------------------------------
scales = st.floats(0.05, 20.0)
batch_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple)


@st.composite
def weight_groups(draw, elements=st.floats(-50, 50), max_groups=8):
    """x of shape (..., 8k) with arbitrary finite entries."""
    shape = draw(batch_shapes) + (8 * draw(st.integers(0, max_groups)),)
    return draw(arrays(np.float64, shape, elements=elements))


def tie_heavy_groups():
    """Entries on the 1/8 grid (codewords are on the 1/4 grid): many exact ties."""
    return weight_groups(elements=st.integers(-40, 40).map(lambda i: i / 8))


@st.composite
def gaussian_groups(draw, max_rows=300):
    """Continuous random x (no ties with probability 1), including chunk boundaries."""
    seed = draw(st.integers(0, 2**32 - 1))
    rows = draw(st.one_of(st.integers(1, max_rows), st.sampled_from([255, 256, 257, 513])))
    return np.random.default_rng(seed).normal(size=(rows, 8 * draw(st.integers(1, 2))))


def distances(x, xh):
    return ((x.reshape(-1, 8) - xh.reshape(-1, 8)) ** 2).sum(axis=1)


def assert_same_distance(x, xh_fast, xh_ref, s):
    tol = 1e-12 * (s * s + (x.reshape(-1, 8) ** 2).sum(axis=1))
    np.testing.assert_array_less(np.abs(distances(x, xh_fast) - distances(x, xh_ref)), tol + 1e-300)


# -- E8P --------------------------------------------------------------------------------
@given(x=weight_groups(), s=scales)
@example(x=np.zeros((3, 8)), s=1.0)
@example(x=np.full(8, 0.5), s=1.0)  # equidistant from +-1/4 shifts
@example(x=np.array([1e6, -1e6, 3.0, 0, 0, 0, 0, 1e-9]), s=0.5)
def test_e8p_encode_same_distance(x, s):
    cf, cr = fe.E8P(s).encode(x), qe.E8P(s).encode(x)
    assert cf.dtype == cr.dtype == np.uint16 and cf.shape == cr.shape
    assert_same_distance(x, qe.E8P(s).decode(cf), qe.E8P(s).decode(cr), s)


@given(x=tie_heavy_groups())
def test_e8p_encode_same_distance_on_ties(x):
    q = qe.E8P()
    assert_same_distance(x, q.decode(fe.E8P().encode(x)), q.decode(q.encode(x)), 1.0)


@st.composite
def symmetric_tie_groups(draw):
    """Groups of 8 with a zero entry or two entries of equal magnitude: the codebook's
    permutation / negation symmetries give them several nearest codewords."""
    rows = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(rows, 8))
    for r in range(rows):
        i, j = rng.choice(8, size=2, replace=False)
        x[r, i] = 0.0 if draw(st.booleans()) else draw(st.sampled_from([-1.0, 1.0])) * x[r, j]
    return x


@given(x=symmetric_tie_groups(), s=scales)
@example(x=np.zeros((2, 8)), s=1.0)
@example(x=np.full((1, 8), 0.3), s=1.0)
def test_e8p_symmetric_ties_resolve_to_the_lowest_code_in_both(x, s):
    """The reference docstring promises "ties: the lowest code"; fast keeps the promise on
    the ties that occur in practice (x = 0 gave code 255 in fast, 1 in quipref)."""
    np.testing.assert_array_equal(fe.E8P(s).encode(x), qe.E8P(s).encode(x))
    np.testing.assert_array_equal(fr.RVQ(4, s).encode(x), qr.RVQ(4, s).encode(x))
    assert int(fe.E8P().encode(np.zeros(8))[0]) == 1


@given(x=gaussian_groups(), s=scales)
def test_e8p_encode_equal_codes_on_continuous_inputs(x, s):
    np.testing.assert_array_equal(fe.E8P(s).encode(x), qe.E8P(s).encode(x))


def test_e8p_every_codeword_encodes_to_itself():
    """All 65,536 codewords (distinct, so no ties), slightly perturbed: exercises both
    routes of the fast search (lattice decoder inside S, scan for the norm^2 12 pads)."""
    C = qe.E8P().codebook()
    noise = np.random.default_rng(0).uniform(-0.01, 0.01, size=C.shape)
    codes = fe.E8P().encode(C + noise)[:, 0]
    np.testing.assert_array_equal(codes, np.arange(65536))


def test_e8p_float32_input_is_encoded_like_its_float64_value():
    x = np.random.default_rng(1).normal(size=(100, 16)).astype(np.float32)
    np.testing.assert_array_equal(fe.E8P().encode(x), fe.E8P().encode(x.astype(np.float64)))
    np.testing.assert_array_equal(fe.E8P().encode(x), qe.E8P().encode(x))


@given(codes=arrays(np.uint16, st.tuples(st.integers(1, 4), st.integers(0, 6))), s=scales)
def test_e8p_decode_bit_identical(codes, s):
    a, b = fe.E8P(s).decode(codes), qe.E8P(s).decode(codes)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


# -- E81B and RVQ -----------------------------------------------------------------------
@given(x=weight_groups(), s=scales)
def test_e81b_encode_same_distance(x, s):
    q = qr.E81B(s)
    cf, cr = fr.E81B(s).encode(x), q.encode(x)
    assert cf.dtype == cr.dtype == np.uint8
    assert_same_distance(x, q.decode(cf), q.decode(cr), s)


@given(codes=arrays(np.uint8, st.tuples(st.integers(1, 4), st.integers(0, 6))), s=scales)
def test_e81b_decode_bit_identical(codes, s):
    np.testing.assert_array_equal(fr.E81B(s).decode(codes), qr.E81B(s).decode(codes))


@given(x=gaussian_groups(max_rows=60), bits=st.sampled_from([3, 4]), s=scales,
       r=st.floats(1.0, 5.0))
def test_rvq_equal_codes_on_continuous_inputs(x, bits, s, r):
    cf, cr = fr.RVQ(bits, s, r).encode(x), qr.RVQ(bits, s, r).encode(x)
    assert cf.dtype == cr.dtype == np.uint32
    np.testing.assert_array_equal(cf, cr)


@given(x=weight_groups(max_groups=4), bits=st.sampled_from([3, 4]), s=scales)
def test_rvq_first_stage_same_distance(x, bits, s):
    """On arbitrary inputs (ties possible) the first stages are equally good."""
    sh = 16 if bits == 4 else 8
    cf, cr = fr.RVQ(bits, s).encode(x) >> sh, qr.RVQ(bits, s).encode(x) >> sh
    q = qe.E8P(s)
    assert_same_distance(x, q.decode(cf), q.decode(cr), s)


@given(data=st.data(), bits=st.sampled_from([3, 4]), s=scales)
def test_rvq_decode_bit_identical(data, bits, s):
    codes = data.draw(arrays(np.uint32, st.tuples(st.integers(1, 3), st.integers(0, 5)),
                             elements=st.integers(0, 2 ** (8 * bits) - 1)))
    np.testing.assert_array_equal(fr.RVQ(bits, s).decode(codes), qr.RVQ(bits, s).decode(codes))


# -- API and errors ---------------------------------------------------------------------
@pytest.mark.parametrize("ref,fst", PAIRS, ids=lambda c: c.__name__)
def test_same_class_api(ref, fst):
    assert issubclass(fst, ref) and fst.__name__ == ref.__name__
    assert inspect.signature(ref) == inspect.signature(fst)
    for name, fn in inspect.getmembers(ref, callable):
        if name.startswith("_") and name != "__init__":
            continue
        assert inspect.signature(fn) == inspect.signature(getattr(fst, name)), name


def test_fast_modules_export_the_same_names():
    for ref, fst in ((qe, fe), (qr, fr)):
        assert set(ref.__all__) <= set(fst.__all__)


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - comparing what is raised
        return type(e), str(e)
    return None


BAD_INPUTS = [
    ("encode", np.zeros((2, 12))),
    ("encode", np.zeros(7)),
    ("encode", np.array([0.0] * 7 + [np.nan])),
    ("encode", np.array([np.inf] + [0.0] * 7)),
    ("encode", np.float64(1.0)),
    ("encode", np.zeros(8, dtype=complex)),
    ("encode", "abc"),
    ("decode", lambda q: np.array([[0, q.n_codes]])),  # one past the last code
    ("decode", np.array([-1])),
    ("decode", np.array([2**32], dtype=np.int64)),
    ("decode", np.array([1.0])),
    ("decode", np.int64(3)),
]


@pytest.mark.parametrize("ref,fst", PAIRS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("method,arg", BAD_INPUTS)
def test_identical_errors(ref, fst, method, arg):
    kw = [{"bits": 3}, {"bits": 4}] if ref is qr.RVQ else [{}]
    for k in kw:
        q = ref(**k)
        x = arg(q) if callable(arg) else arg
        a = _raised(getattr(q, method), x)
        b = _raised(getattr(fst(**k), method), x)
        assert a is not None and a == b, (a, b)


@pytest.mark.parametrize("ref,fst", PAIRS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf"), "1", True])
def test_identical_constructor_errors(ref, fst, scale):
    a = _raised(lambda: ref(scale=scale))
    b = _raised(lambda: fst(scale=scale))
    assert a is not None and a == b


def test_rvq_bits_errors_identical():
    for bits in (2, 5, 3.0, "4"):
        a, b = _raised(qr.RVQ, bits), _raised(fr.RVQ, bits)
        assert a is not None and a == b


def test_fast_rvq_uses_fast_stages():
    assert all(type(q).__module__.startswith("fast.") for q in fr.RVQ(3).stages + fr.RVQ(4).stages)
