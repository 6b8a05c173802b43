r"""Evaluation of a (quantized) model: perplexity, embedding fidelity, generation speed.

The field's conventions, followed here so that numbers can be compared:

* **Perplexity, GPTQ protocol** (GPTQ, QuIP, QuIP#, QTIP, AQLM all report it this way):
  the evaluation text is joined with ``"\n\n"``, tokenized *once*, cut into
  non-overlapping windows of ``ctx`` tokens (the incomplete tail is dropped), every
  window is run on its own (no context carried over), and
  :math:`\mathrm{ppl} = \exp\big(\frac{1}{N}\sum_t -\log p(x_t \mid x_{<t})\big)` over all
  :math:`N` predicted tokens (``ctx - 1`` per window). Report ``ctx`` and the tokenizer
  with every number. (lm-eval's ``wikitext`` task reports word perplexity with rolling
  windows, a different number.)
* **Embedding fidelity** of a sentence encoder (all-MiniLM-L6-v2): sentence embeddings
  are the attention-masked mean of the last hidden states, L2-normalised, inputs
  truncated to 256 tokens -- what sentence-transformers does for this model
  (``1_Pooling/config.json``: mean tokens; ``max_seq_length`` 256). Fidelity is the mean
  cosine between the quantized and the unquantized embeddings of the same texts.
* **Correlation with human judgments**: the Lee corpus (50 news documents, Lee, Pincombe
  & Welsh 2005) and its 50 x 50 human similarity ratings, shipped in gensim's test data;
  Pearson and Spearman correlation between the embedding cosines and the ratings over
  the 1225 document pairs. The unquantized all-MiniLM-L6-v2 scores Pearson 0.656.
* **Generation speed**: batch-1 greedy decoding, tokens per second after the prompt
  (QuIP#'s ``gen_speed.py`` measures the same). On a CUDA device the decode step runs
  from a captured CUDA graph over a static KV cache, so the number measures the kernels,
  not Python's launch overhead.

References
----------
.. [GPTQ] Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative
   Pre-trained Transformers", arXiv 2210.17323, Sec. 5 (perplexity protocol).
.. [SBERT] Reimers and Gurevych, "Sentence-BERT", arXiv 1908.10084, Sec. 3 (mean pooling).
.. [Lee] M. D. Lee, B. Pincombe, M. Welsh, "An empirical evaluation of models of text
   document similarity", CogSci 2005.
"""
from __future__ import annotations

import importlib
import math
import time

import numpy as np

__all__ = ["perplexity", "window_token_ids", "sentence_embeddings", "embedding_fidelity",
           "lee_corpus", "lee_correlation", "generation_speed", "model_bits_per_weight",
           "dequantized_copy"]

#: the Lee corpus files inside gensim's test data
LEE_DOCS, LEE_SIMS = "lee.cor", "similarities0-1.txt"


def _require(module: str, pip: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"quipref.pipeline.evaluate needs {module!r} ({e}); install it with: {pip}") from e


def _torch():
    return _require("torch", 'pip install "quipref[real]"')


def _model_device(model):
    for p in model.parameters():
        return p.device
    for b in model.buffers():  # a model whose linears are all quantized keeps norms/embeddings
        return b.device
    return _torch().device("cpu")


def _quant_linears(model):
    from .qlinear import QuantLinear

    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]


def model_bits_per_weight(model) -> float:
    r"""Storage cost of the quantized linears, in bits per weight, averaged by weight count.

    Parameters
    ----------
    model : torch.nn.Module
        A model after :func:`~quipref.pipeline.quantize_model`.

    Returns
    -------
    float
        :math:`\sum_i b_i m_i n_i / \sum_i m_i n_i` over the
        :class:`~quipref.pipeline.QuantLinear` modules, with :math:`b_i` the layer's exact
        ``bits_per_weight`` (codes plus every side array). Layers left in floating point
        (LM head, embeddings, norms) are not counted.

    Raises
    ------
    ValueError
        If the model has no quantized linear.
    """
    layers = _quant_linears(model)
    if not layers:
        raise ValueError("the model has no QuantLinear module: quantize it first (quantize_model)")
    num = sum(m.layer.bits_per_weight * m.in_features * m.out_features for _, m in layers)
    den = sum(m.in_features * m.out_features for _, m in layers)
    return float(num / den)


