"""ICQuant on the GPU (fast/kernels/icquant.cu) vs cuBLAS fp16: ``python -m benchmarks.icquant_gpu``.

Layers: W ~ N(0, 1) of shapes m x n = 4096x4096, 8192x28672, 28672x8192, 2-bit codes
(min-max inlier grid, sign + 1-bit magnitude outliers), gamma = 0.05, gap code at B = 6:
2 + 0.31 index bits + side arrays per weight (``bits_per_weight`` column: exact).

* ``positions``: ``icq_decode_positions`` (one thread per segment of 64 symbols), GB/s of
  decoded output (m k int32);
* ``dequantize``: inliers + outlier scatter (positions decoded in the same call), GB/s of
  the float32 output;
* ``matvec b``: the fused decode-matvec, y (b, m) fp32 = x (b, n) fp32 @ W~^T, one warp
  per row, positions decoded on the fly (never stored), b = 1, 2, 4, 8;
* baseline, same run: cuBLAS fp16 ``torch.mm(W, X)``, W (m, n) fp16, X (n, b) fp16.

Protocol (as benchmarks/qtip_matvec_gpu.py): layer copies rotate so that every call streams
from HBM (copies totalling >= ROTATE_BYTES); ``graph_us``: CUDA-graph replay of 32 captured
calls, time per call, median of the replays; ``x_fp16``: cuBLAS graph time / ours. Every
output is checked first: positions and W~ exactly against the reference decode, the matvec
against float64 (``err`` = max |y - ref| / max sum_j |w_ij x_j|).

``--quick``: the 4096^2 layer and 8192x28672 at b = 1 and 8 only.
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks import harness
from benchmarks.qtip_matvec_gpu import CAPTURED, ROTATE_BYTES, _copies, _graph_time, copy_bandwidth, fp16_baseline

SHAPES = ((4096, 4096), (8192, 28672), (28672, 8192))
BATCHES = (1, 2, 4, 8)


def build(m, n, seed=0):
    """A fitted 2-bit ICQuant of a Gaussian (m, n) matrix and its codes (mask by argpartition)."""
    from fast.quantizers import ICQuant, ScalarGrid

    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    k = round(0.05 * n)
    idx = np.argpartition(-np.abs(W), k - 1, axis=1)[:, :k]
    mask = np.zeros((m, n), dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    q = ICQuant(ScalarGrid.symmetric(2, 1.0), gamma=0.05, B=6).fit(W, mask=mask)
    return q, q.encode(W)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    import cupy

    from fast.cuda.icquant import ICQuantGPU, build_layout

    shapes = SHAPES[:2] if args.quick else SHAPES
    batches = (1, 8) if args.quick else BATCHES
    replays = 20 if args.quick else 40
    copy_bw = copy_bandwidth()
    rows = []
    for m, n in shapes:
        q, codes = build(m, n)
        lay = build_layout(q, codes)
        first = ICQuantGPU.from_layout(lay)
        nc = _copies(first.nbytes)
        gs = [first] + [ICQuantGPU.from_layout(lay) for _ in range(nc - 1)]
        # correctness first: positions of the first 256 rows and all of W~ exactly
        Wd = q.decode(codes)
        P = cupy.asnumpy(first.positions())
        ok_pos = bool(P.shape == (m, q.k) and np.array_equal(
            P[:256], np.stack([np.flatnonzero(r) for r in q.mask[:256]])))
        ok_w = bool(np.array_equal(cupy.asnumpy(first.dequantize()).astype(np.float64), Wd))
        base = {"m": m, "n": n, "bits_per_weight": q.bits_per_weight, "copies": nc}
        pos_bytes = m * q.k * 4
        t, _ = _graph_time(lambda i: gs[i % nc].positions(), CAPTURED, replays)
        rows.append({**base, "op": "positions", "graph_us": t * 1e6, "GBps": pos_bytes / t / 1e9,
                     "exact": ok_pos})
        t, _ = _graph_time(lambda i: gs[i % nc].dequantize(), CAPTURED, replays)
        rows.append({**base, "op": "dequantize", "graph_us": t * 1e6, "GBps": m * n * 4 / t / 1e9,
                     "exact": ok_w})
        fp16 = fp16_baseline(m, n, batches, replays, 60)
        rng = cupy.random.default_rng(1)
        for b in batches:
            xs = [rng.standard_normal((b, n), dtype=cupy.float32) for _ in range(2)]
            ys = [cupy.empty((b, m), dtype=cupy.float32) for _ in range(2)]
            y = cupy.asnumpy(first.matvec(xs[0])).astype(np.float64)
            X = cupy.asnumpy(xs[0]).astype(np.float64)
            ref = X @ Wd.T
            err = float(np.abs(y - ref).max() / (np.abs(X) @ np.abs(Wd).T).max())
            t, _ = _graph_time(lambda i: gs[i % nc].matvec(xs[i & 1], out=ys[i & 1]), CAPTURED, replays)
            g16 = fp16[b][0]
            rows.append({**base, "op": f"matvec b={b}", "graph_us": t * 1e6,
                         "GBps": first.nbytes / t / 1e9, "fp16_us": g16 * 1e6, "x_fp16": g16 / t,
                         "err": err})
            print(rows[-1], flush=True)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    meta = dict(gpu=props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
                copy_GBps=copy_bw / 1e9, rotate_bytes=ROTATE_BYTES, captured=CAPTURED)
    harness.write_results("icquant_gpu" + ("_quick" if args.quick else ""), rows,
                          ["m", "n", "op", "bits_per_weight", "graph_us", "GBps", "fp16_us", "x_fp16",
                           "exact", "err"], meta=meta,
                          title="ICQuant on the GPU: position decode, dequantize, fused matvec vs cuBLAS fp16",
                          notes=("graph_us: CUDA-graph replay of 32 captured calls over rotating layer copies, "
                                 "per call. positions: GB/s of decoded int32 output; dequantize: of the fp32 "
                                 "output; matvec: of the compressed bytes read (codes + index + levels). "
                                 f"x_fp16 = cuBLAS fp16 graph time / ours. Device copy {copy_bw / 1e9:.0f} GB/s."))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
