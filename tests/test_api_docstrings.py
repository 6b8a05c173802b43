"""Every quantizer documents its contract methods.

autodoc lists a member only when it has a docstring (its own or an inherited one), so
a method without one silently disappears from the API pages (docs/api/quantizers.rst).
"""
import importlib
import inspect

import pytest

MEMBERS = ("encode", "decode", "quantize", "state", "from_state", "bits_per_weight",
           "code_bits", "side_bits")


def _quantizer_classes(package):
    mod = importlib.import_module(f"{package}.quantizers")
    base = importlib.import_module("quipref.quantizers").Quantizer
    return [getattr(mod, n) for n in mod.__all__
            if inspect.isclass(getattr(mod, n)) and issubclass(getattr(mod, n), base)]


@pytest.mark.parametrize("package", ["quipref", "fast"])
def test_quantizer_members_have_docstrings(package):
    classes = _quantizer_classes(package)
    assert len(classes) >= 8
    missing = [f"{c.__name__}.{m}" for c in classes for m in MEMBERS
               if not (inspect.getdoc(getattr(c, m)) or "").strip()]
    assert not missing, f"members autodoc would skip (no docstring): {missing}"
