"""E8P / RVQ on the GPU (CuPy in, CuPy out): exact encode, decode, fused decode-matvec.

The kernels are in ``fast/kernels/e8p.cu`` (read its header for the design); this module
builds their tables from :mod:`quipref.quantizers.e8p` / :mod:`quipref.quantizers.rvq`,
re-lays the codes out for the matvec kernel and launches.

* :func:`encode` (u, scale): repository-layout E8P codes of the nearest codewords to the
  rows of ``u / scale``, the same float64 search as :mod:`fast.quantizers.e8p` (so the
  same distance as the reference's brute force on every input, the same codes on inputs
  without ties).
* :func:`decode_table`: the unit codebook (65,536 x 8) on the device, uploaded once.
* :class:`MatvecPlan` (quantizer, codes, shape): built once per layer;
  ``plan(z)`` = ``z @ decode(codes).T`` for ``z`` of shape (b, n), float16 or float32,
  computed from the codes on tensor cores without forming the (m, n) matrix.
"""
from __future__ import annotations

import functools

import numpy as np

from ._compile import load_module, occupancy, precompile_units

__all__ = ["encode", "decode_table", "MatvecPlan", "device_codes", "supports", "KERNELS", "SMEM_BYTES",
           "decode_tables", "precompile"]

_FILE = "e8p"
THREADS = 256
#: rows per row group of the device layout (one mma tile of output rows)
GROUP_ROWS = 16
#: code columns per super group (one 16-byte load per lane: 4 q steps x 2 rows)
GROUP_CODES = 16
#: dynamic shared memory of the matvec kernels: replicated tables + the warp reduction
#: (+ the replicated E81B table for RVQ-3); see e8p.cu
SMEM_BYTES = {0: 65536 + 8 * 2 * 128 * 4, 1: 65536 + 8 * 2 * 128 * 4,
              2: 65536 + 8 * 2 * 128 * 4 + 32768}
_STAGE = {"e8p": 0, "rvq4": 1, "rvq3": 2}
#: every matvec entry point (``tests/test_cuda_compile.py`` checks they are built)
KERNELS = tuple(f"e8p_matvec_{s}_{t}_rg{rg}" for s in _STAGE for t in "hf" for rg in (1, 2)) + \
    ("e8p_encode",)


def precompile(processes: int | None = None) -> list[str]:
    """Compile ``e8p.cu`` into CuPy's kernel cache (needs a GPU; one build unit)."""
    return precompile_units(_FILE, [()], processes)


def _kernel(name: str, smem: int = 0):
    k = load_module(_FILE).get_function(name)
    if smem > 48 * 1024:
        k.max_dynamic_shared_size_bytes = smem
    return k


@functools.lru_cache(maxsize=None)
def _blocks_per_sm(name: str, smem: int, device_id: int) -> int:
    """Resident blocks of one matvec kernel per SM (its launch bounds, registers, smem)."""
    import cupy as cp

    with cp.cuda.Device(device_id):
        k = _kernel(name, smem)
    return occupancy(k, THREADS, smem, device_id, name)[0]


@functools.lru_cache(maxsize=None)
def _host_tables():
    """(S (256, 8) f64, ||S_a||^2, sum(S_a) mod 2 (int32), decode table (256, 4) u32,
    E81B pairs (256, 4) u32) -- see e8p.cu's header."""
    from quipref.quantizers.e8p import e8p_source_set
    from quipref.quantizers.rvq import e81b_codebook

    S = e8p_source_set()
    odd = (S.sum(axis=1) % 2).astype(np.int32)
    E = e81b_codebook().astype(np.float16).view(np.uint16).astype(np.uint32)  # exact in fp16
    e81 = np.stack([E[:, j] | (E[:, j + 4] << 16) for j in range(4)], axis=1).astype(np.uint32)
    return (np.ascontiguousarray(S), (S**2).sum(axis=1), odd, decode_tables(), e81)


#: byte order of the decode table entries: coordinate of byte j (pairs (w0, w4), (w1, w5)
#: in the first word, (w2, w6), (w3, w7) in the second; e8p.cu, e8p_decode)
BYTE_COORD = (0, 4, 1, 5, 2, 6, 3, 7)


@functools.lru_cache(maxsize=None)
def decode_tables():
    """(256, 4) uint32: row e = (abs entry of a = e: 2 words, sign entry of s = e: 2 words)
    of the matvec decode (e8p.cu, ``e8p_decode``).

    abs byte of coordinate i: 4 n_i, n_i = v_i + 7.5 of the base vector (coordinate 7
    negated when sum(S_a) is odd); sign byte: 0x3C if coordinate i is negated (n -> 15 - n),
    OR f = 1 (shift -1/4, odd popcount of s) or 3 (+1/4)."""
    from quipref.quantizers.e8p import e8p_source_set

    S = e8p_source_set()
    odd = (S.sum(axis=1) % 2).astype(np.int64)
    v = S.copy()
    v[odd == 1, 7] *= -1.0
    nib = (v + 7.5).astype(np.int64)
    absb = np.zeros((256, 8), dtype=np.uint32)
    sgnb = np.zeros((256, 8), dtype=np.uint32)
    for j, i in enumerate(BYTE_COORD):
        absb[:, j] = 4 * nib[:, i]
    for s in range(256):
        p = bin(s).count("1") & 1
        eff = s ^ p
        for j, i in enumerate(BYTE_COORD):
            sgnb[s, j] = (0x3C if (eff >> i) & 1 else 0) | (1 if p else 3)
    sh = np.uint32(8) * np.arange(4, dtype=np.uint32)
    words = lambda b: (b << sh).sum(axis=1, dtype=np.uint64).astype(np.uint32)  # noqa: E731
    return np.stack([words(absb[:, :4]), words(absb[:, 4:]), words(sgnb[:, :4]), words(sgnb[:, 4:])],
                    axis=1).astype(np.uint32)


