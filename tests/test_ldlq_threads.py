"""fast.ldlq's CPU threading: BLAS held single-threaded during the recursion, restored after.

fast.ldlq (fused ScalarGrid / IntegerGrid path on NumPy input) runs its feedback dgemms on
its own row-range threads with BLAS limited to one thread (fast/ldlq.py, "Threads on the
CPU"). These tests check the contract around that: the limit is in force inside the
recursion, the process's BLAS settings are exactly restored afterwards (also when several
Python threads call ldlq at once, and when ldlq raises), and the codes do not depend on it
(the same with the limit switched off: the same products in the same order per element).
"""
from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest

from quipref.quantizers import ScalarGrid

threadpoolctl = pytest.importorskip("threadpoolctl")
F = importlib.import_module("fast.ldlq")


def _blas_threads():
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]


def _problem(seed, m=40, n=200):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, 2 * n))
    H = A @ A.T / (2 * n) + 0.1 * np.eye(n)
    W = rng.standard_normal((m, n))
    return W, (H + H.T) / 2, ScalarGrid.symmetric(3, 1.2)


def test_blas_is_single_threaded_inside_and_restored_after(monkeypatch):
    W, H, q = _problem(0)
    before = _blas_threads()
    seen = []
    real = F._matmul_rows

    def spy(*args):
        seen.append(_blas_threads())
        return real(*args)

    monkeypatch.setattr(F, "_matmul_rows", spy)
    F.LEAF, old = 16, F.LEAF  # several feedback products at n = 200
    try:
        F.ldlq(W, H, q)
    finally:
        F.LEAF = old
    assert seen, "no feedback product ran"
    assert all(all(t == 1 for t in s) for s in seen), seen
    assert _blas_threads() == before


def test_limits_restored_after_an_error(monkeypatch):
    W, H, q = _problem(1)
    before = _blas_threads()

    def boom(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(F, "_matmul_rows", boom)  # fails inside the limited region
    F.LEAF, old = 16, F.LEAF
    try:
        with pytest.raises(RuntimeError, match="boom"):
            F.ldlq(W, H, q)
    finally:
        F.LEAF = old
    assert _blas_threads() == before


def test_concurrent_calls_restore_limits_and_agree():
    problems = [_problem(s) for s in range(4)]
    serial = [F.ldlq(W, H, q).codes for W, H, q in problems]
    before = _blas_threads()
    out = [None] * len(problems)

    def work(i):
        for _ in range(3):
            W, H, q = problems[i]
            out[i] = F.ldlq(W, H, q).codes

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(serial, out):
        np.testing.assert_array_equal(a, b)
    assert _blas_threads() == before


def test_codes_do_not_depend_on_the_limit(monkeypatch):
    # Without threadpoolctl (the fallback: no limit) each row range's dgemm may itself be
    # multi-threaded; OpenBLAS splits the output, not the sum over k, so every element is
    # the same sum in the same order and the results are bit-identical.
    W, H, q = _problem(2, m=64, n=256)
    a = F.ldlq(W, H, q)
    monkeypatch.setattr(F, "_blas_controller", lambda: None)
    b = F.ldlq(W, H, q)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.W_hat, b.W_hat)
