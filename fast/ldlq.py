r"""LDLQ / BlockLDLQ, fast: the same functions as :mod:`quipref.ldlq`, in "lazy batch" form.

Same names, signatures, validation and exceptions as :mod:`quipref.ldlq` (read that
module first: it is the definition). NumPy input runs here (Numba + BLAS); CuPy input
runs on the GPU (:mod:`fast.cuda.ldlq`) and stays there.

The algorithm
-------------
The reference rounds block column ``k`` from

.. math::  x_k = W_{:,k} + (W - \hat W)_{:,<k}\, U_{<k,k},

one matrix-vector product per column: :math:`m n^2` flops (counting a multiply-add as
two), all of it BLAS-2 and memory bound. The lazy-batch form (OPTQ's "lazy batch",
QuIP#'s buffered LDLQ) keeps a matrix ``G`` of *pending* feedback and splits the columns
recursively in halves down to *leaves* of ``LEAF = 64`` columns (a multiple of ``g``):

1. **Between halves, BLAS-3.** When the left half ``[a, mid)`` of a node ``[a, b)`` is
   done, ``G[:, mid:b] += (W - Ŵ)[:, a:mid] @ U[a:mid, mid:b]`` carries its errors to the
   right half in one matrix product. Half of all flops are in the root's
   ``(m, n/2) x (n/2, n/2)`` product, a quarter in the next level's two, and so on: the
   shapes stay large (a fixed panel width would make every product ``(m, k) x (k, P)``).
2. **Inside a leaf,** column by column: ``x_c = W_c + G_c`` (``G_c`` already holds every
   earlier column's feedback), round, and ``G[i, c+1:b] += e_c U[c, c+1:b]`` with
   ``e = W - Ŵ``: a Numba kernel over rows (rows never interact; row ranges run on a few
   threads), vectorised across the rows of a tile (:func:`_leaf_grid`). For
   :class:`~quipref.quantizers.ScalarGrid` and :class:`~quipref.quantizers.IntegerGrid`
   (nearest or stochastic) the quantizer is fused into this loop with the reference's
   exact arithmetic: ``t = (x - offset) / step``, ``q = floor(t + 1/2)`` (or
   ``floor(t + u)``), clip to ``[0, 2^b - 1]``, ``x̂ = offset + step * q``. Any other
   quantizer (Lloyd-Max, vector quantizers with ``g > 1``) takes the generic path, which
   calls ``quantizer.encode`` / ``decode`` on each (m, g) block from Python, with the
   same BLAS-3 feedback between leaves.

Only the in-leaf part (a fraction ``LEAF / n`` of the flops) runs outside BLAS.

Threads on the CPU (fused path)
-------------------------------
Everything runs on one small thread pool (:func:`_over_rows`: ``NUMBA_NUM_THREADS``
threads, row ranges): the leaf kernels, and the feedback products too, each thread
computing its rows of ``G[:, mid:b]`` with a *single-threaded* dgemm (NumPy releases the
GIL inside it). BLAS is held single-threaded for the whole recursion
(:func:`_blas_single_threaded`, threadpoolctl): OpenBLAS's own idle workers busy-wait
after every multi-threaded call, and between two dgemm calls they took a core away from
the leaf kernels (recursion at ~30 % of the machine's dgemm rate on the 2-core VM with
default settings, ~43 % with ``OPENBLAS_THREAD_TIMEOUT=4``). The work arrays ``G`` and
``E`` are column-major (a leaf's rows are contiguous runs), and ``Ŵ`` is decoded from the
codes in one pass at the end (:func:`_decode_grid`, bit-identical to the value rounded to).

Randomness: stochastic rounding draws its uniforms from the same NumPy Generator, in
the same order as the reference (one ``rng.random((m, g))`` per block, blocks in column
order). A Generator fills ``random(k)`` then ``random(l)`` exactly as ``random(k + l)``,
so the fused path draws one leaf at a time, ``rng.random((L // g, m, g))``, leaves run
left to right, and the Generator ends in the same state: the same seed gives the same
codes.

What is and is not bit-identical
--------------------------------
The factor ``U`` is computed by the same LAPACK calls as the reference (Cholesky of the
reversed matrix, one triangular ``g x g`` solve per block, here batched) and is equal
bit for bit. The *sums* ``(W - Ŵ)_{:,<k} U_{<k,k}`` are the same terms added in a
different order (dgemm tree + in-leaf sequence vs one gemv), so ``x_k`` can differ from
the reference's in the last bits: ``|Δx| <~ 2 k 2^-53 (|W_k| + sum_l |E_l U_lk|)``. A
code differs only when the reference's ``x_k`` lies within that distance of a rounding
boundary; the parity tests check exactly that, and that it is rare.

References
----------
.. [OPTQ] Frantar et al., arXiv 2210.17323, "lazy batch" updates (Sec. 4, step 2).
.. [QuIP#] Tseng et al., arXiv 2402.04396, BlockLDLQ (Sec. 4.1).
"""
from __future__ import annotations