@functools.lru_cache(maxsize=None)
def _device_tables(device_id: int):
    import cupy as cp

    with cp.cuda.Device(device_id):
        return tuple(cp.asarray(t) for t in _host_tables())


@functools.lru_cache(maxsize=None)
def decode_table(device_id: int, which: str = "e8p"):
    """The unit codebook of ``"e8p"`` (65536, 8) or ``"e81b"`` (256, 8), float64, on a device."""
    import cupy as cp

    from quipref._contract import e8p_unit_codebook as _unit_codebook
    from quipref.quantizers.rvq import e81b_codebook

    with cp.cuda.Device(device_id):
        return cp.asarray(_unit_codebook() if which == "e8p" else e81b_codebook())


def encode(u, scale: float):
    """E8P codes (N,) uint16 of the nearest codewords to the rows of ``u / scale``.

    Parameters
    ----------
    u : cupy.ndarray of shape (N, 8), float64, finite (validated by the caller)
    scale : float > 0

    Returns
    -------
    cupy.ndarray of shape (N,), uint16 (repository layout, see quipref.quantizers.e8p)
    """
    import cupy as cp

    u = cp.ascontiguousarray(u, dtype=cp.float64)
    n = u.shape[0]
    out = cp.empty(n, dtype=cp.uint16)
    if n == 0:
        return out
    S, sq, odd, *_ = _device_tables(u.device.id)
    threads = 128
    _kernel("e8p_encode")(((n + threads - 1) // threads,), (threads,),
                          (u, np.int64(n), np.float64(scale), S, sq, odd, out))
    return out


def device_codes(codes, dtype):
    """Matvec-kernel layout of (m, n/8) codes: (R, NS, 32, 8) with ``[R, S, 4g + t, 2q + h]``
    = ``codes[16R + 8h + g, 16S + 4q + t]``, zero padded to m % 16 and (n/8) % 16
    (``e8p.cu`` header). NumPy in, NumPy out (the host emulation test); CuPy in, CuPy out."""
    from quipref._checks import array_module

    xp = array_module(codes)
    m, k = codes.shape
    R, NS = -(-m // GROUP_ROWS), -(-k // GROUP_CODES)
    pad = xp.zeros((GROUP_ROWS * R, GROUP_CODES * NS), dtype=dtype)
    pad[:m, :k] = codes.astype(dtype)
    # (R, h, g, S, q, t) -> (R, S, g, t, q, h)
    return xp.ascontiguousarray(
        pad.reshape(R, 2, 8, NS, 4, 4).transpose(0, 3, 2, 5, 4, 1).reshape(R, NS, 32, 8))


class MatvecPlan:
    """Fused decode-matvec for one layer's E8P or RVQ codes: ``plan(z) = z @ W~^T``.

    Parameters
    ----------
    quantizer : fast.quantizers.E8P or fast.quantizers.RVQ (or the quipref classes)
    codes : array of shape (m, n/8)
        uint16 E8P codes or uint32 RVQ codes (NumPy or CuPy), as ``quantizer.encode``
        returns them; copied to the device once, in the kernel's layout (exactly 2, 3 or
        4 bits per weight plus zero padding to m % 8 and n % 256).
    shape : (m, n)
    rg : {1, 2}, optional
        Row groups of 16 rows per kernel tile (default 2).

    Notes
    -----
    ``W~ = quantizer.decode(codes)``: ``scale * (E8P(first) [+ stage2(second) /
    resid_scale])``. The product runs on tensor cores with ``z`` rounded to float16
    (|z| < 65504) and exact fp16 codeword entries, fp32 accumulation; error per output
    <= ~2^-11 sum_c |z_c| |W~_rc| (the fp16 rounding of z) plus fp32 summation.

    A tile of the kernel is ``16 rg`` output rows (default 2: the z fragments are reused
    by two row groups; ``rg = 1`` gives twice the tiles and measured slower).
    """

    def __init__(self, quantizer, codes, shape, *, rg=None):
        import cupy as cp

        m, n = (int(v) for v in shape)
        if n % 8:
            raise ValueError(f"E8P codes 8 columns at a time: n = {n} must be a multiple of 8")
        kind = _kind(quantizer)
        codes = cp.asarray(codes)
        if codes.shape != (m, n // 8):
            raise ValueError(f"codes must have shape (m, n/8) = ({m}, {n // 8}), got {codes.shape}")
        self.m, self.n, self.kind = m, n, kind
        self.R, self.NS = -(-m // GROUP_ROWS), -(-(n // 8) // GROUP_CODES)
        self.scale = float(quantizer.scale)
        if kind == "e8p":
            self.c1 = device_codes(codes, cp.uint16)
            self.c2 = self.c1  # unused by the kernel
            self.rinv = 0.0
        else:
            shift = 16 if kind == "rvq4" else 8
            c = codes.astype(cp.uint32)
            self.c1 = device_codes(c >> shift, cp.uint16)
            self.c2 = device_codes(c & ((1 << shift) - 1), cp.uint16 if kind == "rvq4" else cp.uint8)
            self.rinv = 1.0 / float(quantizer.resid_scale)
        self.device_id = self.c1.device.id
        self.bytes = int(self.c1.nbytes + (self.c2.nbytes if kind != "e8p" else 0))
        props = cp.cuda.runtime.getDeviceProperties(self.device_id)
        sms = int(props["multiProcessorCount"])
        self.sms = sms
        # two row groups per tile: measured in benchmarks/NOTES_matvec.md
        self.rg = 2 if rg is None else int(rg)
        if self.rg not in (1, 2):
            raise ValueError(f"rg must be 1 or 2, got {rg!r}")
        if self.R * self.NS * 32 >= 2**32:  # the kernels index the codes with 32-bit offsets
            raise ValueError(f"a ({m}, {n}) layer has too many E8P codes for one matvec plan "
                             f"(ceil(m/16) ceil(n/128) must stay below 2^27); split the layer")

    def with_rg(self, rg: int) -> "MatvecPlan":
        """The same plan (same device codes) with another tile height (benchmarks)."""
        import copy

        if rg not in (1, 2):
            raise ValueError(f"rg must be 1 or 2, got {rg!r}")
        other = copy.copy(self)
        other.rg = int(rg)
        return other

    def _grid(self, name: str, smem: int) -> int:
        """Blocks: one per tile, at most the resident ones (occupancy of the build)."""
        per_sm = _blocks_per_sm(name, smem, self.device_id)
        return max(1, min(-(-self.R // self.rg), per_sm * self.sms))

    def __call__(self, z, out=None):
        """``z @ W~^T``: z (b, n) or (n,) CuPy float16/float32 -> float32 (b, m) or (m,)."""
        import cupy as cp

        if not isinstance(z, cp.ndarray):
            raise TypeError(f"z must be a cupy.ndarray, got {type(z).__name__}")
        single = z.ndim == 1
        z2 = z.reshape(1, -1) if single else z
        if z2.ndim != 2 or z2.shape[1] != self.n:
            raise ValueError(f"z must have shape (b, {self.n}) or ({self.n},), got {z.shape}")
        if z2.dtype not in (cp.float16, cp.float32):
            z2 = z2.astype(cp.float32)
        z2 = cp.ascontiguousarray(z2)
        if z2.data.ptr % 32:
            z2 = z2.copy()
        b = z2.shape[0]
        if out is None:
            y = cp.empty((b, self.m), dtype=cp.float32)
        else:
            if not isinstance(out, cp.ndarray) or out.dtype != cp.float32:
                raise TypeError("out must be a float32 cupy.ndarray")
            want = (self.m,) if single else (b, self.m)
            if out.shape != want or not out.flags.c_contiguous:
                raise ValueError(f"out must be C-contiguous of shape {want}, got {tuple(out.shape)}")
            y = out.reshape(b, self.m)
        tag = "h" if z2.dtype == cp.float16 else "f"
        stage = _STAGE[self.kind]
        smem = SMEM_BYTES[stage]
        name = f"e8p_matvec_{self.kind}_{tag}_rg{self.rg}"
        kern = _kernel(name, smem)
        grid = self._grid(name, smem)
        _, _, _, tab, e81 = _device_tables(self.device_id)
        for b0 in range(0, b, 8):  # the kernel takes up to 8 batch rows
            zb, yb = z2[b0:b0 + 8], y[b0:b0 + 8]
            kern((grid,), (THREADS,),
                 (self.c1, self.c2, zb, np.int64(self.n), yb, np.int64(self.m),
                  np.int32(self.m), np.int32(self.n), np.int32(self.R), np.int32(self.NS),
                  np.int32(zb.shape[0]), np.float32(self.scale), np.float32(self.rinv),
                  tab, e81),
                 shared_mem=smem)
        if out is not None:
            return out
        return y[0] if single else y


def _kind(quantizer) -> str:
    from quipref.quantizers.e8p import E8P
    from quipref.quantizers.rvq import RVQ

    if isinstance(quantizer, E8P):
        return "e8p"
    if isinstance(quantizer, RVQ):
        return f"rvq{quantizer.bits}"
    raise ValueError(f"no fused E8P matvec for {type(quantizer).__name__}")


def supports(quantizer) -> bool:
    """True for the quantizers :class:`MatvecPlan` accepts (E8P, RVQ-3, RVQ-4)."""
    try:
        _kind(quantizer)
    except ValueError:
        return False
    return True

