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

import numbers

import numpy as np

__all__ = [
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
