r"""E8P: QuIP#'s 2-bit "E8 padded" lattice codebook (8 weights per 16-bit code).

The lattice
-----------
:math:`E_8 = (\mathbb{Z}^8 \cup (\mathbb{Z}^8 + \tfrac12)) \cap \{x : \mathbf 1^T x \text{ even}\}`.
Its half-integer part is :math:`\hat D_8 = \{x \in \mathbb{Z}^8 + \tfrac12 : \mathbf 1^T x
\text{ even}\}`, and :math:`(\hat D_8 - \tfrac14) \cup (\hat D_8 + \tfrac14) = E_8 + \tfrac14`,
a shifted copy of :math:`E_8` ([QuIP#] Sec. 4.2). Two facts make a compact code possible:

* no coordinate of a :math:`\hat D_8` point is 0, so every point is uniquely
  :math:`|x|` times a sign vector;
* flipping one sign changes the coordinate sum by an odd integer (:math:`2|x_i|`), so the
  points of :math:`\hat D_8` with a given absolute vector ``a`` are exactly the
  :math:`2^7 = 128` sign vectors whose number of minus signs has the parity of
  ``sum(a)``.

The source set S (:func:`e8p_source_set`)
------------------------------------------
256 absolute vectors:

* ``S[0:227]``: the 227 distinct absolute vectors of :math:`\hat D_8 \cap \{\|x\|^2 \le 10\}`,
  i.e. all of :math:`\{\tfrac12, \tfrac32, \tfrac52\}^8` with norm² ≤ 10, sorted
  lexicographically ascending (``S[0] = (½,…,½)``, ``S[1] = (½,…,½,3/2)``,
  ``S[226] = (5/2, 3/2, ½,…,½)``); norm² histogram 2: 1, 4: 8, 6: 28, 8: 64, 10: 126;
* ``S[227:256]``: 29 padding vectors of norm² 12 (five entries 3/2, three entries ½),
  in the repository's order (the positions of the ½ entries are listed in
  ``_PADDING_HALF_POSITIONS``).

The codebook is :math:`\{\pm\tfrac14 + \sigma \odot a : a \in S,\ \sigma \text{ of the
right parity}\}`: 256 × 128 × 2 = 65,536 distinct points of :math:`E_8 + \tfrac14`, with
norm² from 0.5 to 16.5. Its entries are multiples of ¼ in [-2.75, 2.75].

The 16-bit code (repository layout)
------------------------------------
For a code ``c`` in ``[0, 2^16)``:

1. ``a = c >> 8`` selects the absolute vector ``S[a]``; ``sigma = c & 0xFF`` is the sign
   byte and ``p = popcount(sigma) mod 2``;
2. the effective sign bits are ``sigma' = sigma XOR p`` (only bit 0 toggles), so
   ``sigma'`` always has an even popcount;
3. the base vector is ``v = S[a]`` with coordinate 7 negated when ``sum(S[a])`` is odd
   (this puts ``v`` in :math:`\hat D_8`); negate ``v_i`` wherever bit ``i`` of ``sigma'`` is 1
   (an even number of flips keeps it in :math:`\hat D_8`);
4. add :math:`-\tfrac14` if ``p = 1``, else :math:`+\tfrac14`.

So ``decode(0) = 0.75·1``, ``decode(1) = 0.25·1`` and ``decode(256) = (0.75 ×7, -1.25)``.

Which E8P convention we follow
------------------------------
**The repository layout above, so our codes are bit-compatible with QuIP#'s** (relaxml
checkpoints, once unpacked from their 2×2-tile int64 packing, which this module does not
do). The paper ([QuIP#] Sec. 4.2, App. C.2) describes the same 65,536-point set with a
different index map: 8 bits choose ``s`` in S, 7 bits give 7 explicit sign flips, the 8th
sign follows from the parity, and a dedicated 16th bit chooses the ±¼ shift. In the
repository there is no dedicated shift bit: the shift is the *parity of the sign byte*
and bit 0 of the sign byte is XOR-corrected. Same set, different map from index to
vector; only the repository layout reads real checkpoints.

**Gaussian MSE: 0.0914, not 0.089.** The exact nearest-codeword MSE per weight on
i.i.d. N(0, 1) data, with the data normalised to RMS ρ before quantizing (the repository's
``opt_scale``), is 0.0919 at ρ = 1.00, **0.0914 at ρ = 1.03** (the minimum; optimum
ρ ≈ 1.036) and 0.0990 at ρ = 0.90 (measured by
``tests/reference/test_e8p.py``; a third-party figure is 0.091). The ≈ 0.089 quoted
for E8P elsewhere (e.g. the QTIP paper's Table 1) is below the minimum over all scales
of this measurement; we could not find the protocol behind it and do not use it
(:doc:`/papers`, QTIP Table 1). Note also that the paper and README quantize at ρ = 0.9 (0.099 on a
pure Gaussian) despite App. F.5 saying each ρ minimises Gaussian error; with LDLQ
feedback the values fed to Q are not Gaussian, so the end-to-end optimum can differ.

How ``scale`` enters
--------------------
``E8P(scale=s)`` is the codebook **multiplied by s**: ``decode`` returns ``s · codeword``
and ``encode(x)`` returns the code of the nearest codeword to ``x / s`` (equivalently the
nearest point of ``s · codebook`` to ``x``). ``s`` is exactly the repository's
``Wscale``: QuIP# normalises the weights so that their RMS is ρ, i.e. quantizes
``W / Wscale`` with ``Wscale = RMS(W) / ρ`` and multiplies back. :meth:`E8P.from_rms`
builds that quantizer from the RMS of the data and ρ (default :attr:`E8P.OPT_RHO`
= 1.03). For N(0, 1) data, ``E8P(scale=1/1.03)`` gives MSE 0.0914.

Nearest-codeword search
-----------------------
:meth:`E8P.encode` here is the readable exact brute force: ``argmax_c 2 x^T c - ||c||^2``
over all 65,536 codewords, in chunks that bound the score matrix to 32 MB (about
0.6 ms per vector). :mod:`fast.quantizers.e8p` finds the same nearest codeword exactly
with a lattice decoder and, where that lands outside the codebook, a scan of the 256
absolute vectors (about 1 µs per vector per core).

References
----------
.. [QuIP#] Tseng, Chee, Sun, Kuleshov, De Sa. "QuIP#: Even Better LLM Quantization with
   Hadamard Incoherence and Lattice Codebooks", ICML 2024 (arXiv 2402.04396), Sec. 4.2,
   App. C; repository Cornell-RelaxML/quip-sharp (GPL-3.0; re-derived, not copied).
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

from .._checks import array_module, check_array, check_codes, check_scale, check_vectors  # noqa: F401
from .base import Quantizer

__all__ = ["E8P", "e8p_source_set"]

#: 0-based positions of the three ½ entries of the 29 padding vectors (the other five
#: entries are 3/2), in the repository's order (the set: [QuIP#] Sec. 4.2, App. C.1).
_PADDING_HALF_POSITIONS = (
    (1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2), (3, 6, 7), (3, 5, 7), (3, 4, 7), (3, 5, 6),
    (3, 4, 6), (3, 4, 5), (2, 6, 7), (2, 5, 7), (2, 4, 7), (2, 5, 6), (2, 4, 6), (2, 4, 5),
    (1, 6, 7), (1, 5, 7), (1, 4, 7), (1, 5, 6), (1, 4, 6), (0, 4, 5), (0, 6, 7), (0, 5, 7),
    (0, 4, 7), (0, 5, 6), (0, 4, 6), (0, 1, 4), (2, 3, 7),
)

#: Score-matrix budget of the brute-force search (entries per chunk): 2^22 float64 = 32 MB.
_MAX_SCORES = 2**22


# -- construction ---------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def e8p_source_set() -> np.ndarray:
    r"""The 256 absolute vectors S of E8P, shape (256, 8), float64, read-only.

    ``S[:227]`` are all of :math:`\{\tfrac12,\tfrac32,\tfrac52\}^8` with norm² ≤ 10
    (every such vector is the absolute value of a :math:`\hat D_8` point: one sign flip
    fixes the parity of the sum), in lexicographic order; ``S[227:]`` are the 29 padding
    vectors of norm² 12 in the repository's order. The construction is checked on the
    spot (counts, norm² histogram, distinctness).
    """
    halves = (0.5, 1.5, 2.5)  # 7/2 alone has square 12.25 > 10
    inner = [v for v in itertools.product(halves, repeat=8) if sum(t * t for t in v) <= 10]
    # itertools.product enumerates in lexicographic order of sorted inputs
    pad = []
    for pos in _PADDING_HALF_POSITIONS:
        v = [1.5] * 8
        for i in pos:
            v[i] = 0.5
        pad.append(tuple(v))
    S = np.array(inner + pad, dtype=np.float64)

    norms = (S**2).sum(1)
    hist = {int(k): int(c) for k, c in zip(*np.unique(norms, return_counts=True))}
    if len(inner) != 227 or hist != {2: 1, 4: 8, 6: 28, 8: 64, 10: 126, 12: 29}:
        raise AssertionError(f"E8P source set construction is wrong: {len(inner)} inner, {hist}")
    if len(np.unique(S, axis=0)) != 256 or not np.all(S[227:].sum(1) == 9):
        raise AssertionError("E8P source set: entries are not distinct / padding sums differ")
    S.setflags(write=False)
    return S


def _decode_bits(codes: np.ndarray) -> np.ndarray:
    """The repository layout, step by step (see the module docstring): int codes (N,)
    -> codewords (N, 8) of the unit codebook."""
    S = e8p_source_set()
    c = np.asarray(codes, dtype=np.int64)
    a, sigma = c >> 8, c & 0xFF
    bits = (sigma[:, None] >> np.arange(8)) & 1  # (N, 8): bit i of the sign byte
    p = bits.sum(axis=1) & 1  # parity of the sign byte = the shift bit
    bits[:, 0] ^= p  # sigma' = sigma XOR p has an even popcount
    v = S[a].copy()
    odd = (S[a].sum(axis=1) % 2) == 1  # sums are exact integers
    v[odd, 7] = -v[odd, 7]  # now v is in D8-hat
    v = np.where(bits == 1, -v, v)  # an even number of flips: still in D8-hat
    return v + np.where(p == 1, -0.25, 0.25)[:, None]


@functools.lru_cache(maxsize=None)
def _unit_codebook() -> np.ndarray:
    table = _decode_bits(np.arange(2**16))
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=None)
def _search_tables():
    """(2 C^T, ||c||^2) of the unit codebook C, for the brute-force score 2 x.c - ||c||^2."""
    C = _unit_codebook()
    return np.ascontiguousarray(2.0 * C.T), (C**2).sum(axis=1)


def nearest_brute_force(u, table2t, norms):
    """Index of the nearest row of a codebook for every row of ``u`` (N, d):
    ``argmax_c 2 u.c - ||c||^2`` (ties: the lowest index), chunked so that a score
    matrix never exceeds 32 MB. ``table2t`` is 2 × the transposed codebook (d, K),
    ``norms`` the squared norms of the codewords (K,). NumPy or CuPy (``u`` decides)."""
    xp = array_module(u)
    table2t, norms = xp.asarray(table2t), xp.asarray(norms)
    n = u.shape[0]
    out = xp.empty(n, dtype=np.int64)
    chunk = max(1, _MAX_SCORES // table2t.shape[1])
    for start in range(0, n, chunk):
        scores = u[start:start + chunk] @ table2t  # 2 u.c for every codeword c
        scores -= norms  # argmax of 2 u.c - ||c||^2 = argmin of ||u - c||^2
        out[start:start + chunk] = xp.argmax(scores, axis=1)
    return out


class E8P(Quantizer):
    r"""QuIP#'s E8P codebook: 8 weights per 16-bit code (2 bits per weight).

    Parameters
    ----------
    scale : float
        The codebook is multiplied by ``scale``: ``decode`` returns ``scale · codeword``
        and ``encode(x)`` is the code of the nearest codeword to ``x / scale``. This is
        the repository's ``Wscale = RMS(W) / rho``; see :meth:`from_rms`.

    Attributes
    ----------
    dim : int
        8 (one code per 8 consecutive entries of the last axis).
    OPT_RHO : float
        1.03, the target RMS of the normalised data that minimises the Gaussian MSE
        (repository ``opt_scale``; MSE 0.0914 per weight).
    PAPER_RHO : float
        0.9, the value the paper and README use for E8P at 2 bits (MSE 0.0990 on N(0, 1)).

    Notes
    -----
    Codes follow the repository's 16-bit layout (bit-compatible); the module docstring
    describes it and how it differs from the paper's description. ``encode`` is the
    exact brute-force search; ``decode(encode(x))`` is a nearest codeword of
    ``scale · codebook`` to every group of 8 entries of ``x`` (ties: the lowest code).
    NumPy or CuPy input (CuPy runs the same brute force on the GPU).

    Examples
    --------
    >>> q = E8P()
    >>> q.decode(np.array([0, 1, 256], dtype=np.uint16)).reshape(3, 8)[:, -1]
    array([ 0.75,  0.25, -1.25])
    """

    dim = 8
    OPT_RHO = 1.03
    PAPER_RHO = 0.9
    n_codes = 2**16

    def __init__(self, scale: float = 1.0):
        self.scale = check_scale(scale)

    @classmethod
    def from_rms(cls, rms: float, rho: float | None = None) -> "E8P":
        r"""The quantizer QuIP# applies to data of RMS ``rms``: ``scale = rms / rho``.

        ``rho`` (default :attr:`OPT_RHO` = 1.03) is the RMS the data is normalised to
        before it meets the unit codebook (the repository's ``opt_scale`` /
        ``scale_override``).
        """
        rho = cls.OPT_RHO if rho is None else check_scale(rho, "rho")
        return cls(check_scale(rms, "rms") / rho)

    @property
    def bits_per_weight(self) -> float:
        """16 bits per 8 weights = 2.0 (the float64 scale is counted in :attr:`side_bits`)."""
        return 2.0

    @property
    def side_bits(self) -> int:
        """The float64 ``scale`` kept in the config: 64 bits."""
        return 64

    def codebook(self):
        """All 65,536 codewords times ``scale``: row ``c`` is ``decode`` of code ``c``.

        Returns
        -------
        ndarray of shape (65536, 8), float64
        """
        return self.scale * _unit_codebook()

    def encode(self, x, rng=None):
        """Code of the nearest codeword to every group of 8 entries along the last axis.

        Parameters
        ----------
        x : array_like of shape (..., 8k)
        rng : ignored (the quantizer is deterministic)

        Returns
        -------
        codes : ndarray of shape (..., k), uint16
        """
        u, code_shape = check_vectors(x, self.dim, "E8P")
        table2, norms = _search_tables()
        idx = nearest_brute_force(u / self.scale, table2, norms)
        return idx.astype(np.uint16).reshape(code_shape)

    def decode(self, codes):
        """``scale · codeword`` for every code.

        Parameters
        ----------
        codes : integer array of shape (..., k), values in [0, 65536)

        Returns
        -------
        ndarray of shape (..., 8k), float64
        """
        c = check_codes(codes, self.n_codes, "E8P")
        xp = array_module(c)
        table = xp.asarray(_unit_codebook())
        out = self.scale * table[c.reshape(-1)]
        return out.reshape(c.shape[:-1] + (c.shape[-1] * self.dim,))

    def state(self):
        return {"type": "E8P", "scale": self.scale}, {}

    @classmethod
    def from_state(cls, config, arrays):
        return cls(config["scale"])
