"""Fast RVQ and E81B: the same quantizers as :mod:`quipref.quantizers.rvq` (same codes,
constructors and methods).

* :class:`E81B` on NumPy input: exact nearest of the 256 points in Numba, parallel over
  vectors (score ``2 u.c - ||c||^2``, ties: the lowest index, like the reference);
  decode is a parallel gather (bit-identical).
* :class:`RVQ` is the reference class with these fast stages plugged in
  (``_stage_classes``): the residual arithmetic is literally the reference's, so the
  codes equal the reference's whenever the stage searches pick the same codewords
  (always, except on exact ties).

CuPy input: E81B searches by the reference's brute force on the device (256 points: one
small matrix product) and decodes from a device-resident table; the E8P stage runs the
CUDA kernels of :mod:`fast.cuda.e8p`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from quipref._checks import is_cupy_array
from quipref.quantizers import rvq as _ref
from quipref.quantizers.rvq import e81b_codebook  # noqa: F401  (re-exported)

from .e8p import E8P, check_codes, check_vectors, gather_decode

__all__ = ["RVQ", "E81B", "e81b_codebook"]


@njit(parallel=True, cache=True)
def _nearest_small(u, table, sq_norms, out):
    """argmax_c 2 u.c - ||c||^2 over the rows of a small table, for every row of u."""
    k, d = table.shape
    for t in prange(u.shape[0]):
        best = -np.inf
        arg = 0
        for c in range(k):
            s = 0.0
            for i in range(d):
                s += u[t, i] * table[c, i]
            s = 2.0 * s - sq_norms[c]
            if s > best:
                best = s
                arg = c
        out[t] = arg


class E81B(_ref.E81B):
    __doc__ = _ref.E81B.__doc__ + """
    Fast version: Numba brute force over the 256 points on NumPy input.
    """

    def encode(self, x, rng=None):
        if is_cupy_array(x):
            return super().encode(x, rng)
        u, code_shape = check_vectors(x, self.dim, "E81B")
        C = e81b_codebook()
        out = np.empty(u.shape[0], dtype=np.int64)
        _nearest_small(np.ascontiguousarray(u / self.scale), C, (C**2).sum(axis=1), out)
        return out.astype(np.uint8).reshape(code_shape)

    def decode(self, codes):
        c = check_codes(codes, self.n_codes, "E81B")
        if is_cupy_array(c):
            from ..cuda.e8p import decode_table

            out = self.scale * decode_table(c.device.id, "e81b")[c.reshape(-1)]
            return out.reshape(c.shape[:-1] + (c.shape[-1] * self.dim,))
        return gather_decode(c, e81b_codebook(), self.scale, self.dim)


class RVQ(_ref.RVQ):
    __doc__ = _ref.RVQ.__doc__ + """
    Fast version: the stages are :class:`fast.quantizers.e8p.E8P` and
    :class:`fast.quantizers.rvq.E81B`.
    """

    _stage_classes = {3: (E8P, E81B), 4: (E8P, E8P)}
