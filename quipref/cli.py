"""Command line: ``quipref table`` prints RTN vs GPTQ vs QuIP proxy losses against the
theorems' bounds (``python -m quipref table --help``)."""
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
    print("bits/w: exact storage, codes + side arrays (grids, sign vectors, Kronecker factors)\n")
    header = f"{'bits':>4} {'method':>6} {'rel. loss':>10} {'bound':>10} {'loss/bound':>10} {'bits/w':>7} {'time s':>7}"
    print(header)
    print("-" * len(header))
    for bits in args.bits:
        for method in ("rtn", "gptq", "quip"):
            t0 = time.perf_counter()
            layer = q.quantize_linear(W, H, method, bits, seed=args.seed)
            dt = time.perf_counter() - t0
            loss = q.proxy_loss(layer.dequantize(), W, H)
            if method == "rtn":  # no feedback: Theorem 1 gives no deterministic bound for nearest
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
    t = sub.add_parser("table", help="RTN vs GPTQ vs QuIP proxy loss against the LDLQ bound")
    t.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    t.add_argument("--m", type=int, default=256)
    t.add_argument("--n", type=int, default=512)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--backend", choices=["quipref", "fast"], default="fast")
    args = p.parse_args(argv)
    return table(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
