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
    """Per-call seconds (median, samples) of CUDA-graph replays (harness.graph_time)."""
    per = harness.graph_time(step, n_calls, replays=replays)
    return harness.median(per), per


def _torch_graph_time(step, n_calls: int, replays: int):
    per = harness.graph_time(step, n_calls, replays=replays, backend="torch")
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


def bench_core(t, m, n, batches, replays, iters, base, copy_bw):
    """Time the core launch for every batch; returns result rows."""
    import cupy

    plans, codes = make_plans(t, m, n)
    nbytes = m * n * t.k // 8
    rows = []
    rng = cupy.random.default_rng(1)
    for b in batches:
        zs = [rng.standard_normal((b, n), dtype=cupy.float32).astype(cupy.float16) for _ in range(2)]
        ys = [cupy.empty((b, m), dtype=cupy.float32) for _ in range(2)]
        bg, be = base[b]
        for label, pl in [("default", plans)]:
            err = check_core(pl[0], t, codes, zs[0])
            npl = len(pl)
            it = [0]

            def call(i=None, pl=pl, npl=npl):
                i = it[0] = it[0] + 1 if i is None else i
                pl[i % npl]._launch(zs[i & 1], ys[i & 1])

            g = _graph_time(call, CAPTURED, replays)[0]
            e = _event_time(call, iters)
            tm = g
            row = dict(code=t.code, k=t.k, m=m, n=n, b=b, variant=label, copies=npl,
                       MB=nbytes / 1e6, graph_us=g * 1e6 if g else None, event_us=e * 1e6,
                       GBps=nbytes / tm / 1e9, fp16_graph_us=bg * 1e6 if bg else None,
                       fp16_event_us=be * 1e6, x_fp16=(bg / g) if g else (be / e),
                       x_fp16_event=be / e, floor_us=nbytes / copy_bw * 1e6, err=err,
                       grid=pl[0].grid, warps=pl[0].warps, threads=pl[0].threads)
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="HYB only, fewer rows (~2 min)")
    args = ap.parse_args(argv)

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
        core += bench_core(hyb2, m, n, batches, replays, iters, base, copy_bw)
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
                threads=TD.THREADS, ring_slot_bytes=TD.RING_SLOT_BYTES, ring_nslot=TD.RING_NSLOT, layer=layer,
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