def dequantized_copy(model):
    r"""A deep copy of ``model`` with every :class:`QuantLinear` replaced by an ``nn.Linear``
    holding its dequantized weight :math:`\hat W` (float32, same device and bias).

    For evaluation on long windows: the copy computes :math:`\hat W x` with one dense
    matrix product per layer instead of the decode-on-the-fly path, so a perplexity over
    hundreds of windows costs what the unquantized model costs. The numbers are those of
    :math:`\hat W` in float32; the fused CUDA kernels differ from it by their stated
    float16 rounding bound.
    """
    import copy

    torch = _torch()
    out = copy.deepcopy(model)
    for name, q in _quant_linears(out):
        lin = torch.nn.Linear(q.in_features, q.out_features, bias=q.bias is not None,
                              device=q.device, dtype=torch.float32)
        with torch.no_grad():
            lin.weight.copy_(q.dense_weight())
            if q.bias is not None:
                lin.bias.copy_(q.bias)
        parent, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, child, lin)
    return out


def _check_positive_int(value, name, minimum=1, optional=False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def window_token_ids(tokenizer, text, ctx: int, *, max_windows=None):
    r"""Token ids of ``text`` cut into non-overlapping windows of ``ctx`` tokens (GPTQ).

    Parameters
    ----------
    tokenizer : transformers tokenizer or None
        Used only when ``text`` is a string or a list of strings.
    text : str, list of str, or integer tensor / array
        The evaluation text. A list is joined with ``"\n\n"`` first (as GPTQ joins the
        WikiText-2 test split); a string is tokenized once, with the tokenizer's default
        special tokens; a 1-D (or (1, T)) tensor of token ids is used as given.
    ctx : int
        Window length in tokens (>= 2).
    max_windows : int, optional
        Keep only the first ``max_windows`` windows.

    Returns
    -------
    torch.LongTensor of shape (n_windows, ctx)
        The windows; the incomplete tail (fewer than ``ctx`` tokens) is dropped.

    Raises
    ------
    ValueError
        If ``ctx`` < 2, ``max_windows`` < 1, or the text is shorter than one window.
    """
    torch = _torch()
    ctx = _check_positive_int(ctx, "ctx", minimum=2)
    max_windows = _check_positive_int(max_windows, "max_windows", optional=True)
    if isinstance(text, (list, tuple)):
        if not all(isinstance(t, str) for t in text):
            raise TypeError("text must be a string, a list of strings or a tensor of token ids")
        text = "\n\n".join(text)
    if isinstance(text, str):
        if tokenizer is None:
            raise ValueError("a tokenizer is needed to evaluate text given as a string")
        ids = tokenizer(text, return_tensors="pt").input_ids[0]
    else:
        ids = torch.as_tensor(np.asarray(text) if not torch.is_tensor(text) else text)
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1 or ids.dtype.is_floating_point:
            raise ValueError(f"token ids must be a 1-D integer tensor, got shape {tuple(ids.shape)} "
                             f"dtype {ids.dtype}")
        ids = ids.long()
    n = ids.numel() // ctx
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"the text has {ids.numel()} tokens, fewer than one window of ctx={ctx}; "
                         f"pass more text or a smaller ctx")
    return ids[: n * ctx].reshape(n, ctx)


