"""Same API as :mod:`quipref.incoherence`, with the fast Hadamard transform.

Only one thing is worth speeding up here: the Hadamard transform inside
:class:`RandomizedHadamard`. This module subclasses the reference class and swaps in
:func:`fast.hadamard.hadamard_transform` (Numba for NumPy input, raw CUDA for CuPy
input) through the ``_hadamard`` class attribute; signs, validation, ``state()`` and
``from_state`` are inherited, so a transform built with the same seed is the same
matrix in both packages, and saved states load in either.

Everything else is re-exported unchanged: :class:`KroneckerOrthogonal` is two small
dense matrix products (BLAS, or cuBLAS for CuPy input, since it only uses the array
module of its input), ``incoherence_process`` / ``incoherence_unprocess`` call the
transforms' ``forward`` / ``inverse`` and so use the fast transform when given a
fast one, and ``mu_hessian`` / ``mu_weights`` / ``rescale`` are an ``eigh`` or
elementwise work.

CuPy input: ``forward`` / ``inverse`` move the ±1 signs to the device with
``cupy.asarray`` (in the input's dtype) and return a CuPy array.

Precision: the fast transform computes float32 input in float32 (see
:mod:`fast.hadamard`), so the fast RHT of float32 input differs from the reference
(computed in float64, rounded at the end) by the float32 transform error,
<= (log2(p) + (K - 1) sqrt(K) + 1) * 2^-24 * ||x|| per vector; multiplying by ±1 is
exact.
"""
from __future__ import annotations

from quipref import incoherence as _reference
from quipref.incoherence import *  # noqa: F401,F403
from quipref.incoherence import (  # noqa: F401  (re-exported, explicit for readers)
    STATE_VERSION,
    KroneckerOrthogonal,
    OrthogonalTransform,
    Processed,
    Rescaled,
    haar_orthogonal,
    incoherence_process,
    incoherence_unprocess,
    kronecker_factor_sizes,
    mu_hessian,
    mu_weights,
    rescale,
)

from quipref._contract import transform_from_state_with

from .hadamard import hadamard_transform as _fast_hadamard_transform

__all__ = list(_reference.__all__)


class RandomizedHadamard(_reference.RandomizedHadamard):
    __doc__ = _reference.RandomizedHadamard.__doc__

    _hadamard = staticmethod(_fast_hadamard_transform)


_TRANSFORMS = {"RandomizedHadamard": RandomizedHadamard,
               "KroneckerOrthogonal": KroneckerOrthogonal}


def transform_from_state(config: dict, arrays: dict) -> OrthogonalTransform:
    """Rebuild a transform saved with ``T.state()`` (by either package) as a :mod:`fast`
    transform, bit-exactly and without drawing random numbers.

    Parameters
    ----------
    config : dict
        JSON-able, with ``type``, ``version`` and ``n``.
    arrays : dict of str -> ndarray

    Returns
    -------
    OrthogonalTransform
        :class:`fast.incoherence.RandomizedHadamard` or :class:`KroneckerOrthogonal`.

    Raises
    ------
    ValueError
        Unknown type or version, or arrays of the wrong shape/content.
    """
    return transform_from_state_with(config, arrays, _TRANSFORMS)
