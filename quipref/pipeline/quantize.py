r"""``quantize_model``: quantize a torch model's linear layers layer by layer, in the papers' order.

The flow (GPTQ [OPTQ, Sec. 4 "Step 3"], QuIP [QuIP, Sec. 6], QuIP# [QuIP#, Sec. 5] and
QTIP [QTIP, Sec. 4] all quantize a transformer this way):

1. run the model on the calibration batches up to the first transformer block and keep
   that block's inputs (hidden states and keyword arguments: attention mask, position
   embeddings, ...);
2. for each block in order: capture the input Hessians of its selected linears from the
   block's *current* inputs (:mod:`quipref.pipeline.capture`), quantize each linear with
   ``backend.quantize_linear(W, H, method, bits, seed=..., **options)``, replace it by a
   :class:`~quipref.pipeline.QuantLinear`, then run the calibration inputs through the
   now-quantized block: its outputs are the next block's inputs, so later blocks are
   calibrated on the activations of the quantized model (errors are not compounded
   silently);
3. selected linears outside the blocks (e.g. a BERT pooler or an untied LM head, never
   selected by default) are captured last, through the quantized model.

The core knows no method: every method that ``backend.quantize_linear`` accepts works
(with its options passed through), and a new one (ICQuant) joins by being added there.

References
----------
.. [OPTQ] Frantar et al., arXiv 2210.17323, Sec. 4.
.. [QuIP] Chee et al., arXiv 2307.13304, Sec. 6.
.. [QuIP#] Tseng et al., arXiv 2402.04396, Sec. 5.
.. [QTIP] Tseng, Sun, Hou, De Sa, arXiv 2406.11235, Sec. 4.
"""
from __future__ import annotations

import contextlib

import hashlib
import importlib
import inspect
import re
import time
import types
import weakref

import numpy as np
import torch

from .capture import HessianCapture, find_blocks, linear_modules, to_array

__all__ = ["quantize_model", "resolve_backend", "select_modules", "module_seed"]

_TOKENIZERS = weakref.WeakKeyDictionary()  # model -> tokenizer (set by load_model)


def remember_tokenizer(model, tokenizer) -> None:
    """Let :func:`quantize_model` tokenize text calibration for ``model`` without a
    ``tokenizer=`` argument (:func:`~quipref.pipeline.load_model` calls it)."""
    _TOKENIZERS[model] = tokenizer


def resolve_backend(backend) -> types.ModuleType:
    """The backend module: ``"fast"`` -> :mod:`fast`, ``"quipref"`` -> :mod:`quipref`, or a module.

    A backend is any module (or object) with ``quantize_linear(W, H, method, bits, seed,
    **options)`` returning a :class:`quipref.QuantizedLinear`; ``methods.METHODS`` (name
    -> bit range) is used for early error messages when present, and
    ``formats.from_tensors`` by :func:`~quipref.pipeline.load_quantized`.

    Raises
    ------
    ValueError
        An unknown backend name, or an object without ``quantize_linear``.
    """
    if isinstance(backend, str):
        if backend not in ("fast", "quipref"):
            raise ValueError(f"backend must be 'fast', 'quipref' or a module, got {backend!r}")
        return importlib.import_module(backend)
    if not callable(getattr(backend, "quantize_linear", None)):
        raise ValueError(f"backend {backend!r} has no quantize_linear(W, H, method, bits, seed, **options); "
                         f"pass 'fast', 'quipref' or such a module")
    return backend


def backend_name(backend) -> str:
    """The importable name of a backend module (stored in the saved config)."""
    return getattr(backend, "__name__", type(backend).__name__)


