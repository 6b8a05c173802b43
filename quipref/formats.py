r"""``QuantizedLinear``: a quantized weight matrix with everything needed to use it.

A quantized layer stores

* ``codes``: the quantizer's integer codes of the *processed* weights
  :math:`\tilde W = T_{out}\, (W\,\mathrm{diag}(d))\, T_{in}^T` (scalar codes: shape (m, n));
* ``quantizer``: the grid/codebook that decodes them (:mod:`quipref.quantizers`);
* ``input_transform`` / ``output_transform``: the orthogonal incoherence transforms
  :math:`T_{in}` (n×n) and :math:`T_{out}` (m×m) (:mod:`quipref.incoherence`) or ``None``;
* ``rescale``: QuIP's diagonal rescaling ``d`` of shape (n,) or ``None``.

Then :math:`\hat W = T_{out}^T\, \mathrm{decode}(codes)\, T_{in}\, \mathrm{diag}(d)^{-1}` and the
layer computes ``y = Ŵ x`` as
``y = T_out^T( decode(codes) · T_in(x / d) )`` without ever forming Ŵ in :meth:`matvec`.

On disk (``save`` / :func:`load_linear`) a layer is one safetensors file: codes
bit-packed at exactly ``bits`` bits per code, every side array at its own dtype, and a
JSON config in the header metadata with the format name, a version number and a
SHA-256 of the tensor payload, so that unknown versions and corrupted files are
refused with a clear error and a round trip is bit-exact.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ._checks import array_module, check_array, to_numpy
from .quantizers.base import quantizer_from_state

__all__ = ["QuantizedLinear", "load_linear", "from_tensors", "pack_codes", "unpack_codes", "FORMAT_NAME",
           "FORMAT_VERSION"]

FORMAT_NAME = "quipref.QuantizedLinear"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------
# bit packing
# ---------------------------------------------------------------------------------------
def pack_codes(codes, bits: int) -> np.ndarray:
    """Pack non-negative integer codes, ``bits`` bits each, into a uint8 byte stream.

    Code ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the stream, least significant
    bit first (little-endian bit order), so the stream is exactly
    ``ceil(codes.size * bits / 8)`` bytes.

    Parameters
    ----------
    codes : ndarray of non-negative integers < 2**bits (any shape; flattened in C order)
    bits : int, 1..32
    """
    codes = np.ascontiguousarray(to_numpy(codes)).reshape(-1)
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    if codes.size and (codes.min() < 0 or int(codes.max()) >= 2**bits):
        raise ValueError(f"codes must lie in [0, 2^{bits}) to be packed with {bits} bits")
    c = codes.astype(np.uint64)
    planes = (c[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)  # (N, bits)
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little")


def unpack_codes(packed, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: the first ``count`` codes as int64 (flat)."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    need = math.ceil(count * bits / 8)
    if packed.size != need:
        raise ValueError(f"packed stream has {packed.size} bytes, expected {need} for {count} codes of {bits} bits")
    planes = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    weights = (np.uint64(1) << np.arange(bits, dtype=np.uint64))
    return (planes.astype(np.uint64) * weights).sum(axis=1).astype(np.int64)


# ---------------------------------------------------------------------------------------
# the layer
# ---------------------------------------------------------------------------------------
class QuantizedLinear:
    """A quantized linear layer ``y = Ŵ x`` with ``Ŵ`` of shape (m, n).

    Parameters
    ----------
    codes : ndarray
        Quantizer codes of the processed weights (scalar quantizers: (m, n)).
    quantizer : Quantizer
        Decodes ``codes`` to the processed weights :math:`\\tilde W` (m, n).
    shape : tuple (m, n)
    method : str
        Name of the recipe that produced it (``"rtn"``, ``"gptq"``, ``"quip"``, ...).
    bits : int
        Nominal bits per weight of the method (2 for 2-bit QuIP#). Codes are packed at
        the quantizer's :attr:`~quipref.quantizers.Quantizer.code_bits` per code entry
        (``bits`` for scalar grids, 16 for E8P codes of 8 weights, 16 for trellis words).
    input_transform, output_transform : OrthogonalTransform or None
    rescale : ndarray of shape (n,) or None
    options : dict
        JSON-able record of the recipe's options (for provenance).
    """

    def __init__(self, codes, quantizer, shape, method: str, bits: int, *,
                 input_transform=None, output_transform=None, rescale=None, options=None):
        m, n = (int(s) for s in shape)
        self.codes = codes
        self.quantizer = quantizer
        self.shape = (m, n)
        self.method = str(method)
        self.bits = int(bits)
        self.input_transform = input_transform
        self.output_transform = output_transform
        self.rescale = rescale
        self.options = dict(options or {})
        #: In-memory diagnostics from the recipe (not saved): e.g. ``hessian_used``, the
        #: damped processed Hessian LDLQ rounded against, and ``hessian_scale`` c such that
        #: ``hessian_used >= c * T_in H T_in^T`` (used to evaluate the papers' bounds).
        self.info = {}
        if input_transform is not None and input_transform.n != n:
            raise ValueError(f"input_transform acts on {input_transform.n} entries, W has n = {n} columns")
        if output_transform is not None and output_transform.n != m:
            raise ValueError(f"output_transform acts on {output_transform.n} entries, W has m = {m} rows")

    def __repr__(self):
        m, n = self.shape
        return (f"QuantizedLinear(method={self.method!r}, shape=({m}, {n}), bits={self.bits}, "
                f"bits_per_weight={self.bits_per_weight:.4f})")

    # -- decoding ----------------------------------------------------------------------
    def processed_weights(self, xp=None):
        r"""The decoded processed weights :math:`\tilde W` (m, n), before undoing the transforms.

        ``xp`` (``numpy`` or ``cupy``) picks where to decode: the codes are moved to that
        array module first (default: where the codes are).
        """
        codes = self.codes
        if xp is not None and array_module(codes) is not xp:
            codes = xp.asarray(to_numpy(codes)) if xp is np else xp.asarray(codes)
        return self.quantizer.decode(codes)

    def dequantize(self):
        r"""The dense :math:`\hat W = T_{out}^T \tilde W T_{in}\,\mathrm{diag}(d)^{-1}`, shape (m, n), float64."""
        Wt = self.processed_weights()
        xp = array_module(Wt)
        if self.input_transform is not None:   # rows: W~ T_in  (T_in^T applied to each row)
            Wt = self.input_transform.inverse(Wt)
        if self.output_transform is not None:  # columns: T_out^T W~
            Wt = self.output_transform.inverse(Wt.T).T
        if self.rescale is not None:
            Wt = Wt / xp.asarray(self.rescale)[None, :]
        return Wt

    def matvec(self, x):
        """``y = Ŵ x`` for x of shape (n,) -> (m,), or (batch, n) -> (batch, m).

        Applies the transforms to ``x`` and to the output instead of forming Ŵ:
        ``y = T_out^T( W~ T_in(x / d) )``.
        """
        x = check_array(x, "x", ndim=(1, 2))
        m, n = self.shape
        if x.shape[-1] != n:
            raise ValueError(f"x must have last dimension n = {n} (in_features), got shape {tuple(x.shape)}")
        xp = array_module(x)
        z = x.astype(np.float64)
        if self.rescale is not None:
            z = z / xp.asarray(self.rescale)
        if self.input_transform is not None:
            z = self.input_transform.forward(z)
        y = z @ self.processed_weights(xp).T  # (..., m); decoded where x lives
        if self.output_transform is not None:
            y = self.output_transform.inverse(y)
        return y

    # -- storage cost ----------------------------------------------------------------------
    def _side_arrays(self) -> dict:
        arrays = {}
        _, qa = self.quantizer.state()
        arrays.update({f"quantizer.{k}": np.asarray(v) for k, v in qa.items()})
        for name in ("input_transform", "output_transform"):
            t = getattr(self, name)
            if t is not None:
                _, ta = t.state()
                arrays.update({f"{name}.{k}": np.asarray(v) for k, v in ta.items()})
        if self.rescale is not None:
            arrays["rescale"] = np.asarray(to_numpy(self.rescale), dtype=np.float64)
        return arrays

    @staticmethod
    def _array_bits(name: str, a: np.ndarray) -> int:
        # sign vectors (+-1 entries) are stored as packed bits; the rest at their dtype's width
        if _is_sign_vector(a):
            return a.size
        return a.size * a.dtype.itemsize * 8

    @property
    def bits_per_weight(self) -> float:
        """Exact storage cost: (packed code bits + side arrays' bits) / (m·n).

        Codes count ``code_bits`` each. Side arrays are the quantizer's parameters (e.g.
        per-row grid step/offset, a trellis LUT), the transforms' sign vectors (1 bit
        each) or orthogonal factors, and the rescaling vector, each counted at its stored
        width; the quantizer's scalar parameters (a float64 codebook scale) count
        ``quantizer.side_bits``. The rest of the JSON header is not counted.
        """
        m, n = self.shape
        code_bits = int(np.asarray(to_numpy(self.codes)).size) * self.code_bits
        side = sum(self._side_arrays_bits().values()) + int(getattr(self.quantizer, "side_bits", 0))
        return (code_bits + side) / (m * n)

    @property
    def code_bits(self) -> int:
        """Packed width of one code entry: the quantizer's ``code_bits`` (``bits`` if absent)."""
        return int(getattr(self.quantizer, "code_bits", self.bits))

    def _side_arrays_bits(self) -> dict:
        return {k: self._array_bits(k, a) for k, a in self._side_arrays().items()}

    # -- persistence ------------------------------------------------------------------
    def to_tensors(self) -> tuple[dict, dict]:
        """The layer as named arrays plus a JSON-able config: what :meth:`save` writes.

        Returns
        -------
        tensors : dict of str to ndarray
            ``"codes"`` (bit-packed, uint8), the quantizer's and transforms' side arrays
            (sign vectors packed to 1 bit each, uint8) and ``"rescale"`` if any.
        config : dict
            Method, bits, shape, the codes' shape and dtype, the quantizer's and the
            transforms' configs, the options and which arrays are packed sign vectors.

        :func:`from_tensors` is the inverse; the model pipeline stores many layers in
        one safetensors shard by prefixing these names with each module's name.
        """
        codes = np.asarray(to_numpy(self.codes))
        tensors = {"codes": pack_codes(codes, self.code_bits)}
        signs = {}
        for k, a in self._side_arrays().items():
            if _is_sign_vector(a):
                tensors[k] = np.packbits((a.reshape(-1) < 0).astype(np.uint8), bitorder="little")
                signs[k] = {"shape": list(a.shape), "dtype": str(a.dtype)}
            else:
                tensors[k] = np.array(a, order="C", copy=True)  # keeps 0-d shapes (ascontiguousarray would not)
        qcfg, _ = self.quantizer.state()
        config = {
            "method": self.method, "bits": self.bits, "shape": list(self.shape),
            "codes": {"shape": list(codes.shape), "dtype": str(codes.dtype)},
            "quantizer": qcfg, "options": self.options,
            "input_transform": None if self.input_transform is None else self.input_transform.state()[0],
            "output_transform": None if self.output_transform is None else self.output_transform.state()[0],
            "rescale": self.rescale is not None,
            "sign_arrays": signs,
        }
        return tensors, config

    def save(self, path) -> Path:
        """Write the layer to a safetensors file (see the module docstring); returns the path."""
        from safetensors.numpy import save_file

        path = Path(path)
        tensors, config = self.to_tensors()
        meta = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION),
                "config": json.dumps(config, sort_keys=True), "sha256": _digest(tensors)}
        save_file(tensors, str(path), metadata=meta)
        return path


