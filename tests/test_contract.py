"""The quipref <-> fast contract (quipref/_contract.py): fast takes from quipref only the
public API and the contract modules, validators live once, constants are defined once,
and fast does not import itself in a cycle."""
import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import fast
import quipref

FAST = pathlib.Path(fast.__file__).parent
QUIPREF = pathlib.Path(quipref.__file__).parent
CONTRACT_MODULES = {"quipref._checks", "quipref._contract", "quipref._io", "quipref._stream"}


def _private(parts):
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts)


def private_quipref_names(root=FAST):
    """(file, line, 'quipref.module.name') for every private quipref name fast takes: a
    private module outside the contract, a private name imported from a module, or a
    private attribute of an imported quipref module."""
    found = []
    for f in sorted(root.rglob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        modules = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "quipref":
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if node.module in CONTRACT_MODULES:
                        if _private([a.name]):
                            found.append((f.name, node.lineno, full))
                    elif _private(full.split(".")):
                        found.append((f.name, node.lineno, full))
                    modules[a.asname or a.name] = full
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "quipref":
                        if _private(a.name.split(".")) and a.name not in CONTRACT_MODULES:
                            found.append((f.name, node.lineno, a.name))
                        modules[a.asname or "quipref"] = a.name if a.asname else "quipref"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules and _private([node.attr])):
                found.append((f.name, node.lineno, f"{modules[node.value.id]}.{node.attr}"))
    return found


def test_fast_imports_no_private_quipref_name_outside_the_contract():
    assert private_quipref_names() == []


def test_the_scanner_sees_private_imports(tmp_path):
    """The check above is not vacuous: each form of private use is reported."""
    (tmp_path / "m.py").write_text(
        "from quipref.hadamard import _factor\n"
        "from quipref.quantizers._trellis_codes import MAD1_DIVISOR\n"
        "from quipref import incoherence as _r\n"
        "x = _r._transform_from_state\n"
        "from quipref._checks import check_int, _fmt_shape\n"
        "from quipref._contract import run_recipe\n")
    got = {name for _, _, name in private_quipref_names(tmp_path)}
    assert got == {"quipref.hadamard._factor", "quipref.quantizers._trellis_codes.MAD1_DIVISOR",
                   "quipref.incoherence._transform_from_state", "quipref._checks._fmt_shape"}


def test_contract_names_exist_and_are_documented():
    c = importlib.import_module("quipref._contract")
    for name in c.__all__:
        assert hasattr(c, name), name
    for name in ("run_recipe", "layer_from_tensors", "load_layer", "transform_from_state_with",
                 "cholesky_lower", "check_greedy_inputs", "ldlq_rg_with", "hadamard_factor",
                 "prepare_transform_input", "e8p_unit_codebook", "e8p_search_tables", "MAD1_DIVISOR"):
        assert name in c.__doc__, f"{name} is exported by the contract but not described in it"


def _definitions(root, pattern):
    """Files that *define* a name (def or module-level assignment) matching ``pattern``."""
    out = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.parse(f.read_text()).body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            out += [(str(f.relative_to(root.parent)), n) for n in names if n == pattern]
    return out


@pytest.mark.parametrize("name", ["_check_int", "check_int", "_check_n", "_check_rounding", "check_rounding",
                                  "_prime_factors", "prime_factors", "check_vectors", "check_codes",
                                  "check_scale", "_check_step", "check_trellis_step", "_check_words",
                                  "check_trellis_words", "LEAF", "PANEL", "MAD1_DIVISOR", "QUIPSHARP_RHO"])
def test_one_definition_of_each_helper_and_constant(name):
    defs = _definitions(QUIPREF, name) + _definitions(FAST, name)
    assert len(defs) <= 1, defs


def test_quipsharp_rho_is_the_quantizers_rho():
    from quipref.methods import QUIPSHARP_RHO
    from quipref.quantizers import E8P, RVQ

    assert QUIPSHARP_RHO == {2: E8P.PAPER_RHO, 3: RVQ.OPT_SCALES[3][0], 4: RVQ.OPT_SCALES[4][0]}


def test_no_docstring_is_patched_with_str_replace():
    for f in sorted(FAST.rglob("*.py")) + sorted(QUIPREF.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace"
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "__doc__"):
                pytest.fail(f"{f}:{node.lineno} patches a docstring with str.replace")


def test_fast_ldlq_and_fast_cuda_ldlq_import_no_cycle():
    """fast/cuda/ldlq.py takes the shared lazy-batch core from fast/_lazy_ldlq.py, not from
    fast/ldlq.py (which imports it): no cycle, and it imports on its own."""
    for node in ast.walk(ast.parse((FAST / "cuda" / "ldlq.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 2:
            assert node.module != "ldlq", "fast/cuda/ldlq.py imports fast/ldlq.py"
    subprocess.run([sys.executable, "-c", "import fast.cuda.ldlq"], check=True, cwd=FAST.parent)