def perplexity(model, tokenizer, text, ctx: int = 1024, *, max_windows=None, batch_size: int = 1,
               progress: bool = True, return_nll: bool = False):
    r"""Perplexity of a causal LM on ``text`` with the GPTQ protocol.

    The text is tokenized once and cut into non-overlapping windows of ``ctx`` tokens
    (:func:`window_token_ids`); each window is scored on its own and

    .. math::

       \mathrm{ppl} = \exp\Big(\frac{1}{W (\mathrm{ctx}-1)} \sum_{w=1}^{W}
       \sum_{t=1}^{\mathrm{ctx}-1} -\log p_\theta(x^{(w)}_t \mid x^{(w)}_{<t})\Big)

    ([GPTQ] Sec. 5; QTIP's ``eval_ppl``). The log-softmax is taken in float32 (float64
    sum over tokens), whatever the model's dtype.

    Parameters
    ----------
    model : transformers causal LM (e.g. ``LlamaForCausalLM``)
        Called as ``model(input_ids=...)``; must return ``.logits`` of shape
        (batch, ctx, vocab). Quantized or not; evaluated under ``torch.inference_mode``
        on the device of its first parameter or buffer.
    tokenizer : transformers tokenizer or None
        Tokenizes ``text`` when it is a string or a list of strings.
    text : str, list of str, or tensor of token ids
        Evaluation text (a list is joined with ``"\n\n"``).
    ctx : int, default 1024
        Window length (GPTQ/QuIP# use 2048 on Llama, QTIP 4096; SmolLM2 was trained at
        2048 and extended to 8192).
    max_windows : int, optional
        Score only the first ``max_windows`` windows (cheap CPU checks).
    batch_size : int, default 1
        Windows per forward pass.
    progress : bool, default True
        Show a tqdm progress bar over the windows.
    return_nll : bool, default False
        Also return the summed NLL (nats) and the number of predicted tokens.

    Returns
    -------
    float, or (float, float, int) when ``return_nll``
        The perplexity (and ``sum_nll``, ``n_tokens``).

    Raises
    ------
    ValueError
        If ``ctx`` < 2, ``max_windows`` or ``batch_size`` < 1, or the text is shorter
        than one window.
    """
    torch = _torch()
    from tqdm.auto import tqdm

    batch_size = _check_positive_int(batch_size, "batch_size")
    windows = window_token_ids(tokenizer, text, ctx, max_windows=max_windows)
    device = _model_device(model)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            bar = tqdm(range(0, windows.shape[0], batch_size), desc=f"perplexity (ctx {ctx})",
                       unit="window", disable=not progress, total=math.ceil(windows.shape[0] / batch_size))
            for i in bar:
                ids = windows[i:i + batch_size].to(device)
                logits = model(input_ids=ids).logits[:, :-1].float()
                logp = torch.log_softmax(logits, dim=-1)
                nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
                total += float(nll.double().sum())
                count += nll.numel()
                bar.set_postfix(ppl=f"{math.exp(total / count):.3f}")
    finally:
        model.train(was_training)
    ppl = math.exp(total / count)
    return (ppl, total, count) if return_nll else ppl


def sentence_embeddings(model, tokenizer, texts, *, batch_size: int = 32, max_length: int = 256,
                        progress: bool = False):
    """Sentence embeddings the way sentence-transformers computes them for all-MiniLM-L6-v2.

    Mean of the last hidden states over the non-padding tokens, then L2 normalisation
    ([SBERT] Sec. 3; the model's ``1_Pooling`` and ``2_Normalize`` modules). Inputs are
    truncated to ``max_length`` tokens (the model's ``max_seq_length`` is 256).

    Parameters
    ----------
    model : transformers encoder (e.g. ``BertModel``), quantized or not
        Called as ``model(input_ids=..., attention_mask=...)``; uses
        ``.last_hidden_state`` of shape (batch, tokens, hidden).
    tokenizer : transformers tokenizer
    texts : list of str
    batch_size : int, default 32
    max_length : int, default 256
    progress : bool, default False
        Show a tqdm progress bar over the batches.

    Returns
    -------
    ndarray of shape (len(texts), hidden), float64
        Unit-norm embeddings.
    """
    torch = _torch()
    from tqdm.auto import tqdm

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or not texts:
        raise TypeError("texts must be a non-empty list of strings")
    batch_size = _check_positive_int(batch_size, "batch_size")
    device = _model_device(model)
    out = []
    with torch.inference_mode():
        for i in tqdm(range(0, len(texts), batch_size), desc="embeddings", disable=not progress):
            enc = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"][..., None].to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean.double(), dim=-1).cpu().numpy())
    return np.concatenate(out)


