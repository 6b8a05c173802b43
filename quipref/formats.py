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
JSON config in the header metadata with the format name and a version number. The config
carries a SHA-256 of itself and of every tensor, and is validated against a schema
(:data:`CONFIG_FIELDS`) on every load, from a file or from :func:`from_tensors`: unknown
versions, corrupted files and missing, extra, mistyped or inconsistent fields are refused
with a ``ValueError`` naming the field, and a round trip is bit-exact. Saves are atomic
and byte-reproducible (:mod:`quipref._io`).
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from pathlib import Path

import numpy as np

from ._checks import array_module, check_array, check_int, to_numpy
from ._io import atomic_write_bytes, safetensors_bytes
from .quantizers.base import quantizer_from_state

__all__ = ["QuantizedLinear", "load_linear", "from_tensors", "pack_codes", "unpack_codes", "FORMAT_NAME",
           "FORMAT_VERSION"]

FORMAT_NAME = "quipref.QuantizedLinear"
#: Version 2 (this one): the SHA-256 covers the config as well as the tensors, and lives in
#: the config (so :func:`from_tensors` checks it too). Version 1 files (tensor checksum in
#: the metadata) are still read.
FORMAT_VERSION = 2
READABLE_VERSIONS = ("1", "2")


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
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2:
            raise TypeError(f"shape must be a pair (m, n) of positive integers, got {shape!r}")
        m, n = (check_int(s, "shape") for s in shape)
        if not isinstance(method, str) or not method:
            raise TypeError(f"method must be a non-empty string (the recipe's name), got {method!r}")
        bits = check_int(bits, "bits", 1, 32)
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
        each) or, for Kronecker transforms saved with ``store_factors=True``, their
        orthogonal factors and permutations (by default only their seed is saved, in the
        header), and the rescaling vector, each counted at its stored width; the quantizer's scalar parameters (a float64 codebook scale) count
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
            Format version, method, bits, shape, the codes' shape and dtype, the
            quantizer's and the transforms' configs, the options, which arrays are packed
            sign vectors, and ``"sha256"``: a SHA-256 over the rest of the config (as
            canonical JSON) *and* every tensor, so that any change to anything that decides
            the weights is detected (:func:`from_tensors` checks it).

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
            "version": FORMAT_VERSION,
            "method": self.method, "bits": self.bits, "shape": list(self.shape),
            "codes": {"shape": list(codes.shape), "dtype": str(codes.dtype)},
            "quantizer": qcfg, "options": self.options,
            "input_transform": None if self.input_transform is None else self.input_transform.state()[0],
            "output_transform": None if self.output_transform is None else self.output_transform.state()[0],
            "rescale": self.rescale is not None,
            "sign_arrays": signs,
        }
        config = json.loads(_canonical_json(config))  # plain JSON types: what a reader gets back
        config["sha256"] = _digest(tensors, config)
        return tensors, config

    def save(self, path) -> Path:
        """Write the layer to one safetensors file; returns the path.

        The file holds :meth:`to_tensors`' arrays and, in the header metadata, the format
        name, the version and the config (canonical JSON, with its SHA-256). The write is
        atomic (a temporary file in the same folder, flushed, fsync-ed, renamed: a crash
        never leaves a cut-off file or destroys an older one, see :mod:`quipref._io`) and
        byte-reproducible (the same layer always gives the same bytes).
        """
        path = Path(path)
        tensors, config = self.to_tensors()
        meta = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "config": _canonical_json(config)}
        atomic_write_bytes(path, safetensors_bytes(tensors, meta))
        return path


def _is_sign_vector(a: np.ndarray) -> bool:
    """A 1-D integer array of +-1 entries (a random sign vector): stored as 1 bit per entry."""
    return a.ndim == 1 and a.dtype.kind == "i" and a.size > 0 and bool(np.all(np.abs(a) == 1))


