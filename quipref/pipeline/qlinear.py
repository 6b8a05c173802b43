r"""``QuantLinear``: a ``torch.nn.Module`` that computes ``y = Ŵ x + b`` from the codes.

It holds a :class:`quipref.QuantizedLinear` (codes, quantizer, incoherence transforms)
and the layer's bias, never the dense weight:

* **CPU tensors**: the layer's own ``matvec`` (NumPy / Numba: transforms applied to
  ``x`` and to the output, the codes decoded where ``x`` lives), computed in float64
  and returned in the input's dtype. ``cache=True`` instead dequantizes once into a
  dense float32 weight kept on the module (faster for repeated CPU calls; more memory).
* **CUDA tensors**: the fused CUDA pipeline of :mod:`fast.formats` (RHT kernel,
  decode-matvec on the codes, inverse RHT kernel; ``QuantizedLinear.cuda_matvec``),
  called on the tensor's memory through DLPack (``cupy.from_dlpack`` /
  ``torch.utils.dlpack.from_dlpack``: no host copy, no dense weight), on torch's
  current stream (a ``cupy.cuda.ExternalStream``), with CuPy's temporaries allocated
  from torch's caching allocator. So it runs under ``torch.no_grad()``,
  ``torch.inference_mode()`` and inside ``torch.cuda.graph`` capture (warm it up on the
  capture stream first, as torch asks for any captured code: the kernels build their
  launch plans and per-stream workspaces on the first call). Any number of rows works:
  the kernels take up to 8 rows per launch and loop over larger batches (prefill and
  perplexity windows therefore cost ``ceil(rows / 8)`` launches per layer). The fused
  kernels round the transformed input to float16 and accumulate in float32 (error
  bound in :mod:`fast.formats`); layers without a fused kernel (scalar grids of
  rtn / gptq / quip, Kronecker transforms) decode on the GPU and multiply in float64
  at each call (slow, exact; not capture-safe because it synchronises).

The codes move to the GPU once, when the module moves (``.to("cuda")``, ``.cuda()``).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

__all__ = ["QuantLinear"]


def _torch_allocator(device_index):
    """A CuPy allocator that takes memory from torch's caching allocator (graph-pool aware)."""
    import cupy as cp

    def alloc(size):
        t = torch.empty((max(int(size), 1),), dtype=torch.uint8, device=f"cuda:{device_index}")
        mem = cp.cuda.UnownedMemory(t.data_ptr(), t.numel(), t, device_index)
        return cp.cuda.MemoryPointer(mem, 0)
    return alloc


def _to_fast_layer(layer):
    """The same layer as a :class:`fast.formats.QuantizedLinear` (which has the fused path)."""
    from fast import formats as ff

    if isinstance(layer, ff.QuantizedLinear):
        return layer
    tensors, config = layer.to_tensors()
    return ff.from_tensors(tensors, config)


