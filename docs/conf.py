"""Sphinx configuration for the quipref / fast documentation.

Build (from the repository root; no network needed):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Offline by construction: MathJax is served from ``_static/mathjax`` by
``sphinx-mathjax-offline`` (no CDN), there is no intersphinx, and the tutorials in
``tutorials/`` are executed by sphinx-gallery at build time (figures and printed numbers
come from that run). Three small local directives generate the parts of the site that
must follow the code rather than be typed by hand:

* ``api-members``: the members of a module, in ``__all__`` order, with a summary table;
* ``fast-parity``: the table of public names of :mod:`fast` and where each is implemented;
* ``benchmark-tables``: the Markdown tables in ``benchmarks/results/*/*.md``, converted
  to reStructuredText.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.util.nodes import nested_parse_with_titles

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the checkout, installed or not

# Never reach for the network (the real-layer loader and transformers honour these).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import quipref  # noqa: E402

# -- Project -------------------------------------------------------------------------
project = "quipref / fast"
author = "the quipref authors"
copyright = "the quipref authors, MIT licence"
version = release = quipref.__version__

# -- Extensions ----------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # copies MathJax into _static and points mathjax_path at it
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = []
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "README.md",
    # sphinx-gallery writes .py/.ipynb/.zip next to the generated .rst; only the .rst
    # pages are sources (with a notebook parser installed the .ipynb would otherwise be
    # read as a second source of each tutorial: "multiple files found for the document").
    "auto_tutorials/*.ipynb",
    "auto_tutorials/*.py",
    "auto_tutorials/*.zip",
    "auto_tutorials/*.md5",
    "auto_tutorials/*.json",
]
default_role = "math"  # `x` is inline math
pygments_style = "sphinx"

# -- autodoc / autosummary / numpydoc -------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters section is the documentation
autodoc_default_options = {}
autosummary_generate = False  # the api-members directive writes the pages' contents
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# -- MathJax (offline) ----------------------------------------------------------------
# sphinx-mathjax-offline sets mathjax_path = "mathjax/tex-chtml.js" (a local copy).

# -- sphinx-gallery ---------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "tutorials"),
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/plot_\d+_",  # every numbered tutorial is executed
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "abort_on_example_error": True,  # a failing tutorial fails the build
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "backreferences_dir": None,
    "show_memory": False,
    "capture_repr": ("_repr_html_",),  # printed output only from print()
    "first_notebook_cell": None,
    "reset_modules": ("matplotlib",),
    "write_computation_times": False,  # its pages load DataTables from a CDN
}

# -- HTML ----------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "quipref / fast"
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": True,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
    "icon_links": [],
}
html_static_path = []
html_show_sourcelink = False


# -- Local directives ---------------------------------------------------------------------

def _summary(obj) -> str:
    """First sentence/line of an object's docstring (for tables)."""
    doc = inspect.getdoc(obj) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split())


def _parse(directive: Directive, lines: list[str]) -> list[nodes.Node]:
    node = nodes.section()
    node.document = directive.state.document
    nested_parse_with_titles(directive.state, StringList(lines, source=f"<generated by {type(directive).__name__} {directive.arguments}>"), node,
                             directive.content_offset)
    return node.children


def _data_doc(modname: str, name: str) -> list[str]:
    """The "#:" comment lines documenting data ``name`` of module ``modname``, looked up
    where it is assigned: the module itself, or the submodule a package re-exports it
    from (``quipref.quantizers.CODES`` is assigned in ``quipref.quantizers.trellis``)."""
    from sphinx.pycode import ModuleAnalyzer

    obj = getattr(sys.modules[modname], name)
    candidates = [modname] + sorted(m for m in sys.modules if m.startswith(modname + "."))
    for cand in candidates:
        if getattr(sys.modules.get(cand), name, None) is not obj:
            continue
        try:
            doc = ModuleAnalyzer.for_module(cand).find_attr_docs().get(("", name))
        except Exception:  # pragma: no cover - source not available
            doc = None
        if doc:
            return [line for line in doc if line.strip()] or []
    return []


