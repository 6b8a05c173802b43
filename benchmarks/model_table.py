"""The results table of whole-model quantization: SmolLM2-135M perplexity and MiniLM embedding
fidelity for the unquantized models and every method at 2, 3 and 4 bits.

Run (the committed table; on a GPU machine, repeat the same command until it prints
``complete``: each call stops starting new entries after ``--time-budget`` seconds and the
next call resumes from the results file)::

    python -m benchmarks.model_table --device cuda

Per (model, method, bits) entry it loads a fresh copy of the model, quantizes every linear
inside its transformer blocks with :func:`quipref.pipeline.quantize_model` (LM head,
embeddings and BERT pooler kept), Hessians from ``--nsamples`` x ``--seqlen`` tokens of the
calibration articles, then evaluates on the held-out articles:

* SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to float32; the Q4_1 model is the
  reference): perplexity, GPTQ protocol, ``--windows`` windows of ``--ctx`` tokens (default:
  all, about 175 x 1024 tokens);
* all-MiniLM-L6-v2: mean cosine between quantized and unquantized sentence embeddings of
  256 held-out paragraphs, and Pearson / Spearman correlation with the Lee-50 human
  similarity judgments.

Both are evaluated on a dequantized dense copy (:func:`quipref.pipeline.evaluate.dequantized_copy`:
the same W-hat, one dense product per layer). After each entry the results are written
(atomically) to ``benchmarks/results/<device>/model_table.json`` and ``model_table.md``;
entries already there with the same settings are skipped. ``--fresh`` starts over.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from benchmarks.harness import RESULTS_DIR, device_name, versions

NAME = "model_table"
MODELS = ("smollm2-135m", "minilm-l6")
SETTINGS = ("nsamples", "seqlen", "ctx", "windows", "texts", "qtip_L", "backend", "seed", "option")


def _atomic_write(path: Path, text: str):
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _key(e) -> tuple:
    return (e["model"], e["method"], int(e["bits"]))


def render_markdown(payload: dict) -> str:
    """One row per (method, bits): SmolLM2 perplexity beside MiniLM fidelity."""
    entries = {_key(e): e for e in payload["entries"]}
    base_ppl = entries.get(("smollm2-135m", "unquantized", 0), {}).get("ppl")
    rows = sorted({(e["method"], int(e["bits"])) for e in payload["entries"]},
                  key=lambda r: (r[1], payload["meta"]["methods"].index(r[0])
                                 if r[0] in payload["meta"]["methods"] else -1))
    s = payload["meta"]
    lines = [f"# Whole-model quantization: SmolLM2-135M perplexity and MiniLM fidelity ({payload['device']})", "",
             f"Command: `{payload['command']}`  ",
             f"Date: {payload['date']}", "",
             f"SmolLM2-135M-Instruct (Q4_1 GGUF -> float32, the reference): perplexity on the held-out "
             f"Wikipedia articles 80-106 of gensim's excerpt, GPTQ protocol, ctx {s['ctx']}, "
             f"{'all' if s['windows'] is None else s['windows']} windows. all-MiniLM-L6-v2: mean cosine of "
             f"quantized vs unquantized embeddings of {s['texts']} held-out paragraphs, and Pearson / "
             f"Spearman correlation with the Lee-50 human similarity judgments. Calibration: "
             f"{s['nsamples']} x {s['seqlen']} tokens of articles 0-79 (MiniLM: {s['nsamples']} paragraphs). "
             f"Every linear in the blocks quantized; LM head, embeddings and pooler kept. QTIP: HYB code, "
             f"L = {s['qtip_L']}. bits/w: exact storage of the quantized linears (SmolLM2's; MiniLM's when only MiniLM ran). time: "
             f"quantization incl. calibration passes, SmolLM2 / MiniLM, {s['backend']} backend.", "",
             "| method | bits | bits/w | SmolLM2 ppl | vs fp | MiniLM cosine | Lee Pearson | Lee Spearman "
             "| time s (SmolLM2 / MiniLM) | device |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    for method, bits in rows:
        a = entries.get(("smollm2-135m", method, bits), {})
        b = entries.get(("minilm-l6", method, bits), {})
        rel = a.get("ppl") and base_ppl and bits and a["ppl"] / base_ppl - 1
        rel = (f"{100 * rel:+.1f} %" if rel < 10 else f"x{rel + 1:.3g}") if rel else ""
        t = " / ".join(f(x.get("seconds"), ".1f") or "-" for x in (a, b)) if bits else "-"
        bpw = a.get("bits_per_weight", b.get("bits_per_weight"))
        lines.append(f"| {method} | {bits or '-'} | {f(bpw, '.3f') or '-'} | "
                     f"{f(a.get('ppl'), '.3f' if a.get('ppl', 0) < 1e4 else '.3g')} | {rel} | {f(b.get('cosine'), '.4f')} | "
                     f"{f(b.get('pearson'), '.3f')} | {f(b.get('spearman'), '.3f')} | {t} | "
                     f"{a.get('device') or b.get('device', '')} |")
    missing = payload.get("pending", [])
    if missing:
        lines += ["", f"Incomplete: {len(missing)} entries pending (run the command again to resume)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from quipref import cli

    p = argparse.ArgumentParser(prog="python -m benchmarks.model_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (default cpu)")
    p.add_argument("--methods", nargs="+", default=["all"],
                   help="methods or 'all' (every method of quantize_linear; default)")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4], help="default 2 3 4")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--windows", type=int, default=0, help="perplexity windows (0: all; default)")
    p.add_argument("--ctx", type=int, default=1024, help="perplexity window (default 1024)")
    p.add_argument("--texts", type=int, default=256, help="held-out MiniLM paragraphs (default 256)")
    p.add_argument("--nsamples", type=int, default=128, help="calibration sequences (default 128)")
    p.add_argument("--seqlen", type=int, default=512, help="calibration tokens per sequence (default 512)")
    p.add_argument("--qtip-L", type=int, default=None,
                   help="QTIP trellis state bits (default 16 on cuda, 10 on cpu)")
    p.add_argument("--backend", choices=["fast", "quipref"], default="fast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="extra quantize_linear option")
    p.add_argument("--time-budget", type=float, default=480,
                   help="seconds after which no new entry is started (default 480; rerun to resume)")
    p.add_argument("--fresh", action="store_true", help="discard earlier entries and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    try:
        methods = cli.check_methods(args.methods)
        cli.check_device(args.device)
        cli.parse_options(args.option)
    except cli.CLIError as exc:
        print(f"model_table: error: {exc}", file=sys.stderr)
        return 2
    if args.qtip_L is None:
        args.qtip_L = 16 if args.device == "cuda" else 10
    windows = None if args.windows <= 0 else args.windows
    settings = {k: getattr(args, k) for k in SETTINGS}
    settings["windows"] = windows

    dev = device_name()
    out_dir = RESULTS_DIR / dev
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / f"{NAME}.json", out_dir / f"{NAME}.md"
    entries = []
    if jpath.exists() and not args.fresh:
        old = json.loads(jpath.read_text())
        if {k: old["meta"].get(k) for k in SETTINGS} != settings:
            print(f"model_table: error: {jpath} holds entries made with other settings "
                  f"({ {k: old['meta'].get(k) for k in SETTINGS} }); pass --fresh to start over",
                  file=sys.stderr)
            return 2
        entries = old["entries"]
    command = "python -m benchmarks." + NAME + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else
                                                (" " + " ".join(argv) if argv else ""))
    command = command.replace(" --fresh", "")

    todo = []
    for model in args.models:
        todo.append((model, "unquantized", 0))
        for bits in args.bits:
            for method in methods:
                todo.append((model, method, bits))
    done = {_key(e) for e in entries}

    def write(pending):
        payload = {"benchmark": NAME, "device": dev, "command": command,
                   "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": versions(),
                   "meta": dict(settings, methods=methods, bits=args.bits, models=args.models),
                   "entries": entries, "pending": [list(k) for k in pending]}
        _atomic_write(jpath, json.dumps(payload, indent=2, default=float) + "\n")
        _atomic_write(mpath, render_markdown(payload))

    from quipref.pipeline import load_model
    from quipref.pipeline.evaluate import model_bits_per_weight

    refs = {}
    for i, key in enumerate(todo):
        if key in done:
            continue
        if time.perf_counter() - t_start > args.time_budget:
            pending = [k for k in todo if k not in {_key(e) for e in entries}]
            write(pending)
            print(f"model_table: time budget reached; {len(pending)} entries pending. "
                  f"Run the same command again to resume.")
            return 0
        model_name, method, bits = key
        print(f"[{i + 1}/{len(todo)}] {model_name} {method} {bits or ''}", flush=True)
        if model_name == "minilm-l6" and "minilm-l6" not in refs:
            base, tok = cli.load_base("minilm-l6", args.device)
            refs["minilm-l6"] = cli.evaluate(base, tok, texts=args.texts, progress=False)["embeddings"]
        model, tok = cli.load_base(model_name, args.device)
        entry = {"model": model_name, "method": method, "bits": bits, "device": dev}
        if method != "unquantized":
            model, seconds = cli.quantize_base(model, tok, method, bits, args, progress=not args.quiet)
            entry.update(seconds=seconds, bits_per_weight=model_bits_per_weight(model),
                         options=cli.method_options(method, args))
        r = cli.evaluate(model, tok, ctx=args.ctx, windows=windows, texts=args.texts,
                         reference=refs.get(model_name), progress=not args.quiet)
        r.pop("embeddings", None)
        entry.update(r)
        entries.append(entry)
        del model
        if args.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        write([k for k in todo if k not in {_key(e) for e in entries}])
        print("   ", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()}, flush=True)
    write([])
    print(f"model_table: complete ({len(entries)} entries) -> {mpath.relative_to(RESULTS_DIR.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
