r"""QTIP trellis codes on the GPU (CuPy in, CuPy out): decode, and the fused decode-matvec.

The reference is :mod:`quipref.quantizers.trellis` (read its module docstring: the
bitshift trellis, the codes 1MAD / 3INST / HYB, the tail-biting packing and the tile
layout). The kernels are in ``fast/kernels/trellis_decode.cu``; its header explains
the design (tensor-core matvec, fragment maps, re-laid-out codes, instruction counts).

* :func:`decode` (trellis, codes): reference-layout codes (m/16, (n/16) W) uint16 ->
  float32 (m, n), equal to ``trellis.decode(codes)`` rounded once to float32.
* :class:`MatvecPlan` (trellis, codes, shape): built once per layer; ``plan(z)``
  computes ``z @ decode(codes).T`` for z of shape (b, n), float16 or float32, without
  materialising the matrix (fp16 tensor cores, fp32 accumulation).

Exactness of :func:`decode` (each value is ``scale * C[state]``, float64 in the
reference): the state is an integer window, identical by construction. 1MAD computes
the same integer byte sum, then ``(u - 510) / 147.800537109375`` and ``* scale`` in
IEEE double, the same two correctly rounded operations as NumPy. 3INST adds the two
fp16 halves with ``add.rn.f16x2``: the result is the correctly rounded fp16 sum, which
is what NumPy's float16 addition returns (it rounds the exact float32 sum, and the
float32 sum of two halves in [0.125, 2) is exact); the fp16 value is exact in double
and ``* scale`` is one correctly rounded double product. HYB reads the float64 LUT,
negates component 0 (exact) and multiplies by ``scale`` in double. So the double
computed on the GPU equals the reference's float64 bit for bit, and converting it to
float32 (round to nearest even) gives exactly ``reference.astype(float32)``.

Arithmetic of :class:`MatvecPlan` (the tolerance of the GPU tests is derived from it):
the weights enter the tensor cores as fp16 *unscaled* code values C (1MAD: the integer
``u - 510``, 3INST: the fp16 sum, both exact; HYB: the LUT rounded to fp16, relative
error <= 2^-11, or 2^-25 absolute below the fp16 normal range), z is fp16 (float32 z is
rounded to fp16: 2^-11 relative, 2^-25 absolute), products are exact in the fp32
accumulation, and the result is multiplied by ``outscale`` (float32 of ``scale``, or of
``scale / 147.800537109375`` for 1MAD).

References
----------
.. [QTIP] Tseng, Sun, Hou, De Sa. "QTIP: Quantization with Trellises and Incoherence
   Processing", NeurIPS 2024, Sec. 3.1 (codes), 3.2 (tail-biting), 4.2 (kernels).
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from quipref._checks import is_cupy_array
from quipref._contract import MAD1_DIVISOR

from ._codes import CODE_IDS
from ._compile import load_module, occupancy, precompile_units

__all__ = ["decode", "MatvecPlan", "relayout_codes", "matvec_support", "builds", "precompile",
           "ring_geometry", "ring_smem"]

_KERNEL_FILE = "trellis_decode"
#: kernel ids of the codes with a fused matvec (fast.cuda._codes, trellis_codes.cuh)
_CODE_ID = {c: CODE_IDS[c] for c in ("hyb", "1mad", "3inst")}
_DECODE_CODES = ("1mad", "3inst", "hyb")
#: tile rows per unit of the matvec kernel (RT in the .cu)
RT = 2
#: threads per block of the matvec kernel (TD_THREADS in the .cu) and of decode
THREADS = 512
DECODE_THREADS = 256
#: largest batch of one matvec launch (the mma N dimension); larger batches are chunked
MAX_BATCH = 8
#: shared memory of the HYB kernels: 1024 half2 LUT entries x 32 lane copies
HYB_SMEM = 1024 * 32 * 4
#: zero units appended to the re-laid-out codes (kept so that the layout does not depend on
#: how far a kernel may look ahead; the ring kernel never copies past a warp's range)
SPARE_UNITS = 2
#: shared-memory ring of the matvec kernels (RING_SLOT, RING_NSLOT in the .cu): per warp
#: NSLOT slots of max(1, SLOT // (64 k)) units; NSLOT - 1 slots are in flight
RING_SLOT_BYTES = 1024
RING_NSLOT = 4
#: the most dynamic shared memory one block may opt into (sm_80 / sm_90: 227 KB)
MAX_SMEM = 227 * 1024


# ---------------------------------------------------------------------------------------
# Build units
# ---------------------------------------------------------------------------------------

def _mv_names(code: str) -> tuple[str, ...]:
    return tuple(f"trellis_mv_{code}_k{k}_{z}" for k in (2, 3, 4) for z in ("h", "f"))


def ring_geometry(k: int) -> tuple[int, int, int]:
    """(units per slot SU, slots NSLOT, bytes per warp) of the matvec ring at k bits
    (RingCfg in the .cu)."""
    ub = 64 * k
    su = max(1, RING_SLOT_BYTES // ub)
    return su, RING_NSLOT, RING_NSLOT * su * ub


def ring_smem(code: str, k: int, threads: int = THREADS) -> int:
    """Dynamic shared memory of a matvec kernel: the HYB LUT, then one ring per warp."""
    return (HYB_SMEM if code == "hyb" else 0) + (threads // 32) * ring_geometry(k)[2]


#: -D option of the decode-only build unit
DECODE_UNIT = ("-DTD_MV=-1",)


def builds() -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every build unit the wrapper may compile: ``(options, kernel_names)``.

    ``-DTD_MV=<id>`` builds the six matvec kernels of one code plus the decode kernel;
    ``-DTD_MV=-1`` only the decode kernel. ``tests/test_cuda_compile.py`` compiles exactly
    this list with NVRTC.
    """
    units = [(DECODE_UNIT, ("trellis_decode",))]
    for code, cid in _CODE_ID.items():
        units.append(((f"-DTD_MV={cid}",), _mv_names(code) + ("trellis_decode",)))
    return units