class ApiMembers(Directive):
    """``.. api-members:: quipref.hessian`` -> summary table + autodoc of ``__all__``.

    The table shows each name with the first paragraph of its docstring (autosummary's
    first-sentence heuristic splits sentences inside literals such as ``0 .. 2^b - 1``).
    """

    required_arguments = 1
    has_content = False

    def run(self):
        modname = self.arguments[0]
        mod = importlib.import_module(modname)
        names = [n for n in getattr(mod, "__all__", []) if not inspect.ismodule(getattr(mod, n))]
        lines = [f".. currentmodule:: {modname}", "", ".. list-table::", "   :widths: 30 70", ""]
        body = []
        for name in names:
            obj = getattr(mod, name)
            if inspect.isclass(obj) or callable(obj):
                summary = _summary(obj)
            else:  # data: its own "#:" comment, never the docstring of its type
                doc = _data_doc(modname, name)
                summary = " ".join(" ".join(doc).split())
            lines += [f"   * - :py:obj:`{name}`", f"     - {summary or '..'}"]
            if inspect.isclass(obj):
                body += [f".. autoclass:: {name}", "   :members:", "   :show-inheritance:", ""]
            elif callable(obj):
                body += [f".. autofunction:: {name}", ""]
            else:  # py:data, not autodata: autodata falls back to the type's docstring
                body += [f".. py:data:: {name}", f"   :value: {obj!r}", ""]
                body += [f"   {line}" for line in _data_doc(modname, name)] + [""]
        lines.append("")
        return _parse(self, lines + body)


class ApiModules(Directive):
    """``.. api-modules::`` with one module name per content line -> table of
    ``quipref.<name>`` linked to its page, with the first line of its docstring."""

    has_content = True

    def run(self):
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 25 75", "",
                 "   * - module", "     - what it holds"]
        for name in (c.strip() for c in self.content if c.strip()):
            mod = importlib.import_module(f"quipref.{name}")
            lines += [f"   * - :doc:`quipref.{name} <{name}>`", f"     - {_summary(mod)}"]
        return _parse(self, lines + [""])


class HadamardSizes(Directive):
    """``.. hadamard-sizes::`` with lines ``<n> <where it appears>`` -> table of
    ``quipref.hadamard.factor_dimension(n)`` and whether H_K is symmetric."""

    has_content = True

    def run(self):
        import numpy as np

        from quipref.hadamard import base_matrix, factor_dimension

        lines = [".. list-table::", "   :header-rows: 1", "",
                 "   * - n", "     - where it appears", "     - K × 2^k",
                 "     - H_K symmetric"]
        for row in (c.strip() for c in self.content if c.strip()):
            n, _, where = row.partition(" ")
            K, p = factor_dimension(int(n))
            sym = bool(np.array_equal(base_matrix(K), base_matrix(K).T))
            lines += [f"   * - {n}", f"     - {where.strip()}", f"     - {K} × {p}",
                      f"     - {'yes' if sym else 'no'}"]
        return _parse(self, lines + [""])


class FastParity(Directive):
    """``.. fast-parity::`` -> table of ``fast.__all__``: implemented in fast or re-exported."""

    has_content = False

    def run(self):
        try:
            fast = importlib.import_module("fast")
        except Exception as e:  # pragma: no cover - documented, not hidden
            return _parse(self, [f".. note:: ``import fast`` failed while building the docs: {e}", ""])
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 25 25 50", "",
                 "   * - name", "     - implemented in", "     - quipref counterpart"]
        for name in fast.__all__:
            obj = getattr(fast, name)
            if inspect.ismodule(obj):
                where = obj.__name__
                ref = f"quipref.{name}"
            else:
                where = getattr(obj, "__module__", "?")
                ref = f"{getattr(getattr(quipref, name, None), '__module__', '?')}.{name}"
            lines += [f"   * - ``{name}``", f"     - ``{where}``", f"     - ``{ref}``"]
        return _parse(self, lines + [""])


def _md_inline(text: str) -> str:
    """Markdown inline code to reStructuredText. Outside code spans, ``\\``, ``|`` (as in
    ``|y - ref|``), ``*`` and ``_`` are escaped: rST would read them as substitutions,
    emphasis or references (``rht_fused``)."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            code = part[1:-1].strip()  # an rST literal cannot start or end with a space
            out.append("``" + code + "``" if code else "")
        else:
            out.append(re.sub(r"([\\|*_])", r"\\\1", part))
    return "".join(out)


def markdown_to_rst(md: str, heading_char: str = "~") -> list[str]:
    """Convert the small Markdown subset the benchmark harness writes (headings,
    paragraphs, pipe tables) to reStructuredText lines."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("#"):
            title = _md_inline(line.lstrip("#").strip())
            out += [title, heading_char * max(len(title), 3), ""]
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            width = max(len(r) for r in rows)
            out += [".. list-table::", "   :header-rows: 1", ""]
            for r in rows:
                r = r + [""] * (width - len(r))
                out.append(f"   * - {_md_inline(r[0]) or '..'}")
                out += [f"     - {_md_inline(c) if c else ''}".rstrip() for c in r[1:]]
            out.append("")
        elif not line.strip():
            out.append("")
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|")):
                para.append(_md_inline(lines[i].strip()))
                i += 1
            out += ["| " + p for p in para] + [""]
    return out


