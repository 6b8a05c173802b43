"""Hadamard transform and randomized Hadamard transform (RHT) on the GPU (CuPy arrays).

Same functions, semantics and errors as :mod:`quipref.hadamard`, computed by the CUDA
kernels in ``fast/kernels/rht.cu`` (read its header for the kernel design):

* :func:`hadamard_transform` (x, inverse=False): y = G_n x or G_n^T x along the last axis,
  G_n = (H_K (x) H_p) / sqrt(n), n = K * 2^k (K-block major), as in the reference.
* :func:`rht` (x, signs, inverse=False): y = G_n (s * x) or y = s * (G_n^T x) in one
  kernel launch (the sign flip is fused into the load or the store; the kernels read
  the +-1 vector as packed bits, :func:`pack_signs`).
* :func:`fwht` (x): the unnormalised Sylvester transform H_p x (p a power of two).

float16, float32 and float64 inputs keep their dtype (arithmetic in float32 for the
first two, float64 for the last); integer inputs are transformed in float64. The
matrices H_K come from :func:`quipref.hadamard.base_matrix` and the factorisation from
:func:`quipref.hadamard.factor_dimension`, so both packages compute the same G_n.

Which kernel runs (see :func:`plan`):

* K = 1 and n <= 2^15 (2^14 for float64): one register-resident FWHT launch;
* K > 1, float16/float32, 16 <= p <= 2048 and the row fits in shared memory: one fused
  launch (K x K stage on tensor cores, then the FWHT);
* anything else (float64 with K > 1, tiny or huge p): a multi-pass path, an FWHT over
  sub-rows followed by one column pass per remaining Kronecker factor (H_K, and
  Sylvester factors of at most 64 when p exceeds the register kernel).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from quipref._checks import check_array, is_cupy_array
from quipref._contract import hadamard_factor as _factor
from quipref.hadamard import base_matrix, factor_dimension, sylvester

from ._compile import load_module, precompile_units

__all__ = ["hadamard_transform", "rht", "fwht", "pack_signs", "plan", "builds", "precompile"]

_KERNEL_FILE = "rht"
#: Largest dynamic shared memory a block may opt into on sm_90 (227 KB).
SMEM_LIMIT = 232448
#: Largest log2(n) of the one-launch power-of-two kernel, per dtype.
_POW2_MAX_LOG = {"h": 15, "f": 15, "d": 14}
#: log2 of the sub-row length used by the multi-pass path (registers stay small).
_MULTIPASS_LOG = 12
#: Largest Sylvester factor applied by one column pass in the multi-pass path.
_MAX_FACTOR_LOG = 6
_FUSED_LOGP = range(4, 12)


def _ntw_rule(logp: int) -> int:
    """log2 of the n-tiles per warp unit; mirrors RHT_NTW_RULE in rht.cu."""
    return min(logp - 3, 3 if logp <= 9 else 4)

_TAG = {np.dtype(np.float16): "h", np.dtype(np.float32): "f", np.dtype(np.float64): "d"}
_ACC = {"h": np.float32, "f": np.float32, "d": np.float64}
_POW2_UNIT = {"hh": 1, "ff": 2, "dd": 3, "hf": 4}
_POW2_IO_MAX = {"hh": 15, "ff": 15, "dd": 14, "hf": 14}
_COLS_IO = ("hh", "hf", "fh", "ff", "dd")


# ---------------------------------------------------------------------------------------
# Build units: one NVRTC compilation per (kernel family, dtype[, K]); compiled lazily.
# ---------------------------------------------------------------------------------------

def builds() -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every build unit the wrapper may compile at run time.

    Returns a list of ``(options, kernel_names)``: ``load_module("rht", options)``
    compiles a module containing (at least) ``kernel_names``. ``tests/test_cuda_compile.py``
    compiles exactly this list with NVRTC (no GPU needed), so a kernel that the wrapper
    can launch is a kernel that CI has compiled.
    """
    units = []
    for io, code in _POW2_UNIT.items():
        names = tuple(f"rht_pow2_{io}_{log}" for log in range(_POW2_IO_MAX[io] + 1))
        units.append(((f"-DRHT_POW2={code}",), names))
    units.append((("-DRHT_COLS=1",), tuple(f"rht_cols_{io}" for io in _COLS_IO)))
    for tag in ("h", "f"):
        names = tuple(f"rht_fused_{tag}_p{lp}" for lp in _FUSED_LOGP)
        units.append((_fused_options(tag), names))
    return units