def module_seed(seed: int, name: str) -> int:
    """The seed of one module: the first 63 bits of SHA-256(``f"{seed}/{name}"``).

    Stable across runs, processes and Python versions (unlike ``hash()``), and
    different for every module, so no two layers share random signs.
    """
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def select_modules(model, modules=None) -> list:
    """Names of the ``nn.Linear`` modules to quantize, in module order.

    Parameters
    ----------
    model : torch.nn.Module
    modules : None, str or list of str
        ``None``: every ``nn.Linear`` inside the transformer blocks
        (:func:`~quipref.pipeline.capture.find_blocks`); the LM head, embeddings and
        other linears outside the blocks (a BERT pooler) are skipped, as every library
        does by default. Otherwise each entry is an exact module name, or a regular
        expression with the prefix ``"re:"`` that must match the *whole* name
        (:func:`re.fullmatch`), e.g. ``"re:model\\.layers\\.[01]\\..*"``.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        An entry that names no ``nn.Linear`` (or a regex matching none), an invalid
        regex, or an empty selection.
    TypeError
        ``modules`` of another type.
    """
    lin = linear_modules(model)
    if modules is None:
        prefix, _ = find_blocks(model)
        names = [n for n in lin if n.startswith(prefix + ".")]
        if not names:
            raise ValueError(f"no nn.Linear inside {prefix}")
        return names
    if isinstance(modules, str):
        modules = [modules]
    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
        raise TypeError(f"modules must be None, a str or a list of str, got {modules!r}")
    chosen = set()
    for pat in modules:
        if pat.startswith("re:"):
            try:
                rx = re.compile(pat[3:])
            except re.error as exc:
                raise ValueError(f"modules entry {pat!r} is not a valid regular expression: {exc}") from exc
            hit = {n for n in lin if rx.fullmatch(n)}
            if not hit:
                raise ValueError(f"modules entry {pat!r} matches no nn.Linear (it must match the whole "
                                 f"name, e.g. 're:model\\.layers\\.0\\..*'); linears are named like "
                                 f"{list(lin)[:3]}")
        else:
            if pat not in lin:
                raise ValueError(f"modules entry {pat!r} is not the name of an nn.Linear; use an exact "
                                 f"name such as {list(lin)[:2]} or a regex with the 're:' prefix")
            hit = {pat}
        chosen |= hit
    return [n for n in lin if n in chosen]


# ---------------------------------------------------------------------------------------
# calibration batches
# ---------------------------------------------------------------------------------------
def _model_device(model) -> torch.device:
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


def _vocab_size(model):
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return None if emb is None else emb.weight.shape[0]


def _batches(model, calibration, tokenizer, batch_size, max_length) -> list:
    """``[(input_ids, attention_mask or None)]`` on the model's device."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = _model_device(model)
    if isinstance(calibration, torch.Tensor):
        x = calibration
        if x.dtype not in (torch.int64, torch.int32) or x.ndim != 2 or x.numel() == 0:
            raise ValueError(
                f"calibration as a tensor must be a non-empty 2-D integer tensor of token ids "
                f"(nsamples, seqlen), got dtype {x.dtype} and shape {tuple(x.shape)}; for one "
                f"sequence use ids[None], or pass a list of strings")
        vocab = _vocab_size(model)
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or (vocab is not None and hi >= vocab):
            raise ValueError(f"calibration token ids must lie in [0, {vocab}) (the vocabulary), got "
                             f"values in [{lo}, {hi}]")
        x = x.to(device=dev, dtype=torch.long)
        return [(x[i:i + batch_size], None) for i in range(0, x.shape[0], batch_size)]
    if isinstance(calibration, str) or not isinstance(calibration, (list, tuple)) or not calibration \
            or not all(isinstance(t, str) and t.strip() for t in calibration):
        raise ValueError(
            "calibration must be a LongTensor of token ids (nsamples, seqlen) or a non-empty list of "
            f"non-empty strings, got {type(calibration).__name__}"
            + (" (a single string: wrap it in a list)" if isinstance(calibration, str) else ""))
    if tokenizer is None:
        tokenizer = _TOKENIZERS.get(model)
    if tokenizer is None:
        raise ValueError("calibration is a list of strings: pass tokenizer= (the model's tokenizer) "
                         "or token ids from quipref.pipeline.calibration_tokens(tokenizer, ...)")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    pad_saved = tokenizer.pad_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        out = []
        for i in range(0, len(calibration), batch_size):
            enc = tokenizer(list(calibration[i:i + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            out.append((enc["input_ids"].to(dev), enc["attention_mask"].to(dev)))
    finally:
        tokenizer.pad_token = pad_saved
    return out


def _forward_kwargs(model, mask):
    kw = {} if mask is None else {"attention_mask": mask}
    if "use_cache" in inspect.signature(model.forward).parameters:
        kw["use_cache"] = False
    return kw


class _Stop(Exception):
    """Raised by the pre-hook of block 0: the rest of the model need not run."""


def _block_inputs(model, block, batches):
    """Run the model to ``block`` on every batch; ``[(args, kwargs)]`` of the block's calls."""
    got = []

    def hook(module, args, kwargs):
        got.append((args, kwargs))
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids, mask in batches:
            try:
                model(input_ids=ids, **_forward_kwargs(model, mask))
            except _Stop:
                pass
            else:
                raise RuntimeError("the model's forward pass never reached its first transformer block")
    finally:
        handle.remove()
    return got


