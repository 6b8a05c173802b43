"""fast.ldlq on CuPy arrays (CUDA leaf kernel + cuBLAS lazy batch) against quipref.ldlq.

Same rule as tests/parity/test_ldlq_parity.py (read its docstring): the reference runs on
the same CuPy inputs (so both use the same cuSOLVER Cholesky), codes must be equal or
differ only where the reference's input to the quantizer lies within the float64
summation-order bound of a rounding boundary, fast's result must be an LDLQ fixed point,
and results stay on the GPU. Every test is marked ``gpu`` (skipped without a GPU).
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from quipref.quantizers import IntegerGrid, ScalarGrid

R = importlib.import_module("quipref.ldlq")
F = importlib.import_module("fast.ldlq")

_spec = importlib.util.spec_from_file_location(
    "_ldlq_parity_rules", Path(__file__).resolve().parent.parent / "parity" / "test_ldlq_parity.py")
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


def _problem(cp, m, n, hkind, seed):
    rng = np.random.default_rng(seed)
    H = P.spd_hessian(rng, n, hkind)
    W = rng.standard_normal((m, n))
    return rng, W, H, cp.asarray(W), cp.asarray(H)


@pytest.mark.parametrize("g", [1, 2, 8])
@pytest.mark.parametrize("kind", P.QUANTIZER_KINDS)
@pytest.mark.parametrize("hkind", ["well", "ill"])
def test_cuda_ldlq_matches_reference(cp, kind, g, hkind):
    """m odd, n = 200 (three 64-column leaves and a remainder of 8), clamping active."""
    rng, W, H, Wd, Hd = _problem(cp, 37, 200, hkind, 17 * g + len(kind))
    q = P.make_quantizer(kind, 3, W, rng)
    res = F.ldlq(Wd, Hd, q, g, seed=5)
    assert isinstance(res.W_hat, cp.ndarray) and isinstance(res.codes, cp.ndarray)
    assert res.W_hat.dtype == cp.float64
    assert P.assert_ldlq_parity(Wd, Hd, q, g, 5, res) == 0


def test_cuda_ldlq_larger_and_equal_to_cpu(cp):
    """m = 300 (not a multiple of the 32 rows per block), n = 1000 (leaves of 64 and 40):
    GPU codes equal the reference on the GPU and fast's CPU path on the same factor."""
    rng, W, H, Wd, Hd = _problem(cp, 300, 1000, "well", 3)
    q = ScalarGrid.quip(W, 2)
    res = F.ldlq(Wd, Hd, q)
    assert P.assert_ldlq_parity(Wd, Hd, q, 1, 0, res) == 0
    U = F._ldl_factor(Hd, 1, with_d=False)[0].get()
    cpu = F._ldlq_grid_numpy(W, U, F._fused_grid(q, 300), None, 1, F.LEAF)
    assert np.count_nonzero(cpu.codes != res.codes.get()) == 0


def test_cuda_stochastic_uses_the_same_uniforms(cp):
    rng, W, H, Wd, Hd = _problem(cp, 33, 128, "well", 4)
    q = IntegerGrid(0.3, "stochastic")
    g_ref, g_fast = np.random.default_rng(9), np.random.default_rng(9)
    a = R.ldlq(Wd, Hd, q, 4, seed=g_ref)
    b = F.ldlq(Wd, Hd, q, 4, seed=g_fast)
    cp.testing.assert_array_equal(a.codes, b.codes)
    assert g_ref.random() == g_fast.random()


@pytest.mark.parametrize("g", [1, 4, 8])
def test_cuda_ldl(cp, g):
    _, _, H, _, Hd = _problem(cp, 1, 96, "ill", g)
    U_r, D_r = R.ldl(Hd, g)
    U_f, D_f = F.ldl(Hd, g)
    assert isinstance(U_f, cp.ndarray) and isinstance(D_f, cp.ndarray)
    scale = float(cp.abs(U_r).max())
    assert float(cp.abs(U_f - U_r).max()) <= 1e-12 * scale
    assert float(cp.abs(D_f - D_r).max()) <= 1e-12 * float(cp.abs(D_r).max())
    cp.testing.assert_array_equal(U_f == 0, U_r == 0)  # same structural zeros


def test_cuda_greedy_and_rg(cp):
    rng, W, H, Wd, Hd = _problem(cp, 21, 150, "well", 8)
    q = ScalarGrid.minmax(W, 3)
    start = R.ldlq(Wd, Hd, q).W_hat
    a = R.greedy_passes(Wd, Hd, q, start, 2)
    b = F.greedy_passes(Wd, Hd, q, start, 2)
    assert isinstance(b.W_hat, cp.ndarray)
    P._assert_greedy_parity(W, H, q, start.get(), 2, R.LDLQResult(a.W_hat.get(), a.codes.get()),
                            R.LDLQResult(b.W_hat.get(), b.codes.get()))
    a = R.ldlq_rg(Wd, Hd, q, 1)
    b = F.ldlq_rg(Wd, Hd, q, 1)
    assert isinstance(b.codes, cp.ndarray)
    diverged = np.flatnonzero(np.any(a.codes.get() != b.codes.get(), axis=1))
    assert len(diverged) <= P.MAX_DIVERGED_ROWS


@pytest.mark.parametrize("case", ["nan W", "non-PSD H", "g does not divide n", "H wrong n"])
def test_cuda_same_errors(cp, case):
    rng, W, H, Wd, Hd = _problem(cp, 5, 12, "well", 1)
    q = ScalarGrid.symmetric(2, 1.0)
    Wn = Wd.copy()
    Wn[1, 2] = cp.nan
    args = {
        "nan W": (Wn, Hd, q),
        "non-PSD H": (Wd, Hd - 10 * cp.eye(12), q),
        "g does not divide n": (Wd, Hd, q, 5),
        "H wrong n": (Wd, Hd[:-1, :-1], q),
    }[case]
    with pytest.raises(Exception) as ref_exc:
        R.ldlq(*args)
    with pytest.raises(type(ref_exc.value)) as fast_exc:
        F.ldlq(*args)
    assert str(fast_exc.value) == str(ref_exc.value)


def test_cuda_kernel_resources(cp):
    """The leaf kernel must not spill (local memory) and must fit its shared memory."""
    from fast.cuda import ldlq as cl

    k = cl._leaf_kernel()
    assert k.local_size_bytes == 0
    assert cl.SMEM_BYTES <= k.max_dynamic_shared_size_bytes
