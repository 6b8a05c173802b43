"""Same API as :mod:`quipref.formats`, with a fused CUDA ``matvec`` for CuPy inputs.

:class:`QuantizedLinear` is the reference class with one method replaced: given a CuPy
``x`` of dtype float16 or float32, ``matvec`` runs

1. the input transform as one RHT kernel launch (``fast/kernels/rht.cu``, signs fused,
   packed once per layer): ``z = G_n (s_in * (x / d))``;
2. a fused decode-matvec on the codes, ``y~ = z @ W~^T`` without forming ``W~``
   (:class:`fast.cuda.e8p.MatvecPlan` for E8P / RVQ; the trellis kernels of
   :mod:`fast.cuda.trellis_decode` for QTIP's codes);
3. the output transform as one inverse RHT launch: ``y = s_out * (G_m^T y~)``,

and returns float32. Everything else -- float64 input (computed exactly by the
reference path: decode, then a float64 product), NumPy input, Kronecker transforms,
quantizers without a fused kernel -- takes the reference ``matvec``. :func:`load_linear`
rebuilds the transforms and quantizers with the fast classes.

Precision of the fused path: the decode-matvec rounds ``z`` to float16 (|z| < 65504)
and accumulates in float32 (see the kernels); the transforms run in float32 (float16
data stays float16 between kernels).
"""
from __future__ import annotations

import math

from quipref.formats import *  # noqa: F401,F403
from quipref.formats import __all__  # noqa: F401
from quipref._contract import layer_from_tensors as _from_tensors, load_layer as _load
from quipref.formats import QuantizedLinear as _ReferenceLinear
from quipref._checks import check_array, is_cupy_array


class QuantizedLinear(_ReferenceLinear):
    __doc__ = _ReferenceLinear.__doc__ + """
    Fast version: ``matvec`` on a CuPy float16/float32 ``x`` is the fused CUDA pipeline of
    :mod:`fast.formats` (RHT kernel, decode-matvec on the codes, inverse RHT kernel) and
    returns float32; other inputs take the reference path.
    """

    def matvec(self, x):
        """``y = Ŵ x`` for x of shape (n,) or (batch, n); see :meth:`quipref.QuantizedLinear.matvec`.

        CuPy float16 / float32 input with a fused kernel for this quantizer: float32
        result from the fused pipeline (module docstring). Otherwise the reference path.
        """
        if is_cupy_array(x) and x.dtype.kind == "f" and x.dtype.itemsize <= 4:
            fused = self.cuda_matvec()
            if fused is not None:
                x = check_array(x, "x", ndim=(1, 2), dtype=x.dtype)
                n = self.shape[1]
                if x.shape[-1] != n:
                    raise ValueError(
                        f"x must have last dimension n = {n} (in_features), got shape {tuple(x.shape)}")
                return fused(x)
        return super().matvec(x)

    def cuda_matvec(self):
        """The fused CUDA pipeline of this layer (built once, on the first call), or None.

        Returns a callable ``f(x)`` for CuPy float16/float32 ``x`` of shape (n,) or (b, n)
        that does no validation and no host synchronisation (safe in CUDA-graph capture),
        or ``None`` when no fused kernel applies (Kronecker transforms, scalar grids, ...).
        """
        cached = getattr(self, "_cuda_pipeline", False)
        if cached is False:
            cached = _build_pipeline(self)
            self._cuda_pipeline = cached
        return cached


def _plan_for(layer):
    """A decode-matvec plan for the layer's quantizer and codes, or None."""
    from .cuda import e8p as ce8p

    q = layer.quantizer
    if ce8p.supports(q):
        return ce8p.MatvecPlan(q, layer.codes, layer.shape)
    from quipref.quantizers.trellis import Trellis

    if isinstance(q, Trellis):
        try:
            from .cuda import trellis_decode
        except ImportError:  # pragma: no cover - module not present in this build
            return None
        try:
            return trellis_decode.MatvecPlan(q, layer.codes, layer.shape)
        except ValueError:  # parameters without a kernel: decode + matmul instead
            return None
    return None


class _RHTStep:
    """One randomized Hadamard transform launch with the layer's signs (packed once)."""

    #: below this many rows, K x 2^k sizes take the multi-pass path (an FWHT of the K
    #: sub-rows, then a column pass of H_K, each spread over many blocks) instead of the
    #: fused kernel, which gives a whole row to one block (one multiprocessor at batch 1)
    MULTIPASS_ROWS = 16

    def __init__(self, transform, inverse: bool):
        from quipref._contract import hadamard_factor as _factor

        from .cuda.hadamard import pack_signs

        self.n = transform.n
        self.K, self.p = _factor(self.n, "n")
        self.inverse = inverse
        self.bits = pack_signs(transform.signs, self.n)
        self.scale = 1.0 / math.sqrt(self.n)

    def __call__(self, x2d, out=None, multipass=None):
        import cupy as cp

        from .cuda.hadamard import _transform_2d

        out = cp.empty(x2d.shape, dtype=x2d.dtype) if out is None else out
        if multipass is None:
            multipass = self.K > 1 and x2d.shape[0] < self.MULTIPASS_ROWS and x2d.dtype == cp.float32
        _transform_2d(x2d, out, self.K, self.p, self.bits, self.inverse, self.scale,
                      multipass=bool(multipass))
        return out


def _build_pipeline(layer):
    from quipref.incoherence import RandomizedHadamard

    tin, tout = layer.input_transform, layer.output_transform
    for t in (tin, tout):
        if t is not None and not isinstance(t, RandomizedHadamard):
            return None
    try:
        import cupy as cp
    except ImportError:  # pragma: no cover
        return None
    plan = _plan_for(layer)
    if plan is None:
        return None
    fwd = _RHTStep(tin, inverse=False) if tin is not None else None
    inv = _RHTStep(tout, inverse=True) if tout is not None else None
    d = None if layer.rescale is None else cp.asarray(layer.rescale, dtype=cp.float32)

    def run(x):
        single = x.ndim == 1
        x2 = cp.ascontiguousarray(x.reshape(1, -1) if single else x)
        if x2.data.ptr % 16:
            x2 = x2.copy()
        if d is not None:
            x2 = (x2 / d).astype(x2.dtype)
        z = fwd(x2) if fwd is not None else x2
        y = plan(z)
        if inv is not None:
            y = inv(y)
        return y[0] if single else y

    run.plan = plan
    run.steps = (fwd, inv)
    return run


def load_linear(path) -> _ReferenceLinear:
    """Read a layer written by :meth:`QuantizedLinear.save` (fast transforms and quantizers).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a quipref layer file, an unknown format version, or a corrupted file.
    """
    from .incoherence import transform_from_state
    from .quantizers import quantizer_from_state

    return _load(path, QuantizedLinear, transform_from_state, quantizer_from_state)


def from_tensors(tensors: dict, config: dict) -> _ReferenceLinear:
    """Rebuild a layer from :meth:`QuantizedLinear.to_tensors`' ``(tensors, config)``
    (fast transforms and quantizers)."""
    from .incoherence import transform_from_state
    from .quantizers import quantizer_from_state

    return _from_tensors(tensors, config, QuantizedLinear, transform_from_state, quantizer_from_state)
