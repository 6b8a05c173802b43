"""save_quantized / load_quantized: bit-exact round trip (identical logits), refused corruption."""
import json
import os

import pytest

from quipref.pipeline import load_quantized, quantize_model, save_quantized
from quipref.pipeline.serialize import INDEX_NAME


@pytest.fixture(scope="module")
def saved(smollm2_base, smollm2_calib, tmp_path_factory, torch, restorer):
    """SmolLM2 with blocks 0 (QuIP# 2-bit) quantized, saved; the quantized model is restored after."""
    model, tok = smollm2_base
    restore = restorer(model)
    d = tmp_path_factory.mktemp("saved") / "smollm2-quip"
    try:
        quantize_model(model, "quip#", 2, smollm2_calib, modules=r"re:model\.layers\.0\.self_attn\..*",
                       progress=False)
        with torch.no_grad():
            logits = model(input_ids=smollm2_calib[:2], use_cache=False).logits
        save_quantized(model, d)
    finally:
        restore()
    return d, logits


def test_round_trip_identical_logits(saved, smollm2_calib, torch):
    d, logits = saved
    assert sorted(os.listdir(d)) == sorted(["config.json", INDEX_NAME, "model-00001-of-00001.safetensors",
                                            "tokenizer.json", "tokenizer_config.json"]) or \
        {"config.json", INDEX_NAME, "model-00001-of-00001.safetensors"} <= set(os.listdir(d))
    cfg = json.loads((d / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "quipref" and cfg["method"] == "quip#" and cfg["bits"] == 2
    assert len(cfg["modules"]) == 4 and "lm_head" in cfg["modules_to_not_convert"]
    model, tok = load_quantized(d, backend="fast")
    assert tok is not None
    with torch.no_grad():
        got = model(input_ids=smollm2_calib[:2], use_cache=False).logits
    assert torch.equal(got, logits)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied


@pytest.fixture(scope="module")
def saved_minilm(minilm_base, minilm_texts, tmp_path_factory, torch, restorer):
    """MiniLM with its first query projection quantized by QTIP (L=8, the reference backend), saved (90 MB)."""
    model, tok = minilm_base
    restore = restorer(model)
    d = tmp_path_factory.mktemp("saved") / "minilm-qtip"
    enc = tok(minilm_texts[:3], padding=True, return_tensors="pt")
    try:
        quantize_model(model, "qtip", 2, minilm_texts, backend="quipref", L=8,
                       modules="encoder.layer.0.attention.self.query", progress=False)
        with torch.no_grad():
            out = model(**enc).last_hidden_state
        save_quantized(model, d)
    finally:
        restore()
    return d, enc, out


def test_round_trip_minilm_reference_backend(saved_minilm, torch):
    d, enc, out = saved_minilm
    model, _ = load_quantized(d, backend="quipref")
    assert type(model.encoder.layer[0].attention.self.query.layer).__module__ == "quipref.formats"
    with torch.no_grad():
        assert torch.equal(model(**enc).last_hidden_state, out)


def test_no_partial_directory_on_failure(smollm2_base, smollm2_calib, tmp_path, monkeypatch, restorer):
    from quipref.pipeline import serialize

    model, _ = smollm2_base
    restore = restorer(model)
    try:
        quantize_model(model, "rtn", 4, smollm2_calib, modules="model.layers.0.self_attn.k_proj", progress=False)
        import safetensors.numpy

        def boom(*a, **k):
            raise OSError("disk full")
        monkeypatch.setattr(safetensors.numpy, "save_file", boom)
        with pytest.raises(OSError, match="disk full"):
            serialize.save_quantized(model, tmp_path / "out")
        assert os.listdir(tmp_path) == []   # neither the target nor a temporary directory remains
        monkeypatch.undo()
        save_quantized(model, tmp_path / "out")
        with pytest.raises(FileExistsError, match="overwrite=True"):
            save_quantized(model, tmp_path / "out")
        save_quantized(model, tmp_path / "out", overwrite=True)
        assert os.listdir(tmp_path) == ["out"]
    finally:
        restore()
    with pytest.raises(ValueError, match="run quipref.pipeline.quantize_model"):
        save_quantized(model, tmp_path / "plain")


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_corrupt_truncated_and_versioned_files_are_refused(saved_minilm, tmp_path):
    d = saved_minilm[0]
    shard = "model-00001-of-00001.safetensors"
    # one flipped byte in the shard
    c = _copy(d, tmp_path / "flip")
    b = bytearray((c / shard).read_bytes())
    b[len(b) // 2] ^= 0x01
    (c / shard).write_bytes(bytes(b))
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_quantized(c)
    # truncated shard
    c = _copy(d, tmp_path / "trunc")
    data = (c / shard).read_bytes()
    (c / shard).write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_quantized(c)
    # config edited (it is covered by the checksum too)
    c = _copy(d, tmp_path / "cfg")
    (c / "config.json").write_text((c / "config.json").read_text().replace('"bits": 2', '"bits": 3'))
    with pytest.raises(ValueError, match="config.json is corrupted"):
        load_quantized(c)
    # a newer format version
    c = _copy(d, tmp_path / "ver")
    idx = json.loads((c / INDEX_NAME).read_text())
    idx["metadata"]["format_version"] = 2
    (c / INDEX_NAME).write_text(json.dumps(idx))
    with pytest.raises(ValueError, match="format version 2; this quipref reads version 1"):
        load_quantized(c)
    # incomplete: no index (an interrupted save never has the final name; a hand-made copy might)
    c = _copy(d, tmp_path / "noindex")
    (c / INDEX_NAME).unlink()
    with pytest.raises(ValueError, match="not a complete quipref model directory"):
        load_quantized(c)
    # corrupt index
    c = _copy(d, tmp_path / "badindex")
    (c / INDEX_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="is corrupt"):
        load_quantized(c)
    with pytest.raises(FileNotFoundError):
        load_quantized(tmp_path / "nothing")
