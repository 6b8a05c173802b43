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
* variants that justify the design: the multi-pass path (FWHT kernel + separate
  K x K column pass) for the K*2^k sizes, and a fused-kernel tuning variant.

Timing: CUDA events around each call, 10 warm-up calls, median of 60 (20 when a call
takes more than 20 ms, i.e. torch fp32 GEMMs), inputs and outputs rotating through 2
buffers each: the smallest tensor, 16384 x 4096 fp16, is 134 MB, so two of them (268 MB
read per two calls, plus outputs) exceed the 50 MB L2 and every call streams from HBM.

Batch 1 (decode): rows = 1, n in {4096, 14336}, timed as CUDA-graph replay (64 launches
captured on a stream, time per launch) and as single event-timed calls.

Every kernel output is checked against the float64 NumPy reference (64 rows) before it
is timed; the max relative error is reported.

``--variants-only``: just the layouts of the fused kernel's H_K operand
(-DRHT_FUSED_A=0 default row-major, 1 mma fragment order, 2 packed sign bits; rht.cu,
``fused_a_frag``) for the fused K*2^k sizes 11008 = 172*64 and 14336 = 28*512, fp16 and
fp32, without and with signs (for p <= 64 also the persistent body with layouts 0 and
2), the variants timed in turn ``--reps`` times (median of the per-round medians), every
variant's output compared with the same build without -DRHT_FUSED_A (must be
bit-identical) and with the float64 reference; results in ``rht_gpu_fused_a.{json,md}``.
Well under a minute of device time after the NVRTC builds.
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
#: H_K operand layouts of the fused kernel (-DRHT_FUSED_A=<l>), benchmark labels
FUSED_A_VARIANTS = (
    (1, "fused, H_K in mma fragment order (1 x 16 B load / k-tile)"),
    (2, "fused, H_K as packed sign bits (1 x 4 B load + LOP3 / k-tile)"),
)
FUSED_A_SIZES = (11008, 14336)


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

            # design variants (same buffers, same run)
            variants = []
            if K == 1 and dname == "float16" and n in (4096, 8192):
                variants.append(("shuffle FWHT, one smem exchange (v2 default)",
                                 dict(extra=("-DRHT_POW2_T2=0",))))
            if K > 1:
                variants.append(("multi-pass (FWHT kernel + column pass)", dict(multipass=True)))
                if 128 <= p <= 512:
                    variants.append(("fused, 16 n-tiles per warp unit (v1 default)", dict(ntw_log=4)))
                if p <= 64:
                    variants.append(("fused persistent, cp.async prefetch of the next row",
                                     dict(extra=("-DRHT_FUSED_PERSIST=1",))))
                if p <= 64 and dname == "float16":
                    variants.append(("fused, 2 blocks/SM register bound (64 regs)",
                                     dict(extra=("-DRHT_FUSED_SMALLP_BLOCKS_H=2",))))
                if dname == "float32":
                    variants.append(("fused, k-loop unrolled by the compiler (96 regs)",
                                     dict(extra=("-DRHT_FUSED_F32_KT_UNROLL=0",))))
                if fh.plan(dtype, n)[0].startswith("rht_fused_"):
                    for layout, label in FUSED_A_VARIANTS:
                        variants.append((label, dict(extra=(f"-DRHT_FUSED_A={layout}",))))
            for label, kw in variants:
                fh._transform_2d(xs[0], ys[0], K, p, None, False, scale, **kw)
                e = _rel_err(cupy.asnumpy(ys[0][:64]), cupy.asnumpy(xs[0][:64]), False, None)
                t_v, s_v, _ = _timeit(run_plain(**kw))
                variant_rows.append(dict(dtype=dname, n=n, K=K, p=p, variant=label,
                                         kernels="+".join(n_ for n_, *_ in fh._passes(
                                             fh._TAG[dtype], K, p, kw.get("ntw_log", fh._FUSED_NTW_LOG),
                                             kw.get("multipass", False))) + (
                                             " " + " ".join(kw["extra"]) if "extra" in kw else ""),
                                         us=t_v * 1e6, GBps=nbytes / t_v / 1e9,
                                         pct_copy=100.0 * t_c / t_v, vs_default=t_v / t_k, rel_err=e,
                                         samples_us=[t * 1e6 for t in s_v]))
                print(f"    variant {label:40s} {t_v * 1e6:9.1f} us ({100.0 * t_c / t_v:5.1f}% of copy) "
                      f"err {e:.1e}", flush=True)
            del xs, ys
            cupy.get_default_memory_pool().free_all_blocks()
    return out_rows, variant_rows


