"""Input validation shared by :mod:`quipref` and :mod:`fast`.

Every public function validates its inputs here, in one thin layer, so that both
packages raise the *same* exception type with the *same* message for the same bad
input (design contract "errors are part of the API"). Kernels and inner loops never
validate. This module is part of the quipref <-> fast contract (:mod:`quipref._contract`
lists all of it): :mod:`fast` imports these validators instead of keeping copies.

Conventions: a wrong *type* (a string where a number is expected, a float where an
integer is, a non-bool flag) is a ``TypeError``; a value of the right type outside its
range (NaN, 0 where > 0 is needed, an unknown choice) is a ``ValueError``. Every message
names the argument, the value and what it must be.

The helpers accept NumPy arrays and, where a CuPy array is passed, CuPy arrays: the
array module of the input is kept (``array_module``).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "check_bool_mask",
    "check_index_stream",
    "array_module",
    "is_cupy_array",
    "to_numpy",
    "check_array",
    "check_weight",
    "check_hessian",
    "check_bits",
    "check_seed",
    "check_block_size",
    "check_int",
    "check_real",
    "check_bool",
    "check_choice",
    "check_rounding",
    "ROUNDINGS",
    "prime_factors",
    "check_vectors",
    "check_codes",
    "check_scale",
    "TRELLIS_MAX_L",
    "TRELLIS_MAX_V",
    "check_trellis_step",
    "check_trellis_table",
    "check_trellis_sequences",
    "check_trellis_overlap",
    "check_trellis_tail_length",
    "check_trellis_path",
    "check_trellis_states",
    "trellis_stream_bits",
    "check_trellis_words",
    "check_trellis_lut",
    "check_trellis_tile",
]

#: The rounding modes of the scalar quantizers and of the LDLQ bounds ([QuIP] Sec. 3).
ROUNDINGS = ("nearest", "stochastic")


def is_cupy_array(x) -> bool:
    """True when ``x`` is a ``cupy.ndarray`` (without importing CuPy if it is absent)."""
    return type(x).__module__.startswith("cupy")


def array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for a in arrays:
        if is_cupy_array(a):
            import cupy

            return cupy
    return np


def to_numpy(x) -> np.ndarray:
    """Copy a CuPy array to the host; return NumPy arrays unchanged."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_array(x, name: str, *, ndim=None, finite: bool = True, dtype=None):
    """Validate a real numeric array and return it as a floating array.

    Parameters
    ----------
    x : array_like (NumPy or CuPy)
    name : str
        Argument name used in error messages.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    finite : bool
        Reject NaN and Inf entries.
    dtype : numpy dtype, optional
        Convert to this floating dtype (default: keep float32/float64, promote
        integers and float16 to float64).

    Raises
    ------
    TypeError
        If ``x`` is not an array of real numbers (complex, bool, object, str).
    ValueError
        If ``x`` has the wrong number of dimensions or contains NaN/Inf.
    """
    xp = array_module(x)
    if not is_cupy_array(x):
        if x is None or isinstance(x, (str, bytes, dict)):
            raise TypeError(f"{name} must be a real numeric array, got {type(x).__name__}")
        x = np.asarray(x)
    kind = x.dtype.kind
    if kind not in "fiu":
        raise TypeError(
            f"{name} must hold real numbers (float or integer dtype), got dtype {x.dtype}; "
            f"convert it with {name}.astype(numpy.float64) if that is what you mean"
        )
    if dtype is not None:
        x = x.astype(dtype, copy=False)
    elif kind in "iu" or x.dtype == np.float16:
        x = x.astype(np.float64)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {_fmt_shape(x.shape)}")
    if finite and x.size:
        bad = ~xp.isfinite(x)
        nbad = int(bad.sum())
        if nbad:
            first = tuple(int(i) for i in xp.argwhere(bad)[0])
            raise ValueError(
                f"{name} contains {nbad} NaN or Inf entr{'y' if nbad == 1 else 'ies'} "
                f"(first at index {first}); remove or replace them before quantizing"
            )
    return x