def precompile(processes: int | None = None) -> list[str]:
    """Compile every build unit into CuPy's kernel cache in parallel processes (needs a
    GPU). Returns the option strings of the units compiled."""
    return precompile_units(_KERNEL_FILE, [opts for opts, _ in builds()], processes)


@functools.lru_cache(maxsize=None)
def _kernel(options: tuple, name: str, smem: int, carveout: int):
    k = load_module(_KERNEL_FILE, tuple(options)).get_function(name)
    if smem > 48 * 1024 and k.max_dynamic_shared_size_bytes < smem:
        k.max_dynamic_shared_size_bytes = smem
    if carveout >= 0:
        try:  # a hint: keep the rest of the 228 KB for L1 (z, codes in flight)
            k.preferred_shared_memory_carveout = carveout
        except Exception:  # pragma: no cover - older CuPy
            pass
    return k


@functools.lru_cache(maxsize=None)
def _blocks_per_sm(options: tuple, name: str, threads: int, smem: int, carveout: int,
                   device_id: int) -> tuple[int, int]:
    """(resident blocks per SM, number of SMs) of a matvec kernel."""
    import cupy

    with cupy.cuda.Device(device_id):
        k = _kernel(options, name, smem, carveout)
    return occupancy(k, threads, smem, device_id, name)


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------

def _check_trellis(trellis):
    from quipref.quantizers.trellis import Trellis

    if not isinstance(trellis, Trellis):
        raise TypeError(f"trellis must be a quipref/fast Trellis, got {type(trellis).__name__}")
    return trellis


