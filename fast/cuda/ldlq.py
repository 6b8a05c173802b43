"""LDLQ / BlockLDLQ on the GPU (CuPy in, CuPy out): the CUDA side of :func:`fast.ldlq.ldlq`.

Same lazy-batch algorithm as the CPU path (:func:`fast.ldlq._lazy_batch`, read its
docstring), with

* the factor from cuSOLVER (``cupy.linalg.cholesky`` of the reversed ``H``, as the
  reference does on CuPy input);
* the across-leaf feedback ``G[:, mid:b] += E[:, a:mid] @ U[a:mid, mid:b]`` as one cuBLAS
  DGEMM with ``beta = 1`` straight on the strided blocks (the tensor-core DGEMM on Hopper);
* the in-leaf recursion for :class:`~quipref.quantizers.ScalarGrid` /
  :class:`~quipref.quantizers.IntegerGrid` in ``fast/kernels/ldlq.cu``: one thread per
  row, the leaf's 64x64 block of ``U`` in shared memory, float64 and the reference's
  rounding arithmetic, so the codes follow the same rules as on the CPU;
* any other quantizer through the generic path, which calls ``encode`` / ``decode`` on
  CuPy (m, g) blocks (the :mod:`quipref.quantizers` accept CuPy arrays).

Stochastic rounding draws its uniforms on the host from the same NumPy Generator, in the
same order as the reference, and uploads them one leaf at a time.

Validation happens in :func:`fast.ldlq.ldlq` (the shared helpers of
:mod:`quipref._checks`), before anything here runs.
"""
from __future__ import annotations

import functools

import numpy as np

from quipref._contract import LDLQResult

from .._lazy_ldlq import (LEAF, _fused_grid, _lazy_batch, _ldl_factor, _ldlq_generic,
                          _non_finite_error, _panel_size)
from ._compile import load_module

#: Rows per thread block and shared-memory row stride; with the leaf width LEAF (one
#: definition, :mod:`fast._lazy_ldlq`) they must match ldlq.cu.
ROWS = 32
LD = LEAF + 1
SMEM_BYTES = (LEAF * LD + 3 * ROWS * LD) * 8


@functools.lru_cache(maxsize=None)
def _leaf_kernel():
    kernel = load_module("ldlq").get_function("ldlq_leaf_grid")
    kernel.max_dynamic_shared_size_bytes = SMEM_BYTES
    return kernel


def _update_cublas(G, E, U, a: int, mid: int, b: int, first: bool) -> None:
    """``G[:, mid:b] += E[:, a:mid] @ U[a:mid, mid:b]`` as one cuBLAS DGEMM with ``beta = 1``
    (``beta = 0`` when ``first``: the block's first contribution), in place on the strided
    blocks (no copies, no temporary, no separate addition).

    Row-major blocks with row stride ``n`` are column-major transposes with leading
    dimension ``n``: ``G_blk^T (k x m) += U_blk^T (k x p) @ E_blk^T (p x m)``.
    """
    from cupy.cuda import device
    from cupy_backends.cuda.libs import cublas

    m, n = G.shape
    k, p = b - mid, mid - a
    handle = device.get_cublas_handle()
    mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    try:
        cublas.dgemm(handle, cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_N, k, m, p,
                     _ONE.ctypes.data, U.data.ptr + 8 * (a * n + mid), n,
                     E.data.ptr + 8 * a, n, (_ZERO if first else _ONE).ctypes.data,
                     G.data.ptr + 8 * mid, n)
    finally:
        cublas.setPointerMode(handle, mode)


_ONE = np.ones(1, dtype=np.float64)
_ZERO = np.zeros(1, dtype=np.float64)


def _leaf_uniforms_t(rng, m: int, g: int, L: int):
    """The reference's uniforms for ``L // g`` blocks, as (L, m) (row index fastest)."""
    u = rng.random((L // g, m, g))  # block by block, each (m, g) in C order
    return np.ascontiguousarray(u.transpose(0, 2, 1).reshape(L, m))


def _ldlq_grid_cuda(W, U, params, rng, g: int) -> LDLQResult:
    import cupy as cp

    step, offset, hi, bounded, code_dtype = params
    m, n = W.shape
    assert U.shape == (n, n) and U.flags.c_contiguous and U.dtype == cp.float64
    kernel = _leaf_kernel()
    W_hat = cp.empty_like(W)
    codes = cp.empty((m, n), dtype=cp.int64)
    bad = cp.zeros(1, dtype=cp.int32)
    step_d = cp.asarray(step)
    offset_d = cp.asarray(offset)
    no_u = cp.zeros(1, dtype=cp.float64)
    stochastic = rng is not None
    grid = ((m + ROWS - 1) // ROWS,)

    def run_leaf(a, b, G, E):
        L = b - a
        u = cp.asarray(_leaf_uniforms_t(rng, m, g, L)) if stochastic else no_u
        kernel(grid, (ROWS,),
               (W, G, U, np.int64(m), np.int64(n), np.int32(a), np.int32(L),
                step_d, offset_d, np.float64(hi), np.int32(bounded), u, np.int32(stochastic),
                codes, W_hat, E, bad),
               shared_mem=SMEM_BYTES)

    _lazy_batch(m, n, U, _panel_size(g, LEAF), run_leaf, cp, _update_cublas)
    if int(bad.get()[0]):
        raise _non_finite_error()
    return LDLQResult(W_hat, codes.astype(code_dtype, copy=False))


def ldlq_cuda(W, H, quantizer, g: int, rng) -> LDLQResult:
    """LDLQ on CuPy arrays; ``W``, ``H`` validated, ``g`` checked, ``rng`` from check_seed."""
    import cupy as cp

    W = cp.ascontiguousarray(cp.asarray(W), dtype=cp.float64)
    H = cp.asarray(H)
    U, _ = _ldl_factor(H, g, with_d=False)
    params = _fused_grid(quantizer, W.shape[0])
    if params is None or g > LEAF:  # the kernel's leaf holds at most LEAF columns
        return _ldlq_generic(W, U, quantizer, g, rng, LEAF)
    return _ldlq_grid_cuda(W, U, params, rng, g)