def check_weight(W, name: str = "W"):
    """Validate a weight matrix ``W`` of shape (m, n) = (out_features, in_features)."""
    W = check_array(W, name, ndim=2)
    if W.shape[0] == 0 or W.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {_fmt_shape(W.shape)}")
    return W


def check_hessian(H, n: int | None = None, name: str = "H", *, psd: bool = True,
                  symmetric_rtol: float = 1e-6):
    """Validate a proxy Hessian ``H`` of shape (n, n): square, finite, symmetric, PSD.

    The PSD test factors ``H + 1e-10 max|diag H| I`` by Cholesky (accepts every
    matrix whose smallest eigenvalue is above ``-1e-10 max|diag H|``; round-off on a
    PSD matrix built in float64 stays far inside this). The
    symmetry test allows relative asymmetry ``symmetric_rtol`` (float32 accumulation).

    Raises
    ------
    ValueError
        Wrong shape, mismatch with ``n`` (the number of columns of W), NaN/Inf,
        asymmetric, or not positive semi-definite. The message says how to fix it.
    """
    H = check_array(H, name, ndim=2)
    if H.shape[0] != H.shape[1]:
        raise ValueError(f"{name} must be square (n, n), got shape {_fmt_shape(H.shape)}")
    if n is not None and H.shape[0] != n:
        raise ValueError(
            f"{name} has shape {_fmt_shape(H.shape)} but W has {n} columns (in_features); "
            f"H must be (n, n) = ({n}, {n}), the second moment of the layer inputs"
        )
    xp = array_module(H)
    scale = float(xp.abs(H).max()) if H.size else 0.0
    asym = float(xp.abs(H - H.T).max()) if H.size else 0.0
    if asym > symmetric_rtol * max(scale, 1e-300):
        raise ValueError(
            f"{name} is not symmetric (max |H - H^T| = {asym:.3g}, max |H| = {scale:.3g}); "
            f"pass (H + H.T) / 2 if the asymmetry is round-off"
        )
    if psd and H.size and not _is_psd(H, xp):
        Hd = to_numpy(H).astype(np.float64)
        lam_min = float(np.linalg.eigvalsh((Hd + Hd.T) / 2)[0])
        raise ValueError(
            f"{name} is not positive semi-definite (smallest eigenvalue {lam_min:.3g}); "
            f"a proxy Hessian E[x x^T] is PSD - check how it was accumulated, or damp it "
            f"with quipref.regularize_hessian(H) / quipref.damp_hessian(H)"
        )
    return H


def _is_psd(H, xp) -> bool:
    """PSD test by Cholesky of ``H + 1e-10 max|diag H| I`` (on the array's device).

    A PSD matrix plus this ridge is positive definite with a margin far above the
    Cholesky round-off (~n 2^-53 ||H||), so it factors; a matrix with an eigenvalue
    below -1e-10 max|diag H| does not. O(n^3/3), ~10x cheaper than an eigensolver.
    """
    Hd = H.astype(np.float64)
    ridge = 1e-10 * max(float(xp.abs(xp.diag(Hd)).max()), 1e-300)
    A = (Hd + Hd.T) / 2 + ridge * xp.eye(Hd.shape[0])
    try:
        C = xp.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return False
    return bool(xp.isfinite(C[-1, -1]))  # CuPy signals failure with NaNs, not an exception


