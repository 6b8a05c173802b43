"""QuantLinear on the CPU equals dequantize() @ x + bias.

Tolerances: ``layer.matvec`` applies the transforms to x in float64 instead of forming
Ŵ; against ``x @ dequantize().T`` (also float64) the two differ by float64 round-off of
a few transforms and one product of n <= 1536 terms: <= ~1e-12 relative to |x||Ŵ|; we
allow 1e-10 of max|y|. A float32 input gets a float32 output (rounding 2^-24 relative),
and the dense cache multiplies in float32 (n 2^-24 |x||w| per entry): 1e-5 of max|y|.
"""
import numpy as np
import pytest

import fast
import quipref
from quipref.pipeline import QuantLinear


@pytest.fixture(scope="module")
def layer_and_bias(smollm2_base, torch):
    """A real SmolLM2 layer (up_proj, 1536 x 576) quantized with QuIP# 2-bit against a real-ish H,
    and a bias (the model has none: a random one checks that it is added)."""
    model, _ = smollm2_base
    W = model.model.layers[0].mlp.up_proj.weight.detach().double().numpy()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2048, 576)) * rng.gamma(1.0, size=576)
    layer = fast.quantize_linear(W, X.T @ X / 2048, "quip#", 2, seed=1)
    bias = torch.from_numpy(rng.normal(size=1536).astype(np.float32))
    return layer, bias


def test_equals_dequantize_matmul(layer_and_bias, torch):
    layer, bias = layer_and_bias
    q = QuantLinear(layer, bias)
    Wh = layer.dequantize()
    x = np.random.default_rng(1).normal(size=(2, 3, 576))
    want = x @ Wh.T + bias.double().numpy()
    y64 = q(torch.from_numpy(x))
    assert y64.dtype == torch.float64 and tuple(y64.shape) == (2, 3, 1536)
    np.testing.assert_allclose(y64.numpy(), want, rtol=0, atol=1e-10 * np.abs(want).max())
    y32 = q(torch.from_numpy(x).float())
    assert y32.dtype == torch.float32
    np.testing.assert_allclose(y32.double().numpy(), want, rtol=0, atol=1e-5 * np.abs(want).max())
    cached = QuantLinear(layer, bias, cache=True)
    yc = cached(torch.from_numpy(x).float())
    assert yc.dtype == torch.float32 and cached._dense is not None
    np.testing.assert_allclose(yc.double().numpy(), want, rtol=0, atol=1e-5 * np.abs(want).max())
    # no bias; single vector; works under inference_mode
    with torch.inference_mode():
        y1 = QuantLinear(layer)(torch.from_numpy(x[0, 0]))
    np.testing.assert_allclose(y1.numpy(), x[0, 0] @ Wh.T, rtol=0, atol=1e-10 * np.abs(want).max())


def test_reference_layer_and_from_linear(smollm2_base, torch):
    model, _ = smollm2_base
    lin = model.model.layers[0].self_attn.k_proj
    W = lin.weight.detach().double().numpy()
    layer = quipref.quantize_linear(W, np.eye(576), "gptq", 4)
    q = QuantLinear.from_linear(lin, layer)
    x = torch.randn(5, 576, dtype=torch.float64)
    np.testing.assert_allclose(q(x).numpy(), x.numpy() @ layer.dequantize().T, rtol=0, atol=1e-10 * 50)
    assert "method='gptq'" in repr(q)
    with pytest.raises(ValueError, match="shape"):
        QuantLinear.from_linear(model.model.layers[0].self_attn.q_proj, layer)


def test_bad_input(layer_and_bias, torch):
    layer, bias = layer_and_bias
    q = QuantLinear(layer, bias)
    with pytest.raises(ValueError, match=r"\(\.\.\., 576\)"):
        q(torch.zeros(3, 575))
    with pytest.raises(TypeError, match="floating-point"):
        q(torch.zeros(3, 576, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        q(np.zeros((3, 576)))
    with pytest.raises(ValueError, match=r"bias must have shape \(1536,\)"):
        QuantLinear(layer, bias[:10])
