"""fast ICQuant index coding (Numba) against quipref's: identical bitstreams, identical
masks and errors; ICQuant and the 'icquant' recipe give identical codes.

The index codes are integer algorithms: equality is exact. The ICQuant codes come from
the same NumPy fitting and nearest-level search in both packages; through the recipe,
fast's lazy-batch LDLQ sums the feedback in another order, so a code could differ only
where the reference's pre-rounding value lies within float64 round-off (~1e-12
relative) of a midpoint between levels: probability ~1e-10 per entry on these
continuous random layers, so equality is the expectation (as in test_methods_parity).
"""
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import fast
import quipref
from fast.quantizers import index_coding as F
from quipref.datasets import synthetic_layer
from quipref.quantizers import index_coding as R
from tests.reference.test_icquant import masks


@given(masks(), st.integers(1, 12))
@example(np.zeros((3, 5), dtype=bool), 2)
@example(np.ones((2, 40), dtype=bool), 1)
@example(np.eye(1, 3000, 2999, dtype=bool), 3)
def test_gap_bitstreams_identical(mask, B):
    a, b = R.gap_encode(mask, B), F.gap_encode(mask, B)
    np.testing.assert_array_equal(b.data, a.data)
    np.testing.assert_array_equal(b.offsets, a.offsets)
    counts = mask.sum(axis=1)
    np.testing.assert_array_equal(F.gap_decode(a.data, a.offsets, counts, mask.shape[1], B), mask)
    if np.all(counts == counts[0]):
        pos = F.gap_positions(a.data, a.offsets, int(counts[0]), B)
        np.testing.assert_array_equal(pos, np.stack([np.flatnonzero(r) for r in mask]))
        np.testing.assert_array_equal(R.gap_positions(a.data, a.offsets, int(counts[0]), B), pos)


@given(masks(), st.integers(1, 64))
@example(np.ones((1, 64), dtype=bool), 64)
@example(np.zeros((2, 129), dtype=bool), 64)
def test_enumerative_bitstreams_identical(mask, g):
    a, b = R.enum_encode(mask, g), F.enum_encode(mask, g)
    np.testing.assert_array_equal(b.data, a.data)
    np.testing.assert_array_equal(b.offsets, a.offsets)
    np.testing.assert_array_equal(F.enum_decode(a.data, a.offsets, mask.shape[1], g), mask)


def test_same_errors():
    s = R.gap_encode(np.eye(2, 8, dtype=bool), 3)
    for mod in (R, F):
        with pytest.raises(ValueError, match="row 0 ends after 1 of 2 outliers"):
            mod.gap_decode(s.data, s.offsets, 2, 8, 3)
        with pytest.raises(ValueError, match="decodes position"):
            mod.gap_decode(s.data, s.offsets, 1, 0, 3)
        with pytest.raises(TypeError, match="mask"):
            mod.gap_encode(np.zeros((2, 2)), 3)
        with pytest.raises(ValueError, match="g must be between 1 and"):
            mod.enum_encode(np.zeros((2, 2), dtype=bool), 0)
    e = R.enum_encode(np.eye(2, 8, dtype=bool), 4)
    bad = e.data.copy()
    bad[0] ^= 0b111  # count field of the first group: 1 -> 6 > 4
    for mod in (R, F):
        with pytest.raises(ValueError, match="corrupt"):
            mod.enum_decode(bad, e.offsets, 8, 4)


@pytest.mark.parametrize("opts", [{}, {"transform": "hadamard"}, {"inner": "lloydmax"},
                                  {"index_code": "enumerative"}, {"gamma": 0.08, "B": 4}])
def test_recipe_same_codes(opts):
    W, H = synthetic_layer(48, 192, n_tokens=1024, seed=5)
    a = quipref.quantize_linear(W, H, "icquant", 2, seed=4, **opts)
    b = fast.quantize_linear(W, H, "icquant", 2, seed=4, **opts)
    assert type(b.quantizer).__module__ == "fast.quantizers.icquant"
    np.testing.assert_array_equal(b.codes, a.codes)
    np.testing.assert_array_equal(b.quantizer.state()[1]["index"], a.quantizer.state()[1]["index"])
    np.testing.assert_allclose(b.dequantize(), a.dequantize(), rtol=0, atol=1e-12 * np.abs(a.dequantize()).max())
    assert a.bits_per_weight == b.bits_per_weight
