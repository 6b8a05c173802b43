"""The quantizer interface that LDLQ / BlockLDLQ accepts.

A quantizer ``Q`` maps real values to integer *codes* and back:

* ``Q.encode(x, rng=None) -> codes`` and ``Q.decode(codes) -> x_hat``;
* ``Q.quantize(x, rng=None) = Q.decode(Q.encode(x, rng))``;
* ``Q.dim``: the number of consecutive entries along the last axis that one code
  covers (1 for scalar grids, 8 for the E8P lattice codebook). ``encode`` takes
  ``x`` of shape ``(..., k * dim)`` and returns codes of shape ``(..., k)``;
* ``Q.bits_per_weight``: storage cost of the codes, in bits per weight;
* ``Q.code_bits``: the width of one code entry when codes are stored bit-packed (2 for a
  2-bit scalar grid, 16 for an E8P code of 8 weights, 16 for a trellis word); default
  ``bits_per_weight * dim``;
* ``Q.side_bits``: bits of the quantizer's scalar parameters kept outside ``state()``'s
  arrays (e.g. a float64 codebook scale: 64); default 0;
* ``Q.stochastic``: whether ``encode`` draws random numbers (it then needs ``rng``).

Quantizers whose parameters differ per row (OPTQ's min-max grid) hold arrays of
shape ``(m,)`` and expect ``x`` of shape ``(m, ...)``. LDLQ always passes blocks of
shape ``(m, g)``.

Quantizers whose choice differs per *column* (ICQuant's outlier mask) implement
``Q.columns(start, stop)``, returning the quantizer of those columns; (Block)LDLQ calls it
for every block it rounds.

Quantizers are immutable configuration objects: randomness is passed in (``rng``),
so that the same seed gives the same result in :mod:`quipref` and :mod:`fast`.
For saving, ``state()`` returns ``(config, arrays)`` - a JSON-able dict and a dict of
NumPy arrays - and ``Quantizer.from_state(config, arrays)`` rebuilds the object.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Quantizer", "quantizer_from_state"]

_REGISTRY: dict[str, type] = {}


class Quantizer:
    """Base class: see the module docstring for the contract."""

    dim: int = 1
    stochastic: bool = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _REGISTRY.setdefault(cls.__name__, cls)

    # -- the contract ----------------------------------------------------------------
    def encode(self, x, rng=None):  # pragma: no cover - abstract
        """Integer codes of ``x``: the nearest (or stochastic) representable value's index.

        Parameters
        ----------
        x : ndarray of shape (..., k * dim)
            Values to quantize; one code covers ``dim`` consecutive entries of the last
            axis (LDLQ passes blocks of shape (m, g)). Per-row quantizers expect
            ``x`` of shape (m, ...).
        rng : numpy.random.Generator, optional
            Needed when :attr:`stochastic` is true; ignored otherwise.

        Returns
        -------
        codes : integer ndarray of shape (..., k)
            ``decode(codes)`` is the quantized ``x`` (:meth:`quantize`).

        Raises
        ------
        ValueError, TypeError
            Bad shape, dtype or non-finite values; a stochastic quantizer without ``rng``.
        """
        raise NotImplementedError

    def decode(self, codes):  # pragma: no cover - abstract
        """Values of codes: the inverse of :meth:`encode`.

        Parameters
        ----------
        codes : integer ndarray of shape (..., k)

        Returns
        -------
        ndarray of shape (..., k * dim), float64
            NumPy in, NumPy out; CuPy in, CuPy out.
        """
        raise NotImplementedError

    def quantize(self, x, rng=None):
        """Nearest (or stochastic) representable value: ``decode(encode(x, rng))``."""
        return self.decode(self.encode(x, rng))

    @property
    def bits_per_weight(self) -> float:  # pragma: no cover - abstract
        """Storage of the codes in bits per quantized weight (``code_bits / dim`` when codes
        are bit-packed); scalar parameters are counted in :attr:`side_bits`."""
        raise NotImplementedError

    @property
    def code_bits(self) -> int:
        """Bits per stored code entry (packed width): ``bits_per_weight * dim`` by default."""
        return int(round(self.bits_per_weight * self.dim))

    def codes_shape(self, shape) -> tuple:
        """Shape of the codes of an (m, n) matrix: ``(m, n // dim)`` by the contract above.

        Raises ``ValueError`` when this quantizer cannot code an (m, n) matrix (``dim``
        does not divide n, or per-row parameters for another number of rows). Quantizers
        with another layout override it (the trellis codes whole tiles).
        """
        m, n = (int(s) for s in shape)
        if n % self.dim:
            raise ValueError(f"n = {n} columns is not a multiple of the code dimension {self.dim}")
        return (m, n // self.dim)

    @property
    def side_bits(self) -> int:
        """Bits of scalar parameters stored in the config rather than as arrays (0 by default)."""
        return 0

    # -- persistence -------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:  # pragma: no cover - abstract
        """Everything needed to rebuild the quantizer, for saving.

        Returns
        -------
        config : dict
            JSON-able: ``"type"`` (the class name, used by :func:`quantizer_from_state`)
            and the scalar parameters (bits, scales, rounding, ...).
        arrays : dict of str to ndarray
            The array parameters (per-row steps and offsets, a trellis LUT); may be empty.
        """
        raise NotImplementedError

    @classmethod
    def from_state(cls, config: dict, arrays: dict):  # pragma: no cover - abstract
        """Rebuild the quantizer from :meth:`state`'s ``(config, arrays)``: the result
        encodes and decodes exactly as the saved one.

        Parameters
        ----------
        config : dict
        arrays : dict of str to ndarray

        Returns
        -------
        Quantizer
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        cfg, arrays = self.state()
        inner = ", ".join(f"{k}={v!r}" for k, v in cfg.items() if k != "type")
        if arrays:
            inner += ", " + ", ".join(f"{k}=<{np.shape(v)}>" for k, v in arrays.items())
        return f"{type(self).__name__}({inner})"


def quantizer_from_state(config: dict, arrays: dict) -> Quantizer:
    """Rebuild a quantizer saved with ``state()`` (dispatch on ``config["type"]``)."""
    name = config.get("type")
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown quantizer type {name!r} in saved state; known: {sorted(_REGISTRY)}"
        )
    return _REGISTRY[name].from_state(config, arrays)