def _decode_support(t) -> str | None:
    """Why the CUDA decoder cannot handle this trellis (None: it can)."""
    if t.code not in _DECODE_CODES:
        return (f"code {t.code!r} has no CUDA decoder (supported: {_DECODE_CODES}); "
                f"use trellis.decode on the host")
    if t.L != 16:
        return f"the CUDA decoder needs L = 16 (16-bit states), got L = {t.L}"
    if tuple(t.tile) != (16, 16):
        return f"the CUDA decoder needs 16 x 16 tiles, got tile = {tuple(t.tile)}"
    if t.V not in (1, 2):
        return f"the CUDA decoder supports V = 1 or 2, got V = {t.V}"
    return None


def matvec_support(trellis) -> str | None:
    """Why :class:`MatvecPlan` cannot handle this trellis, or None when it can.

    Supported: L = 16, 16 x 16 tail-biting tiles, k in {2, 3, 4}, and the codes 1MAD,
    3INST (V = 1) and HYB with V = 2, Q = 9 (QTIP's kernel configuration).
    """
    t = _check_trellis(trellis)
    why = _decode_support(t)
    if why:
        return why.replace("CUDA decoder", "fused matvec")
    if not t.tail_biting:
        return "the fused matvec needs tail-biting tiles (16 k words per tile)"
    if t.k not in (2, 3, 4):
        return f"the fused matvec supports k = 2, 3, 4 bits per weight, got k = {t.k}"
    if t.code == "hyb" and (t.V != 2 or t.Q != 9):
        return f"the fused HYB matvec needs V = 2 and Q = 9, got V = {t.V}, Q = {t.Q}"
    return None


def _check_codes_gpu(trellis, codes):
    """CuPy integer (m/16, c W) codes -> C-contiguous uint16, same errors as the reference."""
    import cupy

    if not is_cupy_array(codes):
        raise TypeError(
            f"codes must be a cupy.ndarray for the CUDA path, got {type(codes).__name__}; "
            f"use trellis.decode for host arrays")
    if codes.dtype.kind not in "iu":
        raise TypeError(f"codes must be an integer (uint16) array, got dtype {codes.dtype}")
    W = trellis.words_per_tile
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0 or codes.shape[1] % W:
        raise ValueError(
            f"codes must have shape (m / {trellis.tile[0]}, c * {W}) ({W} words per "
            f"{trellis.tile[0]} x {trellis.tile[1]} tile), got shape {tuple(codes.shape)}")
    if codes.dtype != cupy.uint16:
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi > 0xFFFF:
            raise ValueError("codes must hold 16-bit words in [0, 65535]")
        codes = codes.astype(cupy.uint16)
    return cupy.ascontiguousarray(codes)


# ---------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------