def check_int(value, name: str, lo: int | None = 1, hi: int | None = None) -> int:
    """A Python int from an integral value in ``[lo, hi]`` (``None``: unbounded).

    With the default ``lo=1, hi=None`` the messages say "a positive integer".

    Raises
    ------
    TypeError
        ``value`` is not an integer (bool, float, str, ... are refused).
    ValueError
        ``value`` is outside ``[lo, hi]``.
    """
    positive = lo == 1 and hi is None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {'a positive integer' if positive else 'an integer'}, got {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if positive:
            want = "a positive integer (>= 1)"
        elif hi is None:
            want = f">= {lo}"
        elif lo is None:
            want = f"<= {hi}"
        else:
            want = f"between {lo} and {hi}"
        raise ValueError(f"{name} must be {want}, got {value}")
    return value


def check_bits(bits, lo: int, hi: int, name: str = "bits") -> int:
    """Validate an integer bit width in ``[lo, hi]``."""
    return check_int(bits, name, lo, hi)


def check_real(value, name: str, *, lo: float = 0.0, inclusive: bool = False) -> float:
    """A finite Python float ``> lo`` (``>= lo`` with ``inclusive``).

    Raises
    ------
    TypeError
        ``value`` is not a real number (str, bool, None, arrays are refused).
    ValueError
        NaN, infinite, or not above ``lo``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    ok = value >= lo if inclusive else value > lo
    if not (np.isfinite(value) and ok):
        raise ValueError(f"{name} must be finite and {'>=' if inclusive else '>'} {lo:g}, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    """``value`` must be ``True`` or ``False`` (``"no"``, 0, None are refused: TypeError)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value, name: str, choices) -> str:
    """``value`` must be one of the strings ``choices`` (TypeError for a non-string)."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_rounding(rounding, name: str = "rounding") -> str:
    """One of :data:`ROUNDINGS`."""
    return check_choice(rounding, name, ROUNDINGS)


def prime_factors(n: int) -> list[int]:
    """Prime factors of a positive int in ascending order, with multiplicity
    (``prime_factors(12) == [2, 2, 3]``, ``prime_factors(1) == []``); trial division."""
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1 if p == 2 else 2
    if n > 1:
        out.append(n)
    return out


def check_seed(seed, name: str = "seed"):
    """Return a ``numpy.random.Generator`` from an int seed or a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(
            f"{name} must be a non-negative integer or a numpy.random.Generator, got {seed!r}"
        )
    return np.random.default_rng(int(seed))


def check_block_size(block_size, n: int, name: str = "block_size") -> int:
    """Validate the LDLQ block size ``g``: a positive integer dividing ``n``."""
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {block_size!r}")
    g = int(block_size)
    if g < 1:
        raise ValueError(f"{name} must be >= 1, got {g}")
    if n % g:
        raise ValueError(
            f"{name}={g} must divide the number of columns n={n}; pad W and H to a "
            f"multiple of {g} or choose a block size that divides {n}"
        )
    return g


#: Largest trellis state size L and values per step V.
TRELLIS_MAX_L = 20
TRELLIS_MAX_V = 16


# ---------------------------------------------------------------------------------------
# QTIP's bitshift trellis (quipref.quantizers.trellis and fast.quantizers.trellis)
# ---------------------------------------------------------------------------------------
def check_trellis_step(L: int, k, V: int) -> int:
    """Validate ``k`` against the state size; return ``kV`` (bits per step)."""
    k = check_bits(k, 1, 8, "k")
    if k * V > L:
        raise ValueError(
            f"k*V = {k}*{V} = {k * V} bits per step exceed the state size L = {L}; "
            f"use L >= k*V (QTIP uses L = 16)"
        )
    return k * V


def check_trellis_table(table):
    """A value table of shape (2^L, V) (a 1-D table means V = 1). Returns (table, L, V)."""
    t = check_array(table, "table", ndim=(1, 2), dtype=np.float64)
    t = to_numpy(t)
    if t.ndim == 1:
        t = t[:, None]
    N, V = t.shape
    if N < 2 or N & (N - 1) or N > 2**TRELLIS_MAX_L:
        raise ValueError(
            f"table must have 2^L rows (one value per state, 1 <= L <= {TRELLIS_MAX_L}), "
            f"got {N} rows"
        )
    if not 1 <= V <= TRELLIS_MAX_V:
        raise ValueError(f"table must have 1 to {TRELLIS_MAX_V} columns (V, weights per step), got {V}")
    return np.ascontiguousarray(t), N.bit_length() - 1, V


def check_trellis_sequences(X, V: int, name: str = "X"):
    """Sequences of shape (T,) or (B, T), T a positive multiple of V. Returns (X2d, single)."""
    X = check_array(X, name, ndim=(1, 2), dtype=np.float64)
    single = X.ndim == 1
    X = X[None, :] if single else X
    T = X.shape[1]
    if T == 0 or T % V:
        raise ValueError(
            f"{name} has sequences of length {T}; the length must be a positive multiple "
            f"of V = {V} (each trellis step codes V consecutive weights)"
        )
    return X, single


