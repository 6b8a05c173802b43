"""LDLQ on the GPU: fast.ldlq on CuPy (CUDA leaf kernel + cuBLAS lazy batch), float64.

    python -m benchmarks.ldlq_gpu [--n 8192] [--iters 5]

Problem: m = n = 8192, ``W ~ N(0, 1)``, ``H = X^T X / N`` from N = 2n correlated
activations (1/sqrt(k) spectrum, random rotation, 8 outlier channels) + 0.01 mean(diag) I,
QuIP's 2-bit ScalarGrid. Everything float64 (the codes follow the reference's rules).

Timed with CUDA events after warm-up (median of ``--iters``); the matrices (512 MB each)
are far larger than the 50 MB L2, so no input rotation is needed.

* **factor + recursion** = what ``fast.ldlq`` does after validation: cuSOLVER Cholesky
  (n³/3 flops) + U + the lazy-batch recursion (m·n² flops: cuBLAS DGEMM tree + 128 leaf
  kernels of 64 columns).
* **end to end** = ``fast.ldlq(W, H, q)`` including the shared validation helpers
  (``check_hessian``: finiteness, symmetry and a Cholesky PSD test on the device), timed
  on its own too (host clock, one run).
* Baselines in the same run: cuBLAS DGEMM of n x n x n (cupy matmul, 2n³ flops, so the
  LDLQ's m·n² flops are half of one DGEMM), the generic per-column path of fast (the
  same lazy batch, but ``encode``/``decode`` called from Python for every column), and the
  reference ``quipref.ldlq`` on CuPy at n = 2048 (its per-column loop; it is too slow to
  run at 8192 here) next to fast at the same size.
* Check: the GPU codes against fast's CPU path (Numba) on the same factor, and the
  n = 2048 codes against the reference.
"""
from __future__ import annotations

import argparse
import importlib
import time

import numpy as np

from benchmarks.harness import cuda_time, median, write_results
from quipref._checks import check_hessian
from quipref.quantizers import ScalarGrid

R = importlib.import_module("quipref.ldlq")
F = importlib.import_module("fast.ldlq")


def realistic_hessian_gpu(cp, n: int, seed: int = 0):
    rs = cp.random.RandomState(seed)
    Q, _ = cp.linalg.qr(rs.standard_normal((n, n)))
    s = 1.0 / cp.sqrt(cp.arange(1, n + 1, dtype=cp.float64))
    X = (rs.standard_normal((2 * n, n)) * s) @ Q
    X[:, cp.asarray(np.random.default_rng(seed).choice(n, 8, replace=False))] *= 10.0
    H = X.T @ X / X.shape[0]
    del X, Q
    H = (H + H.T) / 2
    H += 0.01 * float(cp.mean(cp.diag(H))) * cp.eye(n)
    return H


def host_seconds(cp, fn):
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    out = fn()
    cp.cuda.Device().synchronize()
    return time.perf_counter() - t0, out