def _is_sign_vector(a: np.ndarray) -> bool:
    """A 1-D integer array of +-1 entries (a random sign vector): stored as 1 bit per entry."""
    return a.ndim == 1 and a.dtype.kind == "i" and a.size > 0 and bool(np.all(np.abs(a) == 1))


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = np.asarray(tensors[k], order="C")
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read(path):
    """Read tensors + metadata, turning every failure into a clear ``ValueError``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no quantized layer file at {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {exc}") from exc
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a {FORMAT_NAME} file (format={meta.get('format')!r})")
    if meta.get("version") != str(FORMAT_VERSION):
        raise ValueError(
            f"{path} has format version {meta.get('version')!r}; this library reads version "
            f"{FORMAT_VERSION}. Upgrade quipref to read newer files."
        )
    if _digest(tensors) != meta.get("sha256"):
        raise ValueError(f"{path} is corrupted: its tensor checksum does not match the header")
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} has a missing or corrupt config header") from exc
    return tensors, config


def _from_tensors(tensors, cfg, cls, transform_from_state, quantizer_from_state=quantizer_from_state):
    """Shared rebuild from :meth:`QuantizedLinear.to_tensors`' output: ``cls`` is the layer
    class; the two ``*_from_state`` functions rebuild the transforms and the quantizer
    (reference or fast classes)."""
    codes_shape = tuple(cfg["codes"]["shape"])
    count = int(np.prod(codes_shape)) if codes_shape else 1

    def group(prefix):
        out = {}
        for k, v in tensors.items():
            if k.startswith(prefix + "."):
                name = k[len(prefix) + 1:]
                info = cfg.get("sign_arrays", {}).get(k)
                if info is not None:
                    size = int(np.prod(info["shape"]))
                    bits = np.unpackbits(v, bitorder="little")[:size]
                    v = np.where(bits == 1, -1, 1).astype(info["dtype"]).reshape(info["shape"])
                out[name] = v
        return out

    quantizer = quantizer_from_state(cfg["quantizer"], group("quantizer"))
    width = int(getattr(quantizer, "code_bits", cfg["bits"]))
    codes = unpack_codes(tensors["codes"], width, count).astype(cfg["codes"]["dtype"]).reshape(codes_shape)
    tin = None if cfg["input_transform"] is None else transform_from_state(cfg["input_transform"], group("input_transform"))
    tout = None if cfg["output_transform"] is None else transform_from_state(cfg["output_transform"], group("output_transform"))
    rescale = tensors["rescale"] if cfg["rescale"] else None
    return cls(codes, quantizer, tuple(cfg["shape"]), cfg["method"], cfg["bits"],
               input_transform=tin, output_transform=tout, rescale=rescale, options=cfg["options"])


def _load(path, cls, transform_from_state, quantizer_from_state=quantizer_from_state):
    """Shared loader (see :func:`_from_tensors`)."""
    tensors, cfg = _read(path)
    return _from_tensors(tensors, cfg, cls, transform_from_state, quantizer_from_state)


def from_tensors(tensors: dict, config: dict) -> QuantizedLinear:
    """Rebuild a layer from :meth:`QuantizedLinear.to_tensors`' ``(tensors, config)``."""
    from .incoherence import transform_from_state

    return _from_tensors(tensors, config, QuantizedLinear, transform_from_state)


def load_linear(path) -> QuantizedLinear:
    """Read a layer written by :meth:`QuantizedLinear.save`.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a quipref layer file, an unknown format version, or a corrupted file.
    """
    from .incoherence import transform_from_state

    return _load(path, QuantizedLinear, transform_from_state)