def precompile(processes: int | None = None) -> list[str]:
    """Compile every build unit into CuPy's on-disk kernel cache, in parallel processes.

    NVRTC holds the GIL and a unit takes seconds, so a fresh machine compiles the ~7
    units in the time of the slowest one instead of their sum. Needs a GPU (the module
    is loaded after compiling). Returns the option strings of the units compiled.
    """
    return precompile_units(_KERNEL_FILE, [opts for opts, _ in builds()], processes)


def _pow2_options(io: str) -> tuple[str, ...]:
    return (f"-DRHT_POW2={_POW2_UNIT[io]}",)


def _fused_options(tag: str) -> tuple[str, ...]:
    return (f"-DRHT_FUSED={1 if tag == 'h' else 2}",)


@functools.lru_cache(maxsize=None)
def _kernel(options: tuple, name: str):
    return load_module(_KERNEL_FILE, options).get_function(name)


def _prepared_kernel(options, name, smem):
    k = _kernel(tuple(options), name)
    if smem > 48 * 1024 and k.max_dynamic_shared_size_bytes < smem:
        k.max_dynamic_shared_size_bytes = smem
    return k


def _launch(options, name, grid, block, args, smem=0):
    _prepared_kernel(options, name, smem)(grid, block, args, shared_mem=smem)


# ---------------------------------------------------------------------------------------
# Launch geometry (mirrors the constexpr configs Pow2Cfg / FusedCfg in rht.cu; the
# kernels trap if block size or shared memory disagree, so a mismatch cannot pass
# silently).
# ---------------------------------------------------------------------------------------

def _pow2_t2(io: str, logn: int) -> bool:
    """True when rht_pow2_<io>_<logn> is the two-transpose body (UseT2 in rht.cu)."""
    return io == "hh" and logn in (12, 13)


def _pow2_geometry(logn: int, acc_bytes: int, t2: bool = False):
    if t2:  # one row per block of n / 1024 warps, 4 * 264 floats per warp
        w = 1 << (logn - 10)
        return 32 * w, 1, w * 4 * 264 * 4
    loge = min(logn, 3)
    rem = logn - loge
    if rem <= 5:
        warps, rows_per_block, w = 4, 4 * (32 >> rem), 1
    else:
        logw = (rem - 4) // 2  # ceil((rem - 5) / 2): W = C or 2C
        w = 1 << logw
        warps = w if w >= 4 else 4
        rows_per_block = warps // w
    smem = rows_per_block * (1 << logn) * acc_bytes if w > 1 else 0
    return 32 * warps, rows_per_block, smem


def _fused_geometry(tag: str, K: int, logp: int):
    """(threads, dynamic smem bytes) of rht_fused_<tag>_p<logp>; mirrors FusedRt in rht.cu."""
    P = 1 if tag == "h" else 3
    kt = (K + 15) // 16
    kp = 16 * kt
    pw = 1 << logp
    ldc = ldb = pw + 8
    logntw = _ntw_rule(logp)
    wn = 1 << (logp - 3 - logntw)
    nu = kt * wn
    nwarps = min(nu, 16)
    bytes_b = P * kp * ldb * 2
    bytes_c = K * ldc * 4
    smem = max(bytes_b, bytes_c) if nu <= nwarps else bytes_b + bytes_c
    return 32 * nwarps, smem


def _fused_a_host(K: int, transpose: bool) -> np.ndarray:
    """Host array of the H_K operand of the fused kernel (rht.cu, ``fused_a_frag``): the
    packed signs of H = base_matrix(K) (transposed when ``transpose``), uint32
    (KT, KT, 32) with KT = ceil(K/16): [mi, kt, lane] for lane (g, q) = (lane >> 2,
    lane & 3) holds, for each m16n8k16 A register r, the sign of its low half
    H[mi*16 + g + 8 (r & 1), kt*16 + 2q + 8 (r >> 1)] in bit 15 - r and of its high half
    (the next column) in bit 31 - r (set = -1). Padding entries are +1 (bit clear): the
    kernel zeroes the padding rows of its B operand and never stores padding rows of the
    product. The same array serves fp16 and bf16 (the kernel ORs in the +1 pattern).
    """
    H = np.asarray(base_matrix(K), dtype=np.int8)
    if transpose:
        H = H.T
    kt = (K + 15) // 16
    kp = 16 * kt
    neg = np.zeros((kp, kp), dtype=np.uint32)
    neg[:K, :K] = H < 0
    lane = np.arange(32)
    g, q = lane >> 2, lane & 3
    r = np.arange(4)
    # index arrays of shape (KT, KT, 32, 4): row and (even) column of register r
    rows = (np.arange(kt)[:, None, None, None] * 16 + g[None, None, :, None]
            + 8 * (r[None, None, None, :] & 1))
    cols = (np.arange(kt)[None, :, None, None] * 16 + 2 * q[None, None, :, None]
            + 8 * (r[None, None, None, :] >> 1))
    rows, cols = np.broadcast_arrays(rows, cols)
    words = (neg[rows, cols] << (15 - r)) | (neg[rows, cols + 1] << (31 - r))
    return np.ascontiguousarray(np.bitwise_or.reduce(words, axis=-1).astype(np.uint32))


