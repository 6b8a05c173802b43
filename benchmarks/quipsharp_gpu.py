"""QuIP# on the GPU: fused E8P decode-matvec vs cuBLAS fp16 GEMV, E8P encode throughput,
and a whole 8192 x 8192 QuIP# 2-bit quantization.

    python -m benchmarks.quipsharp_gpu [--quick] [--rg-compare]

Protocol (performance.md §10, benchmarks/harness.py):

* every kernel is timed by CUDA-graph replay: a graph of ``REPS`` back-to-back calls that
  cycle through enough weight copies to exceed the L2 many times over (>= 256 MB in all;
  the H200's L2 is 60 MB), replayed 20 times; the median per-call time is reported. The
  fp16 baseline (``torch.matmul`` of an fp16 (m, n) weight and an (n, b) activation, i.e.
  cuBLAS GEMV / GEMM) is timed the same way in the same run;
* ``core`` is the decode-matvec kernel alone on an fp16 z (already transformed; also
  reported for an fp32 z), ``layer`` adds the input RHT and the output inverse RHT kernel
  launches (fp32, signs fused), i.e. the whole ``y = S_out G_m^T W~ G_n S_in x`` of a QuIP#
  layer;
* GB/s counts the compressed code bytes (2 bits per weight) of one call;
* the device copy bandwidth (read + write) of a 1 GiB buffer is measured first.

Results: benchmarks/results/<device>/quipsharp_gpu.{json,md}.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from .harness import graph_time, median, write_results

SHAPES = [(4096, 4096), (8192, 8192), (28672, 8192), (8192, 28672)]
BATCHES = [1, 2, 4, 8]
REPS = 64
ROTATE_BYTES = 256 * 2**20


def graph_time_cupy(calls, reps=REPS, replays=20):
    """Seconds per call of CuPy work replayed from a captured graph of ``reps`` calls
    cycling through ``calls`` (harness.graph_time; every call runs once first)."""
    return graph_time(lambda i: calls[i % len(calls)](), reps, replays=replays, warmup=len(calls))


def graph_time_torch(calls, reps=REPS, replays=20):
    """The same for torch work (cuBLAS baselines)."""
    return graph_time(lambda i: calls[i % len(calls)](), reps, replays=replays, warmup=len(calls),
                      backend="torch")


def copy_bandwidth():
    import cupy as cp

    a = cp.ones(2**28, dtype=cp.float32)  # 1 GiB
    b = cp.empty_like(a)
    t = graph_time_cupy([lambda: b.data.copy_from_device_async(a.data, a.nbytes)], reps=8, replays=10)
    return 2 * a.nbytes / median(t)


def bench_matvec(m, n, batches, rng):
    import cupy as cp
    import torch

    import fast
    from fast.cuda.e8p import MatvecPlan
    from fast.formats import _RHTStep

    rows = []
    q = fast.quantizers.E8P(0.02)
    code_bytes = m * n // 4
    ncopy = max(2, math.ceil(ROTATE_BYTES / code_bytes))
    plans = [MatvecPlan(q, cp.asarray(rng.integers(0, 2**16, size=(m, n // 8)).astype(np.uint16)), (m, n))
             for _ in range(ncopy)]
    t_in = fast.incoherence.RandomizedHadamard(n, seed=1)
    t_out = fast.incoherence.RandomizedHadamard(m, seed=2)
    fwd, inv = _RHTStep(t_in, inverse=False), _RHTStep(t_out, inverse=True)
    fp16_bytes = m * n * 2
    ncopy16 = max(2, math.ceil(ROTATE_BYTES / fp16_bytes))
    W16 = [torch.randn(m, n, device="cuda", dtype=torch.float16) for _ in range(ncopy16)]
    for b in batches:
        x = cp.asarray(rng.normal(size=(b, n)).astype(np.float32))
        xh = x.astype(cp.float16)
        z = cp.empty((b, n), dtype=cp.float32)
        yr = cp.empty((b, m), dtype=cp.float32)
        y = cp.empty((b, m), dtype=cp.float32)
        # core: the decode-matvec kernel on an fp16 z (fp16 activations, as the fp16
        # baseline), also fp32 z, and with the other tile height
        core = graph_time_cupy([lambda p=p: p(xh, out=yr) for p in plans])
        core32 = graph_time_cupy([lambda p=p: p(x, out=yr) for p in plans])
        alt_rg = 3 - plans[0].rg   # the other tile height, same codes
        alts = [p.with_rg(alt_rg) for p in plans]
        core_alt = graph_time_cupy([lambda p=p: p(xh, out=yr) for p in alts])

        def layer_call(p):  # fp32 x: RHT (multi-pass for K x 2^k at small batch), matvec, RHT^-1
            fwd(x, out=z)
            p(z, out=yr)
            inv(yr, out=y)

        layer = graph_time_cupy([lambda p=p: layer_call(p) for p in plans])

        def layer_fused_rht(p):  # the one-block-per-row fused RHT kernel for K x 2^k sizes
            fwd(x, out=z, multipass=False)
            p(z, out=yr)
            inv(yr, out=y, multipass=False)

        layer1 = graph_time_cupy([lambda p=p: layer_fused_rht(p) for p in plans])
        xt = torch.randn(n, b, device="cuda", dtype=torch.float16)
        yt = [torch.empty(m, b, device="cuda", dtype=torch.float16) for _ in W16]
        fp16 = graph_time_torch([lambda i=i: torch.matmul(W16[i], xt, out=yt[i]) for i in range(len(W16))])
        tc, tl, tf = median(core), median(layer), median(fp16)
        tl1, ta, tc32 = median(layer1), median(core_alt), median(core32)
        rows.append({
            "shape": f"{m}x{n}", "batch": b, "core_us": tc * 1e6, "core_fp32z_us": tc32 * 1e6,
            "layer_us": tl * 1e6, "layer_fusedrht_us": tl1 * 1e6, "fp16_us": tf * 1e6, "rg": plans[0].rg,
            "core_other_rg_us": ta * 1e6, "core_GBps": code_bytes / tc / 1e9, "layer_GBps": code_bytes / tl / 1e9,
            "fp16_GBps": fp16_bytes / tf / 1e9, "speedup_core": tf / tc, "speedup_layer": tf / tl,
            "copies": ncopy, "samples_core": core, "samples_layer": layer, "samples_fp16": fp16,
        })
        print(f"{m:>6}x{n:<6} b={b}: core {tc * 1e6:6.1f} us ({code_bytes / tc / 1e9:5.0f} GB/s; fp32 z "
              f"{tc32 * 1e6:5.1f}; rg{alt_rg} {ta * 1e6:5.1f})  layer {tl * 1e6:6.1f} us (fused RHT "
              f"{tl1 * 1e6:5.1f})  fp16 {tf * 1e6:6.1f} us (read {fp16_bytes / tf / 1e9:5.0f} GB/s)  "
              f"x{tf / tc:4.2f} / x{tf / tl:4.2f}", flush=True)
    del W16, plans
    return rows


def bench_rg(m, n, batches, rng):
    """Core decode-matvec time of both tile heights (rg = 1, 2) on the same codes, beside
    cuBLAS fp16, in one run (2-bit E8P, fp16 z)."""
    import cupy as cp
    import torch

    import fast
    from fast.cuda.e8p import MatvecPlan

    q = fast.quantizers.E8P(0.02)
    code_bytes = m * n // 4
    ncopy = max(2, math.ceil(ROTATE_BYTES / code_bytes))
    plans = [MatvecPlan(q, cp.asarray(rng.integers(0, 2**16, size=(m, n // 8)).astype(np.uint16)), (m, n))
             for _ in range(ncopy)]
    fp16_bytes = m * n * 2
    W16 = [torch.randn(m, n, device="cuda", dtype=torch.float16)
           for _ in range(max(2, math.ceil(ROTATE_BYTES / fp16_bytes)))]
    rows = []
    for b in batches:
        xh = cp.asarray(rng.normal(size=(b, n)).astype(np.float16))
        yr = cp.empty((b, m), dtype=cp.float32)
        xt = torch.randn(n, b, device="cuda", dtype=torch.float16)
        yt = [torch.empty(m, b, device="cuda", dtype=torch.float16) for _ in W16]
        tf = median(graph_time_torch([lambda i=i: torch.matmul(W16[i], xt, out=yt[i]) for i in range(len(W16))]))
        ref = None
        for rg in (1, 2):
            ps = [p.with_rg(rg) for p in plans]
            tc = median(graph_time_cupy([lambda p=p: p(xh, out=yr) for p in ps]))
            got = ps[0](xh).get()
            if ref is None:
                ref = got
            agree = float(np.max(np.abs(got - ref)) / (np.max(np.abs(ref)) + 1e-30))
            rows.append({"shape": f"{m}x{n}", "batch": b, "rg": rg,
                         "core_us": tc * 1e6, "fp16_us": tf * 1e6, "speedup_core": tf / tc,
                         "core_GBps": code_bytes / tc / 1e9, "max_rel_diff_vs_first": agree})
            print(f"{m:>6}x{n:<6} b={b} rg{rg}: {tc * 1e6:6.1f} us  fp16 {tf * 1e6:6.1f} us "
                  f"x{tf / tc:4.2f}  (max rel diff {agree:.1e})", flush=True)
    del W16, plans
    return rows


def bench_encode(rng, nvec):
    import cupy as cp

    from fast.cuda.e8p import encode

    u = cp.asarray(rng.normal(size=(nvec, 8)))
    encode(u[:1024], 1 / 0.9)
    cp.cuda.Device().synchronize()
    ts = []
    for _ in range(5):
        e0, e1 = cp.cuda.Event(), cp.cuda.Event()
        e0.record()
        encode(u, 1 / 0.9)
        e1.record()
        e1.synchronize()
        ts.append(cp.cuda.get_elapsed_time(e0, e1) * 1e-3)
    return median(ts)


def bench_quantize(n, rng):
    import cupy as cp

    import fast

    # an LLM-like layer: heavy-tailed input channels, correlated inputs
    N = 2 * n
    scales = cp.asarray(np.exp(rng.normal(size=n) * 0.7).astype(np.float32))
    X = cp.random.standard_normal((N, n), dtype=cp.float32) * scales
    H = (X.T @ X / N).astype(cp.float64)
    del X
    W = cp.asarray(rng.standard_t(5, size=(n, n)) * 0.02)
    small = fast.quantize_linear(W[:512, :512], H[:512, :512], "quip#", 2, seed=0)  # compile
    del small
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    layer = fast.quantize_linear(W, H, "quip#", 2, seed=0)
    cp.cuda.Device().synchronize()
    t = time.perf_counter() - t0
    Wh = layer.dequantize()
    E = Wh - W
    rel = float(cp.sum((E @ H) * E) / cp.sum((W @ H) * W))
    return t, rel


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batches 1 and 8 only")
    ap.add_argument("--skip-quantize", action="store_true")
    ap.add_argument("--rg-compare", action="store_true",
                    help="only compare the tile heights rg = 1, 2 at b = 1, 8")
    args = ap.parse_args(argv)
    import cupy as cp

    rng = np.random.default_rng(0)
    if args.rg_compare:
        rows = []
        for m, n in SHAPES:
            rows += bench_rg(m, n, [1, 8], rng)
        write_results("quipsharp_gpu_rg", rows,
                      ["shape", "batch", "rg", "core_us", "fp16_us", "speedup_core", "core_GBps",
                       "max_rel_diff_vs_first"],
                      meta={"reps_per_graph": REPS,
                            "device_name": cp.cuda.runtime.getDeviceProperties(0)["name"].decode()},
                      title="E8P decode-matvec kernel builds (2-bit, fp16 z) vs cuBLAS fp16",
                      notes="Graph replay, median per call, rotating weight copies > L2. "
                            "max_rel_diff_vs_first: max |y - y_first| / max |y_first| against the "
                            "first build's output on the same codes (fp32 summation order differs).")
        return
    bw = copy_bandwidth()
    print(f"device copy bandwidth (read + write): {bw / 1e9:.0f} GB/s", flush=True)
    rows = []
    batches = [1, 8] if args.quick else BATCHES
    for m, n in SHAPES:
        rows += bench_matvec(m, n, batches, rng)
    for r in rows:
        r["core_pct_copy"] = 100 * r["core_GBps"] * 1e9 / bw
    nvec = 2**23  # 8192 x 8192 weights
    t_enc = bench_encode(rng, nvec)
    enc = {"encode_vectors": nvec, "encode_s": t_enc, "encode_weights_per_s": 8 * nvec / t_enc}
    print(f"E8P encode: {8 * nvec / t_enc:.3g} weights/s ({t_enc * 1e3:.1f} ms for {nvec} vectors)", flush=True)
    quant = {}
    if not args.skip_quantize:
        t_q, rel = bench_quantize(8192, rng)
        quant = {"quantize_8192_s": t_q, "quantize_8192_rel_proxy": rel}
        print(f"QuIP# 2-bit 8192x8192 (RHT + BlockLDLQ + E8P): {t_q:.2f} s, relative proxy loss {rel:.4f}",
              flush=True)
    meta = {"copy_GBps": bw / 1e9, "reps_per_graph": REPS, **enc, **quant,
            "device_name": cp.cuda.runtime.getDeviceProperties(0)["name"].decode()}
    notes = (f"Graph replay, median per call; copy bandwidth {bw / 1e9:.0f} GB/s (r+w). "
             f"E8P encode {enc['encode_weights_per_s']:.3g} weights/s"
             + (f"; QuIP# 2-bit quantization of 8192x8192 in {quant['quantize_8192_s']:.2f} s" if quant else "")
             + ". core = decode-matvec kernel; layer = + input RHT + output inverse RHT.")
    write_results("quipsharp_gpu", rows,
                  ["shape", "batch", "core_us", "layer_us", "layer_fusedrht_us", "fp16_us", "core_GBps", "core_pct_copy",
                   "speedup_core", "speedup_layer"],
                  meta=meta, title="QuIP# E8P decode-matvec vs cuBLAS fp16", notes=notes)


if __name__ == "__main__":
    main()