class BenchmarkTables(Directive):
    """``.. benchmark-tables::`` -> every ``benchmarks/results/<device>/<name>.md``;
    ``.. benchmark-tables:: model_table`` -> only the files of that benchmark."""

    has_content = False
    optional_arguments = 1

    def run(self):
        name = self.arguments[0] if self.arguments else "*"
        files = sorted((ROOT / "benchmarks" / "results").glob(f"*/{name}.md"))
        env = self.state.document.settings.env
        if not files:
            return _parse(self, [".. note::", "",
                                 "   No benchmark results are committed yet "
                                 f"(``benchmarks/results/*/{name}.md`` is empty).", ""])
        lines, device = [], None
        for f in files:
            env.note_dependency(str(f))
            if f.parent.name != device:
                device = f.parent.name
                lines += [device, "-" * max(len(device), 3), ""]
            rel = f.relative_to(ROOT).as_posix()
            lines += markdown_to_rst(f.read_text(encoding="utf-8"))
            lines += [f"*Source:* ``{rel}``", ""]
        return _parse(self, lines)


_CITATION_DEF = re.compile(r"^(\s*\.\.\s+\[)([^\]\s]+)(\]\s)")


def link_citations(app, what, name, obj, options, lines):
    """Turn the library's paper-style mentions into citation links, before numpydoc.

    Docstrings cite papers as ``[QuIP] Thm. 6`` (readable in ``help()``) and define
    ``.. [QuIP] Chee et al. ...`` under References. For labels defined in the same
    docstring:

    * a bare mention ``[QuIP]`` becomes the citation reference ``[QuIP]_``;
    * a definition that nothing in the docstring mentions is shown as a list item
      "**[QuIP]** Chee et al. ..." instead (a citation nobody cites is a Sphinx warning);
    * a label that is not a valid reStructuredText reference name (``QuIP#``: docutils
      would turn the whole definition into an invisible comment) is renamed,
      ``#`` -> ``Sharp``.
    """
    labels, defs = {}, []
    for i, line in enumerate(lines):
        m = _CITATION_DEF.match(line)
        if m:
            label = m.group(2)
            labels[label] = label.replace("#", "Sharp")
            defs.append((i, label))
    if not labels:
        return
    pattern = re.compile(r"(?<![\w`])\[(" + "|".join(re.escape(k) for k in labels) + r")\](?!_)")
    cited = set()
    for i, line in enumerate(lines):
        if _CITATION_DEF.match(line):
            continue
        cited.update(k for k in labels if f"[{k}]_" in line)  # already a reference

        def ref(m):
            cited.add(m.group(1))
            return f"[{labels[m.group(1)]}]_"

        lines[i] = pattern.sub(ref, line)
    for i, label in defs:
        m = _CITATION_DEF.match(lines[i])
        indent = re.match(r"\s*", lines[i]).group(0)
        if label in cited:
            lines[i] = m.group(1) + labels[label] + lines[i][m.end(2):]
        else:  # "-  " keeps the body at the column of the definition's continuation lines
            lines[i] = indent + "-  **[" + label + "]** " + lines[i][m.end(3):]


def _always_reread_benchmarks(app, env, added, changed, removed):
    """Result files may appear or vanish between builds: re-read the benchmarks page."""
    return [d for d in ("benchmarks", "cli") if d in env.found_docs]


def setup(app):
    app.connect("env-get-outdated", _always_reread_benchmarks)
    app.connect("autodoc-process-docstring", link_citations, priority=400)
    app.add_directive("api-members", ApiMembers)
    app.add_directive("api-modules", ApiModules)
    app.add_directive("hadamard-sizes", HadamardSizes)
    app.add_directive("fast-parity", FastParity)
    app.add_directive("benchmark-tables", BenchmarkTables)
    return {"parallel_read_safe": True}
