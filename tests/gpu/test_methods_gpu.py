"""quantize_linear on CuPy arrays: same layer as the NumPy reference, results on the GPU."""
import numpy as np
import pytest

import fast
import quipref
from quipref.datasets import synthetic_layer

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("method,bits,opts", [("gptq", 2, {}), ("quip", 2, {}), ("quip", 3, {"transform": "hadamard"})])
def test_cupy_quantize_linear_matches_reference(method, bits, opts):
    import cupy as cp

    W, H = synthetic_layer(128, 384, n_tokens=2048, seed=5)   # 384 = 12 * 32
    ref = quipref.quantize_linear(W, H, method, bits, seed=1, **opts)
    got = fast.quantize_linear(cp.asarray(W), cp.asarray(H), method, bits, seed=1, **opts)
    assert isinstance(got.codes, cp.ndarray)
    # see tests/parity/test_methods_parity.py for why codes are expected to be identical
    np.testing.assert_array_equal(cp.asnumpy(got.codes), ref.codes)
    Wg = got.dequantize()
    assert isinstance(Wg, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(Wg), ref.dequantize(), rtol=0, atol=1e-10 * np.abs(ref.dequantize()).max())
    x = np.random.default_rng(0).normal(size=(4, 384))
    y = got.matvec(cp.asarray(x))
    assert isinstance(y, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(y), ref.matvec(x), rtol=1e-9, atol=1e-9 * np.abs(ref.matvec(x)).max())