@functools.lru_cache(maxsize=None)
def _device_matrix(kind: str, K: int, transpose: bool, device_id: int):
    """H_K (or its transpose) on the device: int8 (K, K) for the column pass (``kind``
    "int8", or "syl" for a Sylvester factor), or the packed-sign operand of the fused
    kernel (``kind`` "fused", :func:`_fused_a_host`)."""
    import cupy

    with cupy.cuda.Device(device_id):
        if kind in ("int8", "syl"):
            H = sylvester(K) if kind == "syl" else base_matrix(K)
            H = np.asarray(H, dtype=np.int8)
            if transpose:
                H = H.T
            return cupy.asarray(np.ascontiguousarray(H))
        return cupy.asarray(_fused_a_host(K, transpose))


# ---------------------------------------------------------------------------------------
# Planner: which kernels run for (dtype, K, p)
# ---------------------------------------------------------------------------------------

def plan(dtype, n: int) -> list[str]:
    """Kernel launches used for rows of length ``n`` and this dtype (for tests/benchmarks).

    Returns a list of kernel names in launch order, e.g. ``['rht_fused_h_p9']`` or
    ``['rht_pow2_dd_6', 'rht_cols_dd']``.
    """
    tag = _TAG[np.dtype(dtype)]
    K, p = factor_dimension(n)
    return [name for name, *_ in _passes(tag, K, p)]


def _passes(tag: str, K: int, p: int, multipass: bool = False):
    """The launch list as tuples (name, options, kind, params)."""
    logp = p.bit_length() - 1
    acc = "d" if tag == "d" else "f"
    if multipass:
        pass
    elif K == 1 and logp <= _POW2_MAX_LOG[tag]:
        io = tag + tag
        return [(f"rht_pow2_{io}_{logp}", _pow2_options(io), "pow2",
                 dict(io=io, logn=logp, t2=_pow2_t2(io, logp)))]
    elif K > 1 and tag in "hf" and logp in _FUSED_LOGP:
        threads, smem = _fused_geometry(tag, K, logp)
        if smem <= SMEM_LIMIT:
            return [(f"rht_fused_{tag}_p{logp}", _fused_options(tag), "fused",
                     dict(threads=threads, smem=smem))]
    # multi-pass: FWHT on sub-rows of length p2, then column passes for the Sylvester
    # factors of p / p2 (innermost first) and finally H_K at stride p.
    log2 = min(logp, _MULTIPASS_LOG)
    factors = []  # (K', stride, kind)
    stride, rest = 1 << log2, logp - log2
    while rest > 0:
        f = min(rest, _MAX_FACTOR_LOG)
        factors.append((1 << f, stride, "syl"))
        stride <<= f
        rest -= f
    if K > 1:
        factors.append((K, p, "int8"))
    passes = []
    if log2 > 0 or not factors:
        io = tag + (acc if factors else tag)
        passes.append((f"rht_pow2_{io}_{log2}", _pow2_options(io), "pow2",
                       dict(io=io, logn=log2, t2=_pow2_t2(io, log2))))
    for i, (kk, st, kind) in enumerate(factors):
        first = not passes
        last = i == len(factors) - 1
        io = (tag if first else acc) + (tag if last else acc)
        passes.append((f"rht_cols_{io}", ("-DRHT_COLS=1",), "cols",
                       dict(io=io, K=kk, stride=st, kind=kind)))
    return passes


