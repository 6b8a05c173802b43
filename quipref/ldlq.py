r"""LDLQ: adaptive rounding with linear feedback, and its block form BlockLDLQ.

The class of rounding algorithms studied by QuIP rounds the columns of
:math:`W \in \mathbb{R}^{m\times n}` one after another, feeding back the error made
so far ([QuIP] eq. (2), restated in [QuIP#] Sec. 4.1):

.. math::

    \hat W = Q\big(W + (W - \hat W)\,\mathring U\big),

with :math:`\mathring U` strictly upper triangular, so column k only sees the errors
of columns ``< k``. LDLQ picks :math:`\mathring U` from the factorisation

.. math::

    H = (\mathring U + I)\, D\, (\mathring U + I)^T ,

:math:`D` diagonal (block diagonal with g×g blocks for BlockLDLQ). Writing
:math:`\eta_k = Q(x_k) - x_k` for the rounding error of the k-th (block) column fed to
Q, one has :math:`(\hat W - W)(\mathring U + I) = \eta` and therefore the exact
identity, for *any* quantizer Q, clamped or not,

.. math::

    \ell(\hat W) = \mathrm{tr}(\eta D \eta^T) = \sum_k \mathrm{tr}(\eta_k D_k \eta_k^T).

This module follows the **paper convention**: columns are processed in order
``k = 1 .. n``, and the factor is computed by a reversed Cholesky ("UDUᵀ"): with
``J`` the exchange matrix, ``J H J = C C^T`` gives :math:`\tilde U = J C J`,
:math:`H = \tilde U \tilde U^T`. In this order LDLQ with nearest rounding and no
incoherence processing is *exactly* OPTQ/GPTQ ([QuIP] Thm. 6).

References
----------
.. [QuIP] Chee, Cai, Kuleshov, De Sa, arXiv 2307.13304: LDLQ (Sec. 3), Thm. 1
   (optimality), Thm. 6 (= OPTQ), greedy local search and LDLQ-RG (Sec. 5 / code).
.. [QuIP#] Tseng et al., arXiv 2402.04396: BlockLDLQ (Sec. 4.1, Thm. 4.1, App. B).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import (array_module, check_block_size, check_hessian, check_seed,
                      check_weight)

__all__ = ["LDLQResult", "ldl", "ldlq", "greedy_passes", "ldlq_rg", "check_quantizer"]


class LDLQResult(NamedTuple):
    """``(W_hat, codes)``: the dequantized weights (m, n) and the quantizer's codes."""

    W_hat: np.ndarray
    codes: np.ndarray


def check_quantizer(quantizer, block_size: int = 1):
    """Check that ``quantizer`` follows the :class:`~quipref.quantizers.Quantizer` contract
    and that its vector dimension divides ``block_size``."""
    for attr in ("encode", "decode"):
        if not callable(getattr(quantizer, attr, None)):
            raise TypeError(
                f"quantizer must have encode(x, rng) and decode(codes) methods "
                f"(see quipref.quantizers), got {type(quantizer).__name__}"
            )
    dim = int(getattr(quantizer, "dim", 1))
    if block_size % dim:
        raise ValueError(
            f"block_size={block_size} must be a multiple of the quantizer's vector "
            f"dimension {dim} ({type(quantizer).__name__} codes {dim} weights at a time)"
        )
    return quantizer


def _block_quantizer(quantizer, start: int, stop: int):
    """The quantizer of columns ``start .. stop - 1``: ``quantizer.columns(start, stop)`` for
    quantizers that differ per column (ICQuant's outlier mask), else ``quantizer`` itself."""
    columns = getattr(quantizer, "columns", None)
    return quantizer if columns is None else columns(start, stop)


def _cholesky_lower(A, xp):
    """Lower Cholesky factor, with a clear error when A is not positive definite."""
    try:
        C = xp.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        C = None
    if C is None or not bool(xp.all(xp.isfinite(C))):
        raise ValueError(
            "H is singular or not positive definite, so LDLQ's factor H = (U+I) D (U+I)^T "
            "does not exist; damp it first, e.g. H = quipref.regularize_hessian(H) "
            "(H/mean(diag H) + 0.01 I) or quipref.damp_hessian(H)"
        )
    return C