def embedding_fidelity(model, reference, tokenizer, texts, **kwargs) -> float:
    """Mean cosine similarity between the sentence embeddings of ``model`` and ``reference``.

    Parameters
    ----------
    model, reference : transformers encoders
        Typically the quantized model and the unquantized one (or precomputed reference
        embeddings: an ndarray of shape (len(texts), hidden) with unit rows).
    tokenizer : transformers tokenizer
    texts : list of str
        Held-out texts (not the calibration text).
    **kwargs
        Passed to :func:`sentence_embeddings`.

    Returns
    -------
    float
        Mean over texts of cos(e_model, e_reference); 1.0 means identical embeddings.
    """
    a = sentence_embeddings(model, tokenizer, texts, **kwargs)
    b = reference if isinstance(reference, np.ndarray) else sentence_embeddings(reference, tokenizer, texts, **kwargs)
    if b.shape != a.shape:
        raise ValueError(f"reference embeddings have shape {b.shape}, expected {a.shape}")
    return float(np.mean(np.sum(a * b, axis=1)))


def lee_corpus():
    """The Lee corpus: 50 news documents and the 50 x 50 human similarity matrix.

    Read from gensim's test data (``lee.cor``, latin-1; ``similarities0-1.txt``, upper
    triangular, symmetrised here). Provided by M. D. Lee to gensim ([Lee]).

    Returns
    -------
    docs : list of str
        The 50 documents.
    S : ndarray of shape (50, 50)
        Symmetric human similarity ratings in [0, 1].

    Raises
    ------
    ImportError
        If gensim is not installed (``pip install gensim``).
    """
    utils = _require("gensim.test.utils", "pip install gensim")
    with open(utils.datapath(LEE_DOCS), encoding="latin-1") as f:
        docs = [line.strip() for line in f if line.strip()]
    S = np.loadtxt(utils.datapath(LEE_SIMS))
    S = np.triu(S) + np.triu(S, 1).T
    if len(docs) != 50 or S.shape != (50, 50):
        raise ValueError(f"unexpected Lee corpus: {len(docs)} documents, similarity matrix {S.shape}")
    return docs, S


def lee_correlation(model, tokenizer, **kwargs) -> dict:
    """Correlation of embedding cosines with human similarity judgments on the Lee corpus.

    Parameters
    ----------
    model : transformers encoder
    tokenizer : transformers tokenizer
    **kwargs
        Passed to :func:`sentence_embeddings`.

    Returns
    -------
    dict
        ``{"pearson": r, "spearman": rho}`` over the 1225 pairs of the strict upper
        triangle (all-MiniLM-L6-v2 unquantized: Pearson 0.656, Spearman 0.508).
    """
    from scipy.stats import pearsonr, spearmanr

    docs, S = lee_corpus()
    E = sentence_embeddings(model, tokenizer, docs, **kwargs)
    iu = np.triu_indices(len(docs), 1)
    C = (E @ E.T)[iu]
    return {"pearson": float(pearsonr(C, S[iu])[0]), "spearman": float(spearmanr(C, S[iu])[0])}


