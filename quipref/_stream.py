r"""A portable, documented random stream for what files store as a seed.

Internal module (part of the quipref <-> fast contract, :mod:`quipref._contract`). A saved
QuIP layer keeps its Kronecker transforms as one integer seed
(:class:`quipref.incoherence.KroneckerOrthogonal`); the factors are regenerated on load.
That needs a stream whose every bit is fixed by this file, not by the installed NumPy:
NumPy's ``Generator`` methods (``standard_normal``, ``permutation``, ``integers``) carry no
cross-version guarantee (NEP 19), so they are not used here.

The stream: SplitMix64 (G. Steele, D. Lea, C. Flood, "Fast splittable pseudorandom
number generators", OOPSLA 2014; the finaliser constants of S. Vigna's public-domain
``splitmix64.c``) in counter mode. Draw ``i`` (i = 0, 1, ...) of the stream with 64-bit
key ``k`` is

.. code-block:: text

    z = k + (i + 1) * 0x9E3779B97F4A7C15          (mod 2^64)
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9      (mod 2^64)
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB      (mod 2^64)
    z =  z ^ (z >> 31)

It is pure 64-bit integer arithmetic (exact in NumPy's ``uint64`` on every platform and
version) and counter-based, so any draw is computed directly and vectorised. From it:

* :func:`substream_key` ``(seed, j)``: the key of sub-stream ``j`` = draw ``j`` of the
  stream keyed by ``seed``;
* :func:`uniforms`: ``((z >> 11) + 0.5) / 2^53``, in (0, 1), exact;
* :func:`permutation`: the stable ``argsort`` of ``n`` draws (a uniformly random
  permutation; equal 64-bit keys, probability below n^2 / 2^65, keep index order), exact;
* :func:`normals`: Box-Muller, ``sqrt(-2 ln u1) cos(2 pi u2)`` for the pairs
  ``(u_{2i}, u_{2i+1})``. ``log`` and ``cos`` come from the platform's math library, so
  the normals (and the QR that turns them into an orthogonal matrix) are reproduced to
  float64 round-off, not necessarily bit for bit, across machines; users of the stream
  store a fingerprint to check it (see ``KroneckerOrthogonal``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["splitmix64", "substream_key", "uniforms", "normals", "permutation"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(key: int, count: int, start: int = 0) -> np.ndarray:
    """Draws ``start .. start + count - 1`` of the stream with 64-bit ``key`` (uint64 array)."""
    key = int(key) % 2**64
    i = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + i * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def substream_key(seed: int, j: int) -> int:
    """Key of sub-stream ``j`` of ``seed``: draw ``j`` of the stream keyed by ``seed``."""
    return int(splitmix64(seed, 1, start=j)[0])


def uniforms(key: int, count: int) -> np.ndarray:
    """``count`` float64 uniforms in (0, 1): ``((z >> 11) + 0.5) / 2^53`` (exact)."""
    z = splitmix64(key, count) >> np.uint64(11)
    return (z.astype(np.float64) + 0.5) * 2.0**-53


def normals(key: int, count: int) -> np.ndarray:
    """``count`` standard normals by Box-Muller on :func:`uniforms` (module docstring)."""
    u = uniforms(key, 2 * count).reshape(count, 2)
    return np.sqrt(-2.0 * np.log(u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])


def permutation(key: int, n: int) -> np.ndarray:
    """A uniformly random permutation of ``0 .. n-1`` (int64): stable argsort of n draws."""
    return np.argsort(splitmix64(key, n), kind="stable").astype(np.int64)