def ldl(H, block_size: int = 1):
    r"""Block UDUᵀ factorisation :math:`H = (U + I)\,D\,(U + I)^T` (paper convention).

    Parameters
    ----------
    H : ndarray of shape (n, n)
        Symmetric positive definite.
    block_size : int
        ``g``; must divide n. ``g = 1`` is LDLQ's factor, ``g = 8`` QuIP#'s.

    Returns
    -------
    U : ndarray of shape (n, n)
        Block *strictly* upper triangular (zero on and below the g×g diagonal blocks).
    D : ndarray of shape (n // g, g, g)
        The symmetric positive definite diagonal blocks (for ``g = 1``, ``D[:, 0, 0]`` is
        the diagonal of D, the Schur-complement pivots, each ``<= H_kk``).

    Raises
    ------
    ValueError
        If H is not square/finite/symmetric/PSD, singular, or g does not divide n.

    Notes
    -----
    With the exchange matrix J, ``J H J = C C^T`` (Cholesky) gives the upper factor
    :math:`\tilde U = J C J` with :math:`H = \tilde U \tilde U^T`. With ``B`` the
    block diagonal of :math:`\tilde U`: :math:`D_k = B_k B_k^T` and
    :math:`U = \tilde U B^{-1} - I`.
    """
    H = check_hessian(H)
    g = check_block_size(block_size, H.shape[0])
    return _ldl(H, g)


