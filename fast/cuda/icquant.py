"""ICQuant layers on the GPU (fast/kernels/icquant.cu): gap-code position decode with
per-segment offsets, full dequantize, and the fused decode-matvec for batch 1..8.

:func:`build_layout` turns a fitted :class:`~quipref.quantizers.ICQuant` (gap code) and
its codes (m, n) into host arrays (NumPy, no GPU needed; the CPU tests check them):

* ``words`` (m, wpr) uint32: the b-bit codes packed ``cpw = 32 / b`` per word, code j of a
  row at bits ``b * (j % cpw)`` of word ``j // cpw`` (b in {1, 2, 4, 8}; a 3-bit layer is
  refused with a ValueError);
* ``inb``, ``outb`` (m, 2^b) float32: the inlier and outlier levels (float16 values: exact);
* ``stream``: the index bytes plus 4 zero bytes; ``row_bit`` (m + 1,) int64;
* the segment table: every row's symbols cut into segments of at most ``segment``
  symbols, with per segment its first bit, the position reached before it, the outliers
  decoded before it, its row and its length (``seg_*``), so that segments decode
  independently (one GPU thread each) -- computed here by a vectorised prefix sum over
  all symbols.

:class:`ICQuantGPU` uploads the layout and launches the kernels. The fused matvec reads
the packed codes and the gap symbols of each row (one warp per row, the symbols decoded
32 at a time with a warp prefix sum); positions are never stored.
"""
from __future__ import annotations

import numpy as np

__all__ = ["build_layout", "layout_positions", "ICQuantGPU", "SEGMENT", "THREADS"]

#: symbols per independently decodable segment
SEGMENT = 64
#: threads per block of every kernel (ICQ_THREADS)
THREADS = 256


def _symbols(stream: np.ndarray, row_bit: np.ndarray, B: int):
    """All symbols (N,) and their rows (N,), decoded on the host with NumPy."""
    nsym = np.diff(row_bit) // B
    total = int(nsym.sum())
    bits = np.unpackbits(stream, bitorder="little")
    starts = np.repeat(row_bit[:-1], nsym) + B * (np.arange(total) - np.repeat(np.cumsum(nsym) - nsym, nsym))
    idx = starts[:, None] + np.arange(B)[None, :]
    sym = (bits[idx].astype(np.int64) << np.arange(B)[None, :]).sum(axis=1) if total else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(nsym)), nsym)
    return sym, rows, nsym, starts


