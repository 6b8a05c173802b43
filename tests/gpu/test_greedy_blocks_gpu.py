"""fast.greedy_passes with block_size > 1 on CuPy arrays against quipref.greedy_passes.

Both run on the same CuPy inputs (the reference's NumPy/CuPy-generic code on the device),
with the same quantizer object; the comparison rule is the block rule of
tests/parity/test_ldlq_parity.py (``assert_block_greedy_parity``: equal codes give
bit-equal ``W_hat``; a row may differ only through a near tie between two codewords at
its first differing step). Results must stay on the GPU. Marked ``gpu``.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from quipref.quantizers import E8P, ScalarGrid

R = importlib.import_module("quipref.ldlq")
F = importlib.import_module("fast.ldlq")

_spec = importlib.util.spec_from_file_location(
    "_ldlq_parity_rules_blocks", Path(__file__).resolve().parent.parent / "parity" / "test_ldlq_parity.py")
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


@pytest.mark.parametrize("kind,g,hkind", [("e8p", 8, "well"), ("e8p", 16, "ill"), ("sym", 4, "well")])
def test_cuda_block_greedy_matches_reference(cp, kind, g, hkind):
    rng = np.random.default_rng(40 + g)
    m, n = 19, 272  # three panels (128, 128, 16)
    H = P.spd_hessian(rng, n, hkind)
    W = rng.standard_normal((m, n))
    q = E8P.from_rms(1.0) if kind == "e8p" else ScalarGrid.symmetric(2, 1.2)
    Wd, Hd = cp.asarray(W), cp.asarray(H)
    start = R.ldlq(Wd, Hd, q, g).W_hat
    assert isinstance(start, cp.ndarray)
    a = R.greedy_passes(Wd, Hd, q, start, 2, g)
    b = F.greedy_passes(Wd, Hd, q, start, 2, g)
    assert isinstance(b.W_hat, cp.ndarray) and isinstance(b.codes, cp.ndarray)
    assert P.assert_block_greedy_parity(Wd, Hd, q, start, 2, g, a, b) <= P.MAX_DIVERGED_ROWS
    # and the device result agrees with the host one (same rule, host inputs)
    c = F.greedy_passes(W, H, q, start.get(), 2, g)
    a_host = R.LDLQResult(a.W_hat.get(), a.codes.get())
    diverged = np.flatnonzero(np.any(c.codes.reshape(m, -1) != a_host.codes.reshape(m, -1), axis=1))
    assert len(diverged) <= P.MAX_DIVERGED_ROWS


def test_cuda_block_greedy_numpy_and_cupy_mixed(cp):
    """A CuPy W with NumPy H / W_hat runs on the device (CuPy in -> CuPy out)."""
    rng = np.random.default_rng(3)
    H = P.spd_hessian(rng, 32, "well")
    W = rng.standard_normal((4, 32))
    q = E8P.from_rms(1.0)
    start = R.ldlq(W, H, q, 8).W_hat
    b = F.greedy_passes(cp.asarray(W), H, q, start, 1, 8)
    assert isinstance(b.W_hat, cp.ndarray)
    a = R.greedy_passes(W, H, q, start, 1, 8)
    assert P.assert_block_greedy_parity(W, H, q, start, 1, 8, a,
                                        R.LDLQResult(b.W_hat.get(), b.codes.get())) <= P.MAX_DIVERGED_ROWS