def _ldl(H, g: int):
    """:func:`ldl` without input validation (for callers that validated already)."""
    n = H.shape[0]
    xp = array_module(H)
    H = H.astype(np.float64)
    Ut = _cholesky_lower(H[::-1, ::-1], xp)[::-1, ::-1]  # upper, H = Ut Ut^T
    U = xp.empty_like(Ut)
    D = xp.empty((n // g, g, g), dtype=np.float64)
    for b, k in enumerate(range(0, n, g)):
        Bk = Ut[k:k + g, k:k + g]  # upper-triangular g x g block
        D[b] = Bk @ Bk.T
        # columns of block k: Ut[:, k:k+g] @ Bk^{-1}, via a triangular solve
        U[:, k:k + g] = xp.linalg.solve(Bk.T, Ut[:, k:k + g].T).T
        U[k:k + g, k:k + g] = 0.0  # exactly I - I on the diagonal block
    U = xp.triu(U, 1)  # exact zeros below (round-off free)
    return U, D


def ldlq(W, H, quantizer, block_size: int = 1, *, seed=0) -> LDLQResult:
    r"""LDLQ (``block_size = 1``) or BlockLDLQ (``block_size = g``) with any quantizer.

    For each block of ``g`` columns ``k = 0, g, 2g, ...`` in order:

    .. math::

        x_k = W_{:,k} + (W_{:,<k} - \hat W_{:,<k})\, U_{<k,\,k},\qquad
        \hat W_{:,k} = Q(x_k),

    with ``U`` from :func:`ldl` ([QuIP] eq. (2); [QuIP#] Alg. / Sec. 4.1).

    Parameters
    ----------
    W : ndarray of shape (m, n)
        Weights (already incoherence-processed and scaled to the quantizer's range,
        if the method does that).
    H : ndarray of shape (n, n)
        Proxy Hessian, symmetric positive definite (damp it first).
    quantizer : Quantizer
        Anything with ``encode(x, rng)`` / ``decode(codes)`` acting on (m, g) blocks
        (:mod:`quipref.quantizers`). ``g`` must be a multiple of ``quantizer.dim``.
    block_size : int
        ``g``; must divide n.
    seed : int or numpy.random.Generator
        Randomness for stochastic quantizers (uniforms drawn block by block, in order).

    Returns
    -------
    LDLQResult
        ``W_hat`` (m, n) float64 and ``codes`` (the per-block codes concatenated along
        the last axis, e.g. (m, n) for scalar quantizers).

    Raises
    ------
    ValueError, TypeError
        Bad shapes, NaN/Inf, non-PSD or singular H, g not dividing n, or a quantizer
        that does not follow the contract.

    Notes
    -----
    Cost :math:`O(m n^2)`: each block reads all previous errors. :mod:`fast` computes
    the same recursion in the blocked "lazy batch" form (BLAS-3 updates).
    """
    W = check_weight(W)
    m, n = W.shape
    H = check_hessian(H, n, psd=False)  # the factor's Cholesky below rejects non-PD H
    g = check_block_size(block_size, n)
    check_quantizer(quantizer, g)
    rng = check_seed(seed) if getattr(quantizer, "stochastic", False) else None
    xp = array_module(W, H)
    W = xp.asarray(W, dtype=np.float64)
    U, _ = _ldl(H, g)
    W_hat = xp.empty_like(W)
    codes = []
    for k in range(0, n, g):
        x = W[:, k:k + g] + (W[:, :k] - W_hat[:, :k]) @ U[:k, k:k + g]  # (m, g)
        q = _block_quantizer(quantizer, k, k + g)
        c = q.encode(x, rng)
        W_hat[:, k:k + g] = q.decode(c)
        codes.append(c)
    return LDLQResult(W_hat, xp.concatenate(codes, axis=-1))


def _check_greedy_inputs(W, H, quantizer, W_hat, n_passes, block_size=1):
    """Validation shared by :func:`greedy_passes` here and in :mod:`fast`.

    Returns ``(W, H, W_hat, g)``: the validated arrays and the block size.

    Raises
    ------
    ValueError, TypeError
        Bad shapes or NaN/Inf (``W``, ``H``, ``W_hat``), a non-PSD ``H``, ``W_hat`` of
        another shape than ``W``, a block size that does not divide n or is not a
        multiple of the quantizer's vector dimension, a quantizer that does not follow
        the contract or rounds stochastically, or ``n_passes < 0``.
    """
    W = check_weight(W)
    H = check_hessian(H, W.shape[1])
    W_hat = check_weight(W_hat, "W_hat")
    if W_hat.shape != W.shape:
        raise ValueError(f"W_hat has shape {tuple(W_hat.shape)} but W has shape {tuple(W.shape)}")
    g = check_block_size(block_size, W.shape[1])
    check_quantizer(quantizer, g)
    if getattr(quantizer, "stochastic", False):
        raise ValueError(
            "greedy passes need a quantizer with nearest (deterministic) rounding; "
            "stochastic rounding would no longer be unbiased after them"
        )
    if n_passes < 0:
        raise ValueError(f"n_passes must be >= 0, got {n_passes}")
    return W, H, W_hat, g


def greedy_passes(W, H, quantizer, W_hat, n_passes: int = 1, block_size: int = 1) -> LDLQResult:
    r"""Greedy local search on the proxy loss, one (block) column at a time.

    ``block_size = 1`` is QuIP's greedy pass ([QuIP] code): for each column i in turn,
    with the error :math:`E = \hat W - W`,

    .. math::

        \hat W_{:,i} \leftarrow Q\big(\hat W_{:,i} - (E H_{:,i}) / H_{ii}\big).

    ``block_size = g > 1`` is QuIP#'s refinement after BlockLDLQ (:ref:`papers-from-code`;
    the repository's ``quip_tune_iters``, processed here in column order): for each block
    ``b`` of ``g`` consecutive columns in turn,

    .. math::

        \hat W_{:,b} \leftarrow Q\big(\hat W_{:,b} - (E H_{:,b})\, H_{bb}^{-1}\big),

    with ``Q`` acting on each row's g-vector (``quantizer.dim`` must divide g).

    The argument of ``Q`` is the exact minimiser of the (row-separable) proxy
    :math:`\ell(\hat W) = \mathrm{tr}((\hat W - W) H (\hat W - W)^T)` over the block with
    all other columns fixed: :math:`\partial \ell / \partial \hat W_{:,b} = 2 E H_{:,b}`,
    and :math:`E H_{:,b}` is affine in :math:`\hat W_{:,b}` with slope :math:`H_{bb}`.

    * For ``g = 1`` and a scalar grid (clamped or not) nearest rounding of a 1-D convex
      quadratic's minimiser is optimal over the grid, so **a pass never increases**
      :math:`\ell`.
    * For ``g > 1`` this is **not** so: the block's loss is the :math:`H_{bb}`-metric
      distance :math:`(\hat w - t) H_{bb} (\hat w - t)^T` to the minimiser ``t``, but ``Q``
      rounds in the Euclidean metric, so a step (hence a pass) **can increase**
      :math:`\ell` when :math:`H_{bb}` is far from a multiple of the identity. In practice
      (E8P after BlockLDLQ) the passes lower it on average; the tests check that
      statistic, that fixed points are kept and that the result lies on the codebook.

    Parameters
    ----------
    W : ndarray of shape (m, n)
    H : ndarray of shape (n, n), positive definite
    quantizer : Quantizer with nearest (deterministic) rounding
        ``encode`` / ``decode`` act on (m, g) blocks; ``quantizer.dim`` must divide g.
    W_hat : ndarray of shape (m, n)
        Starting point (e.g. the (Block)LDLQ output); must lie on the quantizer's
        codebook (its codes are ``encode(W_hat)``, block by block).
    n_passes : int
        Number of sweeps over the (block) columns (stops early at a fixed point: a pass
        that changes nothing).
    block_size : int
        ``g``; must divide n. ``1`` (default) is QuIP's scalar greedy pass.

    Returns
    -------
    LDLQResult
        ``W_hat`` (m, n) float64 and the codes (each block's codes concatenated along the
        last axis, as :func:`ldlq` returns them: (m, n) for scalar quantizers,
        (m, n / 8) for E8P).

    Raises
    ------
    ValueError, TypeError
        Bad shapes, NaN/Inf, non-PSD H, ``W_hat`` of another shape, g not dividing n or
        not a multiple of ``quantizer.dim``, a stochastic or malformed quantizer,
        ``n_passes < 0``.
    """
    W, H, W_hat, g = _check_greedy_inputs(W, H, quantizer, W_hat, n_passes, block_size)
    n = W.shape[1]
    xp = array_module(W, H, W_hat)
    H = H.astype(np.float64)
    W = W.astype(np.float64)
    W_hat = W_hat.astype(np.float64).copy()
    if g == 1:
        codes = quantizer.encode(W_hat)
        for _ in range(n_passes):
            changed = False
            for i in range(n):
                E = W_hat - W
                target = W_hat[:, i] - (E @ H[:, i]) / H[i, i]
                c = quantizer.encode(target[:, None])[:, 0]
                new = quantizer.decode(c[:, None])[:, 0]
                if bool(xp.any(new != W_hat[:, i])):
                    changed = True
                W_hat[:, i] = new
                codes[:, i] = c
            if not changed:
                break
        return LDLQResult(W_hat, codes)
    blocks = [quantizer.encode(W_hat[:, k:k + g]) for k in range(0, n, g)]
    for _ in range(n_passes):
        changed = False
        for j, k in enumerate(range(0, n, g)):
            b = slice(k, k + g)
            E = W_hat - W
            grad = E @ H[:, b]  # (m, g): E H_{:,b}
            target = W_hat[:, b] - xp.linalg.solve(H[b, b], grad.T).T  # (E H_{:,b}) H_bb^{-1}
            c = quantizer.encode(target)
            new = quantizer.decode(c)
            if bool(xp.any(new != W_hat[:, b])):
                changed = True
            W_hat[:, b] = new
            blocks[j] = c
        if not changed:
            break
    return LDLQResult(W_hat, xp.concatenate(blocks, axis=-1))


def ldlq_rg(W, H, quantizer, n_passes: int = 1, *, seed=0) -> LDLQResult:
    """LDLQ-RG: LDLQ in order of decreasing ``diag(H)``, then greedy passes ([QuIP] code).

    The columns are permuted so that the inputs with the largest second moment are
    rounded first (they then receive no feedback and feed the others), LDLQ runs,
    :func:`greedy_passes` refine, and the permutation is undone.

    Parameters
    ----------
    W : ndarray of shape (m, n)
    H : ndarray of shape (n, n), positive definite
    quantizer : scalar Quantizer with nearest rounding
    n_passes : int
        Greedy passes after LDLQ (the paper's count is unverified; QuIP's Llama script
        uses 1).
    seed : unused for nearest rounding; kept for a uniform signature.

    Returns
    -------
    LDLQResult
    """
    return _ldlq_rg(W, H, quantizer, n_passes, seed, ldlq, greedy_passes)


def _ldlq_rg(W, H, quantizer, n_passes, seed, ldlq_fn, greedy_fn) -> LDLQResult:
    """LDLQ-RG with the LDLQ and greedy implementations passed in (:mod:`fast` passes its own)."""
    W = check_weight(W)
    H = check_hessian(H, W.shape[1])
    xp = array_module(W, H)
    perm = xp.argsort(-xp.diag(H), kind="stable")
    inv = xp.argsort(perm)
    Wp, Hp = W[:, perm], H[perm][:, perm]
    W_hat, _ = ldlq_fn(Wp, Hp, quantizer, 1, seed=seed)
    W_hat, codes = greedy_fn(Wp, Hp, quantizer, W_hat, n_passes)
    return LDLQResult(W_hat[:, inv], codes[:, inv])