def _hidden(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args, kwargs, h):
    if args:
        return (h,) + tuple(args[1:]), kwargs
    return args, {**kwargs, "hidden_states": h}


def _run_block(block, calls):
    """The block's outputs (hidden states) on each stored call."""
    outs = []
    for args, kwargs in calls:
        out = block(*args, **kwargs)
        outs.append(out[0] if isinstance(out, (tuple, list)) else out)
    return outs


# ---------------------------------------------------------------------------------------
# one layer
# ---------------------------------------------------------------------------------------
def _check_method(backend, method, bits):
    table = getattr(getattr(backend, "methods", None), "METHODS", None)
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if isinstance(table, dict):
        if method not in table:
            raise ValueError(f"unknown method {method!r}; choose one of {sorted(table)}")
        rng = table[method]
        if isinstance(rng, tuple) and len(rng) == 2 and not isinstance(bits, bool) \
                and isinstance(bits, (int, np.integer)) and not rng[0] <= bits <= rng[1]:
            raise ValueError(f"bits={bits} is out of range for method {method!r}: it supports "
                             f"{rng[0]}..{rng[1]} bits")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an integer, got {bits!r}")


def _quantize_one(backend, name, linear, cap, method, bits, seed, options):
    W = linear.weight.detach().to(torch.float64)
    if W.is_cuda:
        import cupy as cp

        W = to_array(W)
        H = cp.asarray(cap.H)
    else:
        W = W.cpu().numpy()
        H = cap.H
    try:
        layer = backend.quantize_linear(W, H, method, bits, seed=seed, **options)
    except ValueError as exc:
        m, n = tuple(linear.weight.shape)
        raise ValueError(f"{name} (weight {m} x {n}): {exc}") from exc
    return layer


def _replace(model, name, new):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)


def _context(distributed):
    """None (one process) or the :class:`~quipref.pipeline.distributed.Context` given by ``run``."""
    if distributed is False or distributed is None:
        return None
    from .distributed import Context

    if not isinstance(distributed, Context):
        raise TypeError(f"distributed must be True or False, got {distributed!r}")
    return distributed


def _result(cap, ctx):
    """The captured Hessians, summed over the ranks when distributed."""
    return cap.result() if ctx is None else ctx.reduce_hessians(cap)


@contextlib.contextmanager
def _dense_forward(model):
    """While the flow recomputes block outputs, every CPU :class:`QuantLinear` of ``model``
    (earlier ones and those this call creates) runs from a dense float32 ``Ŵ`` decoded once
    (``cache=True``) instead of decoding the codes at every call: the same ``Ŵ``, 3-6x
    faster forwards. Afterwards each module gets back its own ``cache`` setting and drops
    the dense copy it did not ask for. The flag is read at exit, so modules created inside
    the block are included."""
    from .qlinear import QuantLinear

    before = {id(m): m.cache for m in model.modules() if isinstance(m, QuantLinear)}
    QuantLinear._flow_cache = True
    try:
        for m in model.modules():
            if isinstance(m, QuantLinear):
                m.cache = True
        yield
    finally:
        QuantLinear._flow_cache = False
        for m in model.modules():
            if isinstance(m, QuantLinear):
                m.cache = before.get(id(m), False)
                if not m.cache:
                    m._dense = None