def decode(trellis, codes, *, out=None):
    """Decode trellis codes on the GPU: the CUDA version of ``trellis.decode(codes)``.

    Every weight is computed from its own 16-bit window of its tile's stream (random
    access, :mod:`quipref.quantizers.trellis`), then ``scale * C[state]`` exactly as the reference computes it
    in float64, rounded once to float32 (module docstring: exactness).

    Parameters
    ----------
    trellis : quipref.quantizers.Trellis or fast.quantizers.Trellis
        L = 16, 16 x 16 tiles, code ``"1mad"``, ``"3inst"`` or ``"hyb"`` (V = 1 or 2,
        any Q), any k, tail-biting or not.
    codes : cupy.ndarray, integer, shape (m / 16, (n / 16) * W)
        The reference layout: tile (i, j) is ``codes[i, j W:(j+1) W]``, W =
        ``trellis.words_per_tile`` uint16 words (MSB first).
    out : cupy.ndarray, float32, shape (m, n), optional
        C-contiguous output buffer (every element is written).

    Returns
    -------
    cupy.ndarray, float32, shape (m, n)

    Raises
    ------
    TypeError
        If ``trellis`` is not a Trellis, ``codes`` is not a CuPy integer array, or
        ``out`` is not a float32 CuPy array.
    ValueError
        If the trellis is not supported (use ``trellis.decode`` on the host), the codes
        have the wrong shape or words outside [0, 65535], or ``out`` has the wrong shape
        or is not C-contiguous.
    """
    import cupy

    t = _check_trellis(trellis)
    why = _decode_support(t)
    if why:
        raise ValueError(why)
    c = _check_codes_gpu(t, codes)
    W = t.words_per_tile
    m, n = 16 * c.shape[0], 16 * (c.shape[1] // W)
    with c.device:
        if out is None:
            out = cupy.empty((m, n), dtype=cupy.float32)
        elif (not is_cupy_array(out) or out.dtype != cupy.float32):
            raise TypeError("out must be a float32 cupy.ndarray")
        elif out.shape != (m, n) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous array of shape {(m, n)}, got "
                             f"{tuple(out.shape)}")
        if t.code == "hyb":
            lut = cupy.asarray(np.ascontiguousarray(t.lut, dtype=np.float64).reshape(-1))
            lut_arg = lut
        else:
            lut_arg = np.uint64(0)
        total = m * (n // 2)
        sms = cupy.cuda.runtime.deviceGetAttribute(
            cupy.cuda.runtime.cudaDevAttrMultiProcessorCount, c.device.id)
        grid = max(1, min((total + DECODE_THREADS - 1) // DECODE_THREADS, sms * 32))
        k = _kernel(DECODE_UNIT, "trellis_decode", 0, -1)
        k((grid,), (DECODE_THREADS,),
          (c, out, np.int32(m), np.int32(n), np.int32(W), np.int32(t.kV), np.int32(t.V),
           np.int32(_CODE_ID[t.code]), np.int32(t.Q), np.float64(t.scale), lut_arg))
    return out


# ---------------------------------------------------------------------------------------
# The matvec layout (mirrors fast/kernels/trellis_decode.cu)
# ---------------------------------------------------------------------------------------

def relayout_codes(codes, k: int, xp=None):
    """Reference-layout codes -> the unit layout read by the matvec kernels (uint32).

    ``codes`` (MT, NJ * 16 k) uint16 (tile (i, j) = ``codes[i, j W:(j+1) W]``). Tile
    rows are taken in pairs (row group I = tiles 2I, 2I+1; an odd MT gets a zero tile
    row that produces outputs nobody stores); unit (I, j) holds, for lane group
    g = 0..7 (tile rows 2g, 2g+1 = stream bits [32 k g, 32 k (g+1))), the k MSB-first
    u32 words of both tiles interleaved: word i of tile r at
    ``((I * NJ + j) * 8 + g) * k * 2 + i * 2 + r``. Only a permutation of the bits
    (plus the pad row and ``SPARE_UNITS`` zero units at the end that the kernel never
    reads).

    Parameters
    ----------
    codes : ndarray (NumPy or CuPy), uint16, shape (MT, NJ * 16 k)
    k : int
        Bits per weight.
    xp : module, optional
        numpy or cupy (default: the module of ``codes``).

    Returns
    -------
    1-D uint32 array of length ((MT + 1) // 2 * NJ + SPARE_UNITS) * 16 k.
    """
    if xp is None:
        xp = __import__("cupy") if is_cupy_array(codes) else np
    MT, NW = codes.shape
    W = 16 * k
    NJ = NW // W
    c = codes.reshape(MT, NJ, 8 * k, 2).astype(xp.uint32)
    s = (c[..., 0] << 16) | c[..., 1]  # (MT, NJ, 8 k) stream words, MSB first
    if MT % 2:
        s = xp.concatenate([s, xp.zeros((1, NJ, 8 * k), dtype=xp.uint32)], axis=0)
    s = s.reshape(-1, RT, NJ, 8, k).transpose(0, 2, 3, 4, 1)  # (I, j, g, i, r)
    flat = xp.ascontiguousarray(s).reshape(-1)
    spare = xp.zeros(SPARE_UNITS * 16 * k, dtype=xp.uint32)
    return xp.concatenate([flat, spare])


def _pi(k: int, p: int) -> int:
    """Fragment K pair p -> tile column pair (PI in the .cu)."""
    if k == 4:
        return p if p < 2 else (p + 4 if p < 4 else p - 2)
    return p


def _win_off(k, V, wt, d):
    """Bit offset, in the run of a lane group (rows 2g, 2g+1, spill), of window type wt
    (RR * 4 + S * 2 + E) for the lane with d = lane & 3."""
    return 16 * k * (wt >> 2) + 2 * k * _pi(k, 4 * ((wt >> 1) & 1) + d) + (((wt & 1) * k) if V == 1 else 0)


def _win_jlo(o):
    return 0 if o <= 16 else (o - 16 + 31) // 32


def _win_jhi(o):
    return (o + 16) // 32


def _win_j(k, V, wt, d):
    cur = _win_jhi(_win_off(k, V, wt, 0))
    for dd in range(1, d + 1):
        o = _win_off(k, V, wt, dd)
        if _win_jlo(o) > cur:
            cur = _win_jhi(o)
    return cur


def _win_n(k, V, wt, d):
    return 32 * _win_j(k, V, wt, d) + 16 - _win_off(k, V, wt, d)


def _win_hi(k, V, wt):
    j0, j1 = _win_j(k, V, wt, 0), _win_j(k, V, wt, 3)
    na = nb = False
    for d in range(4):
        if _win_n(k, V, wt, d) > 16:
            if _win_j(k, V, wt, d) == j0:
                na = True
            else:
                nb = True
    return -2 if (na and nb) else (j0 - 1 if na else (j1 - 1 if nb else -1))


def _window_state(run, k, V, wt, d):
    """The state the kernel extracts for window type wt of lane d from its run
    ``run[0..k]`` (Python ints): the CPU mirror of ``window<K, V, WT>`` (tests)."""
    j0, j1, H = _win_j(k, V, wt, 0), _win_j(k, V, wt, 3), _win_hi(k, V, wt)
    p = _win_j(k, V, wt, d) > j0
    n = _win_n(k, V, wt, d)
    lo = run[j1] if (j1 > j0 and p) else run[j0]
    if H == -1:
        x = lo >> n
    else:
        hi = run[H] if H >= 0 else (run[j1 - 1] if p else run[j0 - 1])
        x = (((hi << 32) | lo) >> min(n, 32)) & 0xFFFFFFFF
    return x & 0xFFFF


def _hyb_lut2(lut) -> np.ndarray:
    """The (512, 2) HYB LUT -> 1024 half2 words (uint32): rows 0..511 the LUT rounded to
    fp16, rows 512..1023 the same with component 0 negated (bit 15 of the hash, folded
    into the table); component 0 in the low 16 bits."""
    lut = np.asarray(lut, dtype=np.float64).reshape(512, 2)
    both = np.concatenate([lut, lut * np.array([-1.0, 1.0])], axis=0).astype(np.float16)
    return np.ascontiguousarray(both).view(np.uint32).reshape(1024)


# ---------------------------------------------------------------------------------------
# Workspace shared by every plan launched on a (device, stream): partial sums and the
# arrival counters (zero between launches: each launch resets the counters it used)
# ---------------------------------------------------------------------------------------
_WORKSPACES: dict = {}


def _workspace(device_id: int, stream_ptr: int, warps: int, row_groups: int):
    import cupy

    key = (device_id, stream_ptr)
    ws = _WORKSPACES.get(key)
    if ws is None or ws[0].size < warps * 512 or ws[1].size < row_groups:
        with cupy.cuda.Device(device_id):
            wmax = max(warps, ws[0].size // 512 if ws else 0)
            rmax = max(row_groups, ws[1].size if ws else 0)
            ws = (cupy.empty(wmax * 512, dtype=cupy.float32), cupy.zeros(rmax, dtype=cupy.int32))
        _WORKSPACES[key] = ws
    return ws


# ---------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------

class MatvecPlan:
    """Fused decode-matvec ``y = z @ decode(codes).T`` for one layer (CUDA, tensor cores).

    Build once per layer: re-lays the codes out for the kernel (:func:`relayout_codes`,
    exactly k bits per weight) and uploads the fp16 LUT (HYB). The reference-layout
    ``codes`` are not modified or kept.

    Parameters
    ----------
    trellis : Trellis
        Must satisfy :func:`matvec_support` (L = 16, 16 x 16 tail-biting tiles,
        k = 2, 3, 4; 1MAD, 3INST, or HYB with V = 2, Q = 9).
    codes : cupy.ndarray, integer, shape (m / 16, (n / 16) * 16 k)
        Reference-layout codes of an (m, n) matrix (m outputs, n inputs).
    shape : (int, int)
        (m, n); must match ``codes``.

    Raises
    ------
    TypeError
        If ``trellis`` is not a Trellis or ``codes`` is not a CuPy integer array.
    ValueError
        If the trellis parameters are not supported (the message says which; fall back
        to :func:`decode` and a matmul), or ``shape`` does not match ``codes``.

    Notes
    -----
    ``plan(z)`` uses a workspace (partial sums, arrival counters) shared by all plans on
    the same (device, stream) and allocated on first use on that stream (so warm up a
    stream before capturing it in a CUDA graph). Two launches that run concurrently on
    different streams use different workspaces; do not run one plan on two streams that
    are not ordered, or capture it in two graphs replayed concurrently on one stream key.
    """

    def __init__(self, trellis, codes, shape):
        import cupy

        t = _check_trellis(trellis)
        why = matvec_support(t)
        if why:
            raise ValueError(why)
        c = _check_codes_gpu(t, codes)
        if (not isinstance(shape, (tuple, list)) or len(shape) != 2
                or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in shape)):
            raise ValueError(f"shape must be a pair of integers (m, n), got {shape!r}")
        m, n = int(shape[0]), int(shape[1])
        W = t.words_per_tile
        if m <= 0 or n <= 0 or m % 16 or n % 16 or c.shape != (m // 16, (n // 16) * W):
            raise ValueError(
                f"shape {(m, n)} does not match codes of shape {tuple(c.shape)}: an (m, n) "
                f"matrix has codes of shape (m / 16, (n / 16) * {W}) with m, n multiples of 16")
        self.trellis, self.shape, self.k = t, (m, n), t.k
        self.code = t.code
        self.threads = THREADS
        self.device_id = c.device.id
        self.NI = (c.shape[0] + 1) // 2
        self.NJ = n // 16
        self.U = self.NI * self.NJ
        self.outscale = np.float32(t.scale / MAD1_DIVISOR if t.code == "1mad" else t.scale)
        self._unit = (f"-DTD_MV={_CODE_ID[t.code]}",)
        self._smem = ring_smem(t.code, t.k, self.threads)  # <= MAX_SMEM (tests)
        # carveout hint in percent of the 228 KB: LUT and rings + 1 KB reserved, rest is L1
        self._carveout = (int(math.ceil(100 * (self._smem + 1024) / 233472)) if self._smem else 0)
        with c.device:
            self.codes = relayout_codes(c, t.k, cupy)
            self.lut2 = cupy.asarray(_hyb_lut2(t.lut)) if t.code == "hyb" else None
            self._names = {zt: f"trellis_mv_{t.code}_k{t.k}_{zt}" for zt in ("h", "f")}
            per_sm, sms = _blocks_per_sm(self._unit, self._names["h"], self.threads, self._smem,
                                         self._carveout, self.device_id)
            wpb = self.threads // 32
            self.grid = max(1, min(per_sm * sms, -(-self.U // wpb)))
            self.warps = min(self.grid * wpb, self.U)  # active warps: each gets >= 1 unit
            _workspace(self.device_id, cupy.cuda.get_current_stream().ptr, self.warps, self.NI)

    @property
    def nbytes(self) -> int:
        """Bytes of the re-laid-out codes the kernel streams (k bits per weight + pads)."""
        return int(self.codes.nbytes)

    def __call__(self, z, *, out=None):
        """``y = z @ decode(codes).T``: (b, n) -> (b, m) float32 (or (n,) -> (m,)).

        Parameters
        ----------
        z : cupy.ndarray, float16 or float32, shape (b, n) or (n,)
            Any b >= 1 (launches of at most 8 rows). float32 is rounded to fp16 in the
            kernel (module docstring). NaN / Inf are not checked (they propagate).
        out : cupy.ndarray, float32, shape (b, m) (or (m,)), optional
            C-contiguous output buffer.

        Returns
        -------
        cupy.ndarray, float32, shape (b, m) or (m,)

        Raises
        ------
        TypeError
            If ``z`` is not a float16 / float32 CuPy array, or ``out`` not float32 CuPy.
        ValueError
            If ``z`` has the wrong shape, or ``out`` the wrong shape / layout.
        """
        import cupy

        m, n = self.shape
        if not is_cupy_array(z):
            raise TypeError(f"z must be a cupy.ndarray, got {type(z).__name__}")
        if z.dtype not in (cupy.float16, cupy.float32):
            raise TypeError(f"z must be float16 or float32, got dtype {z.dtype}; cast it "
                            f"(the kernel computes with fp16 inputs)")
        if z.ndim not in (1, 2) or z.shape[-1] != n or z.size == 0:
            raise ValueError(f"z must have shape (b, {n}) or ({n},) with b >= 1, got "
                             f"{tuple(z.shape)}")
        single = z.ndim == 1
        z2 = z.reshape(1, n) if single else z
        b = z2.shape[0]
        with z.device:
            if z.device.id != self.device_id:
                raise ValueError(f"z is on device {z.device.id}, the plan on {self.device_id}")
            z2 = cupy.ascontiguousarray(z2)
            if z2.data.ptr % 16:
                z2 = z2.copy()
            if out is None:
                y = cupy.empty((b, m), dtype=cupy.float32)
            else:
                if not is_cupy_array(out) or out.dtype != cupy.float32:
                    raise TypeError("out must be a float32 cupy.ndarray")
                if out.shape != ((m,) if single else (b, m)) or not out.flags.c_contiguous:
                    raise ValueError(f"out must be C-contiguous of shape "
                                     f"{(m,) if single else (b, m)}, got {tuple(out.shape)}")
                y = out.reshape(b, m)
            for r0 in range(0, b, MAX_BATCH):
                self._launch(z2[r0:r0 + MAX_BATCH], y[r0:r0 + MAX_BATCH])
        if out is not None:
            return out  # y is a view of it
        return y.reshape(m) if single else y

    def _launch(self, z2d, y2d, *, max_warps: int | None = None) -> None:
        """One launch for a C-contiguous, 16-byte aligned (b <= 8, n) z and (b, m) y.

        No validation, no allocation once the stream has its workspace, no host
        synchronisation: safe inside CUDA-graph stream capture. ``max_warps`` caps the
        active warps (tests: forces every split of rows between warps).
        """
        import cupy

        b = z2d.shape[0]
        zt = "h" if z2d.dtype == cupy.float16 else "f"
        wpb = self.threads // 32
        warps = self.warps if max_warps is None else max(1, min(int(max_warps), self.U))
        grid = self.grid if max_warps is None else -(-warps // wpb)
        part, cnt = _workspace(self.device_id, cupy.cuda.get_current_stream().ptr, warps, self.NI)
        k = _kernel(self._unit, self._names[zt], self._smem, self._carveout)
        lut = self.lut2 if self.lut2 is not None else np.uint64(0)
        m, n = self.shape
        k((grid,), (self.threads,),
          (self.codes, z2d, y2d, part, cnt, lut, np.int32(b), np.int32(m), np.int32(n),
           np.int32(self.NI), np.int32(self.NJ), np.int64(self.U), np.int32(warps),
           self.outscale),
          shared_mem=self._smem)