def generation_speed(model, tokenizer, prompt: str = "The capital of France is", new_tokens: int = 64,
                     *, cuda_graph: bool = True, warmup: int = 1) -> dict:
    """Batch-1 greedy generation speed in tokens per second.

    The prompt is run once (prefill, not timed; it yields the first new token); then the
    ``new_tokens - 1`` remaining greedy decode steps are timed, each feeding back the
    argmax token, and ``tokens_per_s = (new_tokens - 1) / seconds``. On CPU the steps are a plain loop over
    a dynamic KV cache. On CUDA with ``cuda_graph=True`` one decode step over a static KV
    cache (``transformers.StaticCache``) is captured into a CUDA graph and replayed;
    if capture fails (a model or kernel that does not support it) the plain loop is timed
    instead and the reason is returned in ``"graph_error"``.

    Parameters
    ----------
    model : transformers causal LM
    tokenizer : transformers tokenizer
    prompt : str
    new_tokens : int, default 64
        Tokens generated (>= 2).
    cuda_graph : bool, default True
        Use CUDA-graph replay on a CUDA device.
    warmup : int, default 1
        Untimed full generations before the timed one.

    Returns
    -------
    dict
        ``tokens_per_s``, ``seconds``, ``new_tokens``, ``cuda_graph`` (whether the
        timed loop replayed a graph), ``text`` (prompt + greedy continuation),
        ``device``, and ``graph_error`` when the graph path fell back.
    """
    torch = _torch()
    new_tokens = _check_positive_int(new_tokens, "new_tokens", minimum=2)
    device = _model_device(model)
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    result = {"device": str(device), "new_tokens": new_tokens}
    model.eval()
    if device.type == "cuda" and cuda_graph:
        try:
            out, seconds = _generate_graph(model, ids, new_tokens, warmup)
            result["cuda_graph"] = True
        except Exception as e:  # documented fallback: report why
            result["graph_error"] = f"{type(e).__name__}: {e}"[:500]
            out, seconds = None, None
        if out is None:
            out, seconds = _generate_loop(model, ids, new_tokens, warmup)
            result["cuda_graph"] = False
    else:
        out, seconds = _generate_loop(model, ids, new_tokens, warmup)
        result["cuda_graph"] = False
    # the prefill yields the first new token (untimed); the timed steps yield the rest
    result.update(seconds=seconds, tokens_per_s=(new_tokens - 1) / seconds,
                  text=tokenizer.decode(torch.cat([ids[0], out]).tolist()))
    return result


def _cache_kw(model) -> str:
    """Keyword of the KV cache argument: ``cache`` in recent transformers (5.25 deprecates
    ``past_key_values``), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _sync(device):
    torch = _torch()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate_loop(model, ids, new_tokens, warmup):
    """Plain greedy loop with a dynamic KV cache; returns (new token ids, seconds of decode)."""
    torch = _torch()
    device = ids.device
    seconds = None
    kw = _cache_kw(model)
    with torch.inference_mode():
        for _ in range(warmup + 1):
            out = model(input_ids=ids, use_cache=True)
            cache = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            toks = [tok]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(new_tokens - 1):
                out = model(input_ids=tok, use_cache=True, **{kw: cache})
                cache = out.past_key_values
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                toks.append(tok)
            _sync(device)
            seconds = time.perf_counter() - t0
    return torch.cat(toks, 1)[0], seconds


def _generate_graph(model, ids, new_tokens, warmup):
    """Greedy decode replaying one captured CUDA graph per step over a StaticCache."""
    torch = _torch()
    from transformers import StaticCache

    device = ids.device
    kw = _cache_kw(model)
    P = ids.shape[1]
    cache = StaticCache(config=model.config, max_cache_len=P + new_tokens + 1)
    static_tok = torch.zeros((1, 1), dtype=torch.long, device=device)
    static_pos = torch.zeros((1,), dtype=torch.long, device=device)

    def step():
        return model(input_ids=static_tok, cache_position=static_pos, position_ids=static_pos[None],
                     use_cache=True, **{kw: cache}).logits[:, -1].argmax(-1, keepdim=True)

    with torch.inference_mode():
        prefill = model(input_ids=ids, cache_position=torch.arange(P, device=device),
                        use_cache=True, **{kw: cache})
        first = prefill.logits[:, -1].argmax(-1, keepdim=True)
        # warm up the step on a side stream (kernel compilation, cuBLAS handles), then capture
        s = torch.cuda.Stream(device)
        s.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(s):
            static_tok.copy_(first)
            static_pos.fill_(P)
            for _ in range(2):
                step()
        torch.cuda.current_stream(device).wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = step()
        seconds = None
        for _ in range(warmup + 1):
            static_tok.copy_(first)
            toks = [first.clone()]
            _sync(device)
            t0 = time.perf_counter()
            for i in range(new_tokens - 1):
                static_pos.fill_(P + i)
                graph.replay()
                static_tok.copy_(static_out)
                toks.append(static_out.clone())
            _sync(device)
            seconds = time.perf_counter() - t0
    return torch.cat(toks, 1)[0], seconds
