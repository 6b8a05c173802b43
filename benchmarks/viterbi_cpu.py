"""Numba Viterbi (QTIP bitshift trellis) on the CPU: ``python -m benchmarks.viterbi_cpu [--quick]``.

Tail-biting (Alg. 4, both passes) 2-bit trellis quantization of i.i.d. N(0, 1) sequences
of T = 256 weights (one 16 x 16 tile each), ``scale = 1 / table RMS``:

* L = 12, k = 2: 1MAD (V = 1) and HYB (V = 2, Q = 9): ``fast`` (Numba, parallel over
  sequences) on 1024 sequences beside the quipref reference (NumPy, vectorised over
  sequences and states) on 64 of them -- the same work per sequence, so weights/s compare
  directly. The states of the reference's sequences must be identical (the Numba kernel
  does the reference's float64 operations in the same order).
* L = 16, k = 2, HYB V = 2 (QTIP's setting): ``fast`` only, on 64 sequences, with the
  implied time of a 4096 x 4096 matrix (65536 tiles) on this machine.

Timing: wall clock, the Numba functions JIT-compiled (and run once) before timing; median
of 5 runs (3 for the reference and for --quick). Targets: >= 3e5 weights/s and >= 5x the
reference at L = 12.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks import harness

T = 256


def _pair(L, code, V):
    import fast.quantizers.trellis as F
    import quipref.quantizers.trellis as R

    q0 = R.Trellis(L, 2, V, code, seed=0)
    kw = dict(seed=0, scale=1.0 / q0.table_rms)
    return F.Trellis(L, 2, V, code, **kw), R.Trellis(L, 2, V, code, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import numba

    iters = 3 if args.quick else 5
    n_fast, n_ref = (256, 32) if args.quick else (1024, 64)
    X = np.random.default_rng(0).standard_normal((n_fast, T))
    load_before = os.getloadavg()
    rows = []
    for code, V in (("1mad", 1), ("hyb", 2)):
        qf, qr = _pair(12, code, V)
        qf.encode_sequences(X[:2])  # JIT
        ts = harness.cpu_time(lambda: qf.encode_sequences(X), warmup=1, iters=iters)
        tr = harness.cpu_time(lambda: qr.encode_sequences(X[:n_ref]), warmup=0, iters=max(2, iters - 2))
        sf, sr = qf.encode_sequences(X[:n_ref]), qr.encode_sequences(X[:n_ref])
        same = bool(np.array_equal(sf, sr))
        wf = X.size / harness.median(ts)
        wr = n_ref * T / harness.median(tr)
        rows.append(dict(what=f"quipref (reference), L=12 k=2 {code.upper()} V={V}", sequences=n_ref,
                         seconds=harness.median(tr), weights_per_s=wr, speedup=1.0, samples=tr))
        rows.append(dict(what=f"fast (Numba), L=12 k=2 {code.upper()} V={V}", sequences=n_fast,
                         seconds=harness.median(ts), weights_per_s=wf, speedup=wf / wr,
                         states_equal_reference=same, target_3e5=bool(wf >= 3e5),
                         target_5x=bool(wf / wr >= 5), samples=ts))
        assert same, f"{code}: fast's states differ from the reference's"
    n16 = 16 if args.quick else 64
    qf, _ = _pair(16, "hyb", 2)
    qf.encode_sequences(X[:2])
    ts = harness.cpu_time(lambda: qf.encode_sequences(X[:n16]), warmup=0, iters=max(2, iters - 2))
    w16 = n16 * T / harness.median(ts)
    rows.append(dict(what="fast (Numba), L=16 k=2 HYB V=2 (QTIP)", sequences=n16,
                     seconds=harness.median(ts), weights_per_s=w16,
                     note=f"4096x4096 matrix: {4096 * 4096 / w16:.0f} s on this machine", samples=ts))
    load_after = os.getloadavg()
    meta = dict(threads=numba.get_num_threads(), threading_layer=numba.threading_layer(),
                load_before=load_before, load_after=load_after, cpus=os.cpu_count(), quick=args.quick)
    for r in rows:
        print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items() if k != "samples"})
    notes = (f"Tail-biting Alg. 4 (both passes), T = 256 per sequence, N(0,1), scale = 1 / table RMS. "
             f"fast on {n_fast} sequences (L=12), the reference on {n_ref} (same work per sequence); "
             f"speedup = weights/s ratio. Numba threads {meta['threads']} ({meta['threading_layer']}); "
             f"load average before {tuple(round(v, 2) for v in load_before)}, after "
             f"{tuple(round(v, 2) for v in load_after)} (shared VM). Medians of {iters} runs after JIT. "
             f"Targets at L=12: >= 3e5 weights/s and >= 5x the reference.")
    if not args.no_write:
        path = harness.write_results(
            "viterbi_cpu", rows, ["what", "sequences", "seconds", "weights_per_s", "speedup", "note"],
            meta=meta, title="Numba Viterbi on the CPU (tail-biting, k = 2)", notes=notes)
        print("wrote", path)
    return rows


if __name__ == "__main__":
    main()
