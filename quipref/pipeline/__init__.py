"""The model pipeline: quantize a real torch model layer by layer, run it, save and load it.

One concept per module::

    data        load_model(name), the calibration / evaluation text, calibration_tokens
    capture     Hessian capture with forward pre-hooks (float64, streamed, shared inputs)
    quantize    quantize_model(model, method, bits, calibration, backend=...)
    qlinear     QuantLinear: a torch.nn.Module running the codes (CPU: NumPy/Numba; CUDA: fused kernels)
    serialize   save_quantized / load_quantized (safetensors shards + config.json)

torch (and transformers for the models) are optional dependencies of :mod:`quipref`;
they are imported by these modules only, when first used: ``import quipref`` and
``import fast`` never import torch. Names are resolved lazily, so
``from quipref.pipeline import wiki_texts`` works without torch.
"""
from __future__ import annotations

import importlib

_NAMES = {
    "data": ["MODELS", "load_model", "wiki_texts", "calibration_texts", "eval_texts",
             "calibration_tokens"],
    "capture": ["capture_hessians", "find_blocks", "shared_input_groups"],
    "quantize": ["quantize_model", "resolve_backend", "select_modules", "module_seed"],
    "qlinear": ["QuantLinear"],
    "serialize": ["save_quantized", "load_quantized", "PIPELINE_FORMAT_VERSION"],
    "evaluate": ["perplexity", "window_token_ids", "sentence_embeddings", "embedding_fidelity",
                 "lee_corpus", "lee_correlation", "generation_speed"],
}
_WHERE = {name: mod for mod, names in _NAMES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'quipref.pipeline' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    except ImportError as exc:
        if getattr(exc, "name", None) == "torch":
            raise ImportError(f"quipref.pipeline.{name} needs PyTorch, an optional dependency of quipref; "
                              f"install it with: pip install torch  (or pip install \"quipref[real]\")") from exc
        raise
    except AttributeError as exc:
        raise AttributeError(f"quipref.pipeline.{name} is not available ({exc})") from exc
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
