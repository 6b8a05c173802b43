"""Constructions of the small Hadamard matrices H_K used by :mod:`quipref.hadamard`.

Three classical constructions cover every base size K in ``BASE_SIZES``:

==========  =========================================  ========================
K           construction                               from
==========  =========================================  ========================
12, 20,     Paley I, order q + 1                       q = 11, 19, 27 = 3^3,
28, 60,     (q = 3 mod 4 a prime power)                59, 107, 139
108, 140
36, 52,     Paley II, order 2(q + 1)                   q = 17, 25 = 5^2, 61
124         (q = 1 mod 4 a prime power)
116, 156,   Williamson array of four symmetric         n = K/4 = 29, 39, 43
172         circulant n x n matrices (published table)
==========  =========================================  ========================

Everything here is plain integer arithmetic on small matrices; it runs once per K
(the public :func:`quipref.hadamard.base_matrix` caches the result) and is checked
by ``tests/reference/test_hadamard.py`` (H H^T = K I, entries +-1).

References
----------
.. [Paley33] R. E. A. C. Paley, "On orthogonal matrices", J. Math. Phys. 12 (1933),
   311-320.
.. [Will44] J. Williamson, "Hadamard's determinant theorem and the sum of four
   squares", Duke Math. J. 11 (1944), 65-81.
.. [Baum66] L. D. Baumert, "Hadamard matrices of orders 116 and 232",
   Bull. Amer. Math. Soc. 72 (1966), 237.
.. [Hall86] M. Hall Jr., *Combinatorial Theory*, 2nd ed., Wiley (1986): tables of
   Williamson matrices, including n = 29 and n = 43.
.. [Lon13] S. London, "Constructing new Turyn type sequences, T-sequences and
   Hadamard matrices", PhD thesis, University of Illinois at Chicago (2013):
   Williamson matrices for n = 39 (among others).
.. [HKT08] W. H. Holzmann, H. Kharaghani, B. Tayfeh-Rezaie, "Williamson matrices up
   to order 59", Des. Codes Cryptogr. 46 (2008), 343-352 (complete lists for odd
   n <= 59; confirms existence for n = 29, 39, 43).
"""
from __future__ import annotations

import numpy as np

__all__ = ["gf_quadratic_character", "paley_i", "paley_ii", "williamson_blocks", "williamson",
           "CONSTRUCTIONS"]


# ---------------------------------------------------------------------------------------
# Finite fields GF(q), q = p^k, just enough for the quadratic character chi.
# ---------------------------------------------------------------------------------------

# Monic irreducible polynomials x^k + c_{k-1} x^{k-1} + ... + c_0 over GF(p), stored as
# the low coefficients (c_0, ..., c_{k-1}). A polynomial of degree 2 or 3 with no root
# in GF(p) is irreducible, which _check_irreducible verifies when the field is built.
#   GF(27): x^3 - x - 1 = x^3 + 2x + 2 over GF(3)
#   GF(25): x^2 - 2     = x^2 + 3      over GF(5)  (2 is not a square mod 5)
_IRREDUCIBLE = {(3, 3): (2, 2, 0), (5, 2): (3, 0)}


def _prime_power(q: int) -> tuple[int, int]:
    """Return (p, k) with q = p^k, p prime; raise ValueError if q is not a prime power."""
    for p in range(2, q + 1):
        if q % p == 0:  # p is the smallest prime factor of q
            k, r = 0, q
            while r % p == 0:
                r //= p
                k += 1
            if r != 1:
                raise ValueError(f"{q} is not a prime power")
            return p, k
    raise ValueError(f"{q} is not a prime power")


def _check_irreducible(p: int, low: tuple[int, ...]) -> None:
    k = len(low)
    assert k in (1, 2, 3), "the no-root test proves irreducibility only for degree <= 3"
    for t in range(p):
        value = (pow(t, k, p) + sum(c * pow(t, i, p) for i, c in enumerate(low))) % p
        assert value != 0, f"polynomial {low} has the root {t} mod {p}"