def _canonical_json(obj) -> str:
    """The one JSON text of a config: sorted keys, compact separators, ASCII (floats by repr,
    which round-trips exactly)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def _digest(tensors: dict, config: dict | None = None) -> str:
    """SHA-256 of the config (without its ``sha256`` entry) and of every tensor (name,
    dtype, shape, bytes). ``config=None``: tensors only (format version 1 files)."""
    h = hashlib.sha256()
    if config is not None:
        body = {k: v for k, v in config.items() if k != "sha256"}
        h.update(b"config\0" + _canonical_json(body).encode() + b"\0")
    for k in sorted(tensors):
        a = np.asarray(tensors[k], order="C")
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read(path):
    """Read tensors + config, turning every failure into a clear ``ValueError``.

    Returns ``(tensors, config, legacy)``; ``legacy`` is True for format version 1 files,
    whose checksum (in the metadata) covers the tensors only.
    """
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
    version = meta.get("version")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has format version {version!r}; this library reads version "
            f"{FORMAT_VERSION} (and 1). Upgrade quipref to read newer files."
        )
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} has a missing or corrupt config header") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path} has a corrupt config header (not a JSON object)")
    legacy = version == "1"
    if legacy and _digest(tensors) != meta.get("sha256"):
        raise ValueError(f"{path} is corrupted: its tensor checksum does not match the header")
    if not legacy and config.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} is corrupted: the config's version {config.get('version')!r} "
                         f"differs from the file's {version!r}")
    return tensors, config, legacy


# ---------------------------------------------------------------------------------------
# the config schema (checked on every load, file or from_tensors)
# ---------------------------------------------------------------------------------------
#: field -> what it must be (for the error messages)
CONFIG_FIELDS = {
    "version": f"the integer {FORMAT_VERSION}",
    "method": "a non-empty string (the recipe's name)",
    "bits": "an integer in 1..32",
    "shape": "a list [m, n] of two positive integers",
    "codes": 'an object {"shape": list of non-negative integers, "dtype": an integer dtype name}',
    "quantizer": 'an object with a "type" (a quantizer state)',
    "options": "an object (the recipe's options)",
    "input_transform": 'null or an object with a "type" (a transform state)',
    "output_transform": 'null or an object with a "type" (a transform state)',
    "rescale": "true or false",
    "sign_arrays": 'an object mapping tensor names to {"shape": [size], "dtype": an integer dtype name}',
    "sha256": "64 lowercase hex digits",
}
_LEGACY_FIELDS = set(CONFIG_FIELDS) - {"version", "sha256"}


def _bad(field: str, why: str) -> ValueError:
    """A ValueError naming the config field, what is wrong and what the field must be."""
    return ValueError(f"quantized layer config field {field!r} {why} "
                      f"(field {field.split('.')[0]!r} must be {CONFIG_FIELDS[field.split('.')[0]]})")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _int_dtype(v, field):
    try:
        dt = np.dtype(v) if isinstance(v, str) else None
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "iu":
        raise _bad(field, f"is {v!r}, not an integer dtype name")
    return dt


def _check_layer_config(cfg, legacy: bool) -> None:
    """Validate the top-level fields of a layer config (types and presence)."""
    if not isinstance(cfg, dict):
        raise TypeError(f"config must be a dict (from QuantizedLinear.to_tensors()), got {type(cfg).__name__}")
    want = _LEGACY_FIELDS if legacy else set(CONFIG_FIELDS)
    missing, extra = sorted(want - set(cfg)), sorted(set(cfg) - want)
    if missing:
        raise _bad(missing[0], "is missing" + (f" (and {missing[1:]})" if missing[1:] else ""))
    if extra:
        raise ValueError(f"quantized layer config field {extra[0]!r} is unknown"
                         + (f" (and {extra[1:]})" if extra[1:] else "")
                         + f"; a layer config has exactly the fields {sorted(want)}")
    if not legacy:
        if cfg["version"] != FORMAT_VERSION or not _is_int(cfg["version"]):
            raise _bad("version", f"is {cfg['version']!r}; this library reads version {FORMAT_VERSION} "
                                  f"(upgrade quipref to read newer layers)")
        s = cfg["sha256"]
        if not (isinstance(s, str) and len(s) == 64 and all(c in "0123456789abcdef" for c in s)):
            raise _bad("sha256", f"is {s!r}")
    if not isinstance(cfg["method"], str) or not cfg["method"]:
        raise _bad("method", f"is {cfg['method']!r}")
    if not _is_int(cfg["bits"]) or not 1 <= cfg["bits"] <= 32:
        raise _bad("bits", f"is {cfg['bits']!r}")
    shape = cfg["shape"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(s) and s >= 1 for s in shape)):
        raise _bad("shape", f"is {shape!r}")
    codes = cfg["codes"]
    if not (isinstance(codes, dict) and set(codes) == {"shape", "dtype"}):
        raise _bad("codes", f"is {codes!r}")
    if not (isinstance(codes["shape"], list) and all(_is_int(s) and s >= 0 for s in codes["shape"])):
        raise _bad("codes.shape", f"is {codes['shape']!r}")
    _int_dtype(codes["dtype"], "codes.dtype")
    for name in ("quantizer", "input_transform", "output_transform"):
        v = cfg[name]
        if (v is None and name != "quantizer") or (isinstance(v, dict) and isinstance(v.get("type"), str)):
            continue
        raise _bad(name, f"is {v!r}")
    if not isinstance(cfg["options"], dict):
        raise _bad("options", f"is {cfg['options']!r}")
    if not isinstance(cfg["rescale"], bool):
        raise _bad("rescale", f"is {cfg['rescale']!r}")
    signs = cfg["sign_arrays"]
    if not isinstance(signs, dict):
        raise _bad("sign_arrays", f"is {signs!r}")
    for k, info in signs.items():
        field = f"sign_arrays.{k}"
        if not (isinstance(info, dict) and set(info) == {"shape", "dtype"} and isinstance(info["shape"], list)
                and len(info["shape"]) == 1 and _is_int(info["shape"][0]) and info["shape"][0] >= 1):
            raise _bad(field, f"is {info!r}")
        _int_dtype(info["dtype"], field + ".dtype")


def _rebuild(field, cfg, arrays, from_state):
    """``from_state(cfg, arrays)`` with every failure turned into a ValueError naming the
    field, and a check that the object's own state() gives back exactly ``cfg`` (so an
    extra, ignored or silently converted entry is refused)."""
    try:
        obj = from_state(cfg, arrays)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        raise ValueError(f"quantized layer config field {field!r} does not describe a valid "
                         f"{cfg.get('type')!r}: {type(exc).__name__}: {exc}") from exc
    back = obj.state()[0]
    if _canonical_json(back) != _canonical_json(cfg):
        diff = sorted(k for k in set(back) | set(cfg)
                      if _canonical_json(back.get(k, "<missing>")) != _canonical_json(cfg.get(k, "<missing>")))
        raise ValueError(f"quantized layer config field {field!r} has missing, extra or mistyped "
                         f"entries {diff}: stored {cfg!r}, but it rebuilds as {back!r}")
    return obj


def _from_tensors(tensors, cfg, cls, transform_from_state, quantizer_from_state=quantizer_from_state,
                  legacy: bool = False):
    """Shared rebuild from :meth:`QuantizedLinear.to_tensors`' output: validate the config
    against the schema (:data:`CONFIG_FIELDS`), check the SHA-256 of config + tensors,
    then rebuild with ``cls`` (the layer class) and the two ``*_from_state`` functions
    (reference or fast classes)."""
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors must be a dict of arrays (from QuantizedLinear.to_tensors()), "
                        f"got {type(tensors).__name__}")
    _check_layer_config(cfg, legacy)
    if not legacy and _digest(tensors, cfg) != cfg["sha256"]:
        raise ValueError("quantized layer is corrupted: the SHA-256 of its config and tensors does "
                         "not match the one recorded in the config field 'sha256'")
    m, n = cfg["shape"]
    groups = {"quantizer": {}, "input_transform": {}, "output_transform": {}}
    for k, v in tensors.items():
        prefix, _, name = k.partition(".")
        if k in ("codes", "rescale") and not name:
            continue
        if prefix in groups and name and prefix != "quantizer" and cfg[prefix] is None:
            raise _bad(prefix, f"is null, but the layer has the tensor {k!r} of such a transform")
        if prefix not in groups or not name:
            raise ValueError(f"quantized layer has an unexpected tensor {k!r}; its tensors are 'codes', "
                             f"'rescale', 'quantizer.*' and '<input|output>_transform.*'")
        info = cfg["sign_arrays"].get(k)
        if info is not None:
            size = int(info["shape"][0])
            v = np.asarray(v)
            if v.dtype != np.uint8 or v.shape != (math.ceil(size / 8),):
                raise _bad(f"sign_arrays.{k}", f"says {size} signs, but tensor {k!r} is {v.dtype} {v.shape}, "
                                               f"not uint8 ({math.ceil(size / 8)},)")
            bits = np.unpackbits(v, bitorder="little")[:size]
            v = np.where(bits == 1, -1, 1).astype(info["dtype"])
        groups[prefix][name] = v
    for k in cfg["sign_arrays"]:
        if k not in tensors:
            raise _bad(f"sign_arrays.{k}", "names a tensor the layer does not have")
    if "codes" not in tensors:
        raise ValueError("quantized layer has no 'codes' tensor")

    quantizer = _rebuild("quantizer", cfg["quantizer"], groups["quantizer"], quantizer_from_state)
    tin, tout = (None if cfg[f] is None else _rebuild(f, cfg[f], groups[f], transform_from_state)
                 for f in ("input_transform", "output_transform"))
    for field, t, size, what in (("input_transform", tin, n, "n (columns)"), ("output_transform", tout, m, "m (rows)")):
        if t is not None and t.n != size:
            raise _bad(field, f"acts on {t.n} entries but field 'shape' = {[m, n]} has {what} = {size}")
    codes_shape = tuple(cfg["codes"]["shape"])
    try:
        expect = tuple(quantizer.codes_shape((m, n)))
    except ValueError as exc:
        raise _bad("shape", f"= {[m, n]} cannot be coded by the quantizer ({exc})") from exc
    if codes_shape != expect:
        raise _bad("codes.shape", f"= {list(codes_shape)}, but the quantizer codes a {[m, n]} matrix "
                                  f"(field 'shape') as {list(expect)}")
    width = int(getattr(quantizer, "code_bits", cfg["bits"]))
    try:
        flat = unpack_codes(tensors["codes"], width, math.prod(codes_shape))
    except ValueError as exc:
        raise _bad("codes", f"does not match the 'codes' tensor ({exc})") from exc
    dt = np.dtype(cfg["codes"]["dtype"])
    if flat.size and int(flat.max()) > np.iinfo(dt).max:
        raise _bad("codes.dtype", f"= {dt} cannot hold the stored codes (max {int(flat.max())})")
    codes = flat.astype(dt).reshape(codes_shape)
    rescale = None
    if cfg["rescale"]:
        r = tensors.get("rescale")
        if r is None:
            raise _bad("rescale", "is true but the layer has no 'rescale' tensor")
        r = np.asarray(r)
        if r.dtype.kind != "f" or r.shape != (n,) or not np.all(np.isfinite(r)) or not np.all(r > 0):
            raise ValueError(f"quantized layer tensor 'rescale' must be finite positive floats of shape ({n},) "
                             f"(n from field 'shape'), got {r.dtype} {r.shape}")
        rescale = r
    elif "rescale" in tensors:
        raise _bad("rescale", "is false but the layer has a 'rescale' tensor")
    return cls(codes, quantizer, (m, n), cfg["method"], cfg["bits"],
               input_transform=tin, output_transform=tout, rescale=rescale, options=cfg["options"])


def _load(path, cls, transform_from_state, quantizer_from_state=quantizer_from_state):
    """Shared loader (see :func:`_from_tensors`)."""
    tensors, cfg, legacy = _read(path)
    try:
        return _from_tensors(tensors, cfg, cls, transform_from_state, quantizer_from_state, legacy=legacy)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def from_tensors(tensors: dict, config: dict) -> QuantizedLinear:
    """Rebuild a layer from :meth:`QuantizedLinear.to_tensors`' ``(tensors, config)``.

    The config is validated against the schema (:data:`CONFIG_FIELDS`) and the SHA-256
    in ``config["sha256"]`` is checked against the config and the tensors.

    Raises
    ------
    TypeError
        ``tensors`` or ``config`` is not a dict.
    ValueError
        A missing, extra, mistyped or inconsistent config field (the message names it),
        an unexpected tensor, or a checksum mismatch (corrupted data).
    """
    from .incoherence import transform_from_state

    return _from_tensors(tensors, config, QuantizedLinear, transform_from_state)


def load_linear(path) -> QuantizedLinear:
    """Read a layer written by :meth:`QuantizedLinear.save`.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a quipref layer file, an unknown format version, a corrupted file (checksum
        of the config and tensors), or a config that breaks the schema (the message
        names the field).
    """
    from .incoherence import transform_from_state

    return _load(path, QuantizedLinear, transform_from_state)