def _precompile(option_sets):
    """Build the NVRTC units in parallel processes into CuPy's on-disk kernel cache (the
    same trick as fast.cuda.hadamard.precompile), so that ten variant builds cost the
    time of the slowest instead of their sum."""
    from fast.cuda._compile import precompile_units

    precompile_units("rht", sorted(set(tuple(o) for o in option_sets)))


def bench_fused_a(rows, sizes=FUSED_A_SIZES, dtypes=DTYPES, reps=3):
    """Default fused kernel against the -DRHT_FUSED_A layouts, same buffers, same run.

    For every (dtype, n): compile and check every layout (bit-identical to the default on
    all rows, and within the reference error on 64 rows), then ``reps`` rounds that time
    copy, then each layout without and with signs, in turn (drift hits all alike); the
    reported time is the median of the round medians.
    """
    import cupy

    from fast.cuda import hadamard as fh
    from quipref import hadamard as ref

    layouts = ((0, "default (row-major H_K, 4 x 4 B loads / k-tile)"),) + FUSED_A_VARIANTS
    # p <= 64: also the persistent cp.async body, which was slower with the 62 KB H_K in
    # L1 (the staging buffer shrinks L1); with the 15.5 KB sign bits that reason is gone
    persist = (("P", "fused persistent, cp.async prefetch (layout 0)", ("-DRHT_FUSED_PERSIST=1",)),
               ("P2", "fused persistent + H_K as packed sign bits",
                ("-DRHT_FUSED_PERSIST=1", "-DRHT_FUSED_A=2")))
    _precompile([fh._fused_options(fh._TAG[np.dtype(d)], None, ex) for d in dtypes
                 for ex in ((), ("-DRHT_FUSED_A=1",), ("-DRHT_FUSED_A=2",)) + tuple(e for *_, e in persist)])
    out = []
    for dname in dtypes:
        dtype = np.dtype(dname)
        for n in sizes:
            K, p = ref.factor_dimension(n)
            kernel = fh.plan(dtype, n)[0]
            if not kernel.startswith("rht_fused_"):
                continue
            scale = 1.0 / math.sqrt(n)
            rng = cupy.random.default_rng(n)
            xs = [rng.standard_normal((rows, n), dtype=np.float32).astype(dtype) for _ in range(N_BUF)]
            ys = [cupy.empty_like(xs[0]) for _ in range(N_BUF)]
            signs_h = np.where(np.random.default_rng(n).standard_normal(n) >= 0, 1.0, -1.0)
            signs = fh.pack_signs(signs_h)
            nbytes = 2 * rows * n * dtype.itemsize
            extras = {l: (() if l == 0 else (f"-DRHT_FUSED_A={l}",)) for l, _ in layouts}
            cases = list(layouts)
            if p <= 64:
                for key, label, ex in persist:
                    extras[key] = ex
                    cases.append((key, label))
            checks = {}
            base = {}
            for l, _ in cases:
                # reference output of a variant: the same build without -DRHT_FUSED_A
                bkey = tuple(o for o in extras[l] if not o.startswith("-DRHT_FUSED_A="))
                for sg, sv in (("plain", None), ("rht", signs)):
                    y = cupy.full_like(xs[0], np.nan)
                    fh._transform_2d(xs[0], y, K, p, sv, False, scale, extra=extras[l])
                    if (bkey, sg) not in base:
                        base[(bkey, sg)] = y
                        same = True
                    else:
                        same = bool(cupy.array_equal(y, base[(bkey, sg)]))
                    err = _rel_err(cupy.asnumpy(y[:64]), cupy.asnumpy(xs[0][:64]), False,
                                   None if sv is None else signs_h)
                    checks[(l, sg)] = (same, err)
            del base, y
            it = [0]

            def runner(sv, extra):
                def f():
                    i = it[0] = (it[0] + 1) % N_BUF
                    fh._transform_2d(xs[i], ys[i], K, p, sv, False, scale, extra=extra)
                return f

            def run_copy():
                i = it[0] = (it[0] + 1) % N_BUF
                ys[i].data.copy_from_device_async(xs[i].data, xs[i].nbytes)

            t = {}
            for _ in range(reps):
                t.setdefault("copy", []).append(_timeit(run_copy)[0])
                for l, _ in cases:
                    for sg, sv in (("plain", None), ("rht", signs)):
                        t.setdefault((l, sg), []).append(_timeit(runner(sv, extras[l]))[0])
            t_c = harness.median(t["copy"])
            for l, label in cases:
                tk, tr = harness.median(t[(l, "plain")]), harness.median(t[(l, "rht")])
                t0k, t0r = harness.median(t[(0, "plain")]), harness.median(t[(0, "rht")])
                row = dict(dtype=dname, n=n, K=K, p=p, layout=str(l), variant=label,
                           kernel=kernel + (" " + " ".join(extras[l]) if extras[l] else ""),
                           us=tk * 1e6, pct_copy=100.0 * t_c / tk, rht_us=tr * 1e6,
                           rht_pct_copy=100.0 * t_c / tr, vs_default=tk / t0k,
                           rht_vs_default=tr / t0r, copy_us=t_c * 1e6,
                           copy_GBps=nbytes / t_c / 1e9, GBps=nbytes / tk / 1e9,
                           identical_to_default=checks[(l, "plain")][0] and checks[(l, "rht")][0],
                           rel_err=checks[(l, "plain")][1], rht_rel_err=checks[(l, "rht")][1],
                           round_us=[x * 1e6 for x in t[(l, "plain")]],
                           rht_round_us=[x * 1e6 for x in t[(l, "rht")]],
                           copy_round_us=[x * 1e6 for x in t["copy"]])
                row["target_met"] = "yes" if min(row["pct_copy"], row["rht_pct_copy"]) >= 60.0 else "no"
                out.append(row)
                print(f"{dname} n={n:6d} A={l:2} {row['us']:8.1f} us ({row['pct_copy']:5.1f}% of copy "
                      f"{row['copy_GBps']:.0f} GB/s, x{row['vs_default']:.3f})  rht {row['rht_us']:8.1f} us "
                      f"({row['rht_pct_copy']:5.1f}%, x{row['rht_vs_default']:.3f})  "
                      f"identical={row['identical_to_default']} err {row['rel_err']:.1e}/{row['rht_rel_err']:.1e}"
                      f"  rounds {' '.join(f'{x:.1f}' for x in row['round_us'])}", flush=True)
            del xs, ys
            cupy.get_default_memory_pool().free_all_blocks()
    return out


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
            stream = cupy.cuda.Stream(non_blocking=True)

            def one(i):
                fh._transform_2d(xs[i & 1], ys[i & 1], K, p, signs, False, scale)

            def copy(i):
                ys[i & 1].data.copy_from_device_async(xs[i & 1].data, xs[i & 1].nbytes, stream)

            res = {}
            for label, f in (("rht", one), ("copy", copy)):
                with stream:
                    for i in range(4):
                        f(i)
                    stream.synchronize()
                    stream.begin_capture()
                    for i in range(captured):
                        f(i)
                    graph = stream.end_capture()
                graph.upload(stream)
                for _ in range(5):
                    graph.launch(stream)
                stream.synchronize()
                start, stop = cupy.cuda.Event(), cupy.cuda.Event()
                per = []
                for _ in range(replays):
                    start.record(stream)
                    graph.launch(stream)
                    stop.record(stream)
                    stop.synchronize()
                    per.append(cupy.cuda.get_elapsed_time(start, stop) * 1e-3 / captured)
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
    ap.add_argument("--variants-only", action="store_true",
                    help="only the fused kernel's H_K layouts (-DRHT_FUSED_A) for 11008 and "
                         "14336, fp16 and fp32; writes rht_gpu_fused_a.{json,md}")
    ap.add_argument("--reps", type=int, default=3, help="timing rounds for --variants-only")
    args = ap.parse_args(argv)

    import cupy

    if args.variants_only:
        rows = bench_fused_a(args.rows, reps=args.reps)
        bad = [r for r in rows if not r["identical_to_default"]]
        cols = ["dtype", "n", "layout", "variant", "kernel", "us", "pct_copy", "vs_default",
                "rht_us", "rht_pct_copy", "rht_vs_default", "copy_GBps", "target_met",
                "identical_to_default", "rel_err", "rht_rel_err"]
        notes = (f"Fused kernel, H_K operand layouts (-DRHT_FUSED_A), {args.rows} rows; us = median "
                 f"over {args.reps} rounds of the median of CUDA-event-timed calls (layouts timed in "
                 "turn each round, 2 rotating buffers > L2); pct_copy = copy time / kernel time; "
                 "rht_* = with signs; vs_default = time / layout-0 time; identical_to_default = "
                 "output equal to layout 0 on every row (expected: True).")
        path = harness.write_results("rht_gpu_fused_a", rows, cols, title="Fused RHT: H_K layouts",
                                     meta=dict(rows=args.rows, reps=args.reps, buffers=N_BUF,
                                               command="python -m benchmarks.rht_gpu " +
                                               " ".join(sys.argv[1:] if argv is None else argv)),
                                     notes=notes)
        for f in (path, path.with_suffix(".md")):  # harness names the command after the file
            f.write_text(f.read_text().replace("python -m benchmarks.rht_gpu_fused_a",
                                               "python -m benchmarks.rht_gpu", 1))
        print(f"wrote {path}")
        if bad:
            print(f"ERROR: {len(bad)} variant rows differ from the default output", file=sys.stderr)
            return 1
        return 0

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
