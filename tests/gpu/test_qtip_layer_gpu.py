"""QTIP layers on the GPU: the recipe on CuPy arrays (CUDA Viterbi inside BlockLDLQ) and the
fused QuantizedLinear.matvec (RHT kernel, trellis decode-matvec, inverse RHT kernel).

Tolerances:

* recipe, GPU vs CPU at the same seed: the CUDA Viterbi scores paths in fp32 and the CPU
  one in fp64, so near-ties resolve differently and the LDLQ feedback carries any
  difference to later blocks; both are the same algorithm on the same data, so their
  proxy losses are two draws of the same quantity: with 4 x 16 = 64 tiles per block
  column, each tile's MSE has a relative spread of ~7 % (fast/quantizers/trellis.py
  tests), so the totals differ by ~1 %; we allow 5 %.
* fused matvec: in the processed domain the kernel errs by e_r <= (2^-11 + n 2^-22)
  sum_c |z_c||W~_rc| (z rounded to fp16; the code values 1MAD integers, 3INST fp16 sums
  and the float16 HYB LUT are exact in fp16; fp32 tensor-core accumulation); the output
  RHT is orthogonal, so ||y - ref||_2 <= ||e||_2 plus the fp32 transforms
  (< 1e-5 ||x|| ||W~||_F), as in tests/gpu/test_e8p_gpu.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import fast
import quipref

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


@pytest.mark.parametrize("code,bits", [("hyb", 2), ("1mad", 3)])
def test_qtip_recipe_on_gpu_matches_cpu(cp, code, bits):
    W, H = quipref.datasets.synthetic_layer(64, 256, n_tokens=1024, seed=2)
    cpu = fast.quantize_linear(W, H, "qtip", bits, seed=1, L=8, code=code)
    gpu = fast.quantize_linear(cp.asarray(W), cp.asarray(H), "qtip", bits, seed=1, L=8, code=code)
    assert isinstance(gpu.codes, cp.ndarray) and gpu.codes.shape == cpu.codes.shape
    la = quipref.proxy_loss(cpu.dequantize(), W, H)
    lb = quipref.proxy_loss(quipref.formats.QuantizedLinear.dequantize(gpu).get(), W, H)
    assert abs(la - lb) <= 0.05 * la, (la, lb)


@pytest.mark.parametrize("code,bits", [("hyb", 2), ("hyb", 4), ("1mad", 2), ("3inst", 3)])
def test_qtip_fused_matvec_equals_reference(cp, code, bits):
    m, n = 64, 512
    W, H = quipref.datasets.synthetic_layer(m, n, n_tokens=2048, seed=bits)
    layer = fast.quantize_linear(cp.asarray(W), cp.asarray(H), "qtip", bits, seed=0, code=code)  # L = 16
    assert layer.cuda_matvec() is not None
    Wt = quipref.formats.QuantizedLinear.processed_weights(layer, np)
    Wh = layer.input_transform.inverse(layer.output_transform.inverse(Wt.T).T)   # W^ = T_out^T W~ T_in
    x = np.random.default_rng(3).normal(size=(3, n))
    for dt in (np.float32, np.float16):
        xd = x.astype(dt)
        y = layer.matvec(cp.asarray(xd))
        assert y.dtype == np.float32 and y.shape == (3, m)
        ref = xd.astype(np.float64) @ Wh.T
        z = layer.input_transform.forward(xd.astype(np.float64))
        e = (2.0**-11 + n * 2.0**-22) * (np.abs(z) @ np.abs(Wt).T)
        err = np.linalg.norm(y.get() - ref, axis=1)
        bound = np.linalg.norm(e, axis=1) + 1e-5 * np.linalg.norm(xd.astype(np.float64), axis=1) * np.linalg.norm(Wt)
        assert np.all(err <= bound), (code, bits, dt, err / bound)