def _transform_2d(x2d, out2d, K: int, p: int, signs, inverse: bool, scale: float,
                  *, multipass: bool = False) -> None:
    """Launch the kernels for a C-contiguous, 16-byte aligned (rows, K*p) array.

    No validation, no host synchronisation and, for the one-launch paths, no
    allocation: safe inside CUDA-graph stream capture. ``signs`` is None or the packed
    sign bits of :func:`pack_signs` (uint32, bit i set = element i negated); ``out2d``
    may not alias ``x2d``. ``multipass=True`` forces the multi-pass path (tests and
    benchmarks).
    """
    import cupy

    rows, n = x2d.shape
    if rows == 0:
        return
    tag = _TAG[x2d.dtype]
    acc_t = _ACC[tag]
    acc_bytes = np.dtype(acc_t).itemsize
    sc = acc_t(scale)
    null = np.uint64(0)
    s_arg = signs if signs is not None else null
    pre = 0 if signs is None or inverse else 1
    post = 0 if signs is None or not inverse else 2
    dev = x2d.device.id
    passes = _passes(tag, K, p, multipass)
    if len(passes) == 1 and passes[0][2] == "fused":
        name, opts, _, prm = passes[0]
        A = _device_matrix("fused", K, inverse, dev)
        _launch(opts, name, (rows,), (prm["threads"],),
                (x2d, out2d, np.int64(rows), np.int32(K), A, s_arg, np.int32(pre or post),
                 np.float32(scale)), prm["smem"])
        return
    # intermediate buffer: the output itself when it has the accumulation dtype
    multi = len(passes) > 1
    if multi and np.dtype(acc_t) != out2d.dtype:
        tmp = cupy.empty((rows, n), dtype=acc_t)
    else:
        tmp = out2d
    src = x2d
    for i, (name, opts, kind, prm) in enumerate(passes):
        first, last = i == 0, i == len(passes) - 1
        dst = out2d if last else tmp
        mode = (pre if first else 0) or (post if last else 0)
        s_i = s_arg if mode else null
        scale_i = sc if last else acc_t(1.0)
        if kind == "pow2":
            logn = prm["logn"]
            threads, rpb, smem = _pow2_geometry(logn, acc_bytes, prm["t2"])
            nsub = rows * (n >> logn)
            grid = (nsub + rpb - 1) // rpb
            _launch(opts, name, (grid,), (threads,),
                    (src, dst, np.int64(nsub), s_i, np.int32(mode), np.int32(n >> logn), scale_i),
                    smem)
        else:
            kk, st = prm["K"], prm["stride"]
            H = _device_matrix(prm["kind"], kk, inverse and prm["kind"] == "int8", dev)
            nouter = rows * n // (kk * st)
            grid = nouter * ((st + 31) // 32)
            smem = kk * 32 * acc_bytes + kk * kk
            _launch(opts, name, (grid,), (32, 8),
                    (src, dst, np.int64(nouter), np.int32(kk), np.int32(st), H, s_i,
                     np.int32(mode), scale_i), smem)
        src = dst


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------

def _prepare_gpu(x, name: str = "x"):
    """Validate like quipref.hadamard._prepare, but keep float16 on the device as float16.

    Returns ``(x, K, p)`` with ``x`` a CuPy array of float16/32/64 (integers -> float64).
    """
    if not is_cupy_array(x):
        raise TypeError(
            f"{name} must be a cupy.ndarray for the CUDA path, got {type(x).__name__}; "
            f"use quipref.hadamard (NumPy) or fast.hadamard for host arrays"
        )
    in_dtype = x.dtype
    keep = in_dtype if in_dtype in _TAG else None
    x = check_array(x, name, ndim=None, dtype=keep)
    if x.ndim == 0:
        raise ValueError(
            f"{name} must have at least 1 dimension (the transform runs along the last "
            f"axis), got a 0-d array; pass {name}.reshape(1) for a single number"
        )
    n = x.shape[-1]
    if n < 1:
        raise ValueError(f"{name} must have a last axis of length >= 1, got shape {x.shape}")
    K, p = _factor(n, f"{name}.shape[-1]")
    return x, K, p


def _as_rows(x):
    import cupy

    n = x.shape[-1]
    x2d = cupy.ascontiguousarray(x).reshape(-1, n)
    if x2d.data.ptr % 16:
        x2d = x2d.copy()
    return x2d


def _run(x, K, p, signs, inverse, scale):
    import cupy

    x2d = _as_rows(x)
    out = cupy.empty(x2d.shape, dtype=x2d.dtype)
    with x2d.device:
        _transform_2d(x2d, out, K, p, signs, inverse, scale)
    return out.reshape(x.shape)


def hadamard_transform(x, *, inverse=False):
    """Orthonormal Hadamard transform along the last axis (CUDA), for every n = K * 2^k.

    y = G_n x (``inverse=False``) or y = G_n^T x (``inverse=True``) with
    G_n = (H_K (x) H_p) / sqrt(n), exactly as :func:`quipref.hadamard.hadamard_transform`.

    Parameters
    ----------
    x : cupy.ndarray, shape (..., n)
        Real numbers, any leading (batch) axes; n must be supported
        (:func:`quipref.hadamard.factor_dimension`).
    inverse : bool, default False
        Apply G_n^T.

    Returns
    -------
    y : cupy.ndarray, shape (..., n)
        Same dtype as ``x`` for float16/32/64 (float32 arithmetic for the first two),
        float64 for integer input.

    Raises
    ------
    TypeError
        If ``x`` is not a CuPy array of real numbers.
    ValueError
        If ``x`` is 0-d, contains NaN/Inf, or n is not a supported size.
    """
    x, K, p = _prepare_gpu(x)
    return _run(x, K, p, None, bool(inverse), 1.0 / math.sqrt(K * p))


def pack_signs(signs, n: int | None = None):
    """Validate a +-1 sign vector and pack it into the bit layout the kernels read.

    Parameters
    ----------
    signs : array_like, shape (n,)
        +1 / -1 entries, any real dtype (QuIP#'s S_U / S_V; ``quipref.incoherence`` keeps
        them as int8). NumPy or CuPy.
    n : int, optional
        Expected length (the transform size); checked when given.

    Returns
    -------
    bits : cupy.ndarray of uint32, shape (ceil(n / 32),)
        Bit i (bit i % 32 of word i // 32) is set where signs[i] == -1. Pass it to the
        low-level launcher; :func:`rht` packs for you. Packing once and reusing the bits
        saves a small kernel and a host synchronisation per call.

    Raises
    ------
    TypeError
        If ``signs`` is not real numeric.
    ValueError
        If ``signs`` is not 1-D, has the wrong length, NaN/Inf, or entries other than +-1.
    """
    import cupy

    s = check_array(signs, "signs", ndim=1)
    if n is not None and s.shape[0] != n:
        raise ValueError(
            f"signs must have shape ({n},) to match x.shape[-1] = {n}, got shape {s.shape}"
        )
    s = cupy.asarray(s)
    neg = s < 0
    bad = int(cupy.count_nonzero(cupy.abs(s) != 1))
    if bad:
        raise ValueError(
            f"signs must hold only +1 and -1, got {bad} other entr{'y' if bad == 1 else 'ies'}; "
            f"draw them as 1 - 2 * rng.integers(0, 2, n) (see quipref.incoherence)"
        )
    words = (s.shape[0] + 31) // 32
    packed = cupy.zeros(words * 4, dtype=cupy.uint8)
    if s.shape[0]:
        b = cupy.packbits(neg, bitorder="little")
        packed[: b.size] = b
    return packed.view(cupy.uint32)


def rht(x, signs, *, inverse=False):
    """Randomized Hadamard transform along the last axis, in one kernel launch.

    ``inverse=False``: y = G_n (s * x);  ``inverse=True``: y = s * (G_n^T x), so that
    ``rht(rht(x, s), s, inverse=True) == x`` up to rounding (QuIP# Alg. 3 and its inverse;
    ``quipref.incoherence``'s RHT applies the same maps with NumPy).

    Parameters
    ----------
    x : cupy.ndarray, shape (..., n)
        As in :func:`hadamard_transform`.
    signs : array_like, shape (n,)
        The random sign vector s, entries +1 / -1 (any real dtype, NumPy or CuPy). The
        kernels read it as packed bits (:func:`pack_signs`), n / 8 bytes.
    inverse : bool, default False
        Apply the inverse transform s * (G_n^T x).

    Returns
    -------
    y : cupy.ndarray, shape (..., n), dtype as in :func:`hadamard_transform`

    Raises
    ------
    TypeError
        If ``x`` is not a CuPy array of real numbers, or ``signs`` is not real numeric.
    ValueError
        As :func:`hadamard_transform`; or ``signs`` is not 1-D of length n, has NaN/Inf,
        or has entries other than +-1.
    """
    x, K, p = _prepare_gpu(x)
    n = K * p
    with x.device:
        bits = pack_signs(signs, n)
    return _run(x, K, p, bits, bool(inverse), 1.0 / math.sqrt(n))


def fwht(x):
    """Unnormalised Sylvester FWHT along the last axis (CUDA): y = H_p x, p = 2^k.

    Same semantics and errors as :func:`quipref.hadamard.fwht` (ValueError for a length
    that is not a power of two). dtype as in :func:`hadamard_transform`.
    """
    x, K, p = _prepare_gpu(x)
    if K != 1:
        raise ValueError(
            f"fwht needs a power-of-two length along the last axis, got "
            f"x.shape[-1]={x.shape[-1]} = {K}*{p}; use hadamard_transform for K*2^k sizes"
        )
    return _run(x, K, p, None, False, 1.0)
