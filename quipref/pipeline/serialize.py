r"""Save and load a quantized model: safetensors shards + ``config.json`` with a ``quantization_config``.

A saved directory looks like a Hugging Face checkpoint::

    config.json                          model config + "quantization_config" (below)
    model.safetensors.index.json         {"metadata": {...}, "weight_map": {tensor: shard}}
    model-00001-of-0000N.safetensors     the tensors, in shards of at most max_shard_bytes
    tokenizer.json, tokenizer_config.json, ...   (when a tokenizer is saved)

Tensors: every quantized module ``<name>`` is stored through
:meth:`quipref.QuantizedLinear.to_tensors` as ``<name>.codes`` (bit-packed codes),
``<name>.quantizer.*``, ``<name>.input_transform.*``, ``<name>.output_transform.*``
(sign vectors packed to 1 bit) and ``<name>.rescale``; everything else is the model's
ordinary state dict (``<name>.bias``, norms, embeddings, ...). A tensor tied to an
earlier one (SmolLM2's ``lm_head.weight`` = ``model.embed_tokens.weight``) is stored
once and listed in the index's ``metadata.aliases``.

``quantization_config`` (the shape HF uses for ``quant_method`` checkpoints)::

    {"quant_method": "quipref", "format_version": 1, "layer_format_version": 1,
     "method": "quip#", "bits": 2, "seed": 0, "backend": "fast", "options": {...},
     "modules": {"model.layers.0.self_attn.q_proj":
                    {"seed": ..., "bits_per_weight": ..., "shared_input": [...], "tokens": ...,
                     "layer": <the to_tensors() config>, "tensors": ["codes", ...]}, ...},
     "modules_to_not_convert": ["lm_head"], "calibration": {...}, ...}

Integrity: the index's ``metadata.files`` holds the SHA-256 of every other file
(shards, config, tokenizer files), checked on load. The directory is written under a
temporary name beside the target, every file and the directory are fsync'ed, and only
then is it renamed to the target name: a crash leaves a hidden ``.<name>.tmp-*``
directory, never a directory that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_quantized", "load_quantized", "PIPELINE_FORMAT_VERSION", "INDEX_NAME"]

#: version of the directory layout and of ``quantization_config``; load refuses others
PIPELINE_FORMAT_VERSION = 1
FORMAT_NAME = "quipref.pipeline"
INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _qmodules(model):
    from .qlinear import QuantLinear

    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def _state_tensors(model, skip_prefixes=()) -> tuple[dict, dict]:
    """The model's state dict as NumPy arrays, tied tensors once; (tensors, aliases)."""
    out, aliases, seen = {}, {}, {}
    for k, t in model.state_dict().items():
        t = t.detach()
        if t.dtype == torch.bfloat16:
            raise ValueError(f"{k} is bfloat16, which NumPy (and this format) cannot hold; "
                             f"convert the model with model.float() before saving")
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype) if t.numel() else None
        if key is not None and key in seen:
            aliases[k] = seen[key]
            continue
        if key is not None:
            seen[key] = k
        out[k] = np.ascontiguousarray(t.cpu().numpy())
    return out, aliases