def build_layout(quantizer, codes, segment: int = SEGMENT) -> dict:
    """Host arrays of the GPU layout (module docstring) of a fitted gap-coded ICQuant.

    Parameters
    ----------
    quantizer : ICQuant (fitted, index_code="gap", bits in {1, 2, 4, 8})
    codes : ndarray (m, n) of its codes
    segment : int
        Symbols per segment of the position decode.

    Raises
    ------
    ValueError
        Unfitted quantizer, the enumerative code, a bit width that does not divide 32,
        codes of another shape.
    """
    from quipref._checks import to_numpy

    f = quantizer._require_fit()
    if quantizer.index_code != "gap":
        raise ValueError("the GPU kernels decode the gap code; quantize with index_code='gap'")
    b = quantizer.bits
    if 32 % b:
        raise ValueError(f"the GPU kernels pack 32 / b codes per word; bits={b} does not divide 32 "
                         "(use 1, 2, 4 or 8)")
    m, n = quantizer.shape
    codes = np.asarray(to_numpy(codes))
    if codes.shape != (m, n):
        raise ValueError(f"codes must have shape {(m, n)}, got {codes.shape}")
    if isinstance(segment, bool) or not isinstance(segment, (int, np.integer)) or segment < 1:
        raise ValueError(f"segment must be a positive integer, got {segment!r}")
    cpw = 32 // b
    wpr = -(-n // cpw)
    c = np.zeros((m, wpr * cpw), dtype=np.uint64)
    c[:, :n] = codes
    words = (c.reshape(m, wpr, cpw) << (b * np.arange(cpw, dtype=np.uint64))).sum(axis=2).astype(np.uint32)
    L = 2**b
    inb = f["in_book"].astype(np.float32)
    outb = f["out_book"].astype(np.float32) if f["k"] else np.zeros((m, L), np.float32)
    k, B = f["k"], quantizer.B
    if f["stream"] is None:
        stream, row_bit = np.zeros(0, np.uint8), np.zeros(m + 1, np.int64)
    else:
        stream, row_bit = np.asarray(f["stream"][0], np.uint8), np.asarray(f["stream"][1], np.int64)
    sym, rows, nsym, _ = _symbols(stream, row_bit, B)
    M = 2**B - 1
    adv = np.where(sym == M, M, sym + 1)
    out = (sym != M).astype(np.int64)
    first = np.cumsum(nsym) - nsym                      # index of each row's first symbol
    # row-wise inclusive prefix sums: global cumsum minus the total before the row
    cadv, cout = np.cumsum(adv), np.cumsum(out)
    before_adv = np.concatenate(([0], cadv))[first]
    before_out = np.concatenate(([0], cout))[first]
    # segments: symbol index within the row t = s * segment
    nseg_row = -(-nsym // segment)
    seg_row = np.repeat(np.arange(m), nseg_row)
    seg_idx = np.arange(int(nseg_row.sum())) - np.repeat(np.cumsum(nseg_row) - nseg_row, nseg_row)
    t0 = seg_idx * segment                              # first symbol of the segment in its row
    g = first[seg_row] + t0                             # its global symbol index
    prev_adv = np.concatenate(([0], cadv))[g] - before_adv[seg_row]   # advances before it, in the row
    prev_out = np.concatenate(([0], cout))[g] - before_out[seg_row]
    layout = {
        "m": m, "n": n, "k": k, "b": b, "B": B, "wpr": wpr, "segment": int(segment),
        "words": np.ascontiguousarray(words), "inb": np.ascontiguousarray(inb),
        "outb": np.ascontiguousarray(outb),
        "stream": np.concatenate([stream, np.zeros(4, np.uint8)]), "row_bit": row_bit,
        "seg_bit": (row_bit[seg_row] + B * t0).astype(np.int64),
        "seg_pos": (prev_adv - 1).astype(np.int32), "seg_found": prev_out.astype(np.int32),
        "seg_row": seg_row.astype(np.int32),
        "seg_len": np.minimum(segment, nsym[seg_row] - t0).astype(np.int32),
    }
    return layout


def layout_positions(layout: dict) -> np.ndarray:
    """NumPy model of ``icq_decode_positions``: each segment decoded on its own from its
    table entry (the CPU tests compare it with the reference positions)."""
    m, k, B = layout["m"], layout["k"], layout["B"]
    M = 2**B - 1
    out = np.full((m, k), -1, dtype=np.int64)
    bits = np.unpackbits(layout["stream"], bitorder="little")
    for s in range(layout["seg_row"].size):
        bit, pos, f, r = int(layout["seg_bit"][s]), int(layout["seg_pos"][s]), int(layout["seg_found"][s]), \
            int(layout["seg_row"][s])
        for _ in range(int(layout["seg_len"][s])):
            u = int((bits[bit:bit + B].astype(np.int64) << np.arange(B)).sum())
            bit += B
            if u == M:
                pos += M
            else:
                pos += u + 1
                out[r, f] = pos
                f += 1
    return out


class ICQuantGPU:
    """A fitted gap-coded ICQuant layer resident on the GPU (needs CuPy and a device).

    Parameters
    ----------
    quantizer, codes, segment
        As :func:`build_layout`.

    Methods
    -------
    positions() -> cupy (m, k) int32
    dequantize() -> cupy (m, n) float32, the processed weights W~
    matvec(x) -> cupy: x (n,) or (batch <= 8, n) float32 -> (m,) or (batch, m)
    """

    def __init__(self, quantizer, codes, segment: int = SEGMENT, *, layout=None):
        import cupy

        from ._compile import load_module

        self.layout = lay = build_layout(quantizer, codes, segment) if layout is None else layout
        self.shape = (lay["m"], lay["n"])
        self._d = {name: cupy.asarray(lay[name]) for name in
                   ("words", "inb", "outb", "stream", "row_bit", "seg_bit", "seg_pos", "seg_found",
                    "seg_row", "seg_len")}
        self._mod = load_module("icquant")

    @classmethod
    def from_layout(cls, layout: dict) -> "ICQuantGPU":
        """Upload a layout built once by :func:`build_layout` (benchmarks make many copies)."""
        return cls(None, None, layout=layout)

    @property
    def nbytes(self) -> int:
        """Device bytes a matvec reads besides x: packed codes, index, row offsets, levels."""
        d = self._d
        return int(sum(d[k].nbytes for k in ("words", "stream", "row_bit", "inb", "outb")))

    def _grid(self, count):
        return ((int(count) + THREADS - 1) // THREADS,)

    def positions(self):
        import cupy

        L, d = self.layout, self._d
        out = cupy.empty((L["m"], L["k"]), dtype=cupy.int32)
        nseg = int(L["seg_row"].size)
        if nseg:
            self._mod.get_function("icq_decode_positions")(
                self._grid(nseg), (THREADS,),
                (d["stream"], d["seg_bit"], d["seg_pos"], d["seg_found"], d["seg_row"], d["seg_len"],
                 np.int32(nseg), np.int32(L["B"]), np.int32(L["k"]), out))
        return out

    def dequantize(self, positions=None):
        import cupy

        L, d = self.layout, self._d
        m, n, k = L["m"], L["n"], L["k"]
        W = cupy.empty((m, n), dtype=cupy.float32)
        self._mod.get_function("icq_dequantize_inliers")(
            self._grid(m * n), (THREADS,),
            (d["words"], d["inb"], np.int32(m), np.int32(n), np.int32(L["wpr"]), np.int32(L["b"]), W))
        if k:
            pos = self.positions() if positions is None else positions
            self._mod.get_function("icq_scatter_outliers")(
                self._grid(m * k), (THREADS,),
                (d["words"], d["outb"], pos, np.int32(m), np.int32(n), np.int32(k), np.int32(L["wpr"]),
                 np.int32(L["b"]), W))
        return W

    def matvec(self, x, out=None):
        import cupy

        L, d = self.layout, self._d
        m, n = L["m"], L["n"]
        x = cupy.asarray(x, dtype=cupy.float32)
        single = x.ndim == 1
        X = cupy.ascontiguousarray(x.reshape(1, -1) if single else x)
        if X.ndim != 2 or X.shape[1] != n or not 1 <= X.shape[0] <= 8:
            raise ValueError(f"x must have shape ({n},) or (batch, {n}) with batch 1..8, got {tuple(x.shape)}")
        batch = X.shape[0]
        Y = cupy.empty((batch, m), dtype=cupy.float32) if out is None else out
        warps_per_block = THREADS // 32
        self._mod.get_function(f"icq_matvec_b{batch}")(
            ((m + warps_per_block - 1) // warps_per_block,), (THREADS,),
            (d["words"], d["inb"], d["outb"], d["stream"], d["row_bit"], X, np.int32(m), np.int32(n),
             np.int32(L["wpr"]), np.int32(L["b"]), np.int32(L["B"]), Y))
        return Y[0] if single else Y
