"""ICQuant index coding on the CPU: quipref (readable Python loops) vs fast (Numba,
parallel over rows).

    python -m benchmarks.icquant_cpu [--m 1024] [--n 4096] [--gamma 0.05] [--iters 5]

Masks: exactly ``round(γ n)`` uniformly random outlier positions per row. Gap code at
the best B for γ (:func:`quipref.bounds.best_gap_B`), enumerative code at the best group
size. Throughput is in weights (mask entries) per second; "decoded GB/s" counts the
output mask at one byte per entry. Every fast stream is checked equal to the reference's
in the same run. The reference is timed once (it is slow); fast is the median of
``--iters`` runs after one warm-up (which also compiles / loads the Numba cache).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.harness import cpu_time, median, write_results
from fast.quantizers import index_coding as F
from quipref import bounds
from quipref.quantizers import index_coding as R


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=1024)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--gamma", type=float, default=0.05)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--tag", default="", help="suffix of the results file (e.g. threads1 for a run with "
                   "NUMBA_NUM_THREADS=1)")
    args = p.parse_args()
    m, n, gamma = args.m, args.n, args.gamma
    rng = np.random.default_rng(0)
    k = round(gamma * n)
    mask = np.zeros((m, n), dtype=bool)
    for i in range(m):
        mask[i, rng.choice(n, size=k, replace=False)] = True
    B, g = bounds.best_gap_B(gamma), bounds.best_group(gamma)
    load_before = os.getloadavg()
    rows = []
    cases = [("gap", B, lambda M, mod: mod.gap_encode(M, B),
              lambda s, mod: mod.gap_decode(s.data, s.offsets, k, n, B)),
             ("enumerative", g, lambda M, mod: mod.enum_encode(M, g),
              lambda s, mod: mod.enum_decode(s.data, s.offsets, n, g))]
    for code, param, enc, dec in cases:
        ref_s = enc(mask, R)
        fast_s = enc(mask, F)
        same = bool(np.array_equal(ref_s.data, fast_s.data) and np.array_equal(ref_s.offsets, fast_s.offsets))
        assert same and np.array_equal(dec(fast_s, F), mask)
        t_ref_enc = cpu_time(lambda: enc(mask, R), warmup=0, iters=1)
        t_ref_dec = cpu_time(lambda: dec(ref_s, R), warmup=0, iters=1)
        t_enc = cpu_time(lambda: enc(mask, F), warmup=1, iters=args.iters)
        t_dec = cpu_time(lambda: dec(fast_s, F), warmup=1, iters=args.iters)
        for what, tr, tf in [("encode", t_ref_enc, t_enc), ("decode", t_ref_dec, t_dec)]:
            rows.append({"code": f"{code} ({'B' if code == 'gap' else 'g'}={param})", "op": what,
                         "quipref s": median(tr), "fast s": median(tf),
                         "fast Mweights/s": m * n / median(tf) / 1e6,
                         "decoded GB/s": (m * n / median(tf) / 1e9) if what == "decode" else "",
                         "speedup": median(tr) / median(tf), "identical": same,
                         "bits/weight": ref_s.nbits / (m * n),
                         "raw_ref": tr, "raw_fast": tf})
    s = F.gap_encode(mask, B)
    t_pos = cpu_time(lambda: F.gap_positions(s.data, s.offsets, k, B), warmup=1, iters=args.iters)
    rows.append({"code": f"gap (B={B})", "op": "positions (m, k)", "fast s": median(t_pos),
                 "fast Mweights/s": m * n / median(t_pos) / 1e6, "raw_fast": t_pos})
    from numba import config as ncfg

    write_results("icquant_cpu" + (f"_{args.tag}" if args.tag else ""), rows, ["code", "op", "quipref s", "fast s", "fast Mweights/s",
                                        "decoded GB/s", "speedup", "identical", "bits/weight"],
                  meta={"m": m, "n": n, "gamma": gamma, "k": k, "load_before": load_before,
                        "load_after": os.getloadavg(), "numba_threads": ncfg.NUMBA_NUM_THREADS},
                  title="ICQuant index coding on the CPU: quipref vs fast (Numba)",
                  notes=(f"m = {m} rows of n = {n}, {k} outliers per row (gamma = {gamma}). Shared 2-core "
                         f"VM: load average before {load_before[0]:.2f}. The reference is timed once. "
                         f"Numba threads: {ncfg.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)."))


if __name__ == "__main__":
    main()