def save_quantized(model, directory, tokenizer=None, *, max_shard_bytes: int = 2 * 1024**3,
                   overwrite: bool = False) -> Path:
    """Write a quantized model (after :func:`~quipref.pipeline.quantize_model`) to ``directory``.

    Parameters
    ----------
    model : torch.nn.Module
        A ``transformers`` model whose linears were replaced by
        :class:`~quipref.pipeline.QuantLinear` (it carries ``quipref_quantization``).
    directory : str or os.PathLike
        Target directory (created; its parent must exist).
    tokenizer : transformers tokenizer, optional
        Saved beside the model (default: the one :func:`~quipref.pipeline.load_model`
        returned with this model, if any).
    max_shard_bytes : int, default 2 GiB
        Largest shard (a single tensor larger than this gets a shard of its own).
    overwrite : bool, default False
        Replace an existing directory (the old one is removed only after the new one is
        complete).

    Returns
    -------
    pathlib.Path
        ``directory``.

    Raises
    ------
    ValueError
        The model has no quantized module or no ``quipref_quantization`` record.
    FileExistsError
        ``directory`` exists and ``overwrite`` is False.
    """
    from safetensors.numpy import save_file

    from .quantize import _TOKENIZERS

    directory = Path(directory)
    qconf = getattr(model, "quipref_quantization", None)
    qmods = _qmodules(model)
    if not qmods or not isinstance(qconf, dict):
        raise ValueError("model has no quantized modules (QuantLinear) or no quipref_quantization record; "
                         "run quipref.pipeline.quantize_model(model, ...) first")
    if not hasattr(model, "config") or not hasattr(model.config, "to_dict"):
        raise ValueError("save_quantized needs a transformers model (with .config) to rebuild it on load")
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
    if not directory.parent.is_dir():
        raise FileNotFoundError(f"the parent directory of {directory} does not exist")
    if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be a positive integer, got {max_shard_bytes!r}")

    tensors, aliases = _state_tensors(model)
    modules = {}
    for name, q in qmods.items():
        lt, lc = q.layer.to_tensors()
        for k, a in lt.items():
            full = f"{name}.{k}"
            if full in tensors:
                raise ValueError(f"tensor name clash: {full} is both a layer tensor and a state-dict entry")
            tensors[full] = np.ascontiguousarray(a)
        rec = dict(qconf.get("modules", {}).get(name, {}))
        rec.update(layer=lc, tensors=sorted(lt))
        modules[name] = rec
    from .. import formats

    qc = dict(qconf)
    qc.update(quant_method="quipref", format_version=PIPELINE_FORMAT_VERSION,
              layer_format_version=formats.FORMAT_VERSION, modules=modules)
    config = model.config.to_dict()
    if not config.get("architectures"):  # e.g. a model read from GGUF: record its class
        config["architectures"] = [type(model).__name__]
    config["quantization_config"] = qc

    # shards, in a stable order
    shards, cur, size = [], {}, 0
    for k in sorted(tensors):
        nb = tensors[k].nbytes
        if cur and size + nb > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = tensors[k]
        size += nb
    shards.append(cur)

    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(tmp / fname), metadata={"format": FORMAT_NAME})
            weight_map.update({k: fname for k in shard})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        tok = tokenizer if tokenizer is not None else _TOKENIZERS.get(model)
        if tok is not None:
            tok.save_pretrained(str(tmp))
        files = {}
        for p in sorted(tmp.iterdir()):
            if p.is_file():
                _fsync_file(p)
                files[p.name] = _sha256(p)
        index = {"metadata": {"format": FORMAT_NAME, "format_version": PIPELINE_FORMAT_VERSION,
                              "total_size": int(sum(a.nbytes for a in tensors.values())),
                              "files": files, "aliases": aliases},
                 "weight_map": weight_map}
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True))
        _fsync_file(tmp / INDEX_NAME)
        _fsync_dir(tmp)
        if directory.exists():
            old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _read_index(directory: Path) -> dict:
    path = directory / INDEX_NAME
    if not path.is_file():
        raise ValueError(f"{directory} is not a complete quipref model directory: {INDEX_NAME} is missing "
                         f"(was it written by quipref.pipeline.save_quantized, and did the save finish?)")
    try:
        index = json.loads(path.read_text())
        meta = index["metadata"]
        files, weight_map = meta["files"], index["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is corrupt (not the index save_quantized writes): {exc}") from exc
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a {FORMAT_NAME} index (format={meta.get('format')!r})")
    if meta.get("format_version") != PIPELINE_FORMAT_VERSION:
        raise ValueError(f"{directory} has format version {meta.get('format_version')!r}; this quipref "
                         f"reads version {PIPELINE_FORMAT_VERSION}. Use the quipref version that wrote it.")
    for name, digest in files.items():
        p = directory / name
        if not p.is_file():
            raise ValueError(f"{directory} is incomplete: {name} is missing")
        if _sha256(p) != digest:
            raise ValueError(f"{p} is corrupted or truncated: its SHA-256 does not match the index")
    for fname in set(weight_map.values()):
        if fname not in files:
            raise ValueError(f"{path} is corrupt: shard {fname} has no checksum")
    return index


