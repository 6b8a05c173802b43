"""The 'same API' contract: fast has every public name of quipref, with the same signature."""
import importlib
import inspect

import pytest

import fast
import quipref

MODULES = ["hessian", "hadamard", "incoherence", "ldlq", "bounds", "quantizers", "quantizers.scalar",
           "quantizers.e8p", "quantizers.rvq", "quantizers.trellis", "quantizers.icquant",
           "quantizers.index_coding", "methods", "formats"]


def _public_pairs():
    yield "", quipref, fast
    for name in MODULES:
        yield name, importlib.import_module(f"quipref.{name}"), importlib.import_module(f"fast.{name}")


def _signature(obj):
    try:
        return inspect.signature(obj, eval_str=True)
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize("modname,ref,fst", list(_public_pairs()), ids=lambda v: v if isinstance(v, str) else None)
def test_fast_mirrors_quipref(modname, ref, fst):
    assert ref.__all__, f"quipref.{modname} declares no public names"
    for name in ref.__all__:
        assert hasattr(fst, name), f"fast.{modname or ''}{'.' if modname else ''}{name} is missing"
        a, b = getattr(ref, name), getattr(fst, name)
        if callable(a):
            assert _signature(a) == _signature(b), f"{modname}.{name}: {_signature(a)} != {_signature(b)}"
        if inspect.isclass(a):
            for meth, fn in inspect.getmembers(a, callable):
                if meth.startswith("_") and meth != "__init__":
                    continue
                assert _signature(fn) == _signature(getattr(b, meth)), f"{modname}.{name}.{meth} signature differs"


def test_fast_quantizers_are_the_fast_classes():
    import fast.quantizers as fq

    for name in ("E8P", "E81B", "RVQ", "Trellis", "ICQuant"):
        assert getattr(fq, name).__module__.startswith("fast."), name
        args = {"Trellis": ({}, {"L": 8}), "ICQuant": ((fq.ScalarGrid.symmetric(2, 1.0),), {})}
        a, kw = args.get(name, ((), {}))
        cfg, arrays = getattr(fq, name)(*a, **kw).state()
        assert type(fq.quantizer_from_state(cfg, arrays)) is getattr(fq, name)


def test_top_level_names_resolve_to_module_objects():
    for name in quipref.__all__:
        assert getattr(quipref, name) is not None
    assert quipref.__version__ == fast.__version__
