"""The lazy-batch LDLQ core shared by the CPU path (:mod:`fast.ldlq`) and the CUDA path
(:mod:`fast.cuda.ldlq`): the block UDU^T factor, the lazy-batch tree driver, the generic
(any quantizer) leaf, and the leaf width.

Both modules import from here, so neither imports the other at module level (this used
to be a cycle: ``fast.ldlq`` -> ``fast.cuda.ldlq`` -> ``fast.ldlq``). Read
:mod:`fast.ldlq`'s docstring for the algorithm.
"""
from __future__ import annotations

import functools

import numpy as np

from quipref._checks import array_module
from quipref._contract import LDLQResult, block_quantizer, cholesky_lower as _cholesky_lower
from quipref.quantizers.scalar import IntegerGrid, ScalarGrid

#: Columns per leaf of the lazy-batch tree (rounded down to a multiple of the block size g);
#: also the CUDA leaf kernel's width (``#define LEAF 64`` in ``fast/kernels/ldlq.cu``).
LEAF = 64
#: Columns per panel of the greedy passes.
PANEL = 128


def _panel_size(g: int, panel: int = PANEL) -> int:
    """Largest multiple of ``g`` that is ``<= panel`` (at least ``g``)."""
    return max(g, (panel // g) * g)


@functools.lru_cache(maxsize=None)
def _solve_1x1_rule():
    """How ``numpy.linalg.solve`` (LAPACK gesv, here OpenBLAS) solves a 1 x 1 system
    ``a x = b``: ``"reciprocal"`` (``b * (1/a)``, OpenBLAS's trsm), ``"division"`` (``b / a``)
    or ``None`` (neither, bit for bit). For ``g = 1`` the reference's per-column solves are
    then replaced by one column scaling with the *same* rounding (bit-identical ``U``,
    ~8x faster than the batched solve); ``None`` keeps the batched solve. Probed once."""
    rng = np.random.default_rng(12345)
    a = rng.uniform(0.1, 10.0, 64) * rng.choice([-1.0, 1.0], 64)
    b = rng.standard_normal((64, 1, 257))
    x = np.linalg.solve(a.reshape(64, 1, 1), b)
    if np.array_equal(x, b * (1.0 / a)[:, None, None]):
        return "reciprocal"
    if np.array_equal(x, b / a[:, None, None]):
        return "division"
    return None


def _ldl_factor(H, g: int, with_d: bool = True):
    """The factor of :func:`ldl` for an already validated ``H`` (NumPy or CuPy)."""
    xp = array_module(H)
    n = H.shape[0]
    nb = n // g
    H = H.astype(np.float64)
    Ut = _cholesky_lower(H[::-1, ::-1], xp)[::-1, ::-1]  # upper, H = Ut Ut^T
    # (nb, g, g) upper-triangular diagonal blocks of Ut (a view, or a copy for g > 1)
    B = xp.moveaxis(xp.diagonal(Ut)[None, None, :] if g == 1 else
                    Ut.reshape(nb, g, nb, g).diagonal(axis1=0, axis2=2), -1, 0)
    if xp is not np and g == 1:  # CuPy: U[:, k] = Ut[:, k] / Ut[k, k], a column scaling
        U = Ut / xp.diagonal(Ut)[None, :]
    elif g == 1 and _solve_1x1_rule() == "reciprocal":  # what LAPACK's 1x1 solve computes here
        U = Ut * (1.0 / np.diagonal(Ut))[None, :]
    elif g == 1 and _solve_1x1_rule() == "division":
        U = Ut / np.diagonal(Ut)[None, :]
    else:
        # U[:, blk] = Ut[:, blk] B^{-1}  <=>  B^T U[:, blk]^T = Ut[:, blk]^T, all blocks at once
        Y = Ut.reshape(n, nb, g).transpose(1, 2, 0)  # (nb, g, n)
        if xp is np:  # one dgesv per block, as the reference: bit-identical
            X = np.linalg.solve(B.transpose(0, 2, 1), Y)
        else:  # CuPy: one batched solve
            X = xp.linalg.solve(xp.ascontiguousarray(B.transpose(0, 2, 1)), xp.ascontiguousarray(Y))
        U = X.transpose(2, 0, 1).reshape(n, n)
    # keep block(row) < block(col): zero on and below the diagonal blocks, exactly as the
    # reference's "diagonal blocks := 0, then triu(U, 1)"
    blk = xp.arange(n) // g
    U = xp.where(blk[:, None] < blk[None, :], U, 0.0)
    D = None
    if with_d:
        if xp is np:  # same g x g products as the reference, block by block
            D = np.empty((nb, g, g), dtype=np.float64)
            for b in range(nb):
                D[b] = B[b] @ B[b].T
        else:
            D = B @ B.transpose(0, 2, 1)
    return U, D


# ---------------------------------------------------------------------------------------
# the lazy-batch driver (NumPy and CuPy)
# ---------------------------------------------------------------------------------------
def _update_matmul(G, E, U, a: int, mid: int, b: int, first: bool) -> None:
    """``G[:, mid:b] (+)= E[:, a:mid] @ U[a:mid, mid:b]`` (array-module generic)."""
    if first:
        G[:, mid:b] = E[:, a:mid] @ U[a:mid, mid:b]
    else:
        G[:, mid:b] += E[:, a:mid] @ U[a:mid, mid:b]


def _lazy_batch(m: int, n: int, U, leaf: int, run_leaf, xp, update=_update_matmul, G=None,
                E=None):
    """Visit the column range [0, n) as a binary tree whose leaves hold ``leaf`` columns.

    ``G`` (m, n) holds the *pending* feedback: when a leaf ``[a, b)`` runs,
    ``G[:, a:b] = sum_{l < a} E_l U_{l, a:b}`` with ``E = W - Ŵ``. After the left half of a
    node is done, its errors reach the right half by one matrix product,
    ``G[:, mid:b] += E[:, a:mid] @ U[a:mid, mid:b]`` (half the flops in the top node's
    (m, n/2, n/2) product: BLAS-3 shapes as large as possible). ``run_leaf(a, b, G, E)``
    does the in-leaf recursion and must fill ``E[:, a:b]``; it may overwrite
    ``G[:, a:b]``. Leaves run left to right (so stochastic uniforms are drawn in order).

    ``update(G, E, U, a, mid, b, first)`` performs the feedback product; ``first`` is true
    on the leftmost spine of the tree (``a == 0``), where ``G[:, mid:b]`` receives its first
    contribution and is *assigned* (so ``G`` is never zeroed, except the first leaf's
    columns, which get no feedback). ``G``, ``E`` may be passed in (workspaces).
    """
    G = xp.empty((m, n), dtype=np.float64) if G is None else G
    E = xp.empty((m, n), dtype=np.float64) if E is None else E
    G[:, :min(leaf, n)] = 0.0

    def visit(a, b):
        nleaf = -(-(b - a) // leaf)
        if nleaf <= 1:
            run_leaf(a, b, G, E)
            return
        mid = a + (nleaf // 2) * leaf
        visit(a, mid)
        update(G, E, U, a, mid, b, a == 0)
        visit(mid, b)

    visit(0, n)
    return E


def _fused_grid(quantizer, m: int):
    """``(step (m,), offset (m,), hi, bounded, code dtype)`` when ``quantizer`` is a plain
    ScalarGrid / IntegerGrid whose parameters fit ``m`` rows, else ``None`` (generic path,
    which then also raises the quantizer's own errors)."""
    kind = type(quantizer)
    if kind is ScalarGrid:
        step = np.asarray(quantizer.step, dtype=np.float64)
        offset = np.asarray(quantizer.offset, dtype=np.float64)
        for p in (step, offset):
            if p.ndim == 1 and p.shape[0] != m:
                return None
        return (np.broadcast_to(step, (m,)).copy(), np.broadcast_to(offset, (m,)).copy(),
                float(quantizer.levels - 1), True, np.uint8)
    if kind is IntegerGrid:
        # x / step == (x - 0.0) / step and code * step == 0.0 + step * code, bit for bit
        return (np.full(m, float(quantizer.step)), np.zeros(m), 0.0, False, np.int64)
    return None


def _non_finite_error():
    return ValueError(
        "x contains NaN or Inf entries: the LDLQ feedback overflowed (the input to the "
        "quantizer was not finite); check that H is well conditioned (damp it first)"
    )


def _ldlq_generic(W, U, quantizer, g: int, rng, leaf: int) -> LDLQResult:
    """Lazy-batch LDLQ with any quantizer (NumPy or CuPy): encode/decode per (m, g) block."""
    xp = array_module(W)
    m, n = W.shape
    W_hat = xp.empty_like(W)
    codes = []

    def run_leaf(a, b, G, E):
        for k in range(a, b, g):
            x = W[:, k:k + g] + G[:, k:k + g]
            q = block_quantizer(quantizer, k, k + g)
            c = q.encode(x, rng)
            W_hat[:, k:k + g] = q.decode(c)
            E[:, k:k + g] = W[:, k:k + g] - W_hat[:, k:k + g]
            codes.append(c)
            if k + g < b:
                G[:, k + g:b] += E[:, k:k + g] @ U[k:k + g, k + g:b]

    _lazy_batch(m, n, U, _panel_size(g, leaf), run_leaf, xp)
    return LDLQResult(W_hat, xp.concatenate(codes, axis=-1))