def _build_model(config: dict):
    import transformers

    mtype = config.get("model_type")
    archs = config.get("architectures") or []
    if mtype not in transformers.CONFIG_MAPPING or not archs or not hasattr(transformers, archs[0]):
        raise ValueError(f"config.json names model_type={mtype!r}, architectures={archs!r}, which this "
                         f"transformers cannot build")
    cfg = transformers.CONFIG_MAPPING[mtype].from_dict(config)
    cls = getattr(transformers, archs[0])
    model = cls(cfg)
    return model.float().eval()


def load_quantized(directory, backend="fast", device="cpu"):
    """Rebuild a model saved by :func:`save_quantized`, bit-exactly.

    Parameters
    ----------
    directory : str or os.PathLike
    backend : {"fast", "quipref"} or module, default "fast"
        Whose ``formats.from_tensors`` rebuilds the layers (both decode to the same Ŵ;
        ``"fast"`` gives layers with the fused CUDA path).
    device : str or torch.device, default "cpu"

    Returns
    -------
    model : torch.nn.Module
        The ``transformers`` model with :class:`~quipref.pipeline.QuantLinear` modules
        (eval mode, float32), its ``quipref_quantization`` restored.
    tokenizer : transformers tokenizer or None
        If one was saved.

    Raises
    ------
    FileNotFoundError
        No directory.
    ValueError
        Incomplete, corrupt or truncated files (checksums), an unknown format version,
        or a config this library or transformers cannot rebuild.
    """
    from safetensors.numpy import load_file

    from .qlinear import QuantLinear
    from .quantize import _replace, resolve_backend

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no quantized model directory at {directory}")
    be = resolve_backend(backend)
    from_tensors = getattr(getattr(be, "formats", None), "from_tensors", None)
    if from_tensors is None:
        raise ValueError(f"backend {backend!r} has no formats.from_tensors to rebuild layers")
    index = _read_index(directory)
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
        qc = config.pop("quantization_config")
    except (json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{directory / CONFIG_NAME} has no valid quantization_config: {exc}") from exc
    if qc.get("quant_method") != "quipref" or qc.get("format_version") != PIPELINE_FORMAT_VERSION:
        raise ValueError(f"{directory}: quantization_config has quant_method={qc.get('quant_method')!r}, "
                         f"format_version={qc.get('format_version')!r}; expected 'quipref' and "
                         f"{PIPELINE_FORMAT_VERSION}")
    from .. import formats

    if qc.get("layer_format_version") != formats.FORMAT_VERSION:
        raise ValueError(f"{directory}: layers use format version {qc.get('layer_format_version')!r}; this "
                         f"quipref reads {formats.FORMAT_VERSION}")
    tensors = {}
    for fname in sorted(set(index["weight_map"].values())):
        try:
            tensors.update(load_file(str(directory / fname)))
        except Exception as exc:  # safetensors raises its own types
            raise ValueError(f"{directory / fname} is not a readable safetensors file: {exc}") from exc

    model = _build_model(config)
    for name, rec in qc["modules"].items():
        try:
            lin = model.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"quantized module {name} does not exist in the rebuilt model") from exc
        keys = rec["tensors"]
        missing = [k for k in keys if f"{name}.{k}" not in tensors]
        if missing:
            raise ValueError(f"{directory}: tensors {missing} of {name} are missing")
        layer = from_tensors({k: tensors.pop(f"{name}.{k}") for k in keys}, rec["layer"])
        if tuple(layer.shape) != tuple(lin.weight.shape):
            raise ValueError(f"{name}: stored layer has shape {layer.shape}, the model's is "
                             f"{tuple(lin.weight.shape)}")
        _replace(model, name, QuantLinear(layer, lin.bias))
    aliases = index["metadata"].get("aliases", {})
    state = {k: torch.from_numpy(v) for k, v in tensors.items()}
    for dup, src in aliases.items():
        if src not in state:
            raise ValueError(f"{directory}: tied tensor {dup} points to missing {src}")
        state[dup] = state[src]
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{directory}: the stored tensors do not match the model: missing "
                         f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    if hasattr(model, "tie_weights") and aliases:
        model.tie_weights()
    model.quipref_quantization = qc
    model.to(device)
    tokenizer = None
    if (directory / "tokenizer_config.json").is_file():
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    return model, tokenizer
