"""LDLQ on the CPU: quipref.ldlq (reference) vs fast.ldlq (Numba + BLAS lazy batch).

    python -m benchmarks.ldlq_cpu [--m 2048] [--n 2048] [--ref-iters 2] [--iters 5]

Problem: m = n = 2048, ``W ~ N(0, 1)``, ``H = X^T X / N`` from N = 2n correlated
activations (a decaying spectrum and a few outlier channels), damped as OPTQ does
(``damp_hessian``: + 0.01 mean(diag H) I), quantized with QuIP's 2-bit ScalarGrid.

Flop counts (multiply and add counted separately):

* LDLQ recursion: column k needs ``(m x k) @ (k,)``, so ``sum_k 2 m k ~ m n^2`` flops.
  This is the number "GFLOP/s" refers to, compared with the machine's dgemm rate measured
  in the same run (numpy matmul of two n x n float64 matrices, ``2 n^3`` flops).
* Cholesky of the factor: ``n^3 / 3``, reported separately.

fast.ldlq end to end = validation (``check_hessian``: finiteness and symmetry; a non-PD H is
rejected by the factor's own Cholesky) + factor (Cholesky n^3/3 + block solves) + the
lazy-batch recursion ("core"). Each part is timed on its own as well.

fast's recursion holds BLAS single-threaded and runs the feedback dgemms on its own
threads, split by rows (fast/ldlq.py, "Threads on the CPU"); the dgemm baseline is NumPy's
default, multi-threaded dgemm, i.e. the machine's best dgemm rate. Run with
``OPENBLAS_THREAD_TIMEOUT=4 python -m benchmarks.ldlq_cpu --tag openblas_timeout4`` for the
comparison with OpenBLAS's idle workers sleeping at once (they busy-wait ~2^28 cycles after
each multi-threaded call by default).

The numbers come from a 2-core VM shared with other jobs: the load average before and
after is recorded, and every time is the median of the runs (the raw samples are in the
JSON file).
"""
from __future__ import annotations

import argparse
import importlib
import os
import time

import numpy as np

from benchmarks.harness import cpu_time, median, write_results
from quipref._checks import check_hessian
from quipref.hessian import damp_hessian
from quipref.quantizers import ScalarGrid

R = importlib.import_module("quipref.ldlq")
F = importlib.import_module("fast.ldlq")


def realistic_hessian(n: int, rng, tokens: int | None = None):
    """H from correlated activations: X = Z diag(s) Q with a 1/sqrt(k) spectrum, 8
    outlier channels (x10), then OPTQ damping."""
    N = tokens or 2 * n
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = 1.0 / np.sqrt(np.arange(1, n + 1))
    X = (rng.standard_normal((N, n)) * s) @ Q
    X[:, rng.choice(n, 8, replace=False)] *= 10.0
    H = X.T @ X / N
    return damp_hessian((H + H.T) / 2)[0]