def check_trellis_overlap(o, B: int, bits: int, name: str):
    """Start/end constraints: None, or one integer (all sequences) or B integers in [0, 2^bits)."""
    if o is None:
        return None
    a = np.asarray(to_numpy(o))
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers (the shared L - kV bits), got dtype {a.dtype}")
    a = a.astype(np.int64).reshape(-1)
    if a.size not in (1, B):
        raise ValueError(f"{name} must be a scalar or have one entry per sequence ({B}), got {a.size}")
    if a.min() < 0 or a.max() >= 2**bits:
        raise ValueError(f"{name} must lie in [0, 2^(L-kV)) = [0, {2**bits}), got {a.min()}..{a.max()}")
    return np.ascontiguousarray(np.broadcast_to(a, (B,)))


def check_trellis_tail_length(S: int, kV: int, L: int):
    if S * kV < L:
        raise ValueError(
            f"a tail-biting walk of {S} steps has only {S * kV} bits, fewer than the state "
            f"size L = {L}; use sequences of at least {math.ceil(L / kV)} steps"
        )


def check_trellis_path(states, L: int, kV: int, tail_biting: bool):
    """Raise if ``states`` (B, S) is not a walk of the bitshift trellis (or not tail-biting)."""
    G = 1 << (L - kV)
    if states.size and (states.min() < 0 or states.max() >= 2**L):
        raise ValueError(f"states must lie in [0, 2^L) = [0, {2**L})")
    bad = (states[:, :-1] & (G - 1)) != (states[:, 1:] >> kV)
    if bad.any():
        b, t = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"states are not a walk of the bitshift trellis: sequence {b}, step {t + 1}: "
            f"the top L-kV bits of state {int(states[b, t + 1])} must equal the low L-kV "
            f"bits of state {int(states[b, t])}"
        )
    if tail_biting:
        bad = (states[:, -1] & (G - 1)) != (states[:, 0] >> kV)
        if bad.any():
            b = int(np.argmax(bad))
            raise ValueError(
                f"states are not tail-biting: sequence {b}: the low L-kV bits of the last "
                f"state {int(states[b, -1])} must equal the top L-kV bits of the first state "
                f"{int(states[b, 0])}; pack with tail_biting=False or use tail_biting_viterbi"
            )


def check_trellis_states(states, L: int, kV: int, tail_biting: bool):
    s = np.asarray(to_numpy(states))
    if s.dtype.kind not in "iu":
        raise TypeError(f"states must be an integer array, got dtype {s.dtype}")
    if s.ndim not in (1, 2) or s.shape[-1] == 0:
        raise ValueError(f"states must be (S,) or (B, S) with S >= 1, got shape {s.shape}")
    single = s.ndim == 1
    s = s.astype(np.int64).reshape(-1, s.shape[-1])
    if tail_biting:
        check_trellis_tail_length(s.shape[1], kV, L)
    check_trellis_path(s, L, kV, tail_biting)
    return s, single


def trellis_stream_bits(S: int, L: int, kV: int, tail_biting: bool) -> int:
    return S * kV if tail_biting else S * kV + L - kV


def check_trellis_words(words, n_words: int, name: str = "words"):
    w = np.asarray(to_numpy(words))
    if w.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer (uint16) array, got dtype {w.dtype}")
    if w.ndim not in (1, 2) or w.shape[-1] != n_words:
        raise ValueError(
            f"{name} must have shape ({n_words},) or (B, {n_words}) (16-bit words per "
            f"sequence), got shape {w.shape}"
        )
    if w.size and (w.min() < 0 or w.max() > 0xFFFF):
        raise ValueError(f"{name} must hold 16-bit words in [0, 65535]")
    single = w.ndim == 1
    return w.astype(np.uint16).reshape(-1, n_words), single


def check_trellis_lut(lut, shape, name="lut"):
    a = check_array(lut, name, ndim=2, dtype=np.float64)
    a = to_numpy(a)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return np.ascontiguousarray(a)


