"""The README's main job, timed: ``quipref demo`` with its defaults, results recorded.

Run (from the repository root; the numbers in the README come from this file's output)::

    python -m benchmarks.demo_cpu                # extra arguments go to `quipref demo`

Writes ``benchmarks/results/<device>/demo_cpu.{json,md}``: one row per model (the
unquantized SmolLM2-135M first) with held-out perplexity, exact bits per weight and the
quantization time, plus the whole demo's wall time and the machine's load average before
and after (a shared machine makes the times longer; they are not corrected).
"""
from __future__ import annotations

import os
import sys
import time

from benchmarks.harness import write_results


def main(argv=None) -> int:
    from quipref.cli import build_parser, run_demo

    extra = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(["demo", *extra])
    if args.windows is not None and args.windows <= 0:
        args.windows = None
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    rows, total = run_demo(args)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    out = [{"method": m, "bits": b, "perplexity": float(p),
            "bits_per_weight": (None if m == "unquantized" else float(bpw)),
            "quantize_s": (None if m == "unquantized" else float(s))} for m, b, p, bpw, s in rows]
    notes = (f"`{' '.join(['quipref demo', *extra])}`: SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to float32; "
             f"the unquantized row is that model), every linear of its 30 blocks, {args.backend} backend on "
             f"{args.device}; calibration {args.nsamples} x {args.seqlen} tokens of the calibration articles; "
             f"perplexity over {args.windows} windows of {args.ctx} tokens of the held-out articles. "
             f"Whole demo (model loads, quantization, evaluation): {wall:.0f} s wall on {os.cpu_count()} CPU "
             f"cores; load average before {tuple(round(x, 2) for x in load_before)}, after "
             f"{tuple(round(x, 2) for x in load_after)}.")
    write_results("demo_cpu", out, ["method", "bits", "perplexity", "bits_per_weight", "quantize_s"],
                  meta={"wall_s": wall, "load_before": load_before, "load_after": load_after,
                        "argv": extra},
                  title="quipref demo (the README's main job), timed", notes=notes)
    print(f"demo wall time {wall:.0f} s; results in benchmarks/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
