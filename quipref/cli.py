"""Command line: ``quipref table`` prints RTN vs GPTQ vs QuIP vs QuIP# vs QTIP proxy losses,
with Theorem 1's bound for the scalar-grid LDLQ methods (``python -m quipref table --help``)."""
from __future__ import annotations

import argparse
import importlib
import sys
import time

import numpy as np


def _bound(layer, backend) -> float:
    """Worst-case proxy loss of unclamped nearest LDLQ on this layer's grid, in the
    original Hessian's scale: sum_i (step_i^2 / 4) tr(D) / c (QuIP Thm. 1)."""
    step = np.broadcast_to(np.asarray(layer.quantizer.step), (layer.shape[0],))
    H = layer.info["hessian_used"]
    _, D = backend.ldl(H)
    return backend.bounds.ldlq_worst_case(1, D) * float(np.sum(step**2)) / layer.info["hessian_scale"]


def table(args) -> int:
    q = importlib.import_module(args.backend)
    from quipref.datasets import synthetic_layer

    W, H = synthetic_layer(args.m, args.n, seed=args.seed)
    ref = float(np.sum((W @ H) * W))
    print(f"Layer: synthetic_layer(m={args.m}, n={args.n}, seed={args.seed}); backend: {args.backend}")
    print("proxy loss l(W^) = tr((W^-W) H (W^-W)^T), relative to tr(W H W^T) = %.4g" % ref)
    print("bound: worst case of unclamped nearest LDLQ on the layer's grid, sum_i step_i^2/4 * tr(D)")
    print("       (clamping to the finite grid can exceed it; RTN has no deterministic bound:")
    print("        (m/4) tr(H) bounds only stochastic rounding, see quipref.bounds.rounding_worst_case)")
    print("bits/w: exact storage, codes + side arrays (grids, sign vectors, Kronecker factors,")
    print("        codebook scales, the HYB look-up table)")
    if "qtip" in args.methods:
        print(f"qtip:   HYB code, L = {args.qtip_L} state bits (QTIP uses 16; the CPU Viterbi costs")
        print("        O(2^L) per weight, so --qtip-L 16 takes ~64x the time of the default)")
    print()
    header = f"{'bits':>4} {'method':>6} {'rel. loss':>10} {'bound':>10} {'loss/bound':>10} {'bits/w':>7} {'time s':>7}"
    print(header)
    print("-" * len(header))
    for bits in args.bits:
        for method in args.methods:
            opts = {"L": args.qtip_L} if method == "qtip" else {}
            t0 = time.perf_counter()
            layer = q.quantize_linear(W, H, method, bits, seed=args.seed, **opts)
            dt = time.perf_counter() - t0
            loss = q.proxy_loss(layer.dequantize(), W, H)
            if method not in ("gptq", "quip"):
                # rtn: no feedback, Theorem 1 gives no deterministic bound for nearest rounding;
                # quip# / qtip: vector quantizers, no per-coordinate worst case (Theorem 4.1
                # bounds an expectation for quantizers with a covariance bound)
                bound, ratio = "-", "-"
            else:
                b = _bound(layer, q)
                bound, ratio = f"{b / ref:.4g}", f"{loss / b:.3f}"
            print(f"{bits:>4} {method:>6} {loss / ref:>10.4g} {bound:>10} {ratio:>10} "
                  f"{layer.bits_per_weight:>7.3f} {dt:>7.2f}")
        print()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="quipref", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="RTN vs GPTQ vs QuIP vs QuIP# vs QTIP proxy loss against the LDLQ bound")
    t.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    t.add_argument("--methods", nargs="+", default=["rtn", "gptq", "quip", "quip#", "qtip"],
                   choices=["rtn", "gptq", "quip", "quip#", "qtip"])
    t.add_argument("--qtip-L", type=int, default=10, help="QTIP trellis state bits (default 10)")
    t.add_argument("--m", type=int, default=256)
    t.add_argument("--n", type=int, default=512)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--backend", choices=["quipref", "fast"], default="fast")
    args = p.parse_args(argv)
    return table(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
