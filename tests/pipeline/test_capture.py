"""Hessian capture: the captured H equals X^T X / N computed directly on the same tokens.

Tolerance: the hook sees the very float32 activations the direct computation recomputes
(same modules, same batches, same ops), and both sum X^T X in float64, only in a
different order: the difference is float64 round-off, <= ~N eps64 max|H| with N <= 10^3
tokens, i.e. ~1e-13 relative; we allow 1e-10.
"""
import numpy as np
import pytest

from quipref.pipeline import capture_hessians, find_blocks
from quipref.pipeline.capture import HessianCapture


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * np.abs(b).max())


def test_find_blocks(smollm2_base, minilm_base):
    assert find_blocks(smollm2_base[0])[0] == "model.layers"
    assert find_blocks(minilm_base[0])[0] == "encoder.layer"


def test_smollm2_hessians_equal_direct(smollm2_base, smollm2_calib, torch):
    model, _ = smollm2_base
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
             "model.layers.0.self_attn.v_proj", "model.layers.0.mlp.gate_proj",
             "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"]
    caps = capture_hessians(model, smollm2_calib, modules=names, batch_size=2, progress=False)
    # q/k/v read one tensor, gate/up another: one shared H each
    assert caps[names[0]] is caps[names[1]] is caps[names[2]]
    assert caps[names[0]].group == tuple(names[:3])
    assert caps[names[3]] is caps[names[4]] and caps[names[5]] is not caps[names[3]]
    # direct: the input of q/k/v is input_layernorm(embed(ids)), for every token
    layer0 = model.model.layers[0]
    with torch.no_grad():
        X = torch.cat([layer0.input_layernorm(model.model.embed_tokens(smollm2_calib[i:i + 2]))
                       for i in range(0, 4, 2)]).reshape(-1, 576).double().numpy()
    assert caps[names[0]].count == smollm2_calib.numel() == X.shape[0]
    _close(caps[names[0]].H, X.T @ X / X.shape[0])
    # down_proj's input, from its own hook on an independent forward
    got = []
    h = layer0.mlp.down_proj.register_forward_pre_hook(lambda m, a: got.append(a[0].reshape(-1, 1536)))
    try:
        with torch.no_grad():
            for i in range(0, 4, 2):
                model(input_ids=smollm2_calib[i:i + 2], use_cache=False)
    finally:
        h.remove()
    X = torch.cat(got).double().numpy()
    _close(caps[names[5]].H, X.T @ X / X.shape[0])


def test_minilm_padding_is_excluded(minilm_base, minilm_texts, torch):
    model, tok = minilm_base
    name = "encoder.layer.0.attention.self.query"
    caps = capture_hessians(model, minilm_texts, modules=[name], tokenizer=tok, batch_size=4,
                            progress=False)
    rows = []
    for i in range(0, len(minilm_texts), 4):
        enc = tok(minilm_texts[i:i + 4], padding=True, truncation=True, max_length=512, return_tensors="pt")
        assert not enc["attention_mask"].all()  # the batches do contain padding
        with torch.no_grad():
            E = model.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
        rows.append(E[enc["attention_mask"].bool()])
    X = torch.cat(rows).double().numpy()
    assert caps[name].count == X.shape[0]
    _close(caps[name].H, X.T @ X / X.shape[0])


def test_layer_that_never_runs_is_an_error(minilm_base, torch):
    model, tok = minilm_base
    with pytest.raises(ValueError, match="never ran"):
        with HessianCapture({"x": torch.nn.Linear(4, 4)}) as cap:
            pass
        cap.result()
