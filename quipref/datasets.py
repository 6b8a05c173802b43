"""Test layers: a seeded synthetic layer shaped like an LLM linear layer.

Real layers (weights and calibration activations from a real model) come from
:mod:`quipref.realdata` when its optional dependencies are installed.
"""
from __future__ import annotations

import numpy as np

from ._checks import check_seed

__all__ = ["synthetic_layer"]


def synthetic_layer(m: int = 256, n: int = 512, *, n_tokens: int = 4096, seed=0):
    r"""A weight matrix and proxy Hessian with the features that make LLM layers hard.

    * **Outlier input channels**: channel scales are log-normal and 1 % of the channels
      are 20× larger, so :math:`H` has large, nearly axis-aligned eigenvectors
      (high :math:`\mu_H`, the coherent case incoherence processing fixes).
    * **Correlated inputs**: a rank-16 shared component, so :math:`H` is far from
      diagonal and LDLQ's feedback matters (:math:`\mathrm{tr}\,D \ll \mathrm{tr}\,H`).
    * **Heavy-tailed weights**: Student-t (4 degrees of freedom) entries, so a few
      weights are much larger than the RMS (high :math:`\mu_W`).

    Parameters
    ----------
    m, n : int
        Output and input dimensions.
    n_tokens : int
        Number of synthetic activation vectors averaged into H.
    seed : int or numpy.random.Generator

    Returns
    -------
    W : ndarray of shape (m, n), float64
    H : ndarray of shape (n, n), float64
        :math:`\frac{1}{N}\sum x x^T`, positive definite for ``n_tokens >= n``.
    """
    rng = check_seed(seed)
    scale = np.exp(0.5 * rng.normal(size=n))
    outliers = rng.choice(n, size=max(1, n // 100), replace=False)
    scale[outliers] *= 20.0
    basis = rng.normal(size=(16, n)) / np.sqrt(n) * 4.0
    X = rng.normal(size=(n_tokens, n)) + rng.normal(size=(n_tokens, 16)) @ basis
    X *= scale[None, :]
    H = X.T @ X / n_tokens
    W = rng.standard_t(4, size=(m, n)) / np.sqrt(2.0) * 0.02
    return W, (H + H.T) / 2
