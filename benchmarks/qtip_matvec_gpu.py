"""QTIP trellis decode-matvec on the GPU vs cuBLAS fp16: ``python -m benchmarks.qtip_matvec_gpu``.

What is timed (shapes m x n = out x in: 4096x4096, 8192x8192, 28672x8192, 8192x28672;
batch b = 1, 2, 4, 8):

* core: ``fast.cuda.trellis_decode.MatvecPlan._launch`` (the validation-free launch of
  ``plan(z)``), y (b, m) fp32 = z (b, n) fp16 @ W^T, W never materialised; HYB (L = 16,
  V = 2, Q = 9) at k = 2 for every shape and batch, k = 3, 4 and 1MAD / 3INST (k = 2)
  on fewer rows;
* baseline, same run, same protocol: cuBLAS fp16 through torch, ``torch.mm(W, X)`` with
  W (m, n) fp16 and X (n, b) fp16 (GEMV at b = 1);
* full layer: input RHT -> core -> output inverse RHT, i.e. ``_transform_2d(x) ->
  _launch -> _transform_2d(y, inverse)`` of fast.cuda.hadamard with signs packed once
  (x fp16 in, z fp16, y fp32, output fp32), against the same fp16 GEMV;
* design variants (same buffers): an L2 prefetch 16 units ahead (pf = 16; the default is off), and (full run) a prefetch
  distance of 32 units and 512-thread blocks.

Protocol (performance.md §10): weight copies rotate so that every call streams its
weights from HBM (copies totalling >= 144 MB, at least 2: a 2-bit 4096x4096 layer is
4.2 MB, so 35 plans), inputs/outputs rotate through 2 buffers. ``graph_us``: CUDA-graph
replay of 32 captured calls (rotating copies), time per call, median of the replays
(every batch; performance.md asks for it at b = 1); ``event_us``: one CUDA-event pair
per call (includes the Python launch overhead of CuPy or torch), median of 60 calls
after warm-up. ``x_fp16`` compares graph replay with graph replay, ``x_fp16_event``
events with events. GB/s counts the compressed bytes m n k / 8 (the fp16 baseline: 2 m n).
``floor_us`` = those bytes at the device-copy bandwidth measured in the same run
(read + write counted, as in performance.md §3.1).

Before timing, every kernel's output is checked against float64: the core on a slab of
rows (``decode`` of the first tile rows, then z @ W^T in float64), the full layer on
the whole matrix; ``err`` is max |y - ref| / max sum_j |w_ij z_j| (fp16 inputs: ~1e-4
to 1e-3 is expected).

``--quick``: HYB only (k = 2 every shape at b = 1 and 8, k = 3 / 4 at b = 1 on 8192 x
28672), the full layer at b = 1, fewer replays; writes ``qtip_matvec_gpu_quick``.

``--ring-compare``: the default kernel (``trellis_mv_*``, register double buffer) against
the shared-memory ring variant (``MatvecPlan(ring=True)``, ``trellis_mvr_*``) on the same
random codes, same protocol (graph replay of 32 captured calls over rotating copies, and
events), no cuBLAS: HYB k = 2 b = 1 on the four shapes, b = 8 on 4096^2 and 8192 x 28672,
1MAD / 3INST k = 2 b = 1 on 8192 x 28672, and on 8192 x 28672 HYB b = 1 the ring with 2
and 6 slots (1 and 5 KB in flight per warp instead of 3: the latency hypothesis predicts
time falling with the bytes in flight). Each variant is timed twice, in opposite orders
(drift check); ``us`` is the smaller median. The build units are compiled in parallel
first. Writes ``qtip_matvec_ring_compare``.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from benchmarks import harness

SHAPES = ((4096, 4096), (8192, 8192), (28672, 8192), (8192, 28672))
BATCHES = (1, 2, 4, 8)
ROTATE_BYTES = 144 * 2**20
CAPTURED = 32


def _copies(nbytes: int) -> int:
    return max(2, math.ceil(ROTATE_BYTES / nbytes))


def _graph_time(step, n_calls: int, replays: int):
    """Per-call seconds of a CUDA graph of ``n_calls`` calls step(i) (CuPy capture)."""
    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        for i in range(4):
            step(i)
        stream.synchronize()
        stream.begin_capture()
        for i in range(n_calls):
            step(i)
        graph = stream.end_capture()
    graph.upload(stream)
    for _ in range(3):
        graph.launch(stream)
    stream.synchronize()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    per = []
    for _ in range(replays):
        start.record(stream)
        graph.launch(stream)
        stop.record(stream)
        stop.synchronize()
        per.append(cupy.cuda.get_elapsed_time(start, stop) * 1e-3 / n_calls)
    return harness.median(per), per


def _torch_graph_time(step, n_calls: int, replays: int):
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(4):
            step(i)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(n_calls):
            step(i)
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    per = []
    for _ in range(replays):
        start.record()
        g.replay()
        stop.record()
        stop.synchronize()
        per.append(start.elapsed_time(stop) * 1e-3 / n_calls)
    return harness.median(per), per


def _event_time(fn, iters):
    return harness.median(harness.cuda_time(fn, warmup=10, iters=iters))


def copy_bandwidth():
    """Device-to-device copy of 1 GiB: bytes read + written per second."""
    import cupy

    a = cupy.empty(2**30, dtype=cupy.uint8)
    b = cupy.empty_like(a)
    t = _event_time(lambda: b.data.copy_from_device_async(a.data, a.nbytes), 20)
    return 2 * 2**30 / t


def fp16_baseline(m, n, batches, replays, iters, with_graph=True):
    """{b: (graph_s or None, event_s)} of torch.mm(W, X), W (m, n) fp16, X (n, b)."""
    import torch

    nc = _copies(2 * m * n)
    Ws = [torch.randn(m, n, device="cuda", dtype=torch.float16) for _ in range(nc)]
    out = {}
    for b in batches:
        Xs = [torch.randn(n, b, device="cuda", dtype=torch.float16) for _ in range(2)]
        Ys = [torch.empty(m, b, device="cuda", dtype=torch.float16) for _ in range(2)]
        it = [0]

        def call(i=None):
            i = it[0] = it[0] + 1 if i is None else i
            torch.mm(Ws[i % nc], Xs[i & 1], out=Ys[i & 1])

        g = _torch_graph_time(call, CAPTURED, replays)[0] if with_graph else None
        out[b] = (g, _event_time(call, iters))
    return out


def _trellis(code, k):
    from quipref.quantizers.trellis import Trellis

    V = 2 if code == "hyb" else 1
    lut = np.random.default_rng(0).standard_normal((512, 2)) * 0.97 if code == "hyb" else None
    return Trellis(16, k, V, code, scale=0.05, lut=lut)


def make_plans(t, m, n, seed=0, **kw):
    """Plans over independent random codes whose compressed bytes total >= ROTATE_BYTES."""
    import cupy

    from fast.cuda import trellis_decode as TD

    nbytes = m * n * t.k // 8
    rng = cupy.random.default_rng(seed)
    plans, first_codes = [], None
    for c in range(_copies(nbytes)):
        codes = rng.integers(0, 65536, size=(m // 16, (n // 16) * t.words_per_tile),
                             dtype=cupy.int64).astype(cupy.uint16)
        if c == 0:
            first_codes = codes
        plans.append(TD.MatvecPlan(t, codes, (m, n), **kw))
        del codes
    return plans, first_codes


def check_core(plan, t, codes, z):
    """Max |y - ref| / max sum |w z| on the first <= 8 tile rows (float64 reference)."""
    import cupy

    from fast.cuda import trellis_decode as TD

    s = min(8, codes.shape[0])
    y = plan(z)[:, :16 * s].astype(cupy.float64)
    W = TD.decode(t, codes[:s]).astype(cupy.float64)
    z64 = z.astype(cupy.float64)
    ref = z64 @ W.T
    scale = float((cupy.abs(z64) @ cupy.abs(W).T).max())
    return float(cupy.abs(y - ref).max()) / scale


def bench_core(t, m, n, batches, replays, iters, base, copy_bw, variants=()):
    """Time the core launch (and design variants, each on its own plans over the same
    random codes) for every batch; returns result rows."""
    import cupy

    plans, codes = make_plans(t, m, n)
    vsets = [(label, make_plans(t, m, n, **kw)[0]) for label, kw in variants]
    nbytes = m * n * t.k // 8
    rows = []
    rng = cupy.random.default_rng(1)
    for b in batches:
        zs = [rng.standard_normal((b, n), dtype=cupy.float32).astype(cupy.float16) for _ in range(2)]
        ys = [cupy.empty((b, m), dtype=cupy.float32) for _ in range(2)]
        bg, be = base[b]
        default_s = None
        for label, pl in [("default", plans)] + vsets:
            err = check_core(pl[0], t, codes, zs[0])
            npl = len(pl)
            it = [0]

            def call(i=None, pl=pl, npl=npl):
                i = it[0] = it[0] + 1 if i is None else i
                pl[i % npl]._launch(zs[i & 1], ys[i & 1])

            g = _graph_time(call, CAPTURED, replays)[0]
            e = _event_time(call, iters)
            tm = g
            default_s = default_s or tm
            row = dict(code=t.code, k=t.k, m=m, n=n, b=b, variant=label, copies=npl,
                       MB=nbytes / 1e6, graph_us=g * 1e6 if g else None, event_us=e * 1e6,
                       GBps=nbytes / tm / 1e9, fp16_graph_us=bg * 1e6 if bg else None,
                       fp16_event_us=be * 1e6, x_fp16=(bg / g) if g else (be / e),
                       x_fp16_event=be / e, floor_us=nbytes / copy_bw * 1e6, err=err,
                       vs_default=tm / default_s, grid=pl[0].grid, warps=pl[0].warps,
                       pf=pl[0].pf, threads=pl[0].threads)
            row["pct_floor"] = 100.0 * row["floor_us"] / (tm * 1e6)
            rows.append(row)
            gs = f"{row['graph_us']:8.2f}" if g else "       -"
            print(f"{t.code} k={t.k} {m}x{n} b={b} {label:22s} graph {gs} us event {row['event_us']:8.2f} us "
                  f"{row['GBps']:6.0f} GB/s  x{row['x_fp16']:.2f} vs fp16 (event x{row['x_fp16_event']:.2f})  "
                  f"floor {row['floor_us']:.1f} us  err {err:.1e}", flush=True)
    return rows


def bench_layer(t, m, n, batches, replays, iters, base):
    """rht(x) -> plan -> rht^-1(y), graph replay (b = 1) / events, vs the fp16 GEMV."""
    import cupy

    from fast.cuda import hadamard as fh
    from fast.cuda import trellis_decode as TD
    from quipref.hadamard import factor_dimension

    plans, codes = make_plans(t, m, n)
    npl = len(plans)
    Kn, pn = factor_dimension(n)
    Km, pm = factor_dimension(m)
    hrng = np.random.default_rng(5)
    sv_h = np.where(hrng.standard_normal(n) >= 0, 1.0, -1.0)
    su_h = np.where(hrng.standard_normal(m) >= 0, 1.0, -1.0)
    sv, su = fh.pack_signs(sv_h), fh.pack_signs(su_h)
    rows = []
    rng = cupy.random.default_rng(2)
    W64 = None
    for b in batches:
        xs = [rng.standard_normal((b, n), dtype=cupy.float32).astype(cupy.float16) for _ in range(2)]
        zs = [cupy.empty((b, n), dtype=cupy.float16) for _ in range(2)]
        ys = [cupy.empty((b, m), dtype=cupy.float32) for _ in range(2)]
        outs = [cupy.empty((b, m), dtype=cupy.float32) for _ in range(2)]
        it = [0]

        def call(i=None):
            i = it[0] = it[0] + 1 if i is None else i
            j = i & 1
            fh._transform_2d(xs[j], zs[j], Kn, pn, sv, False, 1.0 / math.sqrt(n))
            plans[i % npl]._launch(zs[j], ys[j])
            fh._transform_2d(ys[j], outs[j], Km, pm, su, True, 1.0 / math.sqrt(m))

        call(0)  # check plan 0 on the whole matrix against float64
        if W64 is None:
            W64 = TD.decode(t, codes).astype(cupy.float64)
        z_ref = fh.rht(xs[0].astype(cupy.float64), cupy.asarray(sv_h))
        out_ref = fh.rht(z_ref @ W64.T, cupy.asarray(su_h), inverse=True)
        err = float(cupy.linalg.norm(outs[0] - out_ref) / cupy.linalg.norm(out_ref))
        g = _graph_time(call, CAPTURED, replays)[0]
        e = _event_time(call, iters)
        bg, be = base[b]
        row = dict(code=t.code, k=t.k, m=m, n=n, b=b, layer_graph_us=g * 1e6 if g else None,
                   layer_event_us=e * 1e6, fp16_graph_us=bg * 1e6 if bg else None,
                   fp16_event_us=be * 1e6, layer_x_fp16=(bg / g) if g else (be / e),
                   layer_rel_err=err, kernels=" + ".join(fh.plan(np.float16, n) + [plans[0]._names["h"]]
                                                          + fh.plan(np.float32, m)))
        rows.append(row)
        print(f"layer {t.code} k={t.k} {m}x{n} b={b}: graph {row['layer_graph_us'] or float('nan'):8.2f} us "
              f"event {row['layer_event_us']:8.2f} us  x{row['layer_x_fp16']:.2f} vs fp16 GEMV  "
              f"rel err {err:.1e}", flush=True)
    return rows


FIXED = ("-DTD_FLUSH=2", "-DTD_LUTFILL=2")  # partial sums of 8 contributors at once, 1-round LUT fill
RING_VARIANTS = (("default", {}), ("ring", dict(ring=True)),
                 ("default + FLUSH=2 LUTFILL=2", dict(options=FIXED)),
                 ("ring + FLUSH=2 LUTFILL=2", dict(ring=True, options=FIXED)))
RING_EXTRA = (("ring NSLOT=2 (1 KB/warp in flight)", dict(ring=True, options=("-DTD_NSLOT=2",))),
              ("ring NSLOT=6 (5 KB/warp in flight)", dict(ring=True, options=("-DTD_NSLOT=6",))))


def _ring_cases():
    """(code, m, n, batches, variants) of --ring-compare."""
    cases = []
    for (m, n) in SHAPES:
        bs = (1, 8) if (m, n) in ((4096, 4096), (8192, 28672)) else (1,)
        extra = RING_EXTRA if (m, n) == (8192, 28672) else ()
        cases.append(("hyb", m, n, bs, RING_VARIANTS + extra))
    for code in ("1mad", "3inst"):
        cases.append((code, 8192, 28672, (1,), RING_VARIANTS))
    return cases


def _precompile_units(units):
    """Compile the matvec build units (option tuples) in parallel processes (CuPy's disk
    cache then serves them to this process)."""
    from fast.cuda._compile import precompile_units

    return precompile_units("trellis_decode", units)


def ring_compare(replays=20, iters=40):
    """Default vs ring kernel (module docstring, --ring-compare); returns result rows."""
    import time

    import cupy

    from fast.cuda import trellis_decode as TD

    t0 = time.perf_counter()
    cases = _ring_cases()
    units = set()
    for code, m, n, bs, variants in cases:
        for _, kw in variants:
            units.add((f"-DTD_MV={TD._CODE_ID[code]}",) + (("-DTD_RING=1",) if kw.get("ring") else ())
                      + tuple(kw.get("options", ())))
    _precompile_units(sorted(units))
    print(f"compiled {len(units)} build units in {time.perf_counter() - t0:.1f} s", flush=True)
    copy_bw = copy_bandwidth()
    print(f"device copy: {copy_bw / 1e9:.0f} GB/s (read + write)", flush=True)
    rows = []
    for code, m, n, bs, variants in cases:
        t = _trellis(code, 2)
        nbytes = m * n * t.k // 8
        sets = []
        for label, kw in variants:
            pl, codes = make_plans(t, m, n, **kw)  # seed 0: the same codes for every variant
            sets.append((label, pl))
        rng = cupy.random.default_rng(1)
        for b in bs:
            zs = [rng.standard_normal((b, n), dtype=cupy.float32).astype(cupy.float16) for _ in range(2)]
            ys = [cupy.empty((b, m), dtype=cupy.float32) for _ in range(2)]
            ref_y = None
            meas = {label: [] for label, _ in sets}
            errs = {}
            for rnd in range(2):
                order = sets if rnd == 0 else sets[::-1]
                for label, pl in order:
                    if rnd == 0:
                        errs[label] = check_core(pl[0], t, codes, zs[0])
                        y0 = pl[0](zs[0]).get()
                        if ref_y is None:
                            ref_y = y0
                        errs[label + " bitwise"] = bool((y0 == ref_y).all())
                    npl = len(pl)
                    it = [0]

                    def call(i=None, pl=pl, npl=npl):
                        i = it[0] = it[0] + 1 if i is None else i
                        pl[i % npl]._launch(zs[i & 1], ys[i & 1])

                    g = _graph_time(call, CAPTURED, replays)[0]
                    e = _event_time(call, iters)
                    meas[label].append((g, e))
            base = None
            for label, pl in sets:
                g = min(x[0] for x in meas[label])
                e = min(x[1] for x in meas[label])
                base = base or g
                row = dict(code=code, k=2, m=m, n=n, b=b, variant=label, copies=len(pl),
                           MB=nbytes / 1e6, us=g * 1e6, graph_us_runs=[x[0] * 1e6 for x in meas[label]],
                           event_us=e * 1e6, GBps=nbytes / g / 1e9, vs_default=g / base,
                           floor_us=nbytes / copy_bw * 1e6, err=errs[label],
                           same_as_default=errs[label + " bitwise"], grid=pl[0].grid,
                           warps=pl[0].warps, threads=pl[0].threads, smem=pl[0]._smem)
                rows.append(row)
                runs = " / ".join(f"{v:.2f}" for v in row["graph_us_runs"])
                print(f"{code} k=2 {m}x{n} b={b} {label:36s} graph {row['us']:8.2f} us ({runs}) "
                      f"event {row['event_us']:8.2f} us  {row['GBps']:6.0f} GB/s  x{row['vs_default']:.3f} "
                      f"vs default  err {row['err']:.1e}  bitwise={row['same_as_default']}", flush=True)
        del sets
        cupy.get_default_memory_pool().free_all_blocks()
    print(f"ring compare: {time.perf_counter() - t0:.1f} s", flush=True)
    return rows, copy_bw


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="HYB only, fewer rows (~2 min)")
    ap.add_argument("--ring-compare", action="store_true",
                    help="default vs shared-memory ring kernel only (no cuBLAS; ~1 min)")
    args = ap.parse_args(argv)

    if args.ring_compare:
        import cupy

        from fast.cuda import trellis_decode as TD

        rows, copy_bw = ring_compare()
        props = cupy.cuda.runtime.getDeviceProperties(0)
        meta = dict(gpu=props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
                    copy_GBps=copy_bw / 1e9, rotate_bytes=ROTATE_BYTES, captured=CAPTURED,
                    threads=TD.THREADS, ring_slot_bytes=TD.RING_SLOT_BYTES, ring_nslot=TD.RING_NSLOT)
        cols = ["code", "k", "m", "n", "b", "variant", "us", "event_us", "GBps", "vs_default",
                "floor_us", "err", "same_as_default", "smem"]
        notes = ("Default kernel (trellis_mv_*, 2 units per warp in registers) vs the shared-memory ring "
                 "(trellis_mvr_*, MatvecPlan(ring=True): per warp NSLOT slots of ~1 KB filled by cp.async, "
                 "NSLOT - 1 in flight). us: CUDA-graph replay of 32 captured calls over rotating weight "
                 "copies (>= 144 MB), per call, the smaller median of two rounds in opposite orders "
                 "(graph_us_runs in the JSON). vs_default: us / default us. same_as_default: output "
                 "bitwise equal to the default kernel's. floor_us: compressed bytes at the device-copy "
                 f"bandwidth ({copy_bw / 1e9:.0f} GB/s, read + write).")
        path = harness.write_results("qtip_matvec_ring_compare", rows, cols, meta=meta,
                                     title="QTIP trellis matvec: register double buffer vs shared-memory ring",
                                     notes=notes)
        print(f"wrote {path}")
        return 0

    import cupy
    import torch

    from fast.cuda import trellis_decode as TD

    quick = args.quick
    replays, iters = (20, 40) if quick else (40, 60)
    copy_bw = copy_bandwidth()
    print(f"device copy: {copy_bw / 1e9:.0f} GB/s (read + write)", flush=True)
    core, layer = [], []
    batches = (1, 8) if quick else BATCHES
    hyb2, hyb3, hyb4 = _trellis("hyb", 2), _trellis("hyb", 3), _trellis("hyb", 4)
    for (m, n) in SHAPES:
        base = fp16_baseline(m, n, batches, replays, iters)
        big = m * n >= 8192 * 28672
        variants = [("pf=16 (L2 prefetch 16 units ahead)", dict(pf=16))]
        if not quick:
            variants += [("pf=32", dict(pf=32)), ("1024 threads/block", dict(options=("-DTD_THREADS=1024",)))]
        core += bench_core(hyb2, m, n, batches, replays, iters, base, copy_bw,
                           variants=variants if (big or not quick) else ())
        if big or not quick:
            for t in (hyb3, hyb4):
                core += bench_core(t, m, n, (1,) if quick else (1, 8), replays, iters, base, copy_bw)
        if not quick:
            for code in ("1mad", "3inst"):
                core += bench_core(_trellis(code, 2), m, n, (1, 8), replays, iters, base, copy_bw)
        layer += bench_layer(hyb2, m, n, (1,) if quick else (1, 8), replays, iters, base)
        cupy.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()
    props = cupy.cuda.runtime.getDeviceProperties(0)
    meta = dict(gpu=props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
                l2_bytes=int(props.get("l2CacheSize", 0)), copy_GBps=copy_bw / 1e9,
                rotate_bytes=ROTATE_BYTES, captured=CAPTURED, replays=replays, iters=iters,
                threads=TD.THREADS, pf_default=TD.PF_DEFAULT, layer=layer,
                torch_cuda=torch.version.cuda, quick=quick)
    cols = ["code", "k", "m", "n", "b", "variant", "graph_us", "event_us", "GBps", "fp16_graph_us",
            "fp16_event_us", "x_fp16", "floor_us", "pct_floor", "err"]
    lines = ["Core = MatvecPlan._launch (y = z W^T, z fp16, W never materialised). graph_us: CUDA-graph "
             "replay of 32 captured calls rotating weight copies (>= 144 MB), per call; "
             "event_us: per-call CUDA events (includes Python launch overhead). x_fp16: cuBLAS fp16 "
             "graph time / ours (x_fp16_event in the JSON: the same with events). GB/s: compressed bytes "
             "m n k / 8 per second. floor_us: those bytes at the measured device-copy bandwidth "
             f"({copy_bw / 1e9:.0f} GB/s, read + write). err: max |y - ref| / max sum |w z| on a row slab.", "",
             "Full layer (input RHT fp16 -> core -> output inverse RHT fp32), same protocol:", "",
             "| code | k | m x n | b | layer graph us | layer event us | fp16 GEMV graph us | fp16 event us | x fp16 | rel err |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "" if v is None else f"{v:.4g}"  # noqa: E731
    for r in layer:
        lines.append(f"| {r['code']} | {r['k']} | {r['m']}x{r['n']} | {r['b']} | {fmt(r['layer_graph_us'])} | "
                     f"{fmt(r['layer_event_us'])} | {fmt(r['fp16_graph_us'])} | {fmt(r['fp16_event_us'])} | "
                     f"{r['layer_x_fp16']:.2f} | {r['layer_rel_err']:.1e} |")
    lines += ["", "Core kernel:"]
    name = "qtip_matvec_gpu_quick" if quick else "qtip_matvec_gpu"
    path = harness.write_results(name, core, cols, meta=meta,
                                 title="QTIP trellis decode-matvec vs cuBLAS fp16", notes="\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