def main(argv=None):
    import cupy as cp

    from fast.cuda import ldlq as cl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--ref-n", type=int, default=2048)
    args = ap.parse_args(argv)
    n = m = args.n
    H = realistic_hessian_gpu(cp, n)
    W = cp.random.RandomState(1).standard_normal((m, n))
    q = ScalarGrid.quip(W, 2)
    params = F._fused_grid(q, m)
    k = cl._leaf_kernel()
    print(f"leaf kernel: {k.num_regs} registers, {k.local_size_bytes} B local, "
          f"{cl.SMEM_BYTES} B dynamic shared memory")

    # --- correctness at full size: GPU codes vs fast's CPU path on the same factor ---
    U, _ = F._ldl_factor(H, 1, with_d=False)
    res = cl._ldlq_grid_cuda(W, U, params, None, 1)
    t_cpu, cpu = host_seconds(cp, lambda: F._ldlq_grid_numpy(W.get(), U.get(), params, None, 1, F.LEAF))
    mism_cpu = int(np.count_nonzero(cpu.codes != res.codes.get()))
    print(f"n={n}: codes GPU vs fast CPU path (same U): {mism_cpu} differ; CPU path {t_cpu:.2f} s")
    del cpu

    # --- timings (CUDA events) ---
    t_factor = cuda_time(lambda: F._ldl_factor(H, 1, with_d=False), warmup=1, iters=args.iters)
    t_core = cuda_time(lambda: cl._ldlq_grid_cuda(W, U, params, None, 1), warmup=2, iters=args.iters)
    t_both = cuda_time(lambda: cl._ldlq_grid_cuda(W, F._ldl_factor(H, 1, with_d=False)[0], params,
                                                  None, 1), warmup=1, iters=args.iters)

    # components: leaf kernels alone, DGEMM tree alone
    G = cp.zeros((m, n))
    E = cp.empty((m, n))
    Wh = cp.empty((m, n))
    codes = cp.empty((m, n), dtype=cp.int64)
    bad = cp.zeros(1, dtype=cp.int32)
    no_u = cp.zeros(1)
    step_d, off_d = cp.asarray(params[0]), cp.asarray(params[1])
    grid = ((m + cl.ROWS - 1) // cl.ROWS,)

    def leaves_only():
        for a in range(0, n, cl.LEAF):
            k(grid, (cl.ROWS,), (W, G, U, np.int64(m), np.int64(n), np.int32(a),
                                 np.int32(min(cl.LEAF, n - a)), step_d, off_d, np.float64(params[2]),
                                 np.int32(1), no_u, np.int32(0), codes, Wh, E, bad),
              shared_mem=cl.SMEM_BYTES)

    def fill(a, b, G_, E_):
        E_[:, a:b] = 1e-3

    t_leaves = cuda_time(leaves_only, warmup=1, iters=args.iters)
    t_tree = cuda_time(lambda: F._lazy_batch(m, n, U, cl.LEAF, fill, cp, cl._update_cublas),
                       warmup=1, iters=args.iters)
    t_tree_mm = cuda_time(lambda: F._lazy_batch(m, n, U, cl.LEAF, fill, cp), warmup=1,
                          iters=args.iters)
    A, B = cp.random.RandomState(2).standard_normal((2, n, n))
    t_dgemm = cuda_time(lambda: A @ B, warmup=3, iters=10)
    del A, B, G, E, Wh, codes

    # --- baselines that run once (host clock) ---
    t_generic, _ = host_seconds(cp, lambda: F._ldlq_generic(W, U, q, 1, None, cl.LEAF))
    t_check, _ = host_seconds(cp, lambda: check_hessian(H, n))
    t_e2e, _ = host_seconds(cp, lambda: F.ldlq(W, H, q))

    # --- the reference on CuPy at a size where its per-column loop is affordable ---
    nr = args.ref_n
    Hr, Wr = H[:nr, :nr].copy(), W[:nr, :nr].copy()
    qr = ScalarGrid.quip(Wr, 2)
    F.ldlq(Wr, Hr, qr)
    t_ref_small, ref_small = host_seconds(cp, lambda: R.ldlq(Wr, Hr, qr))
    t_fast_small, fast_small = host_seconds(cp, lambda: F.ldlq(Wr, Hr, qr))
    t_check_small, _ = host_seconds(cp, lambda: check_hessian(Hr, nr))
    mism_ref = int(cp.count_nonzero(ref_small.codes != fast_small.codes))

    flops = float(m) * n * n
    chol = n**3 / 3.0
    T = dict(factor=median(t_factor), core=median(t_core), both=median(t_both),
             leaves=median(t_leaves), tree=median(t_tree), tree_mm=median(t_tree_mm),
             dgemm=median(t_dgemm))
    gf_dgemm = 2.0 * n**3 / T["dgemm"] / 1e9
    rows = [
        {"what": f"fast.ldlq factor + recursion (n={n})", "seconds": T["both"],
         "GFLOP/s": (flops + chol) / T["both"] / 1e9, "vs dgemm time": T["both"] / T["dgemm"],
         "samples": t_both},
        {"what": "  factor: cuSOLVER Cholesky + U", "seconds": T["factor"],
         "GFLOP/s": chol / T["factor"] / 1e9, "samples": t_factor},
        {"what": "  recursion: lazy batch (m n^2 flops)", "seconds": T["core"],
         "GFLOP/s": flops / T["core"] / 1e9, "vs dgemm time": T["core"] / T["dgemm"],
         "samples": t_core},
        {"what": "    of which DGEMM tree alone", "seconds": T["tree"],
         "GFLOP/s": flops * (1 - cl.LEAF / n) / T["tree"] / 1e9, "samples": t_tree},
        {"what": "    of which leaf kernels alone", "seconds": T["leaves"], "samples": t_leaves},
        {"what": "    (DGEMM tree via cupy matmul + add, for comparison)", "seconds": T["tree_mm"],
         "GFLOP/s": flops * (1 - cl.LEAF / n) / T["tree_mm"] / 1e9, "samples": t_tree_mm},
        {"what": f"cuBLAS DGEMM {n}^3 (baseline)", "seconds": T["dgemm"], "GFLOP/s": gf_dgemm,
         "vs dgemm time": 1.0, "samples": t_dgemm},
        {"what": "fast generic per-column path (baseline, once)", "seconds": t_generic,
         "GFLOP/s": flops / t_generic / 1e9},
        {"what": "validation check_hessian (once)", "seconds": t_check},
        {"what": "fast.ldlq end to end incl. validation (once)", "seconds": t_e2e},
        {"what": f"quipref.ldlq on CuPy, n={nr} (once)", "seconds": t_ref_small},
        {"what": f"fast.ldlq on CuPy, n={nr} (once)", "seconds": t_fast_small,
         "speedup": t_ref_small / t_fast_small},
        {"what": f"  of which check_hessian, n={nr}", "seconds": t_check_small},
    ]
    for r in rows:
        print(f"{r['what']:<52} {r['seconds']:9.4f} s" +
              (f"  {r['GFLOP/s']:9.1f} GFLOP/s" if "GFLOP/s" in r else "") +
              (f"  {r['vs dgemm time']:.2f}x dgemm time" if "vs dgemm time" in r else "") +
              (f"  x{r['speedup']:.1f}" if "speedup" in r else ""))
    notes = (f"m = n = {n} float64, ScalarGrid.quip 2-bit; H from correlated activations + 1% "
             f"damping. Flops: recursion m·n² = {flops:.3g}, Cholesky n³/3 = {chol:.3g}; DGEMM "
             f"2n³. Codes GPU vs fast CPU path on the same factor: {mism_cpu} differ of {m * n}; "
             f"n={nr}: fast vs quipref on CuPy: {mism_ref} differ. CUDA events, median of "
             f"{args.iters} (10 for DGEMM), after warm-up; 'once' rows are host-clock single runs. "
             f"Leaf kernel: {k.num_regs} registers, {k.local_size_bytes} B local memory.")
    write_results("ldlq_gpu", rows, ["what", "seconds", "GFLOP/s", "vs dgemm time", "speedup"],
                  meta={"n": n, "flops_ldlq": flops, "flops_cholesky": chol,
                        "mismatch_vs_cpu": mism_cpu, "mismatch_vs_ref_small": mism_ref,
                        "ref_n": nr, "num_regs": k.num_regs, "local_bytes": k.local_size_bytes},
                  title="LDLQ on the GPU (float64)", notes=notes)


if __name__ == "__main__":
    main()