import contextlib
import functools
import threading

import numba
import numpy as np

from quipref._checks import (array_module, check_block_size, check_hessian, check_seed,
                             check_weight, is_cupy_array)
from quipref.ldlq import *  # noqa: F401,F403  (LDLQResult, check_quantizer, ...)
from quipref.ldlq import (LDLQResult, _block_quantizer, _check_greedy_inputs, _cholesky_lower, _ldlq_rg,
                          check_quantizer)
from quipref.ldlq import __all__  # noqa: F401
from quipref.quantizers.scalar import IntegerGrid, ScalarGrid

#: Columns per leaf of the lazy-batch tree (rounded down to a multiple of the block size g).
LEAF = 64
#: Columns per panel of the greedy passes.
PANEL = 128


# ---------------------------------------------------------------------------------------
# the factor
# ---------------------------------------------------------------------------------------
def ldl(H, block_size: int = 1):
    r"""Block UDUᵀ factorisation :math:`H = (U + I)\,D\,(U + I)^T`: see :func:`quipref.ldl`.

    Same result (bit for bit on NumPy), validation and exceptions as the reference;
    the ``n / g`` triangular block solves are batched into one call.
    """
    H = check_hessian(H)
    g = check_block_size(block_size, H.shape[0])
    return _ldl_factor(H, g, with_d=True)


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


#: Largest CPU workspace (bytes) kept between calls; larger problems allocate afresh.
WORKSPACE_MAX_BYTES = 512 * 2**20
_WORKSPACE = threading.local()


def _cpu_workspace(m: int, n: int):
    """``(G, E, S)``: two (m, n) float64 column-major work arrays and a flat scratch of m*n
    doubles for the products, kept per thread for the last shape while they total at most
    :data:`WORKSPACE_MAX_BYTES`.

    Why: on the development VM, first touches of freshly allocated memory were measured to
    cost ~1.4 ms per MB of system time (page faults; numpy returns large blocks to the OS on
    free), i.e. ~0.2 s of a 2048 x 2048 LDLQ whose arithmetic takes ~0.22 s. Reusing the
    work arrays leaves only the outputs (W_hat, codes) to be faulted in.
    """
    if 3 * 8 * m * n > WORKSPACE_MAX_BYTES:
        return np.empty((m, n), order="F"), np.empty((m, n), order="F"), np.empty(m * n)
    ws = getattr(_WORKSPACE, "arrays", None)
    if ws is None or ws[0].shape != (m, n):
        _WORKSPACE.arrays = None  # free the old ones first
        ws = (np.empty((m, n), order="F"), np.empty((m, n), order="F"), np.empty(m * n))
        _WORKSPACE.arrays = ws
    return ws


def _matmul_rows(r0, r1, G, E, U, S, a, mid, b, first):
    """Rows ``r0 .. r1-1`` of the feedback product ``G[:, mid:b] (+)= E[:, a:mid] @ U[a:mid, mid:b]``
    (one single-threaded dgemm; NumPy releases the GIL inside it, so row ranges run in
    parallel on the :func:`_over_rows` threads). ``S`` is the (m, b - mid) scratch for the
    product when it is added rather than assigned."""
    if first:
        np.matmul(E[r0:r1, a:mid], U[a:mid, mid:b], out=G[r0:r1, mid:b])
    else:
        T = S[r0:r1]
        np.matmul(E[r0:r1, a:mid], U[a:mid, mid:b], out=T)
        G[r0:r1, mid:b] += T


