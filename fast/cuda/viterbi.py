r"""Viterbi for QTIP's bitshift trellis on the GPU (CuPy in, CuPy out).

The CUDA side of :func:`fast.quantizers.trellis.bitshift_viterbi`,
:func:`~fast.quantizers.trellis.tail_biting_viterbi` and
:meth:`fast.quantizers.trellis.Trellis.encode`: the kernels are in
``fast/kernels/viterbi.cu`` (read its header for the algorithm and the memory layout);
this module validates nothing (the public functions do, with the reference's helpers),
picks a build unit, prepares the value code and launches.

* :func:`plan` chooses the build unit for ``(L, kV, V, code)``: tiles per block ``P``,
  groups per unit ``JPER``, threads ``NT``, and whether the group minima fit in shared
  memory (``VT_GBEST`` otherwise);
* :func:`viterbi_table` runs the dynamic program for a value table (any code) and
  returns the walks and their float64 cost;
* :func:`encode_states` runs it for a :class:`~quipref.quantizers.Trellis` with the code
  computed in-kernel (1MAD, 3INST, HYB) or read from its table (gaussian);
* :func:`pack` packs walks into the reference's uint16 layout on the device.

Precision. The search runs in float32 on ``fl32(f x)`` and ``fl32(f C[s])`` with
``f = 2^-e`` a power of two that brings ``max(|x|, |C|)`` into [0.5, 1) (exact, so fp32
neither overflows nor loses the small values of tiny-scale inputs). The walk is optimal
for the float32 costs; its float64 cost (recomputed here for :func:`viterbi_table`)
differs from the float64 optimum by at most the float32 error bound of two path sums
(tests/gpu/test_viterbi_gpu.py derives it). Ties and near-ties may pick another walk of
(almost) equal cost than the reference: compare costs, not paths.

Supported: ``1 <= L <= 16``, ``V in {1, 2}``, ``kV <= 8`` (:func:`supported`); the
callers fall back to the Numba path on the host otherwise.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from quipref._checks import array_module

from ._codes import CODE_IDS
from ._compile import load_module, occupancy, precompile_units

__all__ = ["Build", "plan", "builds", "supported", "precompile", "viterbi_table",
           "encode_states", "pack", "launch"]

_KERNEL_FILE = "viterbi"
#: Largest dynamic shared memory a block may opt into on sm_90 (227 KB).
SMEM_LIMIT = 232448
#: Shared memory of one SM on sm_90 (228 KB; each resident block also reserves 1 KB).
_SM_SMEM = 233472
#: Shared memory a block may use when two tiles per block are wanted (2 blocks per SM).
_SMEM_P2 = 100 * 1024
#: A table this small (bytes) is staged in shared memory (VT_CODE 4).
_TABLE_SMEM = 64 * 1024
#: Largest HYB LUT (bytes, 2^(Q+1) x V floats) kept in shared memory; larger Q use the table.
_LUT_SMEM = 64 * 1024
#: Cap on the backpointer buffer of one launch (bytes); the grid shrinks to fit.
BP_CAP = 2 << 30
MAX_L = 16
MAX_KV = 8

#: kernel code ids: one definition (fast.cuda._codes, rendered into trellis_codes.cuh)
CODE_TABLE, CODE_1MAD, CODE_3INST, CODE_HYB, CODE_TABLE_SMEM = (
    CODE_IDS[c] for c in ("table", "1mad", "3inst", "hyb", "table_smem"))
_CODE_IDS = {c: CODE_IDS[c] for c in ("table", "1mad", "3inst", "hyb")}
from quipref._contract import MAD1_DIVISOR  # noqa: E402  (one definition, quipref.quantizers._trellis_codes)


@dataclass(frozen=True)
class Build:
    """One build unit of viterbi.cu: the ``-D`` options and the constants they imply
    (mirrors ``namespace vt`` in the kernel; the kernel traps on a launch that disagrees)."""

    L: int
    kV: int
    V: int
    code: int
    Q: int
    P: int
    jper: int
    nt: int
    gbest: bool
    eunroll: int
    uunroll: int = 1
    minb: int = 1

    @property
    def G(self) -> int:
        return 1 << (self.L - self.kV)

    @property
    def E(self) -> int:
        return 1 << self.kV

    @property
    def upt(self) -> int:
        return self.G // self.jper // self.nt

    @property
    def kb(self) -> int:
        return 1 if self.kV <= 1 else 2 if self.kV <= 2 else 4 if self.kV <= 4 else 8

    @property
    def wpt(self) -> int:
        """32-bit backpointer words per thread and step."""
        return -(-self.upt * self.jper * self.kb // 32)

    @property
    def lut_floats(self) -> int:
        if self.code == CODE_HYB:
            return (2 << self.Q) * self.V
        if self.code == CODE_TABLE_SMEM:
            return (1 << self.L) * self.V
        return 0

    @property
    def smem_bytes(self) -> int:
        best = 0 if self.gbest else 2 * self.P * self.G
        return 4 * (best + self.lut_floats + 64 * self.P + 2 * self.P)

    def bp_words_per_block(self, S: int) -> int:
        return self.P * S * self.wpt * self.nt

    def options(self) -> tuple[str, ...]:
        return (f"-DVT_L={self.L}", f"-DVT_KV={self.kV}", f"-DVT_V={self.V}",
                f"-DVT_CODE={self.code}", f"-DVT_Q={self.Q}", f"-DVT_P={self.P}",
                f"-DVT_JPER={self.jper}", f"-DVT_NT={self.nt}",
                f"-DVT_GBEST={int(self.gbest)}", f"-DVT_EUNROLL={self.eunroll}",
                f"-DVT_UUNROLL={self.uunroll}", f"-DVT_MINB={self.minb}")


def supported(L: int, kV: int, V: int, S: int | None = None) -> bool:
    """True when the CUDA kernel handles this trellis (and sequences of ``S`` steps: one
    block's backpointer rows must fit in :data:`BP_CAP`); else the callers use the host."""
    if not (1 <= L <= MAX_L and 1 <= kV <= min(MAX_KV, L) and V in (1, 2)):
        return False
    return S is None or plan(L, kV, V).bp_words_per_block(S) * 4 <= BP_CAP


def _geometry(G: int, E: int, P: int, jper=None, nt=None):
    JW = min(E, G)
    if jper is None:
        jper = min(JW, 16 // P)  # P * jper running (min, argmin) pairs in registers
        while jper > 1 and G // jper < 32 * P:  # at least one warp per tile (the walk back)
            jper //= 2
    nu = G // jper
    if nt is None:
        cap = 1024 if P * jper <= 4 else 512 if P * jper <= 16 else 256
        nt = min(nu, cap)
    return jper, nt


#: Builds measured faster than the generic rule, per (code, L, kV, V, Q): applied when
#: none of P, jper, nt is given. HYB L = 16, k = 2, V = 2 (QTIP's 2-bit configuration):
#: 4 tiles of 1024 threads per block, 0.363 s against 0.437 s for the rule's P = 2,
#: 512 threads on 4096 x 4096 (H100; benchmarks/NOTES_matvec.md). Only this
#: configuration was measured; every other one keeps the rule.
MEASURED_BUILDS = {("hyb", 16, 4, 2, 9): dict(P=4, nt=1024)}


def plan(L: int, kV: int, V: int, code: str = "table", Q: int = 9, *, P=None, jper=None,
         nt=None, eunroll=None, uunroll=None, minb=None) -> Build:
    """The build unit for an ``(L, kV, V)`` trellis and a value code.

    Parameters
    ----------
    L, kV, V : int
        State bits, bits per step, values per step (:func:`supported` must hold).
    code : {"table", "1mad", "3inst", "hyb"}
        How the kernel obtains ``C[s]``: from a (2^L, V) table (staged in shared memory
        when it is at most 64 KB), or computed (HYB: from its 2^(Q+1)-row LUT).
    Q : int
        HYB LUT bits. A LUT larger than 64 KB makes the plan fall back to ``"table"``.
    P, jper, nt, eunroll, uunroll, minb : int, optional
        Overrides (benchmark variants) of the tiles per block, groups per unit, threads
        per block, the unroll factors of the loops over predecessors and over a thread's
        units, and the blocks per SM the register allocation must allow
        (``__launch_bounds__``). Defaults: :data:`MEASURED_BUILDS` where it has an entry,
        else ``P = 2`` when both tiles' group minima fit in
        ~100 KB of shared memory (two blocks per SM); ``jper = min(E, G, 16 / P)``,
        halved until there is a warp per tile; ``nt = G / jper`` capped at 1024 / 512 /
        256 threads for ``P jper`` <= 4 / 16 / more; ``eunroll = min(E, 16 / (P jper))``;
        ``minb`` enough for 32 resident warps per SM when shared memory allows them.

    Returns
    -------
    Build

    Raises
    ------
    ValueError
        Unsupported trellis, or overrides that violate the kernel's constraints.
    """
    if not supported(L, kV, V):
        raise ValueError(f"the CUDA Viterbi supports L <= {MAX_L}, kV <= {MAX_KV}, V in (1, 2); "
                         f"got L={L}, kV={kV}, V={V}")
    if code not in _CODE_IDS:
        raise ValueError(f"code must be one of {tuple(_CODE_IDS)}, got {code!r}")
    if P is None and jper is None and nt is None:
        tuned = MEASURED_BUILDS.get((code, L, kV, V, Q))
        if tuned is not None:
            P, nt = tuned["P"], tuned["nt"]
    cid = _CODE_IDS[code]
    if cid in (CODE_1MAD, CODE_3INST) and V != 1:
        raise ValueError(f"code {code!r} is scalar: it needs V = 1, got V = {V}")
    if cid == CODE_HYB and (2 << Q) * V * 4 > _LUT_SMEM:
        cid = CODE_TABLE
    if cid == CODE_TABLE and (1 << L) * V * 4 <= _TABLE_SMEM:
        cid = CODE_TABLE_SMEM
    G, E = 1 << (L - kV), 1 << kV
    lut_bytes = 4 * ((2 << Q) * V if cid == CODE_HYB else (1 << L) * V if cid == CODE_TABLE_SMEM else 0)
    if P is None:
        P = 2 if 2 * 2 * G * 4 + lut_bytes <= _SMEM_P2 and G >= 64 else 1
        _, n = _geometry(G, E, P, jper, nt)
        if P > 1 and n < 32 * P:
            P = 1
    jper, nt = _geometry(G, E, P, jper, nt)
    if eunroll is None:
        eunroll = max(1, min(E, 16 // (P * jper)))
    if uunroll is None:
        uunroll = 1
    gbest = 4 * (2 * P * G) + lut_bytes + 4 * 66 * P > SMEM_LIMIT
    b = Build(L, kV, V, cid, Q if cid == CODE_HYB else 9, P, jper, nt, gbest, eunroll, uunroll)
    if minb is None:  # registers for ~32 resident warps per SM, if shared memory allows them
        by_smem = _SM_SMEM // (b.smem_bytes + 1024)
        minb = max(1, min(32, by_smem, 1024 // nt))
    b = Build(L, kV, V, cid, b.Q, P, jper, nt, gbest, eunroll, uunroll, minb)
    _validate(b)
    return b


def _validate(b: Build) -> None:
    """The static_asserts of viterbi.cu, as a ValueError before NVRTC sees the unit."""
    JW = min(b.E, b.G)
    pow2 = lambda v: v >= 1 and v & (v - 1) == 0  # noqa: E731
    problems = []
    if not (pow2(b.jper) and JW % b.jper == 0):
        problems.append(f"jper={b.jper} must be a power of two dividing min(E, G) = {JW}")
    elif not (pow2(b.nt) and b.nt <= 1024 and (b.G // b.jper) % b.nt == 0):
        problems.append(f"nt={b.nt} must be a power of two <= 1024 dividing G / jper = {b.G // b.jper}")
    if b.P < 1 or (b.P > 1 and b.nt < 32 * b.P):
        problems.append(f"P={b.P} tiles need nt >= 32 P threads (one warp per tile)")
    if b.smem_bytes > SMEM_LIMIT:
        problems.append(f"{b.smem_bytes} B of shared memory exceed {SMEM_LIMIT}")
    if problems:
        raise ValueError("invalid Viterbi build: " + "; ".join(problems))


def builds() -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Build units CI compiles (``tests/test_cuda_compile.py``): ``(options, kernel names)``.

    Units are compiled on demand for any supported ``(L, kV, V, code)``; this list holds
    the QTIP configurations (L = 16; k = 1..4 with V = 1 and k = 1..4 with V = 2; 1MAD,
    3INST, HYB and the table), one of each kernel path at small L (shared-memory table,
    a partial warp, kV > L - kV) and the global-memory group minima (L = 16, kV = 1).
    """
    cfgs = []
    for k in (1, 2, 3, 4):
        cfgs += [(16, k, 1, "1mad"), (16, k, 1, "3inst"), (16, k, 1, "hyb"), (16, k, 2, "hyb")]
    cfgs += [(16, 2, 2, "table"), (16, 2, 1, "table"), (12, 2, 1, "table"), (12, 2, 2, "hyb"),
             (8, 2, 2, "table"), (4, 2, 1, "table"), (6, 4, 1, "table"), (2, 2, 1, "table")]
    seen, units = set(), []
    for L, k, V, code in cfgs:
        b = plan(L, k * V, V, code)
        if b not in seen:
            seen.add(b)
            units.append((b.options(), ("viterbi_tiles", "viterbi_pack")))
    return units


# ---------------------------------------------------------------------------------------
# Compilation and launch geometry
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _kernel(options: tuple, name: str, smem: int):
    k = load_module(_KERNEL_FILE, options).get_function(name)
    if smem > 48 * 1024 and k.max_dynamic_shared_size_bytes < smem:
        k.max_dynamic_shared_size_bytes = smem
    return k


@functools.lru_cache(maxsize=None)
def _resident_blocks(options: tuple, threads: int, smem: int, device_id: int) -> int:
    """Blocks of viterbi_tiles resident on the whole device at once (occupancy x SMs)."""
    import cupy

    with cupy.cuda.Device(device_id):
        k = _kernel(options, "viterbi_tiles", smem)
    per_sm, sms = occupancy(k, threads, smem, device_id, f"viterbi_tiles {' '.join(options)}")
    return per_sm * sms


def precompile(units=None, processes: int | None = None) -> list[str]:
    """Compile build units (default: :func:`builds`) into CuPy's kernel cache in parallel
    processes (NVRTC holds the GIL). Needs a GPU. Returns the option strings compiled."""
    units = [opts for opts, _ in (builds() if units is None else units)]
    return precompile_units(_KERNEL_FILE, units, processes)


def launch(build: Build, X32, S: int, lut32, alpha: float, start=None, end=None,
           tail_biting: bool = False, grid: int | None = None):
    """Run ``viterbi_tiles`` on fp32 sequences ``X32`` (B, S V) (validation-free).

    Parameters
    ----------
    build : Build
    X32 : cupy.ndarray, float32, C-contiguous, shape (B, S V)
    S : int
        Steps per sequence.
    lut32 : cupy.ndarray, float32
        The code's table: (2^L, V) for the table codes, (2^(Q+1), V) pre-flipped and
        pre-scaled for HYB, any non-empty array for 1MAD/3INST.
    alpha : float
        Value scale of 1MAD (``scale / 147.80...``) and 3INST (``scale``).
    start, end : cupy.ndarray of int32, shape (B,), optional
        ``start_top`` / ``end_low`` per sequence, -1 = free (ignored with tail_biting).
    tail_biting : bool
        Alg. 4: both passes in the launch.
    grid : int, optional
        Blocks (default: the resident capacity, at most ceil(B / P), shrunk so that the
        backpointer buffer stays below :data:`BP_CAP`).

    Returns
    -------
    states : cupy.ndarray, int64, (B, S)
    cost : cupy.ndarray, float32, (B,)
        The float32 DP value of each walk (``inf``: infeasible constraints).
    """
    import cupy

    B = X32.shape[0]
    opts = build.options()
    smem = build.smem_bytes
    kernel = _kernel(opts, "viterbi_tiles", smem)
    groups = -(-B // build.P)
    per_block = build.bp_words_per_block(S) * 4
    if grid is None:
        grid = min(groups, _resident_blocks(opts, build.nt, smem, cupy.cuda.Device().id))
    grid = max(1, min(grid, groups, BP_CAP // max(per_block, 1)))
    bp = cupy.empty(grid * build.bp_words_per_block(S), dtype=cupy.uint32)
    gbest = (cupy.empty(grid * 2 * build.P * build.G, dtype=cupy.float32) if build.gbest
             else cupy.empty(1, dtype=cupy.float32))
    if start is None:
        start = cupy.full(B, -1, dtype=cupy.int32)
    if end is None:
        end = cupy.full(B, -1, dtype=cupy.int32)
    states = cupy.full((B, S), -1, dtype=cupy.int64)  # poison: an unwritten walk is invalid
    cost = cupy.full(B, np.nan, dtype=cupy.float32)
    kernel((grid,), (build.nt,),
           (X32, np.int32(B), np.int32(S), lut32, np.float32(alpha), start, end,
            np.int32(bool(tail_biting)), bp, gbest, states, cost), shared_mem=smem)
    return states, cost


# ---------------------------------------------------------------------------------------
# Entry points used by fast.quantizers.trellis (inputs already validated there). The
# array work is written against the input's array module; only launch() and
# _launch_pack() touch CUDA.
# ---------------------------------------------------------------------------------------
def _pow2_normaliser(amax: float) -> float:
    """``2^-e`` with ``amax 2^-e`` in [0.5, 1) (1 for amax = 0): exact rescaling."""
    if not amax > 0 or not math.isfinite(amax):
        return 1.0
    return math.ldexp(1.0, -math.frexp(amax)[1])


def _constraint(xp, o, B):
    if o is None:
        return xp.full(B, -1, dtype=np.int32)
    return xp.asarray(np.asarray(o, dtype=np.int32))


def _fp32_inputs(xp, X, table_amax: float):
    """``f`` and ``fl32(f X)`` (C-contiguous) with ``f`` from :func:`_pow2_normaliser`."""
    amax = float(xp.abs(X).max()) if X.size else 0.0
    f = _pow2_normaliser(max(amax, table_amax))
    return f, xp.ascontiguousarray((X * f).astype(np.float32))


def viterbi_table(X, table: np.ndarray, kV: int, start_top=None, end_low=None,
                  tail_biting: bool = False):
    """Viterbi (or Alg. 4) with a value table, on the GPU.

    Parameters
    ----------
    X : cupy.ndarray, float64, shape (B, T)
        Validated sequences, ``T = S V``.
    table : numpy.ndarray, float64, shape (2^L, V)
    kV : int
    start_top, end_low : numpy int64 arrays of shape (B,), optional (validated)
    tail_biting : bool

    Returns
    -------
    states : cupy int64 (B, S)
    cost : cupy float64 (B,)
        ``sum_t ||C[x_t] - y_t||^2`` of the returned walks in float64 (``inf`` where the
        constraints are infeasible, as in the reference).
    """
    xp = array_module(X)
    B, T = X.shape
    N, V = table.shape
    L = N.bit_length() - 1
    S = T // V
    b = plan(L, kV, V, "table")
    f, X32 = _fp32_inputs(xp, X, float(np.abs(table).max()))
    tab32 = xp.asarray(np.ascontiguousarray(table * f, dtype=np.float32))
    states, c32 = launch(b, X32, S, tab32, 1.0, _constraint(xp, start_top, B),
                         _constraint(xp, end_low, B), tail_biting)
    tab64 = xp.asarray(table)
    d = tab64[states] - X.reshape(B, S, V)  # (B, S, V), float64
    cost = (d * d).sum(axis=(1, 2))
    return states, xp.where(xp.isinf(c32), np.inf, cost)


def hyb_lut_prepared(lut: np.ndarray, Q: int, scale: float) -> np.ndarray:
    """(2^(Q+1), V) float64: row ``i`` is ``scale * lut[i mod 2^Q]`` with component 0
    negated when bit Q of ``i`` (bit 15 of the hash) is set -- the HYB value of every
    index ``(h >> (15 - Q)) & (2^(Q+1) - 1)`` ([QTIP] Alg. 3; quipref code_hyb)."""
    idx = np.arange(2 << Q)
    v = scale * np.asarray(lut, dtype=np.float64)[idx & ((1 << Q) - 1)]
    v[:, 0] *= 1.0 - 2.0 * (idx >> Q)
    return v


def encode_states(X, *, L: int, kV: int, V: int, code: str, Q: int, scale: float,
                  table: np.ndarray, lut, tail_biting: bool, build: Build | None = None):
    """Walks of sequences X (B, T) (CuPy float64, validated) for a Trellis.

    ``code`` is the Trellis' code: 1MAD/3INST/HYB are computed in the kernel (HYB from
    :func:`hyb_lut_prepared`), ``"gaussian"`` reads ``table`` (its ``value_table()``,
    ``scale`` included). ``table`` also gives ``max |C|`` for the fp32 rescaling.

    Returns
    -------
    states : cupy int64 (B, T / V)
    build : Build
    """
    xp = array_module(X)
    B, T = X.shape
    S = T // V
    b = build or plan(L, kV, V, "table" if code == "gaussian" else code, Q)
    f, X32 = _fp32_inputs(xp, X, float(np.abs(table).max()))
    alpha = 1.0
    if b.code == CODE_HYB:
        lut32 = hyb_lut_prepared(lut, Q, scale * f).astype(np.float32)
    elif b.code in (CODE_TABLE, CODE_TABLE_SMEM):
        lut32 = np.ascontiguousarray(table * f, dtype=np.float32)
    else:
        lut32 = np.zeros(1, dtype=np.float32)
        alpha = scale * f / MAD1_DIVISOR if b.code == CODE_1MAD else scale * f
    states, _ = launch(b, X32, S, xp.asarray(lut32), alpha, _constraint(xp, None, B),
                       _constraint(xp, None, B), tail_biting)
    return states, b


def _launch_pack(states, B, S, L, kV, nbits, W, out, build):
    opts = build.options() if build is not None else ()
    k = load_module(_KERNEL_FILE, opts).get_function("viterbi_pack")
    n = B * W
    k((-(-n // 256),), (256,), (states, np.int32(B), np.int32(S), np.int32(L), np.int32(kV),
                                np.int32(nbits), np.int32(W), out))


def pack(states, L: int, kV: int, tail_biting: bool, build: Build | None = None):
    """Walks (B, S) int64 (CuPy) -> uint16 words (B, W), the layout of
    :func:`quipref.quantizers.trellis.pack_states` (the walks are not checked)."""
    xp = array_module(states)
    B, S = states.shape
    nbits = S * kV if tail_biting else S * kV + L - kV
    W = -(-nbits // 16)
    out = xp.empty((B, W), dtype=np.uint16)
    if B * W:
        _launch_pack(xp.ascontiguousarray(states, dtype=np.int64), B, S, L, kV, nbits, W, out, build)
    return out