class QuantLinear(torch.nn.Module):
    """A quantized ``nn.Linear``: ``forward(x) = Ŵ x + bias`` from the codes.

    Parameters
    ----------
    layer : quipref.QuantizedLinear (or fast.QuantizedLinear)
        The quantized weight, shape (out_features, in_features).
    bias : torch.Tensor of shape (out_features,), optional
        Kept as a (frozen) parameter, so it moves and saves with the module.
    cache : bool, default False
        CPU only: dequantize once into a dense float32 weight and use ``F.linear``
        (more memory, faster repeated calls). Off: every call runs ``layer.matvec``.

    Attributes
    ----------
    layer : QuantizedLinear
    in_features, out_features : int

    Examples
    --------
    >>> q = QuantLinear(quipref.quantize_linear(W, H, "quip#", 2), bias)   # doctest: +SKIP
    >>> y = q(x)                                    # x (..., in_features) -> (..., out_features)
    """

    _flow_cache = False

    def __init__(self, layer, bias=None, *, cache: bool = False):
        super().__init__()
        m, n = layer.shape
        self.layer = layer
        self.out_features, self.in_features = int(m), int(n)
        if bias is not None:
            bias = bias.detach()
            if tuple(bias.shape) != (m,):
                raise ValueError(f"bias must have shape ({m},) (out_features), got {tuple(bias.shape)}")
            self.bias = torch.nn.Parameter(bias.clone(), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        # (quantize_model's flow decodes every module once while it recomputes block outputs)
        self.cache = bool(cache) or QuantLinear._flow_cache
        self._dense = None
        self._fused = None
        # a zero-size buffer that follows the module's device (read in _apply)
        self.register_buffer("_device_probe", torch.empty(0), persistent=False)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, layer, *, cache: bool = False) -> "QuantLinear":
        """A QuantLinear for ``linear`` (its bias and device) with the quantized weight ``layer``."""
        if tuple(linear.weight.shape) != tuple(layer.shape):
            raise ValueError(f"layer has shape {layer.shape} but the linear's weight is "
                             f"{tuple(linear.weight.shape)}")
        return cls(layer, linear.bias, cache=cache).to(linear.weight.device)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, method={self.layer.method!r}, bits={self.layer.bits}")

    @property
    def device(self) -> torch.device:
        return self._device_probe.device

    # -- device moves -----------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):
        before = self._device_probe.device
        out = super()._apply(fn, *args, **kwargs)
        after = self._device_probe.device
        if after != before:
            self._move_codes(after)
        return out

    def _move_codes(self, device):
        self._dense = None
        self._fused = None
        if device.type == "cuda":
            import cupy as cp

            with cp.cuda.Device(device.index if device.index is not None else torch.cuda.current_device()):
                layer = copy.copy(_to_fast_layer(self.layer))  # never mutate a layer others may hold
                layer.codes = cp.asarray(layer.codes)
                layer._cuda_pipeline = False  # rebuild the plan for the moved codes
                self.layer = layer
        elif device.type == "cpu":
            from .._checks import to_numpy

            layer = copy.copy(self.layer)
            layer.codes = np.asarray(to_numpy(layer.codes))
            if hasattr(layer, "_cuda_pipeline"):
                layer._cuda_pipeline = False
            self.layer = layer
        else:
            raise ValueError(f"QuantLinear runs on 'cpu' or 'cuda' devices, not {device}")

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}) (in_features), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x.is_cuda:
            y = self._forward_cuda(x2)
        else:
            y = self._forward_cpu(x2)
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features)

    def dense_weight(self) -> torch.Tensor:
        """``Ŵ`` as a float32 tensor on the module's device (computed, not stored; tests)."""
        from .._checks import to_numpy

        W = np.asarray(to_numpy(self.layer.dequantize()))
        return torch.from_numpy(W.astype(np.float32)).to(self.device)

    def _forward_cpu(self, x2):
        if self.cache:
            if self._dense is None:
                from .._checks import to_numpy

                self._dense = torch.from_numpy(np.asarray(to_numpy(self.layer.dequantize()), dtype=np.float32))
            return torch.nn.functional.linear(x2.to(torch.float32), self._dense)
        xn = x2.detach().to(torch.float64).numpy()
        y = self.layer.matvec(xn)
        return torch.from_numpy(np.ascontiguousarray(y))

    def _forward_cuda(self, x2):
        import cupy as cp

        dev = x2.device.index if x2.device.index is not None else torch.cuda.current_device()
        if self.device.type != "cuda":
            raise RuntimeError(f"x is on {x2.device} but the module's codes are on {self.device}; "
                               f"call .to('cuda') on the model")
        stream = torch.cuda.current_stream(x2.device)
        xin = x2.detach()
        if xin.dtype not in (torch.float16, torch.float32):
            xin = xin.to(torch.float32)  # bfloat16 / float64: the fused kernels take fp16 / fp32
        xin = xin.contiguous()
        with cp.cuda.Device(dev), cp.cuda.ExternalStream(stream.cuda_stream), \
                cp.cuda.using_allocator(_torch_allocator(dev)):
            if self._fused is None:
                fused = self.layer.cuda_matvec() if hasattr(self.layer, "cuda_matvec") else None
                self._fused = fused if fused is not None else self._slow_cuda
            y = self._fused(cp.from_dlpack(xin))
            return torch.utils.dlpack.from_dlpack(y)

    def _slow_cuda(self, xc):
        """No fused kernel for this quantizer: decode + float64 product on the GPU (reference)."""
        from quipref.formats import QuantizedLinear as Ref

        return Ref.matvec(self.layer, xc)
