"""CUDA Hadamard transform / RHT throughput on the GPU: ``python -m benchmarks.rht_gpu``.

16384 rows of n in {4096, 8192, 14336 = 28*512, 11008 = 172*64}, fp16 and fp32:

* the kernel (``fast.cuda.hadamard._transform_2d``: validation-free launch of what
  ``hadamard_transform`` / ``rht`` run) without and with a sign vector;
* baseline 1, measured in the same run: a device-to-device copy of the same tensor
  (cudaMemcpyAsync through CuPy) -- the bandwidth ceiling; GB/s count bytes read +
  bytes written (2 * rows * n * itemsize) for both;
* baseline 2: torch's dense Hadamard product x @ G_n^T in the same dtype (G_n from
  quipref.hadamard.hadamard_matrix), on the same buffers through DLPack (fp32: TF32
  off, torch's default);
* the multi-pass path (FWHT kernel + separate K x K column pass, the fallback for sizes
  the fused kernel does not serve) for the K*2^k sizes, against the fused kernel.

Timing: CUDA events around each call, 10 warm-up calls, median of 60 (20 when a call
takes more than 20 ms, i.e. torch fp32 GEMMs), inputs and outputs rotating through 2
buffers each: the smallest tensor, 16384 x 4096 fp16, is 134 MB, so two of them (268 MB
read per two calls, plus outputs) exceed the 50 MB L2 and every call streams from HBM.

Batch 1 (decode): rows = 1, n in {4096, 14336}, timed as CUDA-graph replay (64 launches
captured on a stream, time per launch) and as single event-timed calls.

Every kernel output is checked against the float64 NumPy reference (64 rows) before it
is timed; the max relative error is reported.

``--quick``: 256 rows of 4096 and 14336, no result files (a smoke run).
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from benchmarks import harness

ROWS = 16384
SIZES = (4096, 8192, 14336, 11008)
DTYPES = ("float16", "float32")
BATCH1_SIZES = (4096, 14336)
N_BUF = 2


def _timeit(fn, iters=60, warmup=10):
    import cupy

    fn()
    cupy.cuda.Device().synchronize()
    probe = harness.cuda_time(fn, warmup=1, iters=3)
    if harness.median(probe) > 0.02:
        iters, warmup = 20, 3
    ts = harness.cuda_time(fn, warmup=warmup, iters=iters)
    return harness.median(ts), ts, iters


def _rel_err(got, x, inverse, signs):
    from quipref import hadamard as ref

    x64 = x.astype(np.float64)
    if signs is None:
        want = ref.hadamard_transform(x64, inverse=inverse)
    elif inverse:
        want = signs * ref.hadamard_transform(x64, inverse=True)
    else:
        want = ref.hadamard_transform(x64 * signs)
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


def bench_large(rows, sizes, dtypes, with_torch=True):
    import cupy

    from fast.cuda import hadamard as fh
    from quipref import hadamard as ref

    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
        with_torch = False

    out_rows, variant_rows = [], []
    for dname in dtypes:
        dtype = np.dtype(dname)
        for n in sizes:
            K, p = ref.factor_dimension(n)
            scale = 1.0 / math.sqrt(n)
            rng = cupy.random.default_rng(n)
            xs = [rng.standard_normal((rows, n), dtype=np.float32).astype(dtype) for _ in range(N_BUF)]
            ys = [cupy.empty_like(xs[0]) for _ in range(N_BUF)]
            signs_h = np.where(np.random.default_rng(n).standard_normal(n) >= 0, 1.0, -1.0)
            signs = fh.pack_signs(signs_h)  # packed bits, n / 8 bytes
            nbytes = 2 * rows * n * dtype.itemsize
            kernel = "+".join(fh.plan(dtype, n))

            # correctness first (first 64 rows), then time
            fh._transform_2d(xs[0], ys[0], K, p, None, False, scale)
            err = _rel_err(cupy.asnumpy(ys[0][:64]), cupy.asnumpy(xs[0][:64]), False, None)
            fh._transform_2d(xs[0], ys[0], K, p, signs, False, scale)
            err_rht = _rel_err(cupy.asnumpy(ys[0][:64]), cupy.asnumpy(xs[0][:64]), False, signs_h)

            it = [0]

            def run_plain(**kw):
                def f():
                    i = it[0] = (it[0] + 1) % N_BUF
                    fh._transform_2d(xs[i], ys[i], K, p, None, False, scale, **kw)
                return f

            def run_rht():
                i = it[0] = (it[0] + 1) % N_BUF
                fh._transform_2d(xs[i], ys[i], K, p, signs, False, scale)

            def run_copy():
                i = it[0] = (it[0] + 1) % N_BUF
                ys[i].data.copy_from_device_async(xs[i].data, xs[i].nbytes)

            t_k, s_k, it_k = _timeit(run_plain())
            t_r, s_r, _ = _timeit(run_rht)
            t_c, s_c, _ = _timeit(run_copy)
            row = dict(dtype=dname, n=n, K=K, p=p, kind="2^k" if K == 1 else f"{K}*2^k",
                       kernel=kernel, us=t_k * 1e6, GBps=nbytes / t_k / 1e9,
                       rht_us=t_r * 1e6, rht_GBps=nbytes / t_r / 1e9,
                       copy_us=t_c * 1e6, copy_GBps=nbytes / t_c / 1e9,
                       pct_copy=100.0 * t_c / t_k, rht_pct_copy=100.0 * t_c / t_r,
                       rel_err=err, rht_rel_err=err_rht, iters=it_k,
                       samples_us=[t * 1e6 for t in s_k], rht_samples_us=[t * 1e6 for t in s_r],
                       copy_samples_us=[t * 1e6 for t in s_c])
            target = 80.0 if K == 1 else 60.0
            row["target_pct"] = target
            row["target_met"] = "yes" if row["rht_pct_copy"] >= target and row["pct_copy"] >= target else "no"

            if with_torch:
                xt = [torch.from_dlpack(x) for x in xs]
                yt = [torch.from_dlpack(y) for y in ys]
                # G_n^T = (H_K^T (x) H_p) / sqrt(n): quipref.hadamard.hadamard_matrix(n).T,
                # built on the device from the same factors (the host float64 matrix
                # would be 1.6 GB for n = 14336); +-1/sqrt(n) rounded once to the dtype
                Hk = cupy.asarray(ref.base_matrix(K).T, dtype=np.float64)
                Hp = cupy.asarray(ref.sylvester(p), dtype=np.float64)
                Gt_c = (cupy.kron(Hk, Hp) * (1.0 / math.sqrt(n))).astype(dtype)
                if n <= 4096:  # cross-check the construction against hadamard_matrix
                    assert np.array_equal(cupy.asnumpy(Gt_c),
                                          ref.hadamard_matrix(n).T.astype(dtype))
                Gt = torch.from_dlpack(Gt_c)
                torch.mm(xt[0], Gt, out=yt[0])
                torch.cuda.synchronize()
                err_t = _rel_err(cupy.asnumpy(ys[0][:64]), cupy.asnumpy(xs[0][:64]), False, None)

                def run_torch():
                    i = it[0] = (it[0] + 1) % N_BUF
                    torch.mm(xt[i], Gt, out=yt[i])

                t_t, s_t, it_t = _timeit(run_torch)
                row.update(torch_us=t_t * 1e6, torch_GBps=nbytes / t_t / 1e9,
                           speedup_vs_torch=t_t / t_k, torch_rel_err=err_t, torch_iters=it_t,
                           torch_samples_us=[t * 1e6 for t in s_t])
                del Gt, Gt_c, Hk, Hp, xt, yt
            out_rows.append(row)
            print(f"{dname} n={n:6d} {kernel:28s} {row['us']:9.1f} us {row['GBps']:7.0f} GB/s "
                  f"({row['pct_copy']:5.1f}% of copy {row['copy_GBps']:.0f} GB/s) rht {row['rht_us']:9.1f} us "
                  f"({row['rht_pct_copy']:5.1f}%)  torch {row.get('torch_us', float('nan')):10.1f} us "
                  f"x{row.get('speedup_vs_torch', float('nan')):.1f}  err {err:.1e}/{err_rht:.1e}", flush=True)

            # the multi-pass path on the same buffers, same run
            variants = []
            if K > 1:
                variants.append(("multi-pass (FWHT kernel + column pass)", dict(multipass=True)))
            for label, kw in variants:
                fh._transform_2d(xs[0], ys[0], K, p, None, False, scale, **kw)
                e = _rel_err(cupy.asnumpy(ys[0][:64]), cupy.asnumpy(xs[0][:64]), False, None)
                t_v, s_v, _ = _timeit(run_plain(**kw))
                variant_rows.append(dict(dtype=dname, n=n, K=K, p=p, variant=label,
                                         kernels="+".join(n_ for n_, *_ in fh._passes(
                                             fh._TAG[dtype], K, p, kw.get("multipass", False))),
                                         us=t_v * 1e6, GBps=nbytes / t_v / 1e9,
                                         pct_copy=100.0 * t_c / t_v, vs_default=t_v / t_k, rel_err=e,
                                         samples_us=[t * 1e6 for t in s_v]))
                print(f"    variant {label:40s} {t_v * 1e6:9.1f} us ({100.0 * t_c / t_v:5.1f}% of copy) "
                      f"err {e:.1e}", flush=True)
            del xs, ys
            cupy.get_default_memory_pool().free_all_blocks()
    return out_rows, variant_rows


def bench_batch1(sizes, dtypes, captured=64, replays=50):
    import cupy

    from fast.cuda import hadamard as fh
    from quipref import hadamard as ref

    rows = []
    for dname in dtypes:
        dtype = np.dtype(dname)
        for n in sizes:
            K, p = ref.factor_dimension(n)
            scale = 1.0 / math.sqrt(n)
            rng = cupy.random.default_rng(1)
            xs = [rng.standard_normal((1, n), dtype=np.float32).astype(dtype) for _ in range(2)]
            ys = [cupy.empty_like(xs[0]) for _ in range(2)]
            signs_h = np.where(np.random.default_rng(n).standard_normal(n) >= 0, 1.0, -1.0)
            signs = fh.pack_signs(signs_h)
            fh._transform_2d(xs[0], ys[0], K, p, signs, False, scale)  # compile + check
            err = _rel_err(cupy.asnumpy(ys[0]), cupy.asnumpy(xs[0]), False, signs_h)
            def one(i):
                fh._transform_2d(xs[i & 1], ys[i & 1], K, p, signs, False, scale)

            def copy(i):
                ys[i & 1].data.copy_from_device_async(xs[i & 1].data, xs[i & 1].nbytes)

            res = {}
            for label, f in (("rht", one), ("copy", copy)):
                per = harness.graph_time(f, captured, replays=replays)
                res[label] = (harness.median(per), per)
            # single event-timed calls (includes launch overhead)
            t_single, _, _ = _timeit(lambda: one(0))
            row = dict(dtype=dname, rows=1, n=n, K=K, p=p, kernel="+".join(fh.plan(dtype, n)),
                       graph_us=res["rht"][0] * 1e6, copy_graph_us=res["copy"][0] * 1e6,
                       single_call_us=t_single * 1e6, captured=captured, replays=replays,
                       rel_err=err, graph_samples_us=[t * 1e6 for t in res["rht"][1]])
            rows.append(row)
            print(f"batch-1 {dname} n={n}: graph replay {row['graph_us']:.2f} us/call "
                  f"(copy {row['copy_graph_us']:.2f}), single call {row['single_call_us']:.1f} us", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=ROWS)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small sizes, no result files")
    args = ap.parse_args(argv)

    import cupy

    if args.quick:
        large, variants = bench_large(256, (4096, 14336), DTYPES, with_torch=not args.no_torch)
        bench_batch1((4096,), ("float16",))
        return 0
    large, variants = bench_large(args.rows, SIZES, DTYPES, with_torch=not args.no_torch)
    b1 = bench_batch1(BATCH1_SIZES, DTYPES)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    meta = dict(rows=args.rows, buffers=N_BUF, warmup=10, iters="60 (20 if a call > 20 ms)",
                gpu=props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
                l2_bytes=int(props.get("l2CacheSize", 0)), variants=variants, batch1=b1,
                torch_allow_tf32=False)
    cols = ["dtype", "n", "kind", "kernel", "us", "GBps", "copy_GBps", "pct_copy", "rht_us",
            "rht_pct_copy", "target_pct", "target_met", "torch_us", "speedup_vs_torch", "rel_err"]
    lines = ["Kernel = fast.cuda.hadamard launch for 16384 rows (us = median of CUDA-event-timed "
             "calls, inputs/outputs rotating through 2 buffers > L2). GB/s = (read + write) / time. "
             "pct_copy = copy time / kernel time (100 = copy speed). rht_* = with the sign vector. "
             "torch = dense x @ G_n^T (torch.mm, same dtype, TF32 off). rel_err = ||y - ref|| / ||ref|| "
             "against the float64 reference (64 rows).", "",
             "Design variants (same run):", "",
             "| dtype | n | variant | kernels | us | % of copy | time / default |", "|---|---|---|---|---|---|---|"]
    for v in variants:
        lines.append(f"| {v['dtype']} | {v['n']} | {v['variant']} | {v['kernels']} | {v['us']:.1f} | "
                     f"{v['pct_copy']:.1f} | {v['vs_default']:.2f} |")
    lines += ["", "Batch 1 (rows = 1, with signs): CUDA-graph replay of 64 captured launches, time per launch; "
              "copy = graph-captured cudaMemcpyAsync of the same row; single = one event-timed call.", "",
              "| dtype | n | kernel | graph replay us | copy (graph) us | single call us |", "|---|---|---|---|---|---|"]
    for r in b1:
        lines.append(f"| {r['dtype']} | {r['n']} | {r['kernel']} | {r['graph_us']:.2f} | "
                     f"{r['copy_graph_us']:.2f} | {r['single_call_us']:.1f} |")
    lines += ["", "Main table:"]
    path = harness.write_results("rht_gpu", large, cols, meta=meta,
                                 title="CUDA Hadamard transform / RHT, 16384 rows", notes="\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
