r"""Hessian capture: :math:`H = E[x x^T]` of each linear layer's inputs, from forward pre-hooks.

The proxy loss of a linear layer (:mod:`quipref.hessian`) needs the second moment of
its inputs over calibration tokens. This module collects it while the model (or one
transformer block) runs on calibration batches:

* a forward pre-hook on each selected ``nn.Linear`` receives the layer's input ``x``
  of shape (batch, seq, n) (or (batch, n));
* padding positions are dropped with the batch's attention mask (a (batch, seq) bool
  tensor), so ``H`` averages real tokens only;
* the rows are added to a :class:`quipref.hessian.HessianAccumulator` in float64
  (``sum += X^T X``, ``count += rows``) and the batch is forgotten: memory is one
  (n, n) float64 sum per input, whatever the number of tokens (streamed, as QTIP's
  ``register_input_H_hook`` and QuIP#'s Hessian scripts do [QTIP, App. A]);
* linears fed **the same input tensor** in the same forward pass (q/k/v of attention,
  gate/up of a gated MLP) share one accumulator: the tensor is recognised by identity
  (a weak reference, so a freed tensor whose address is reused is not mistaken for
  it), and the group is checked to be the same on every batch.

On CUDA the rows are passed to the accumulator as CuPy arrays (DLPack, no host copy):
``X^T X`` runs on the GPU and only the (n, n) sum comes back.

References
----------
.. [QuIP#] Tseng et al., arXiv 2402.04396, Sec. 2.2 (proxy loss, H = E[x x^T]).
.. [QTIP] Tseng, Sun, Hou, De Sa, arXiv 2406.11235, Sec. 4 (Hessians from calibration data).
"""
from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import torch

from ..hessian import HessianAccumulator

__all__ = ["CapturedHessian", "HessianCapture", "capture_hessians", "find_blocks",
           "linear_modules", "to_array"]


@dataclasses.dataclass
class CapturedHessian:
    """The captured second moment of one input, shared by the linears in ``group``.

    Attributes
    ----------
    H : ndarray of shape (n, n), float64
        :math:`\\frac{1}{N} \\sum_t x_t x_t^T` (symmetrised), undamped.
    count : int
        N, the number of input rows (real tokens) accumulated.
    group : tuple of str
        The module names that read this input (e.g. q, k and v projections).
    """

    H: np.ndarray
    count: int
    group: tuple


def to_array(t: torch.Tensor):
    """A detached torch tensor as a NumPy array (CPU) or a CuPy array (CUDA, via DLPack)."""
    t = t.detach()
    if t.is_cuda:
        import cupy as cp

        return cp.from_dlpack(t.contiguous())
    return t.cpu().numpy()