def _poly_mulmod(a: np.ndarray, b: np.ndarray, low: np.ndarray, p: int) -> np.ndarray:
    """Product of two field elements given as coefficient vectors of length k."""
    k = len(low)
    prod = np.zeros(2 * k - 1, dtype=np.int64)
    for i in range(k):
        prod[i:i + k] += a[i] * b
    # reduce: x^d = x^(d-k) * x^k = x^(d-k) * (-(c_0 + c_1 x + ... + c_{k-1} x^{k-1}))
    for d in range(2 * k - 2, k - 1, -1):
        c = prod[d]
        prod[d] = 0
        prod[d - k:d] -= c * low
    return prod[:k] % p


def gf_quadratic_character(q: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadratic character of GF(q) and the subtraction table, for q a prime power.

    Elements of GF(p^k) are numbered 0..q-1 by their coefficient vectors
    (c_0, ..., c_{k-1}) read as base-p digits, so 0 is the zero element and, for a
    prime field, element i is the integer i.

    Returns
    -------
    chi : ndarray of int8, shape (q,)
        chi[a] = 0 for a = 0, +1 if a is a non-zero square, -1 otherwise.
    diff : ndarray of int64, shape (q, q)
        diff[a, b] = index of the field element a - b.
    """
    p, k = _prime_power(q)
    if k == 1:
        low = np.array([0], dtype=np.int64)  # x^1 = 0: the prime field itself
    else:
        if (p, k) not in _IRREDUCIBLE:
            raise ValueError(f"no irreducible polynomial tabulated for GF({p}^{k})")
        _check_irreducible(p, _IRREDUCIBLE[(p, k)])
        low = np.array(_IRREDUCIBLE[(p, k)], dtype=np.int64)
    powers = p ** np.arange(k)
    digits = (np.arange(q)[:, None] // powers) % p  # (q, k) coefficient vectors
    squares = {int(_poly_mulmod(a, a, low, p) @ powers) for a in digits[1:]}
    chi = np.full(q, -1, dtype=np.int8)
    chi[0] = 0
    chi[sorted(squares)] = 1
    diff = (((digits[:, None, :] - digits[None, :, :]) % p) @ powers).astype(np.int64)
    return chi, diff


def _jacobsthal(q: int) -> np.ndarray:
    """Jacobsthal matrix Q[a, b] = chi(a - b) of GF(q), shape (q, q), int64."""
    chi, diff = gf_quadratic_character(q)
    return chi[diff].astype(np.int64)


# ---------------------------------------------------------------------------------------
# Paley I and II.
# ---------------------------------------------------------------------------------------

def paley_i(q: int) -> np.ndarray:
    """Paley I Hadamard matrix of order q + 1, for q = 3 (mod 4) a prime power.

    With the Jacobsthal matrix Q (skew-symmetric when q = 3 mod 4, Q Q^T = qI - J,
    Q 1 = 0), S = [[0, 1^T], [-1, Q]] satisfies S^T = -S and S S^T = qI, so
    H = I + S = [[1, 1^T], [-1, Q + I]] has H H^T = I - S^2 = (q + 1) I [Paley33].
    """
    if q % 4 != 3:
        raise ValueError(f"Paley I needs q = 3 mod 4, got q = {q}")
    Q = _jacobsthal(q)
    H = np.empty((q + 1, q + 1), dtype=np.int64)
    H[0, :] = 1
    H[1:, 0] = -1
    H[1:, 1:] = Q + np.eye(q, dtype=np.int64)
    return H.astype(np.int8)


def paley_ii(q: int) -> np.ndarray:
    """Paley II Hadamard matrix of order 2(q + 1), for q = 1 (mod 4) a prime power.

    With Q symmetric (q = 1 mod 4), the conference matrix C = [[0, 1^T], [1, Q]] is
    symmetric with C C^T = qI; then
    H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]] has H H^T = 2(q + 1) I
    [Paley33]. The result is symmetric.
    """
    if q % 4 != 1:
        raise ValueError(f"Paley II needs q = 1 mod 4, got q = {q}")
    Q = _jacobsthal(q)
    C = np.zeros((q + 1, q + 1), dtype=np.int64)
    C[0, 1:] = 1
    C[1:, 0] = 1
    C[1:, 1:] = Q
    H = np.kron(C, [[1, 1], [1, -1]]) + np.kron(np.eye(q + 1, dtype=np.int64),
                                                [[1, -1], [-1, -1]])
    return H.astype(np.int8)


# ---------------------------------------------------------------------------------------
# Williamson matrices.
# ---------------------------------------------------------------------------------------

# Williamson quadruples (A, B, C, D): symmetric circulant +-1 matrices of odd order n with
# A^2 + B^2 + C^2 + D^2 = 4n I. A symmetric circulant's first row (a_0, ..., a_{n-1})
# has a_j = a_{n-j}, so it is fixed by its first (n + 1) / 2 entries, which is what is
# stored ('+' = +1, '-' = -1). Published tables list the full first rows: n = 29 is
# Baumert's solution [Baum66] as tabulated in [Hall86]; n = 43 from the tables in
# [Hall86] (after [Will44]); n = 39 from [Lon13]. We transcribed the rows as reproduced
# in SageMath's table of Williamson-type quadruples
# (sage/combinat/matrices/hadamard_matrix.py, williamson_type_quadruples_smallcases,
# which cites [Hall86] and [Lon13]); the tests check A^2 + B^2 + C^2 + D^2 = 4n I and
# H H^T = 4n I for the assembled matrix, so a transcription error cannot go unnoticed.
_WILLIAMSON_HALF_ROWS = {
    29: ("+++---++--+-+--",
         "+-+---++--+-+++",
         "++++-++-+---+++",
         "++--+--+-+++-++"),
    39: ("+++--+-+-----+--++--",
         "+++--++-+---+-+--+--",
         "++++---+--++----+-+-",
         "+---++-+-+-----+++-+"),
    43: ("++---++++-+--+--++----",
         "+++-+-++--+-+-++++-+--",
         "++-++++++----+-+--++-+",
         "+---++--++++-+-+++-++-"),
}


def _symmetric_first_row(half: str) -> np.ndarray:
    """Full first row a_0..a_{n-1} of a symmetric circulant from a_0..a_{(n-1)/2}."""
    h = np.array([1 if c == "+" else -1 for c in half], dtype=np.int64)
    return np.concatenate([h, h[1:][::-1]])


def _circulant(first_row: np.ndarray) -> np.ndarray:
    """Circulant matrix with M[i, j] = first_row[(j - i) mod n]."""
    n = len(first_row)
    idx = (np.arange(n)[None, :] - np.arange(n)[:, None]) % n
    return first_row[idx]


def williamson_blocks(n: int) -> tuple[np.ndarray, ...]:
    """The four symmetric circulant Williamson matrices (A, B, C, D) of order n."""
    if n not in _WILLIAMSON_HALF_ROWS:
        raise ValueError(f"no Williamson quadruple of order {n} is tabulated")
    return tuple(_circulant(_symmetric_first_row(s)) for s in _WILLIAMSON_HALF_ROWS[n])


def williamson(n: int) -> np.ndarray:
    """Hadamard matrix of order 4n from a tabulated Williamson quadruple [Will44].

    Symmetric circulants commute, so the Williamson array

        H = [[ A,  B,  C,  D],
             [-B,  A, -D,  C],
             [-C,  D,  A, -B],
             [-D, -C,  B,  A]]

    has H H^T = I_4 (x) (A^2 + B^2 + C^2 + D^2) = 4n I.
    """
    A, B, C, D = williamson_blocks(n)
    H = np.block([[A, B, C, D],
                  [-B, A, -D, C],
                  [-C, D, A, -B],
                  [-D, -C, B, A]])
    return H.astype(np.int8)


# K -> (construction name, function, parameter). Read by quipref.hadamard.base_matrix.
CONSTRUCTIONS = {
    12: ("Paley I, q = 11", paley_i, 11),
    20: ("Paley I, q = 19", paley_i, 19),
    28: ("Paley I, q = 27 = 3^3", paley_i, 27),
    36: ("Paley II, q = 17", paley_ii, 17),
    52: ("Paley II, q = 25 = 5^2", paley_ii, 25),
    60: ("Paley I, q = 59", paley_i, 59),
    108: ("Paley I, q = 107", paley_i, 107),
    116: ("Williamson, n = 29", williamson, 29),
    124: ("Paley II, q = 61", paley_ii, 61),
    140: ("Paley I, q = 139", paley_i, 139),
    156: ("Williamson, n = 39", williamson, 39),
    172: ("Williamson, n = 43", williamson, 43),
}
