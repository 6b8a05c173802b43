r"""The state -> value codes of QTIP's bitshift trellis, and their constants.

A bitshift trellis with ``L``-bit states needs a value (a point of :math:`\mathbb{R}^V`)
for each of its :math:`2^L` states. Neighbouring states share ``L - kV`` bits, so the
value must look like an *independent* Gaussian draw per state (a smooth function of the
state would give strongly correlated neighbours). QTIP's answer is a *computed* code:
a few integer instructions that hash the state into a roughly N(0, 1) number, so
nothing large has to be stored or cached at decode time ([QTIP] Sec. 3.1).

=========  ===  ==========================================================================
code       V    value of state ``x`` (``x`` zero-padded to 32 bits, arithmetic mod 2^32)
=========  ===  ==========================================================================
1MAD       1    LCG ``x <- a x + b``; sum of the 4 bytes of x (in [0, 1020]); then
                ``(sum - 510) / 147.800537109375`` (mean and std of a sum of 4 uniform
                bytes: 4 * 127.5 and sqrt(4 (256^2 - 1) / 12)).
3INST      1    LCG ``x <- a x + b``; ``y = (x & 0x8FFF8FFF) ^ 0x3B603B60``; read the two
                16-bit halves of y as IEEE fp16 numbers and add them **in fp16**
                (round to nearest even). Each half keeps its random sign bit and its 12
                low bits and takes the top 3 exponent bits of m = 0x3B60 = 0.921875, so
                its magnitude lies in [0.125, 2). Std 1.2437 over 2^16 states, not 1.
HYB        1,2  hash ``h = x^2 + x``; row ``i = (h >> (15 - Q)) & (2^Q - 1)`` of a small
                LUT of shape (2^Q, V); if bit 15 of h is set, negate component **0**
                (the released code and CUDA kernel; the paper's text says "the second
                entry" - we follow the code so checkpoints decode bit-exactly). The LUT
                is k-means on Gaussian samples, rescaled to std sqrt(15/16). The hash
                reads bits 6..15 of x^2 + x, so it is meant for L >= 8 (QTIP: L = 16);
                for L < 8 bit 15 is never set and few rows are reached (poor MSE).
gaussian   any  "RPTC": a seeded i.i.d. N(0, 1) table of shape (2^L, V), indexed by state
                (QTIP Table 1's "random Gaussian LUT" baseline; Mao & Gray 2010).
=========  ===  ==========================================================================

The constants are those of [QTIP] Alg. 1-3 (arXiv 2406.11235, Sec. 3.1) and the
released code (:ref:`papers-from-code`). All functions take an integer array of states and
return float64 arrays; the fp16 arithmetic of 3INST is done in NumPy's float16 (the
float32 sum of two fp16 numbers whose magnitudes are in [0.125, 2) is exact, so rounding
it to fp16 is the correctly rounded fp16 sum, as on the GPU).

References
----------
.. [QTIP] Tseng, Sun, Hou, De Sa. "QTIP: Quantization with Trellises and Incoherence
   Processing", NeurIPS 2024 (arXiv 2406.11235), Sec. 3.1, Alg. 1-3.
.. [RPTC] Mao, Gray. "Stationary and trellis encoding for IID sources and simulation",
   IEEE Trans. Inf. Theory 2010.
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
    "MAD1_A", "MAD1_B", "MAD1_OFFSET", "MAD1_DIVISOR",
    "INST3_A", "INST3_B", "INST3_MASK", "INST3_XOR",
    "HYB_Q", "HYB_LUT_STD",
    "code_1mad", "code_3inst", "hyb_index", "code_hyb", "hyb_lut", "gaussian_lut",
]

# -- Constants of [QTIP] Alg. 1-3 and the released code ---------------------------------
MAD1_A = 34038481            # 0x020762D1
MAD1_B = 76625530            # 0x0491367A
MAD1_OFFSET = 510            # 4 * 127.5: mean of a sum of 4 uniform bytes
MAD1_DIVISOR = 147.800537109375  # ~ sqrt(21845): their std (the paper rounds it to 147.8)
INST3_A = 89226354           # 0x05517C72
INST3_B = 64248484           # 0x03D45AA4
INST3_MASK = 0x8FFF8FFF      # per 16-bit half: sign bit + 12 low bits
INST3_XOR = 0x3B603B60       # fp16 m = 0x3B60 = 0.921875 in both halves (996162400)
HYB_Q = 9                    # LUT bits of the hybrid code (512 rows)
HYB_LUT_STD = 0.9682458365518543  # sqrt(15/16) = sqrt(1 - 2^-4): target std of the LUT

_MASK32 = np.uint64(0xFFFFFFFF)


def _u32(states) -> np.ndarray:
    """States as uint64 holding 32-bit values (room for the LCG product)."""
    s = np.asarray(states)
    if s.dtype.kind not in "iu":
        raise TypeError(f"states must be an integer array, got dtype {s.dtype}")
    return s.astype(np.uint64) & _MASK32


def _lcg(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """``(a x + b) mod 2^32`` (x < 2^32 and a < 2^27, so the uint64 product is exact)."""
    return (np.uint64(a) * x + np.uint64(b)) & _MASK32


def code_1mad(states) -> np.ndarray:
    """1MAD ([QTIP] Alg. 1): LCG, byte sum, centre and scale. Same shape, float64."""
    x = _lcg(_u32(states), MAD1_A, MAD1_B)
    byte = np.uint64(0xFF)
    y = (x & byte) + ((x >> np.uint64(8)) & byte) + ((x >> np.uint64(16)) & byte) + (x >> np.uint64(24))
    return (y.astype(np.float64) - MAD1_OFFSET) / MAD1_DIVISOR


def code_3inst(states) -> np.ndarray:
    """3INST ([QTIP] Alg. 2): LCG, mask + XOR with the fp16 magic number, fp16 add.

    Returns float64 values that are exactly representable in fp16.
    """
    x = _lcg(_u32(states), INST3_A, INST3_B)
    y = (x & np.uint64(INST3_MASK)) ^ np.uint64(INST3_XOR)
    hi = (y >> np.uint64(16)).astype(np.uint16).view(np.float16)
    lo = (y & np.uint64(0xFFFF)).astype(np.uint16).view(np.float16)
    return (hi + lo).astype(np.float64)  # float16 + float16 -> float16 (round to nearest even)


def hyb_index(states, Q: int = HYB_Q):
    """The hash of the hybrid code: ``(row, flip)`` for each state.

    ``h = (x^2 + x) mod 2^32``; ``row = (h >> (15 - Q)) & (2^Q - 1)``, i.e. bits
    ``15-Q .. 14`` of h; ``flip`` = bit 15 of h (1 means: negate component 0).
    """
    x = _u32(states)
    h = (x * x + x) & _MASK32  # uint64 wraps mod 2^64, a multiple of 2^32: still exact mod 2^32
    row = (h >> np.uint64(15 - Q)) & np.uint64((1 << Q) - 1)
    flip = (h >> np.uint64(15)) & np.uint64(1)
    return row.astype(np.int64), flip.astype(np.int64)


def code_hyb(states, lut, Q: int = HYB_Q) -> np.ndarray:
    """HYB ([QTIP] Alg. 3): ``lut[row]`` with component 0 negated when bit 15 of the hash is set.

    Parameters
    ----------
    states : integer ndarray of any shape ``s``
    lut : ndarray of shape (2^Q, V)
    Q : int

    Returns
    -------
    ndarray of shape ``s + (V,)``
    """
    lut = np.asarray(lut, dtype=np.float64)
    row, flip = hyb_index(states, Q)
    v = lut[row].copy()
    v[..., 0] *= 1.0 - 2.0 * flip
    return v


def _kmeans(X: np.ndarray, C: np.ndarray, n_iter: int) -> np.ndarray:
    """Plain Lloyd iterations (exact nearest-centroid assignment with a k-d tree).

    An empty cluster keeps its previous centroid.
    """
    from scipy.spatial import cKDTree

    K, V = C.shape
    for _ in range(n_iter):
        _, a = cKDTree(C).query(X)
        count = np.bincount(a, minlength=K)
        sums = np.stack([np.bincount(a, weights=X[:, j], minlength=K) for j in range(V)], axis=1)
        keep = count == 0
        C = np.where(keep[:, None], C, sums / np.maximum(count, 1)[:, None])
    return C


@functools.lru_cache(maxsize=16)
def _hyb_lut_cached(Q: int, V: int, seed: int, n_samples: int, n_iter: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, V))
    C = _kmeans(X, rng.standard_normal((2**Q, V)), n_iter)
    C = C * (HYB_LUT_STD / C.std())
    # stored as float16, as the released checkpoints store it (``tlut``): the GPU kernels
    # read exactly these values, and a layer stores 16 bits per entry
    C = C.astype(np.float16).astype(np.float64)
    C.setflags(write=False)
    return C


def hyb_lut(Q: int = HYB_Q, V: int = 2, seed: int = 0, n_samples: int = 2**18,
            n_iter: int = 20) -> np.ndarray:
    r"""The HYB look-up table: k-means on Gaussian samples, rescaled ([QTIP] Sec. 3.1.2).

    Draws ``n_samples`` points of a V-dimensional standard Gaussian and an initial
    ``(2^Q, V)`` standard-normal codebook from ``numpy.random.default_rng(seed)`` (in that
    order), runs ``n_iter`` Lloyd (k-means) iterations, then rescales so that the
    population standard deviation over all entries is
    :math:`\sqrt{15/16} = 0.96824\ldots` (the std of the optimal 2-bit reconstruction of
    a unit Gaussian, :math:`\sqrt{1 - D(2)}`; hard-coded in the released code for every k),
    and rounds the entries to float16 (the released checkpoints store the LUT as FP16), so
    the standard deviation is :math:`\sqrt{15/16}` up to that rounding.

    The released code uses 2^20 samples and SciPy's ``kmeans`` until convergence, and
    caches the result in a temp file, so its LUT is machine dependent.
    Here the LUT is a deterministic function of the arguments (cached in memory), and
    the default 2^18 samples (512 per centroid) keep it at a few seconds on one core.

    Returns
    -------
    ndarray of shape (2^Q, V), float64, read-only
    """
    return _hyb_lut_cached(int(Q), int(V), int(seed), int(n_samples), int(n_iter))


def gaussian_lut(L: int, V: int = 1, seed: int = 0) -> np.ndarray:
    """The RPTC table: ``numpy.random.default_rng(seed).standard_normal((2^L, V))``."""
    return np.random.default_rng(seed).standard_normal((2**L, V))


def table_rms(table) -> float:
    """Root mean square over all entries of a value table."""
    t = np.asarray(table, dtype=np.float64)
    return math.sqrt(float(np.mean(t * t)))