def linear_modules(model: torch.nn.Module) -> dict:
    """``{name: module}`` of every ``torch.nn.Linear`` in ``model``, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def find_blocks(model: torch.nn.Module):
    """Find the transformer blocks of a model: the ``ModuleList`` of repeated layers.

    The blocks are the ``torch.nn.ModuleList`` whose children all have the same class and
    contain ``nn.Linear`` layers, and which holds the most linear-layer parameters
    (``model.layers`` of a Llama model, ``encoder.layer`` of a BERT model).

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    prefix : str
        The ModuleList's name in ``model`` (e.g. ``"model.layers"``).
    blocks : torch.nn.ModuleList

    Raises
    ------
    ValueError
        No such ModuleList (the model is not a stack of blocks).
    """
    best, best_size = None, 0
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        if len({type(c) for c in mod}) != 1:
            continue
        size = sum(lin.weight.numel() for c in mod for lin in c.modules()
                   if isinstance(lin, torch.nn.Linear))
        if size > best_size:
            best, best_size = (name, mod), size
    if best is None:
        raise ValueError(f"{type(model).__name__} has no ModuleList of identical blocks containing "
                         f"nn.Linear layers; quantize_model needs a stack of transformer blocks")
    return best


class HessianCapture:
    """Forward pre-hooks that accumulate the input second moments of some linears.

    Use as a context manager around forward passes; set :attr:`mask` to the batch's
    (batch, seq) bool mask of real tokens before each forward (``None``: every row).

    Parameters
    ----------
    linears : dict of str to torch.nn.Linear
        The layers to capture, by name.

    Examples
    --------
    >>> with HessianCapture({"fc": layer}) as cap:        # doctest: +SKIP
    ...     cap.mask = attention_mask.bool()
    ...     model(input_ids, attention_mask=attention_mask)
    >>> cap.result()["fc"].H.shape                        # doctest: +SKIP
    """

    def __init__(self, linears: dict):
        self.linears = dict(linears)
        self.mask = None
        self._acc = {}       # leader name -> HessianAccumulator
        self._group = {}     # name -> leader name (fixed on the first batch)
        self._seen = {}      # this batch: id(tensor) -> (weakref, leader)
        self._handles = []

    def __enter__(self):
        for name, mod in self.linears.items():
            self._handles.append(mod.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False

    def new_batch(self, mask=None):
        """Start a batch: forget the input identities of the previous one, set the mask."""
        self._seen = {}
        self.mask = mask

    def _rows(self, x):
        m = self.mask
        if m is not None and x.ndim == 3 and tuple(x.shape[:2]) == tuple(m.shape):
            return x[m.to(x.device)]
        return x.reshape(-1, x.shape[-1])

    def _hook(self, name):
        def hook(module, args):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name}: expected a tensor input, got {type(x).__name__}")
            entry = self._seen.get(id(x))
            if entry is not None and entry[0]() is x:    # same tensor as an earlier linear
                leader = entry[1]
                known = self._group.setdefault(name, leader)
                if known != leader:
                    raise RuntimeError(f"{name} shared its input with {known!r} on an earlier batch "
                                       f"but with {leader!r} now; the model's data flow changed")
                return None
            leader = self._group.setdefault(name, name)
            if leader != name:
                raise RuntimeError(f"{name} shared its input with {leader!r} on an earlier batch "
                                   f"but not now; the model's data flow changed")
            self._seen[id(x)] = (weakref.ref(x), name)
            acc = self._acc.get(name)
            if acc is None:
                acc = self._acc[name] = HessianAccumulator(x.shape[-1])
            rows = self._rows(x.detach())
            acc.update(to_array(rows))
            return None
        return hook

    def result(self) -> dict:
        """``{name: CapturedHessian}`` for every captured linear (members of a group share one).

        Raises
        ------
        ValueError
            A linear never ran (it is not on the forward path of the calibration
            batches) or received no real token.
        """
        out = {}
        groups = {}
        for name, leader in self._group.items():
            groups.setdefault(leader, []).append(name)
        for leader, names in groups.items():
            acc = self._acc[leader]
            if acc.count == 0:
                raise ValueError(f"{leader} received no calibration token (all padding?)")
            H = acc.hessian()
            cap = CapturedHessian((H + H.T) / 2, acc.count, tuple(names))
            for n in names:
                out[n] = cap
        missing = [n for n in self.linears if n not in out]
        if missing:
            raise ValueError(f"these layers never ran on the calibration batches: {missing}")
        return out


def capture_hessians(model, calibration, *, modules=None, tokenizer=None, batch_size: int = 8,
                     max_length: int = 512, progress: bool = True) -> dict:
    """Capture the input Hessians of a model's linears in one pass of the *unquantized* model.

    This is the plain (non-sequential) capture: every selected layer sees the original
    model's activations. :func:`quipref.pipeline.quantize_model` instead captures block
    by block through the blocks already quantized (the papers' order).

    Parameters
    ----------
    model : torch.nn.Module
    calibration : torch.LongTensor of shape (nsamples, seqlen) or list of str
        Token ids (every position real) or texts (tokenized with ``tokenizer``,
        truncated to ``max_length``, padded per batch; padding excluded).
    modules : see :func:`quipref.pipeline.select_modules` (default: the block linears)
    tokenizer : transformers tokenizer, optional
        Needed for texts unless ``model`` came from :func:`~quipref.pipeline.load_model`.
    batch_size : int, default 8
    max_length : int, default 512
    progress : bool, default True

    Returns
    -------
    dict of str to CapturedHessian
        Members of a shared-input group map to the same object.

    Raises
    ------
    ValueError, TypeError
        Bad calibration or module selection (see :func:`quipref.pipeline.quantize_model`).
    """
    from .quantize import _batches, select_modules

    names = select_modules(model, modules)
    lin = linear_modules(model)
    batches = _batches(model, calibration, tokenizer, batch_size, max_length)
    from tqdm.auto import tqdm

    with HessianCapture({n: lin[n] for n in names}) as cap, torch.no_grad():
        for ids, mask in tqdm(batches, desc="capture", disable=not progress, leave=False):
            cap.new_batch(None if mask is None else mask.bool())
            kw = {} if mask is None else {"attention_mask": mask}
            model(input_ids=ids, **kw)
    return cap.result()
