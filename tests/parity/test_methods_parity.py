"""fast.quantize_linear runs the same recipes as quipref.quantize_linear with fast
primitives: same seed -> same layer.

Codes are compared exactly. The fast LDLQ sums the feedback in a different order
(lazy batch), so a code can only differ where the reference's pre-rounding value lies
within float64 round-off (~1e-12 relative) of a rounding boundary; on these continuous
random layers that has probability ~1e-10 per entry, so equality is the expectation.
Dequantized weights then agree to float64 round-off of the transforms. The same argument
covers the lattice codes of QuIP# (fast E8P / RVQ find the same nearest codeword; a tie
needs two codewords at equal distance, probability 0 on continuous inputs) and the trellis
codes of QTIP (Numba and reference Viterbi compute the same float64 path costs in the same
order, ties broken the same way).
"""
import numpy as np
import pytest

import fast
import quipref
from quipref.datasets import synthetic_layer

CASES = [("rtn", 3, {}), ("gptq", 2, {}), ("gptq", 4, {}), ("quip", 2, {}), ("quip", 3, {"transform": "hadamard"}),
         ("quip", 4, {"rescale": True}), ("quip", 2, {"rounding": "stochastic"}),
         ("quip#", 2, {}), ("quip#", 3, {}), ("quip#", 4, {}), ("quip#", 2, {"refine_passes": 1}),
         ("qtip", 2, {"L": 6}), ("qtip", 3, {"L": 8, "code": "1mad"}), ("qtip", 4, {"L": 8, "code": "3inst"})]


@pytest.mark.parametrize("method,bits,opts", CASES)
def test_same_layer_from_both_packages(method, bits, opts):
    W, H = synthetic_layer(64, 192, n_tokens=1024, seed=11)   # 192 = 12 * 16
    a = quipref.quantize_linear(W, H, method, bits, seed=4, **opts)
    b = fast.quantize_linear(W, H, method, bits, seed=4, **opts)
    np.testing.assert_array_equal(a.codes, b.codes)
    Wa, Wb = a.dequantize(), b.dequantize()
    # same codes, same transforms (float64): differences are transform round-off
    np.testing.assert_allclose(Wb, Wa, rtol=0, atol=1e-12 * np.abs(Wa).max())
    assert a.bits_per_weight == b.bits_per_weight


def test_fast_load_linear_reads_reference_files(tmp_path):
    W, H = synthetic_layer(48, 96, n_tokens=512, seed=2)
    a = quipref.quantize_linear(W, H, "quip", 2, seed=0, transform="hadamard")
    path = a.save(tmp_path / "l.safetensors")
    b = fast.load_linear(path)
    assert type(b.input_transform).__module__ == "fast.incoherence"
    x = np.random.default_rng(0).normal(size=(3, 96))
    np.testing.assert_allclose(b.matvec(x), a.matvec(x), rtol=1e-12, atol=1e-12 * np.abs(a.matvec(x)).max())
