r"""The proxy Hessian :math:`H = E[x x^T]` and the proxy loss.

Every algorithm in this library minimises the *proxy loss* of a linear layer
``y = W x`` with weights ``W`` of shape (m, n) = (out_features, in_features):

.. math::

    \ell(\hat W) = E_x \|(\hat W - W) x\|^2 = \mathrm{tr}\big((\hat W - W) H (\hat W - W)^T\big),
    \qquad H = E_x[x x^T] \in \mathbb{R}^{n \times n},

the *uncentred* second moment of the layer inputs over calibration tokens
([QuIP#] eq. (1)-(2); [QuIP] eq. (1)).

References
----------
.. [QuIP] Chee et al., arXiv 2307.13304, Sec. 2 (proxy loss), and its code's OPTQ damping.
.. [QuIP#] Tseng et al., arXiv 2402.04396, Sec. 2.2 and App. F.2 (``regularize_H``).
"""
from __future__ import annotations

import numpy as np

from ._checks import array_module, check_array, check_hessian, check_real, check_weight

__all__ = ["HessianAccumulator", "regularize_hessian", "damp_hessian", "proxy_loss"]


class HessianAccumulator:
    r"""Streaming accumulation of :math:`H = E[x x^T]` in float64.

    Feed batches of layer inputs with :meth:`update`; read the mean with :meth:`hessian`.
    Sums are kept in float64 whatever the input dtype (as both reference repositories
    do), so millions of tokens can be accumulated without loss.

    Parameters
    ----------
    n : int
        Input dimension (in_features).

    Examples
    --------
    >>> import numpy as np
    >>> acc = HessianAccumulator(4)
    >>> acc.update(np.ones((10, 4)))      # 10 tokens
    >>> acc.update(np.ones((2, 5, 4)))    # any leading shape: 10 more tokens
    >>> acc.count, float(acc.hessian()[0, 0])
    (20, 1.0)
    """

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer (the layer's in_features), got {n!r}")
        self.n = int(n)
        self.sum = np.zeros((self.n, self.n), dtype=np.float64)
        self.count = 0

    def update(self, x) -> None:
        """Add a batch of inputs ``x`` of shape (..., n): ``sum += X^T X``, ``count += rows``."""
        x = check_array(x, "x")
        if x.ndim == 0 or x.shape[-1] != self.n:
            raise ValueError(
                f"x must have shape (..., {self.n}) (last axis = in_features), got {tuple(x.shape)}"
            )
        X = x.reshape(-1, self.n).astype(np.float64)
        xp = array_module(X)
        S = X.T @ X
        self.sum += S.get() if xp is not np else S
        self.count += X.shape[0]

    def hessian(self) -> np.ndarray:
        """The mean :math:`\\frac{1}{N}\\sum x x^T` of shape (n, n), float64."""
        if self.count == 0:
            raise ValueError("no inputs accumulated yet: call update(x) first")
        return self.sum / self.count


def regularize_hessian(H, sigma: float = 1e-2):
    r"""QuIP#'s regularisation: :math:`H / \mathrm{mean}(\mathrm{diag}\,H) + \sigma I`.

    Normalising the diagonal to mean 1 makes ``sigma`` a relative ridge; LDLQ is
    invariant to the scale of H, so only the ridge changes the result.
    ([QuIP#] code default ``sigma_reg = 1e-2``.)

    Parameters
    ----------
    H : ndarray of shape (n, n)
        Symmetric PSD.
    sigma : float
        Ridge added after normalisation.

    Returns
    -------
    ndarray of shape (n, n), float64, positive definite for ``sigma > 0``.
    """
    H = check_hessian(H).astype(np.float64)
    sigma = check_real(sigma, "sigma", inclusive=True)
    xp = array_module(H)
    md = float(xp.mean(xp.diag(H)))
    if md <= 0:
        raise ValueError("H has an all-zero diagonal (no input ever activated); nothing to quantize against")
    return H / md + sigma * xp.eye(H.shape[0])


def damp_hessian(H, percdamp: float = 0.01, W=None):
    r"""OPTQ / QuIP damping: dead inputs, then :math:`H + \alpha\,\mathrm{mean}(\mathrm{diag}\,H)\,I`.

    Inputs that never activate (``H_jj = 0``) get ``H_jj := 1``; the matching columns
    of ``W`` (if given) are zeroed, since they never affect the output. Then a ridge of
    ``percdamp`` times the mean diagonal is added (``percdamp = 0.01`` in both codes).

    Parameters
    ----------
    H : ndarray of shape (n, n)
    percdamp : float
        Relative ridge ``alpha``.
    W : ndarray of shape (m, n), optional
        Weights whose dead columns are zeroed in the returned copy.

    Returns
    -------
    H_damped : ndarray of shape (n, n)
    W_out : ndarray of shape (m, n) or None
        ``W`` with dead columns zeroed (``None`` if ``W`` was not given).
    dead : ndarray of bool, shape (n,)
        The dead inputs.
    """
    H = check_hessian(H).astype(np.float64).copy()
    percdamp = check_real(percdamp, "percdamp", inclusive=True)
    xp = array_module(H)
    n = H.shape[0]
    dead = xp.diag(H) == 0
    idx = xp.arange(n)
    H[idx[dead], idx[dead]] = 1.0
    W_out = None
    if W is not None:
        W_out = check_weight(W).astype(np.float64).copy()
        if W_out.shape[1] != n:
            raise ValueError(f"W has {W_out.shape[1]} columns but H is ({n}, {n})")
        W_out[:, dead] = 0.0
    H[idx, idx] += percdamp * float(xp.mean(xp.diag(H)))
    return H, W_out, dead


def proxy_loss(W_hat, W, H) -> float:
    r"""The proxy loss :math:`\mathrm{tr}((\hat W - W) H (\hat W - W)^T)`.

    Parameters
    ----------
    W_hat, W : ndarray of shape (m, n)
    H : ndarray of shape (n, n)

    Returns
    -------
    float
    """
    W = check_weight(W, "W")
    W_hat = check_weight(W_hat, "W_hat")
    if W_hat.shape != W.shape:
        raise ValueError(f"W_hat has shape {tuple(W_hat.shape)} but W has shape {tuple(W.shape)}")
    H = check_hessian(H, W.shape[1], psd=False)
    E = W_hat.astype(np.float64) - W.astype(np.float64)
    xp = array_module(E)
    return float(xp.sum((E @ H.astype(np.float64)) * E))
