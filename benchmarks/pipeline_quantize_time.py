"""Wall time of ``quipref.pipeline.quantize_model`` on SmolLM2-135M's first blocks:
``python -m benchmarks.pipeline_quantize_time [--blocks 2] [--methods rtn,gptq,quip#,qtip]
[--nsamples 16] [--seqlen 256] [--qtip-L 10] [--device cpu|cuda] [--reference]``.

For each method a fresh copy of the model is quantized (blocks ``0 .. blocks-1``, every
linear in them: 7 per block) on ``nsamples x seqlen`` calibration tokens of the gensim
Wikipedia split, with the ``fast`` backend (and, with ``--reference``, the ``quipref``
backend beside it, the baseline of the same run). Reported: seconds for those blocks
(including the calibration forward passes and any Numba JIT compilation on the first
use of a kernel in the process: what a first ``quipref demo`` run pays), seconds per
block, and the implied whole-model time (30 blocks) = per-block x 30 -- an estimate,
since JIT cost is paid once. Results: ``benchmarks/results/<device>/pipeline_quantize_time.{json,md}``.
"""
from __future__ import annotations

import argparse
import os
import time

from benchmarks import harness


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--methods", default="rtn,gptq,quip#,qtip")
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--qtip-L", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reference", action="store_true", help="also time the quipref backend")
    args = ap.parse_args(argv)

    import torch

    from quipref.pipeline import calibration_tokens, load_model, quantize_model

    t0 = time.perf_counter()
    base, tok = load_model("smollm2-135m")
    load_s = time.perf_counter() - t0
    calib = calibration_tokens(tok, nsamples=args.nsamples, seqlen=args.seqlen).to(args.device)
    sel = rf"re:model\.layers\.({'|'.join(str(i) for i in range(args.blocks))})\..*"
    rows = []
    backends = ["fast"] + (["quipref"] if args.reference else [])
    for method in args.methods.split(","):
        opts = {"L": args.qtip_L} if method == "qtip" else {}
        for backend in backends:
            model, _ = load_model("smollm2-135m", fresh=True)
            model.to(args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            quantize_model(model, method, args.bits, calib, backend=backend, modules=sel, progress=False, **opts)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            s = time.perf_counter() - t
            row = {"method": method, "bits": args.bits, "options": str(opts), "backend": backend,
                   "blocks": args.blocks, "seconds": s, "seconds_per_block": s / args.blocks,
                   "implied_30_blocks_s": 30 * s / args.blocks,
                   "bits_per_weight": sum(r["bits_per_weight"] for r in model.quipref_quantization["modules"].values())
                   / len(model.quipref_quantization["modules"])}
            print(row, flush=True)
            rows.append(row)
            del model
    harness.write_results(
        "pipeline_quantize_time", rows,
        ["method", "bits", "options", "backend", "blocks", "seconds", "seconds_per_block", "implied_30_blocks_s"],
        meta={"nsamples": args.nsamples, "seqlen": args.seqlen, "model": "smollm2-135m",
              "model_load_s": load_s, "device_arg": args.device,
              "load_average_1_5_15_min": list(os.getloadavg())},
        title="quantize_model wall time, SmolLM2-135M first blocks",
        notes=f"Calibration {args.nsamples} x {args.seqlen} tokens; seconds include calibration forwards and "
              f"first-use Numba JIT; implied_30_blocks_s = 30 x seconds_per_block (estimate). Load average at the "
              f"end (1/5/15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())} -- on a shared machine, "
              f"times scale with it.")


if __name__ == "__main__":
    main()
