"""Fast ICQuant: :class:`quipref.quantizers.ICQuant` with the index coded and decoded by
the Numba functions of :mod:`fast.quantizers.index_coding` (identical bitstreams). Fitting
(mask selection, ranges, Lloyd levels) and the nearest-level encode / decode are the
reference's vectorised NumPy, so the codes are the reference's for the same input."""
from __future__ import annotations

from quipref.quantizers import icquant as _ref
from quipref.quantizers.icquant import select_outliers  # noqa: F401  (re-exported)

from . import index_coding as _ic

__all__ = ["ICQuant", "select_outliers"]


class ICQuant(_ref.ICQuant):
    __doc__ = _ref.ICQuant.__doc__ + """
    Fast version: the index stream is written and read by Numba, rows in parallel.
    """

    def _encode_stream(self, mask):
        s = _ic.gap_encode(mask, self.B) if self.index_code == "gap" else _ic.enum_encode(mask, self.group)
        return s.data, s.offsets

    def _decode_stream(self, data, offsets, m, n, k):
        if self.index_code == "gap":
            return _ic.gap_decode(data, offsets, k, n, self.B)
        return _ic.enum_decode(data, offsets, n, self.group)
