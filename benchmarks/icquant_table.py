"""ICQuant tables: (1) index-code cost, gap code vs enumerative code vs entropy floor;
(2) proxy loss on real MiniLM layers, ICQuant at 2-bit codes vs RTN / GPTQ / QuIP# / QTIP.

    python -m benchmarks.icquant_table [--rows 256] [--tokens 4096] [--skip-layers]

(1) ``icquant_index_codes``: random masks with exactly ``k = round(γ d)`` uniformly placed
outliers per row, d = 4096. For each γ: the gap code at its best B (formula
:func:`quipref.bounds.gap_code_overhead` and the measured stream), the enumerative code at
its best group size (formula and measured), the fixed-k floor ``log2 C(d, k) / d`` and the
Bernoulli floor H2(γ). Bits per weight of the index only (no row offsets).

(2) ``icquant_proxy_loss``: layers of all-MiniLM-L6-v2 (``quipref.realdata.minilm_layer``,
H from the first ``--tokens`` token positions of the pydoc texts). Relative proxy loss
``tr(E H E^T) / tr(W H W^T)`` with ``E = W_hat - W`` and exact bits per weight of the
stored layer (codes + index + every side array, ``QuantizedLinear.bits_per_weight``).
Note the side arrays weigh more on these small layers (n = 384 or 1536) than at n = 4096:
ICQuant's float16 ranges and row offsets cost 96 bits per row (0.25 bits/weight at n = 384).
All layers are quantized with :func:`fast.quantize_linear` (same codes as quipref's).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from benchmarks.harness import write_results
from quipref import bounds
from quipref.quantizers import index_coding as ic

GAMMAS = [1 / 32, 0.05, 1 / 16, 0.08]
LAYERS = ["encoder.layer.0.attention.self.query", "encoder.layer.0.intermediate.dense",
          "encoder.layer.0.output.dense", "encoder.layer.3.attention.output.dense"]
CONFIGS = [("rtn", 2, {}), ("rtn", 3, {}), ("gptq", 2, {}),
           ("icquant", 2, {}), ("icquant", 2, {"transform": "hadamard"}),
           ("icquant", 2, {"inner": "lloydmax"}), ("icquant", 2, {"feedback": False}),
           ("quip#", 2, {}), ("qtip", 2, {})]


def index_table(rows: int, d: int = 4096, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for gamma in GAMMAS:
        k = round(gamma * d)
        mask = np.zeros((rows, d), dtype=bool)
        for i in range(rows):
            mask[i, rng.choice(d, size=k, replace=False)] = True
        B, g = bounds.best_gap_B(gamma), bounds.best_group(gamma)
        gap = ic.gap_encode(mask, B).nbits / mask.size
        enum = ic.enum_encode(mask, g).nbits / mask.size
        out.append({"gamma": gamma, "k": k, "best B": B,
                    "gap formula": bounds.gap_code_overhead(gamma, B), "gap measured": gap,
                    "best g": g, "enum formula": bounds.enumerative_overhead(gamma, g),
                    "enum measured": enum,
                    "floor log2C(d,k)/d": math.log2(math.comb(d, k)) / d,
                    "H2(gamma)": bounds.entropy_floor(gamma),
                    "gap / H2": gap / bounds.entropy_floor(gamma)})
    return out


def layer_table(tokens: int):
    import fast
    from quipref.realdata import minilm_layer

    out = []
    for name in LAYERS:
        W, H = minilm_layer(name, n_tokens=tokens)
        ref = float(np.trace(W @ H @ W.T))
        for method, bits, opts in CONFIGS:
            t0 = time.perf_counter()
            L = fast.quantize_linear(W, H, method, bits, seed=0, **opts)
            E = L.dequantize() - W
            label = method + "".join(f" {k}={v}" for k, v in opts.items())
            out.append({"layer": name, "shape": "x".join(map(str, W.shape)), "method": label,
                        "code bits": bits, "bits/weight": L.bits_per_weight,
                        "rel. proxy loss": float(np.trace(E @ H @ E.T)) / ref,
                        "seconds": time.perf_counter() - t0})
            print(out[-1], flush=True)
    return out


def _write(name, rows, columns, **kw):
    """write_results names the command after the results file; both tables come from this
    script, so put its real command line in the JSON and the Markdown header."""
    import json
    import sys

    path = write_results(name, rows, columns, **kw)
    cmd = "python -m benchmarks.icquant_table" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    data = json.loads(path.read_text())
    data["command"] = cmd
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    md = path.with_suffix(".md")
    md.write_text(md.read_text().replace(f"`python -m benchmarks.{name}`", f"`{cmd}`", 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--skip-layers", action="store_true")
    args = p.parse_args()
    rows = index_table(args.rows)
    _write("icquant_index_codes", rows,
                  ["gamma", "best B", "gap formula", "gap measured", "best g", "enum formula",
                   "enum measured", "floor log2C(d,k)/d", "H2(gamma)", "gap / H2"],
                  meta={"rows": args.rows, "d": 4096},
                  title="Index-code cost per weight: gap code vs enumerative code vs entropy floor",
                  notes=(f"{args.rows} rows of d = 4096 with exactly round(gamma d) uniformly random "
                         "outlier positions. Index bits per weight (symbols / fields only; the row "
                         "offsets that allow parallel decoding add 32 / d). The enumerative code pays a "
                         "count field per group and a ceil() per rank, so it stays above the gap code "
                         "at its best group size (<= 64)."))
    if not args.skip_layers:
        rows = layer_table(args.tokens)
        _write("icquant_proxy_loss", rows,
                      ["layer", "shape", "method", "bits/weight", "rel. proxy loss", "seconds"],
                      meta={"tokens": args.tokens, "layers": LAYERS},
                      title="ICQuant on all-MiniLM-L6-v2 layers: relative proxy loss",
                      notes=("Relative proxy loss tr(E H E^T) / tr(W H W^T), E = W_hat - W, H from "
                             f"{args.tokens} token positions of the pydoc texts. bits/weight is the exact "
                             "stored cost (codes + index + side arrays). icquant: 2-bit codes, gamma = 0.05, "
                             "gap code at its best B, LDLQ feedback unless feedback=False; "
                             "transform=hadamard applies QuIP#'s RHT first (an extension)."))


if __name__ == "__main__":
    main()
