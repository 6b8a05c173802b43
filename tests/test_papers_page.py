"""docs/papers.rst names real functions and real tests.

The "Papers <-> code" page maps each paper result to the function implementing it
and the test checking it. Sphinx does not warn about a Python cross-reference that no
longer resolves (nitpicky is off) and never looks at test names, so this test does:
every ``:func:`` / ``:class:`` / ``:meth:`` / ``:data:`` / ``:attr:`` target must import,
and every ``test_x.py::test_y`` must be a function defined in ``tests/reference/test_x.py``.
"""
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "papers.rst"

ROLE = re.compile(r":(?:func|class|meth|data|attr|mod):`~?([\w.]+)`")
TEST = re.compile(r"``(test_\w+\.py)::(test_\w+)``")


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):  # longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)  # AttributeError: the name is gone
        return obj
    raise ImportError(dotted)


def _targets():
    return sorted(set(ROLE.findall(PAGE.read_text(encoding="utf-8"))))


def _tests():
    return sorted(set(TEST.findall(PAGE.read_text(encoding="utf-8"))))


def test_page_is_in_the_toctree_and_names_many_things():
    assert "   papers\n" in (ROOT / "docs" / "index.rst").read_text(encoding="utf-8")
    assert len(_targets()) >= 40 and len(_tests()) >= 60  # a truncated page fails here


@pytest.mark.parametrize("target", _targets())
def test_named_function_exists(target):
    assert _resolve(target) is not None


@pytest.mark.parametrize("file,name", _tests())
def test_named_test_exists(file, name):
    path = ROOT / "tests" / "reference" / file
    assert path.is_file(), f"{file} named on docs/papers.rst does not exist"
    src = path.read_text(encoding="utf-8")
    assert re.search(rf"^def {name}\(", src, re.M), f"{file}::{name} named on docs/papers.rst does not exist"


def test_the_checker_catches_a_missing_name():
    with pytest.raises(AttributeError):
        _resolve("quipref.bounds.no_such_bound")
    assert not TEST.findall("``test_bounds.py``")  # a file without a test is not a match


UNSHIPPED = re.compile(r"reference notes|design notes|design\.md|\bnotes (?:§|A\d)|secondary notes")


def test_no_citation_of_unshipped_notes():
    """Docstrings, docs and tutorials cite paper sections or docs pages, never the
    development notes, which the repository does not ship."""
    files = [p for d in ("quipref", "fast", "tutorials") for p in (ROOT / d).rglob("*")
             if p.suffix in (".py", ".cu", ".cuh")]
    files += list((ROOT / "docs").rglob("*.rst"))
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for p in files if "auto_tutorials" not in p.parts
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if UNSHIPPED.search(line)]
    assert not hits, "\n".join(hits)