def _update_numpy(S):
    """CPU feedback product into a contiguous scratch ``S`` (no temporary allocation);
    the first contribution is written straight into ``G``. Rows are split over the
    :func:`_over_rows` threads, each running a single-threaded dgemm (see
    :func:`_blas_single_threaded` for why not OpenBLAS's own threads)."""

    def update(G, E, U, a, mid, b, first):
        m = G.shape[0]
        T = S[:m * (b - mid)].reshape(b - mid, m).T  # (m, b - mid), column-major like G
        _over_rows(_matmul_rows, m, G, E, U, T, a, mid, b, first)

    return update


# ---------------------------------------------------------------------------------------
# Numba kernels (CPU)
# ---------------------------------------------------------------------------------------
_BLAS_LOCK = threading.Lock()
_BLAS_STATE = {"users": 0, "limiter": None}


@functools.lru_cache(maxsize=None)
def _blas_controller():
    """threadpoolctl's controller of the BLAS libraries loaded now (NumPy's OpenBLAS), or
    ``None`` when threadpoolctl is not installed."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    return ThreadpoolController().select(user_api="blas")


@contextlib.contextmanager
def _blas_single_threaded():
    """Run the block with every BLAS call single-threaded (process-wide, restored after;
    re-entrant and safe when several Python threads use it at once).

    Why: OpenBLAS's idle worker threads busy-wait for ~2^28 cycles
    (``OPENBLAS_THREAD_TIMEOUT``, default 28) after each multi-threaded call before they
    sleep. Between two dgemm calls of the lazy-batch tree the Numba leaf kernels need
    both cores, and a spinning worker took one of them away: on the 2-core development VM
    the recursion ran at ~30 % of the machine's dgemm rate with default settings, ~43 %
    with ``OPENBLAS_THREAD_TIMEOUT=4``. With BLAS single-threaded no worker ever wakes,
    and the feedback products are split by rows over the same threads as the leaves
    (:func:`_update_numpy`), so the dgemm still uses every core.
    """
    ctl = _blas_controller()
    if ctl is None:
        yield
        return
    with _BLAS_LOCK:
        if _BLAS_STATE["users"] == 0:
            _BLAS_STATE["limiter"] = ctl.limit(limits=1)
        _BLAS_STATE["users"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_STATE["users"] -= 1
            if _BLAS_STATE["users"] == 0:
                _BLAS_STATE["limiter"].restore_original_limits()
                _BLAS_STATE["limiter"] = None


_POOL = None


def _over_rows(kernel, m: int, *args):
    """Run ``kernel(r0, r1, *args)`` on row ranges covering ``[0, m)``, one per thread.

    The kernels are compiled with ``nogil=True`` and run on a small thread pool rather than
    with ``numba.prange``: the leaves are short (tens of microseconds of work) and Numba's
    OpenMP layer with the default wait policy was measured to cost ~8 ms per parallel
    region on the 2-core development VM (0.17 ms with ``OMP_WAIT_POLICY=passive``, 0.24 ms
    with the workqueue layer), which dominated the whole LDLQ. Threads here: Numba's
    configured thread count (``NUMBA_NUM_THREADS``, default: the number of CPUs).
    """
    global _POOL
    nt = max(1, min(int(numba.config.NUMBA_NUM_THREADS), m // 16))
    if nt == 1:
        kernel(0, m, *args)
        return
    if _POOL is None or _POOL._max_workers < nt - 1:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=nt - 1, thread_name_prefix="fast-ldlq")
    bounds = [(m * t) // nt for t in range(nt + 1)]
    futures = [_POOL.submit(kernel, bounds[t], bounds[t + 1], *args) for t in range(1, nt)]
    kernel(bounds[0], bounds[1], *args)
    for f in futures:
        f.result()


@numba.njit(inline="always")
def _round_to_grid(x, o, s, hi, bounded, shift):
    """The reference's ScalarGrid / IntegerGrid rounding of one value, operation for
    operation: ``t = (x - o) / s``, ``q = floor(t + shift)`` (``shift`` = 1/2 for nearest,
    the uniform for stochastic), clip to ``[0, hi]`` when bounded, value ``o + s * q``.
    Returns ``(code, value, finite)``."""
    t = (x - o) / s
    q = np.floor(t + shift)
    if bounded:
        if q < 0.0:
            q = 0.0
        elif q > hi:
            q = hi
    finite = np.isfinite(q)
    if not finite:
        q = 0.0
    k = np.int64(q)
    return k, o + s * np.float64(k), finite


#: Rows per tile of the in-leaf kernel: the tile's leaf block is held transposed, (L, R), in
#: three buffers of L * R * 8 bytes (256 KB each for L = 64; they stay in L2). Long tiles
#: mean long contiguous runs in the column-major G / E (measured on the 2-core VM, one thread,
#: m = n = 2048: 56 ms for all leaves with 32-row tiles and per-column views, 39 ms here).
TILE_ROWS = 512


# error_model="numpy": no zero-division branch (step > 0 is checked by the quantizers; a zero
# step would give a non-finite t, flagged like any other), so the rounding loop vectorises
@numba.njit(cache=True, nogil=True, error_model="numpy")
def _leaf_grid(r0, r1, W, G, U, a, b, step, offset, hi, bounded, stochastic, u, codes, E, bad):
    """In-leaf LDLQ recursion for columns ``[a, b)`` with a fused uniform grid.

    Rows ``r0 .. r1-1`` (:func:`_over_rows` runs row ranges on several threads), in tiles
    of :data:`TILE_ROWS` rows. Each tile's leaf block of ``W`` (row-major) and ``G``
    (column-major) is copied into (L, R) buffers with the tile's rows contiguous, so that
    every step below is a vector operation over the tile's rows (rows are independent; a
    row-by-row loop waits on the latency of the divide/floor chain at every column):

    for each column ``c`` of the leaf: ``x = W_c + G_c``, round (the reference's
    arithmetic, as :func:`_round_to_grid`), ``e = W_c - Ŵ_c``, then the feedback
    ``G_d += e U[c, d]`` for ``d = c+1 .. b-1``. The columns go in sub-blocks of 8: inside
    a sub-block the feedback is applied column by column; to the later columns of the
    leaf it is applied once per sub-block, ``G_d = ((G_d + e_s U[s, d]) + e_{s+1}
    U[s+1, d]) + ...`` in a register. Either way every ``G_d`` receives the products
    ``e_c U[c, d]`` one at a time in increasing ``c``: the same additions in the same
    order as a plain column-by-column loop, bit for bit.

    ``G[i, a:b]`` enters as the feedback from columns ``< a``. ``step``/``offset`` (m,);
    ``hi`` the largest code when ``bounded``; ``u`` (m, b - a) the uniforms (stochastic
    only). Writes ``codes`` (row-major) and ``E = W - Ŵ`` (column-major) in the leaf's
    columns (``Ŵ`` itself is decoded from the codes afterwards, :func:`_decode_grid`);
    flags rows whose input to Q was not finite in ``bad``.
    """
    L = b - a
    R = min(TILE_ROWS, r1 - r0)
    Gt = np.empty((L, R))  # running feedback, then the errors e
    Wt = np.empty((L, R))
    Ct = np.empty((L, R), dtype=np.int64)
    Ut = np.empty((L, R)) if stochastic else np.empty((1, 1))
    st = np.empty(R)
    of = np.empty(R)
    nf = np.empty(R, dtype=np.uint8)
    for i0 in range(r0, r1, R):
        nr = min(R, r1 - i0)
        for r in range(nr):
            i = i0 + r
            st[r] = step[i]
            of[r] = offset[i]
            nf[r] = 0
            for c in range(L):
                Wt[c, r] = W[i, a + c]
            if stochastic:
                for c in range(L):
                    Ut[c, r] = u[i, c]
        for c in range(L):  # G is column-major: contiguous runs of the tile's rows
            for r in range(nr):
                Gt[c, r] = G[i0 + r, a + c]
        for s in range(0, L, 8):  # sub-blocks of 8 columns
            se = min(s + 8, L)
            for c in range(s, se):
                for r in range(nr):
                    w = Wt[c, r]
                    shift = Ut[c, r] if stochastic else 0.5
                    t = (w + Gt[c, r] - of[r]) / st[r]
                    q = np.floor(t + shift)
                    if bounded:
                        q = 0.0 if q < 0.0 else q
                        q = hi if q > hi else q
                    fin = abs(q) <= 1.7976931348623157e308  # False for +-inf and NaN
                    nf[r] |= np.uint8(0 if fin else 1)
                    q = q if fin else 0.0
                    k = np.int64(q)
                    Ct[c, r] = k
                    Gt[c, r] = w - (of[r] + st[r] * np.float64(k))
                for d in range(c + 1, se):  # feedback inside the sub-block
                    ud = U[a + c, a + d]
                    for r in range(nr):
                        Gt[d, r] += Gt[c, r] * ud
            if se - s == 8:  # feedback of the 8 columns to the rest of the leaf, one pass
                c0 = a + s
                for d in range(se, L):
                    cd = a + d
                    u0, u1, u2, u3 = U[c0, cd], U[c0 + 1, cd], U[c0 + 2, cd], U[c0 + 3, cd]
                    u4, u5, u6, u7 = U[c0 + 4, cd], U[c0 + 5, cd], U[c0 + 6, cd], U[c0 + 7, cd]
                    for r in range(nr):
                        acc = Gt[d, r]
                        acc += Gt[s, r] * u0
                        acc += Gt[s + 1, r] * u1
                        acc += Gt[s + 2, r] * u2
                        acc += Gt[s + 3, r] * u3
                        acc += Gt[s + 4, r] * u4
                        acc += Gt[s + 5, r] * u5
                        acc += Gt[s + 6, r] * u6
                        acc += Gt[s + 7, r] * u7
                        Gt[d, r] = acc
        for r in range(nr):
            i = i0 + r
            if nf[r]:
                bad[i] = 1
            for c in range(L):
                codes[i, a + c] = Ct[c, r]
        for c in range(L):  # E is column-major too
            for r in range(nr):
                E[i0 + r, a + c] = Gt[c, r]


@numba.njit(cache=True, nogil=True)
def _decode_grid(r0, r1, codes, step, offset, W_hat):
    """``W_hat[i, c] = offset[i] + step[i] * codes[i, c]`` for rows ``r0 .. r1-1``: the value
    :func:`_leaf_grid` rounded to, by the same expression (``o + s * float64(k)``), so
    bit-identical; one sequential pass instead of strided writes in every leaf."""
    for i in range(r0, r1):
        o = offset[i]
        s = step[i]
        for c in range(codes.shape[1]):
            W_hat[i, c] = o + s * np.float64(np.int64(codes[i, c]))


# ---------------------------------------------------------------------------------------
# LDLQ
# ---------------------------------------------------------------------------------------
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


def _leaf_uniforms(rng, m: int, g: int, P: int):
    """The uniforms the reference draws for ``P // g`` consecutive blocks, as (m, P)."""
    u = rng.random((P // g, m, g))  # block by block, each (m, g) in C order
    return np.ascontiguousarray(u.transpose(1, 0, 2).reshape(m, P))


def _non_finite_error():
    return ValueError(
        "x contains NaN or Inf entries: the LDLQ feedback overflowed (the input to the "
        "quantizer was not finite); check that H is well conditioned (damp it first)"
    )


def _ldlq_grid_numpy(W, U, params, rng, g: int, leaf: int) -> LDLQResult:
    step, offset, hi, bounded, code_dtype = params
    m, n = W.shape
    W_hat = np.empty_like(W)
    codes = np.empty((m, n), dtype=code_dtype)
    bad = np.zeros(m, dtype=np.uint8)
    stochastic = rng is not None
    no_u = np.zeros((1, 1))
    G, E, S = _cpu_workspace(m, n)

    def run_leaf(a, b, G, E):
        u = _leaf_uniforms(rng, m, g, b - a) if stochastic else no_u
        _over_rows(_leaf_grid, m, W, G, U, a, b, step, offset, hi, bounded, stochastic, u, codes,
                   E, bad)

    with _blas_single_threaded():
        _lazy_batch(m, n, U, _panel_size(g, leaf), run_leaf, np, _update_numpy(S), G, E)
    if bad.any():
        raise _non_finite_error()
    _over_rows(_decode_grid, m, codes, step, offset, W_hat)
    return LDLQResult(W_hat, codes)


def _ldlq_generic(W, U, quantizer, g: int, rng, leaf: int) -> LDLQResult:
    """Lazy-batch LDLQ with any quantizer (NumPy or CuPy): encode/decode per (m, g) block."""
    xp = array_module(W)
    m, n = W.shape
    W_hat = xp.empty_like(W)
    codes = []

    def run_leaf(a, b, G, E):
        for k in range(a, b, g):
            x = W[:, k:k + g] + G[:, k:k + g]
            q = _block_quantizer(quantizer, k, k + g)
            c = q.encode(x, rng)
            W_hat[:, k:k + g] = q.decode(c)
            E[:, k:k + g] = W[:, k:k + g] - W_hat[:, k:k + g]
            codes.append(c)
            if k + g < b:
                G[:, k + g:b] += E[:, k:k + g] @ U[k:k + g, k + g:b]

    _lazy_batch(m, n, U, _panel_size(g, leaf), run_leaf, xp)
    return LDLQResult(W_hat, xp.concatenate(codes, axis=-1))


def ldlq(W, H, quantizer, block_size: int = 1, *, seed=0) -> LDLQResult:
    r"""LDLQ / BlockLDLQ with any quantizer: see :func:`quipref.ldlq` (same contract).

    Lazy-batch form (module docstring): BLAS-3 feedback between leaves of 64 columns, a
    Numba (NumPy input) or CUDA (CuPy input) recursion inside each leaf with
    :class:`~quipref.quantizers.ScalarGrid` / :class:`~quipref.quantizers.IntegerGrid`
    fused, the quantizer's own ``encode`` / ``decode`` otherwise. CuPy in, CuPy out.
    """
    W = check_weight(W)
    m, n = W.shape
    H = check_hessian(H, n, psd=False)  # the factor's Cholesky rejects non-PD H (same message as quipref)
    g = check_block_size(block_size, n)
    check_quantizer(quantizer, g)
    rng = check_seed(seed) if getattr(quantizer, "stochastic", False) else None
    if is_cupy_array(W) or is_cupy_array(H):
        from .cuda.ldlq import ldlq_cuda

        return ldlq_cuda(W, H, quantizer, g, rng)
    W = np.ascontiguousarray(W, dtype=np.float64)
    U, _ = _ldl_factor(H, g, with_d=False)
    params = _fused_grid(quantizer, m)
    if params is not None:
        return _ldlq_grid_numpy(W, U, params, rng, g, LEAF)
    return _ldlq_generic(W, U, quantizer, g, rng, LEAF)


# ---------------------------------------------------------------------------------------
# greedy passes and LDLQ-RG
# ---------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _greedy_panel_grid(r0, r1, W, W_hat, E, codes, G, Hp, hdiag, p0, step, offset, hi, bounded,
                       changed):
    """One panel of a greedy pass with a fused nearest grid, rows ``r0 .. r1-1``.

    ``G`` (m, P) = ``(W_hat - W) @ H[:, p0:p1]`` at the panel's start; ``Hp`` (P, P) =
    ``H[p0:p1, p0:p1]``; ``hdiag`` (P,) its diagonal. Updates ``W_hat``, ``E = W_hat - W``
    and ``codes`` in the panel's columns; ``changed[i] = 1`` if row i moved.
    """
    P = Hp.shape[0]
    acc = np.empty(P)
    for i in range(r0, r1):
        for j in range(P):
            acc[j] = G[i, j]
        s = step[i]
        o = offset[i]
        for j in range(P):
            c = p0 + j
            old = W_hat[i, c]
            target = old - acc[j] / hdiag[j]
            k, new, finite = _round_to_grid(target, o, s, hi, bounded, 0.5)
            codes[i, c] = k
            if new != old:
                changed[i] = 1
                d = new - old
                W_hat[i, c] = new
                E[i, c] = new - W[i, c]
                tail = acc[j + 1:]
                hrow = Hp[j, j + 1:]
                for jj in range(tail.shape[0]):
                    tail[jj] += d * hrow[jj]


def _greedy_generic(W, H, quantizer, W_hat, codes, n_passes: int, panel: int):
    """Lazy-batch greedy passes with any scalar quantizer (NumPy or CuPy)."""
    xp = array_module(W)
    m, n = W.shape
    for _ in range(n_passes):
        changed = False
        E = W_hat - W
        for p0 in range(0, n, panel):
            p1 = min(p0 + panel, n)
            G = E @ H[:, p0:p1]
            Dp = xp.zeros((m, p1 - p0))
            for i in range(p0, p1):
                gi = G[:, i - p0]
                if i > p0:
                    gi = gi + Dp[:, :i - p0] @ H[p0:i, i]
                target = W_hat[:, i] - gi / H[i, i]
                c = quantizer.encode(target[:, None])[:, 0]
                new = quantizer.decode(c[:, None])[:, 0]
                if bool(xp.any(new != W_hat[:, i])):
                    changed = True
                Dp[:, i - p0] = new - W_hat[:, i]
                W_hat[:, i] = new
                codes[:, i] = c
                E[:, i] = new - W[:, i]
        if not changed:
            break
    return LDLQResult(W_hat, codes)


def _greedy_blocks(W, H, quantizer, W_hat, g: int, n_passes: int, panel: int) -> LDLQResult:
    r"""Lazy-batch block greedy passes (``g > 1``) with any quantizer (NumPy or CuPy).

    The reference's step for block ``b`` (columns ``k .. k+g-1``) needs ``E H_{:,b}`` with
    the *current* ``E = Ŵ - W``. Per panel of ``P`` columns (a multiple of ``g``) one
    matrix product ``G = E H[:, panel]`` (BLAS-3, ``(m, n) x (n, P)``) gives it at the
    panel's start; inside the panel the changes ``Δ`` of the panel's earlier blocks are
    added, ``E H_{:,b} = G_b + Δ_{:,<b} H_{<b,b}``. Then the same steps as the reference:
    ``target = Ŵ_b - solve(H_bb, (E H_b)^T)^T``, ``encode``, ``decode``; the quantizer is
    called once per block with the whole (m, g) block, in the reference's order (initial
    codes block by block, then block by block in each pass).

    Same sums in another order, so a code can differ from the reference's only where the
    reference's target is within round-off of being equidistant from two codewords (the
    parity tests check exactly that); equal codes give bit-equal ``Ŵ`` (``decode``).
    """
    xp = array_module(W)
    m, n = W.shape
    blocks = [quantizer.encode(W_hat[:, k:k + g]) for k in range(0, n, g)]
    for _ in range(n_passes):
        changed = False
        E = W_hat - W
        for p0 in range(0, n, panel):
            p1 = min(p0 + panel, n)
            G = E @ H[:, p0:p1]  # (m, P): E H[:, panel] at the panel's start
            D = xp.zeros((m, p1 - p0))  # changes of the panel's blocks so far
            for k in range(p0, p1, g):
                j = k - p0
                b = slice(k, k + g)
                grad = G[:, j:j + g]
                if j:
                    grad = grad + D[:, :j] @ H[p0:k, b]
                target = W_hat[:, b] - xp.linalg.solve(H[b, b], grad.T).T
                c = quantizer.encode(target)
                new = quantizer.decode(c)
                if bool(xp.any(new != W_hat[:, b])):
                    changed = True
                D[:, j:j + g] = new - W_hat[:, b]
                W_hat[:, b] = new
                E[:, b] = new - W[:, b]
                blocks[k // g] = c
        if not changed:
            break
    return LDLQResult(W_hat, xp.concatenate(blocks, axis=-1))


def greedy_passes(W, H, quantizer, W_hat, n_passes: int = 1, block_size: int = 1) -> LDLQResult:
    r"""Greedy local search on the proxy loss: see :func:`quipref.greedy_passes` (same
    contract, validation and errors; ``block_size = g > 1`` is QuIP#'s block refinement).

    Lazy-batch form. ``g = 1``: at the start of each panel of 128 columns
    ``(Ŵ - W) H[:, panel]`` is one dgemm; inside the panel the changes of the earlier
    in-panel columns are added (Numba, rows in parallel, grid fused for ScalarGrid /
    IntegerGrid). ``g > 1``: the same panel product, then the quantizer's own
    ``encode`` / ``decode`` on each (m, g) block (:func:`_greedy_blocks`), NumPy or CuPy
    (CuPy in, CuPy out). Same sums in a different order, so, as for :func:`ldlq`, a code
    can differ only where the reference's target lies within round-off of a rounding
    boundary (a tie between two codewords for g > 1).

    Parameters
    ----------
    W : ndarray of shape (m, n)
    H : ndarray of shape (n, n), positive definite
    quantizer : Quantizer with nearest rounding, ``quantizer.dim`` dividing ``block_size``
    W_hat : ndarray of shape (m, n), on the quantizer's codebook
    n_passes : int
    block_size : int

    Returns
    -------
    LDLQResult
        As :func:`quipref.greedy_passes`.

    Raises
    ------
    ValueError, TypeError
        As :func:`quipref.greedy_passes` (the same shared checks).
    """
    W, H, W_hat, g = _check_greedy_inputs(W, H, quantizer, W_hat, n_passes, block_size)
    m, n = W.shape
    xp = array_module(W, H, W_hat)
    if xp is not np:
        W, H, W_hat = (xp.asarray(a) for a in (W, H, W_hat))
    H = H.astype(np.float64)
    W = W.astype(np.float64)
    W_hat = W_hat.astype(np.float64).copy()
    if g > 1:
        return _greedy_blocks(W, H, quantizer, W_hat, g, int(n_passes), _panel_size(g, PANEL))
    codes = quantizer.encode(W_hat)
    params = _fused_grid(quantizer, m) if xp is np else None
    if params is None:
        return _greedy_generic(W, H, quantizer, W_hat, codes, int(n_passes), PANEL)
    step, offset, hi, bounded, code_dtype = params
    W = np.ascontiguousarray(W)
    W_hat = np.ascontiguousarray(W_hat)
    codes64 = np.ascontiguousarray(codes, dtype=np.int64)
    for _ in range(int(n_passes)):
        changed = np.zeros(m, dtype=np.uint8)
        E = W_hat - W
        for p0 in range(0, n, PANEL):
            p1 = min(p0 + PANEL, n)
            G = np.ascontiguousarray(E @ H[:, p0:p1])
            Hp = np.ascontiguousarray(H[p0:p1, p0:p1])
            _over_rows(_greedy_panel_grid, m, W, W_hat, E, codes64, G, Hp, np.diag(Hp).copy(),
                               p0, step, offset, hi, bounded, changed)
        if not changed.any():
            break
    return LDLQResult(W_hat, codes64.astype(code_dtype, copy=False))


def ldlq_rg(W, H, quantizer, n_passes: int = 1, *, seed=0) -> LDLQResult:
    """LDLQ-RG: see :func:`quipref.ldlq_rg`; runs :func:`fast.ldlq.ldlq` and
    :func:`fast.ldlq.greedy_passes` through the reference's own driver."""
    return _ldlq_rg(W, H, quantizer, n_passes, seed, ldlq, greedy_passes)