def quantize_model(model, method: str, bits: int, calibration, *, backend="fast", modules=None,
                   seed: int = 0, progress: bool = True, tokenizer=None, batch_size: int = 8,
                   max_length: int = 512, distributed=False, **options):
    r"""Quantize a torch model's linear layers in place, block by block (the papers' order).

    Parameters
    ----------
    model : torch.nn.Module
        A stack of transformer blocks (``transformers`` Llama, BERT, ... models), float
        weights on one device (CPU or CUDA), in eval mode.
    method : str
        A method of ``backend.quantize_linear`` (``"rtn"``, ``"gptq"``, ``"quip"``,
        ``"quip#"``, ``"qtip"``, ...).
    bits : int
        Bits per weight, as ``quantize_linear`` takes them.
    calibration : torch.LongTensor of shape (nsamples, seqlen) or list of str
        Token ids (every position is a real token), e.g. from
        :func:`~quipref.pipeline.calibration_tokens`, or texts (tokenized with
        ``tokenizer``, each truncated to ``max_length`` tokens, padded per batch; the
        padding is excluded from the Hessians by the attention mask).
    backend : {"fast", "quipref"} or module, default "fast"
        Where ``quantize_linear`` comes from; both give the same codes for the same
        seed. On a CUDA model, W and H are passed as CuPy arrays, so the fast backend
        quantizes each layer on the GPU.
    modules : None, str or list of str
        Which linears (:func:`select_modules`): default every ``nn.Linear`` inside the
        transformer blocks; exact names, or ``"re:<regex>"`` matched against the whole
        module name.
    seed : int, default 0
        Module ``name`` gets ``seed=module_seed(seed, name)`` (SHA-256 of both; stable).
    progress : bool, default True
        tqdm progress bars (blocks, layers).
    tokenizer : transformers tokenizer, optional
        For text calibration; default: the tokenizer :func:`~quipref.pipeline.load_model`
        returned with this model.
    batch_size : int, default 8
        Calibration sequences per forward pass.
    max_length : int, default 512
        Truncation of text calibration.
    distributed : bool, default False
        Run on every rank of the initialized ``torch.distributed`` default process group
        (:mod:`quipref.pipeline.distributed`): Hessians captured data parallel (each rank
        its share of the batches, one all-reduce), the linears of each block quantized
        layer parallel, the same codes as one process; every rank must call it with the
        same model and arguments, and every rank returns the whole quantized model.
        Progress bars on rank 0 only.
    **options
        Passed unchanged to ``backend.quantize_linear`` (e.g. ``L=10`` for ``"qtip"``,
        ``percdamp=0.01`` for ``"gptq"``).

    Returns
    -------
    torch.nn.Module
        ``model`` itself, with every selected ``nn.Linear`` replaced by a
        :class:`~quipref.pipeline.QuantLinear` (bias kept) and the attribute
        ``model.quipref_quantization`` holding the configuration that
        :func:`~quipref.pipeline.save_quantized` writes as ``quantization_config``.

    Raises
    ------
    ValueError
        Unknown method (the message lists the methods), bits out of range, bad
        calibration (wrong dtype or shape, ids outside the vocabulary, texts without a
        tokenizer), a ``modules`` entry that matches no linear, a layer the method
        cannot quantize (the message names the module and its shape, e.g. a width with
        no Hadamard matrix: it lists the supported sizes and the size to pad to), or an
        unknown option (raised at the first layer).
    TypeError
        ``method`` not a str, ``bits`` not an integer, ``modules`` of another type.
    RuntimeError
        ``distributed=True`` without an initialized process group;
        :class:`~quipref.pipeline.distributed.DistributedError` on every rank when
        another rank failed (with its message) or a rank timed out.

    Notes
    -----
    Memory: the calibration hidden states of one block (inputs and outputs, float32) plus
    one (n, n) float64 Hessian per distinct layer input of the block.
    """
    from tqdm.auto import tqdm

    from .qlinear import QuantLinear

    if distributed is True:
        from .distributed import run

        return run(quantize_model, model, method, bits, calibration, backend=backend, modules=modules,
                   seed=seed, progress=progress, tokenizer=tokenizer, batch_size=batch_size,
                   max_length=max_length, **options)
    ctx = _context(distributed)
    be = resolve_backend(backend)
    _check_method(be, method, bits)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    names = select_modules(model, modules)
    batches = _batches(model, calibration, tokenizer, batch_size, max_length)
    mine = batches  # this rank's share (all of them in one process)
    if ctx is not None:
        ctx.agree(model, names, batches, method=method, bits=bits, seed=seed, backend=backend_name(be),
                  options=_jsonable(options), batch_size=batch_size, max_length=max_length)
        mine = ctx.share(batches)
    lin = linear_modules(model)
    prefix, blocks = find_blocks(model)
    t0 = time.perf_counter()

    per_block = [[] for _ in blocks]
    outside = []
    for n in names:
        m = re.match(re.escape(prefix) + r"\.(\d+)\.", n)
        (per_block[int(m.group(1))] if m else outside).append(n)
    last = max((i for i, b in enumerate(per_block) if b), default=-1)
    records = {}

    def quantize_group(group_names, caps, bar):
        layers = {}
        for n in (group_names if ctx is None else ctx.assign(group_names, lin)):
            bar.set_postfix_str(n, refresh=False)
            layers[n] = _quantize_one(be, n, lin[n], caps[n], method, bits, module_seed(seed, n), options)
        if ctx is not None:
            layers = ctx.gather_layers(f"quantize {group_names[0]}...", layers, be)
        for n in group_names:
            s = module_seed(seed, n)
            layer = layers[n]
            old = lin[n]
            q = QuantLinear(layer, old.bias)
            q.to(old.weight.device)
            _replace(model, n, q)
            records[n] = {"seed": s, "shared_input": list(caps[n].group), "tokens": caps[n].count,
                          "bits_per_weight": float(layer.bits_per_weight)}
            bar.update(1)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _dense_forward(model), tqdm(total=len(names), desc=f"{method} {bits}-bit", unit="layer",
                                   disable=not progress) as bar:
            if last >= 0:
                calls = _block_inputs(model, blocks[0], mine)
                for i in range(last + 1):
                    block = blocks[i]
                    if per_block[i]:
                        with HessianCapture({n: lin[n] for n in per_block[i]}) as cap:
                            for (ids, mask), (args, kwargs) in zip(mine, calls):
                                cap.new_batch(None if mask is None else mask.bool())
                                block(*args, **kwargs)
                        quantize_group(per_block[i], _result(cap, ctx), bar)
                    if i < last or outside:
                        outs = _run_block(block, calls)
                        calls = [_with_hidden(a, k, h) for (a, k), h in zip(calls, outs)]
                del calls
            if outside:
                with HessianCapture({n: lin[n] for n in outside}) as cap:
                    for ids, mask in mine:
                        cap.new_batch(None if mask is None else mask.bool())
                        model(input_ids=ids, **_forward_kwargs(model, mask))
                quantize_group(outside, _result(cap, ctx), bar)
    finally:
        model.train(was_training)

    all_linear = list(linear_modules(model))  # what is still nn.Linear
    ntok = sum(int(ids.numel() if mask is None else mask.sum()) for ids, mask in batches)
    model.quipref_quantization = {
        "quant_method": "quipref",
        "method": method,
        "bits": int(bits),
        "seed": int(seed),
        "backend": backend_name(be),
        "options": _jsonable(options),
        "modules": records,
        "modules_to_not_convert": all_linear,
        "calibration": {"sequences": sum(int(ids.shape[0]) for ids, _ in batches), "tokens": ntok},
        "quantization_seconds": time.perf_counter() - t0,
    }
    return model