def check_trellis_tile(tile):
    if (not isinstance(tile, (tuple, list)) or len(tile) != 2
            or any(isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 1 for t in tile)):
        raise ValueError(f"tile must be a pair of positive integers (T_x, T_y), got {tile!r}")
    return int(tile[0]), int(tile[1])


# ---------------------------------------------------------------------------------------
# The lattice quantizers (E8P, E81B, RVQ in quipref and fast)
# ---------------------------------------------------------------------------------------
def check_vectors(x, dim: int, qname: str, name: str = "x"):
    """Validate ``x`` of shape ``(..., k * dim)``; return it as float64 ``(N, dim)`` and
    the code shape ``(..., k)``.

    Raises
    ------
    TypeError
        ``x`` is not a real numeric array.
    ValueError
        ``x`` is 0-d, its last axis is not a multiple of ``dim``, or it has NaN/Inf.
    """
    x = check_array(x, name)
    if x.ndim == 0:
        raise ValueError(
            f"{name} must have at least 1 dimension, shape (..., k * {dim}); got a scalar"
        )
    if x.shape[-1] % dim:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}: its last axis ({x.shape[-1]}) must be a "
            f"multiple of {dim} ({qname} codes {dim} weights at a time); pad the last axis "
            f"to a multiple of {dim}"
        )
    code_shape = x.shape[:-1] + (x.shape[-1] // dim,)
    return x.astype(np.float64).reshape(-1, dim), code_shape


def check_codes(codes, n_codes: int, qname: str, name: str = "codes"):
    """Validate integer codes in ``[0, n_codes)`` with at least one dimension; return
    them as an int64 array of the same shape.

    Raises
    ------
    TypeError
        ``codes`` is not an integer array.
    ValueError
        ``codes`` is 0-d or has a value outside ``[0, n_codes)``.
    """
    xp = array_module(codes)
    if isinstance(codes, (str, bytes, dict)) or codes is None:
        raise TypeError(f"{name} must be an integer array, got {type(codes).__name__}")
    codes = xp.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be an integer array ({qname} codes are in [0, {n_codes})), "
            f"got dtype {codes.dtype}"
        )
    if codes.ndim == 0:
        raise ValueError(f"{name} must have at least 1 dimension, shape (..., k); got a scalar")
    if codes.size:
        bad = (codes < 0) | (codes >= n_codes)
        nbad = int(bad.sum())
        if nbad:
            first = tuple(int(i) for i in xp.argwhere(bad)[0])
            raise ValueError(
                f"{name} has {nbad} value{'s' if nbad > 1 else ''} outside [0, {n_codes}) "
                f"(first at index {first}: {int(codes[first])}); {qname} codes come from "
                f"{qname}.encode"
            )
    return codes.astype(np.int64)


def check_scale(scale, name: str = "scale") -> float:
    """A finite positive float."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, got {scale!r}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{name} must be finite and > 0, got {scale}")
    return scale


# -- ICQuant index streams (quipref.quantizers.index_coding and its fast twin) --------
def check_bool_mask(mask):
    """A boolean (m, n) outlier mask (TypeError for another dtype, ValueError for another rank)."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a boolean array of shape (m, n), got dtype {mask.dtype}")
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (m, n), got shape {mask.shape}")
    return mask


def check_index_stream(data, offsets, m):
    """An index byte stream (1-D uint8) and its (m + 1,) row bit offsets, checked for consistency."""
    data = np.asarray(data)
    offsets = np.asarray(offsets)
    if data.dtype != np.uint8 or data.ndim != 1:
        raise TypeError(f"data must be a 1-D uint8 byte stream, got {data.dtype} of shape {data.shape}")
    if offsets.ndim != 1 or offsets.shape[0] != m + 1 or offsets.dtype.kind not in "iu":
        raise ValueError(f"offsets must be an integer array of shape ({m + 1},) (row bit offsets), "
                         f"got {offsets.dtype} of shape {offsets.shape}")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > 8 * data.size:
        raise ValueError("offsets must start at 0, be non-decreasing and end within the stream "
                         f"({8 * data.size} bits): the index stream is corrupt")
    return data, offsets