def dgemm_rate(n: int, rng, iters: int = 5) -> tuple[float, list[float]]:
    """dgemm GFLOP/s: ``matmul(A, B, out=C)`` into a preallocated C (no page faults timed)."""
    A, B, C = rng.random((n, n)), rng.random((n, n)), np.empty((n, n))
    ts = cpu_time(lambda: np.matmul(A, B, out=C), warmup=1, iters=iters)
    return 2.0 * n**3 / median(ts) / 1e9, ts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=2048)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--ref-iters", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--tag", default="", help="suffix of the result files (ldlq_cpu_<tag>)")
    args = ap.parse_args(argv)
    env = {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS",
                                          "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    m, n = args.m, args.n
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    H = realistic_hessian(n, rng)
    W = rng.standard_normal((m, n))
    q = ScalarGrid.quip(W, args.bits)
    print(f"m = {m}, n = {n}, ScalarGrid {args.bits}-bit; load average {load_before}; env {env}")

    # correctness first (also warms the JIT): same codes as the reference
    t0 = time.perf_counter()
    ref = R.ldlq(W, H, q)
    t_ref_first = time.perf_counter() - t0
    fst = F.ldlq(W, H, q)
    mismatches = int(np.count_nonzero(ref.codes != fst.codes))
    print(f"codes differing from the reference: {mismatches} of {m * n}")

    gf_dgemm, t_dgemm = dgemm_rate(n, rng)
    t_ref = [t_ref_first] + cpu_time(lambda: R.ldlq(W, H, q), warmup=0, iters=args.ref_iters - 1)
    t_fast = cpu_time(lambda: F.ldlq(W, H, q), warmup=1, iters=args.iters)
    t_check = cpu_time(lambda: check_hessian(H, n, psd=False), warmup=0, iters=args.iters)
    t_factor = cpu_time(lambda: F._ldl_factor(H, 1, with_d=False), warmup=0, iters=args.iters)
    U, _ = F._ldl_factor(H, 1, with_d=False)
    params = F._fused_grid(q, m)
    Wc = np.ascontiguousarray(W)
    t_core = cpu_time(lambda: F._ldlq_grid_numpy(Wc, U, params, None, 1, F.LEAF), warmup=1,
                      iters=args.iters)
    gf_dgemm_after, t_dgemm2 = dgemm_rate(n, rng)
    load_after = os.getloadavg()

    flops = float(m) * n * n
    chol_flops = n**3 / 3.0
    gf_dgemm_med = median([gf_dgemm, gf_dgemm_after])
    T = {k: median(v) for k, v in dict(ref=t_ref, fast=t_fast, check=t_check, factor=t_factor,
                                        core=t_core).items()}
    rows = [
        {"what": "quipref.ldlq (reference, end to end)", "seconds": T["ref"],
         "GFLOP/s": flops / T["ref"] / 1e9, "of dgemm": flops / T["ref"] / 1e9 / gf_dgemm_med,
         "speedup": 1.0, "samples": t_ref},
        {"what": "fast.ldlq (end to end)", "seconds": T["fast"], "GFLOP/s": flops / T["fast"] / 1e9,
         "of dgemm": flops / T["fast"] / 1e9 / gf_dgemm_med, "speedup": T["ref"] / T["fast"],
         "samples": t_fast},
        {"what": "  of which: validation (check_hessian: finite, symmetric; PD is checked by the factor)", "seconds": T["check"],
         "samples": t_check},
        {"what": "  of which: factor (Cholesky n^3/3 + solves)", "seconds": T["factor"],
         "GFLOP/s": chol_flops / T["factor"] / 1e9,
         "of dgemm": chol_flops / T["factor"] / 1e9 / gf_dgemm_med, "samples": t_factor},
        {"what": "  of which: lazy-batch recursion (core)", "seconds": T["core"],
         "GFLOP/s": flops / T["core"] / 1e9, "of dgemm": flops / T["core"] / 1e9 / gf_dgemm_med,
         "speedup": T["ref"] / T["core"], "samples": t_core},
        {"what": "numpy dgemm n x n (baseline, before / after)", "seconds": median(t_dgemm + t_dgemm2),
         "GFLOP/s": gf_dgemm_med, "of dgemm": 1.0,
         "samples": t_dgemm + t_dgemm2, "gflops_before": gf_dgemm, "gflops_after": gf_dgemm_after},
    ]
    for r in rows:
        print(f"{r['what']:<52} {r['seconds']:8.4f} s" +
              (f"  {r['GFLOP/s']:7.2f} GFLOP/s" if "GFLOP/s" in r else "") +
              (f"  {100 * r['of dgemm']:5.1f}% of dgemm" if "of dgemm" in r else "") +
              (f"  x{r['speedup']:.1f}" if "speedup" in r else ""))
    notes = (
        f"m = {m}, n = {n}, ScalarGrid.quip {args.bits}-bit, H from correlated activations + "
        f"OPTQ damping. GFLOP/s counts the LDLQ recursion's m·n² = {flops:.3g} flops "
        f"(Cholesky n³/3 = {chol_flops:.3g} flops separately). dgemm = numpy matmul of two "
        f"{n}² float64 matrices in the same run ({gf_dgemm:.1f} before, {gf_dgemm_after:.1f} "
        f"GFLOP/s after). Codes differing from the reference: {mismatches}. Load average "
        f"before {tuple(round(x, 2) for x in load_before)}, after "
        f"{tuple(round(x, 2) for x in load_after)} (shared 2-core VM). Medians of "
        f"{args.ref_iters} (reference) / {args.iters} runs, JIT warmed up (and fast's work "
        f"arrays cached by the warm-up). Leaf = {F.LEAF} columns, {F.TILE_ROWS}-row tiles, BLAS held "
        f"single-threaded inside fast's recursion (its own {F.numba.config.NUMBA_NUM_THREADS} threads run "
        f"the dgemms by rows). Environment: {env}."
    )
    write_results("ldlq_cpu" + (f"_{args.tag}" if args.tag else ""), rows, ["what", "seconds", "GFLOP/s", "of dgemm", "speedup"],
                  meta={"m": m, "n": n, "bits": args.bits, "flops_ldlq": flops,
                        "flops_cholesky": chol_flops, "code_mismatches": mismatches,
                        "load_before": load_before, "load_after": load_after, "leaf": F.LEAF,
                        "tile_rows": F.TILE_ROWS,
                        "env": env},
                  title="LDLQ on the CPU: quipref vs fast", notes=notes)


if __name__ == "__main__":
    main()
