"""fast/kernels/icquant.cu on the GPU (fast.cuda.icquant): position decode, dequantize and
the fused decode-matvec against the reference ICQuant.

Exactness: positions are integers (equal); dequantized values are float16 levels stored
as float32 (exact), so equal to the reference's float64 decode. The matvec sums n + k
float32 products per row in a warp order: |error| <= (n + k) 2^-24 sum_j |W~_rj x_j|
(float32 accumulation, first-order bound), which we allow with a factor 2 margin.
"""
from __future__ import annotations

import numpy as np
import pytest

from quipref.quantizers import ICQuant, ScalarGrid

pytestmark = pytest.mark.gpu

CASES = [(64, 1000, 2, 0.05, 6), (96, 512, 4, 0.08, 3), (40, 4096, 1, 1 / 32, 8), (33, 300, 8, 0.05, 2)]


def fitted(m, n, bits, gamma, B, seed=0):
    """A fitted ICQuant on Student-t(3) rows and its codes."""
    W = np.random.default_rng(seed).standard_t(3, size=(m, n))
    q = ICQuant(ScalarGrid.symmetric(bits, 1.0), gamma=gamma, B=B).fit(W)
    return q, q.encode(W)


def reference(q, codes, X):
    """Positions (m, k), W~ (m, n) float64 and y = X W~^T (batch, m) float64, with the bound."""
    pos = np.stack([np.flatnonzero(r) for r in q.mask]) if q.k else np.zeros((q.shape[0], 0), np.int64)
    Wt = q.decode(codes)
    y = X.astype(np.float64) @ Wt.T
    bound = 2 * (q.shape[1] + q.k) * 2.0**-24 * (np.abs(X) @ np.abs(Wt).T)
    return pos, Wt, y, bound


@pytest.mark.parametrize("m,n,bits,gamma,B", CASES)
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_gpu_decode_dequantize_matvec(m, n, bits, gamma, B, batch):
    import cupy

    from fast.cuda.icquant import ICQuantGPU

    q, codes = fitted(m, n, bits, gamma, B)
    X = np.random.default_rng(1).standard_normal((batch, n)).astype(np.float32)
    pos, Wt, y, bound = reference(q, codes, X)
    g = ICQuantGPU(q, codes)
    np.testing.assert_array_equal(cupy.asnumpy(g.positions()), pos)
    np.testing.assert_array_equal(cupy.asnumpy(g.dequantize()).astype(np.float64), Wt)
    got = cupy.asnumpy(g.matvec(cupy.asarray(X))).astype(np.float64)
    assert np.all(np.abs(got - y) <= bound + 1e-30)
