"""The ICQuant kernels of fast/kernels/icquant.cu, run on the CPU.

The kernel source is compiled as host C++ against tests/emulation/cuda_host.h (one
std::thread per CUDA thread, warp shuffles through a barrier; __shfl_up_sync defined in
the driver), with 64-thread blocks, on layouts built by fast.cuda.icquant.build_layout,
and checked with the references and bounds of tests/gpu/test_icquant_gpu.py: positions
and dequantized weights exactly, the fused matvec (batch 1..8) within the float32 bound.
Also checks the NumPy model of the segment decode (no compiler needed).
"""
from __future__ import annotations

import numpy as np
import pytest
from emulation.harness import GXX, compile_driver, gpu_test_module, run

from fast.cuda.icquant import build_layout, layout_positions

G = gpu_test_module("test_icquant_gpu.py")


@pytest.mark.parametrize("segment", [1, 7, 64])
@pytest.mark.parametrize("m,n,bits,gamma,B", G.CASES)
def test_segment_table_model(m, n, bits, gamma, B, segment):
    q, codes = G.fitted(m, n, bits, gamma, B)
    lay = build_layout(q, codes, segment)
    pos = G.reference(q, codes, np.zeros((1, n), np.float32))[0]
    np.testing.assert_array_equal(layout_positions(lay), pos)
    cpw = 32 // bits
    j = np.arange(n)
    unpacked = (lay["words"][:, j // cpw] >> (bits * (j % cpw)).astype(np.uint32)) & (2**bits - 1)
    np.testing.assert_array_equal(unpacked, codes)


def test_layout_refuses_what_the_kernels_cannot_do():
    from quipref.quantizers import ICQuant, ScalarGrid

    W = np.random.default_rng(0).standard_normal((4, 64))
    q = ICQuant(ScalarGrid.symmetric(3, 1.0)).fit(W)
    with pytest.raises(ValueError, match="does not divide 32"):
        build_layout(q, q.encode(W))
    q = ICQuant(ScalarGrid.symmetric(2, 1.0), index_code="enumerative").fit(W)
    with pytest.raises(ValueError, match="gap code"):
        build_layout(q, q.encode(W))


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    if GXX is None:
        pytest.skip("g++ not found")
    return compile_driver("icquant_host_driver.cpp", ["-DICQ_THREADS=64"],
                          tmp_path_factory.mktemp("icq_emu") / "icq")


@pytest.mark.parametrize("m,n,bits,gamma,B", G.CASES[:2])
def test_kernels_on_cpu(tmp_path, exe, m, n, bits, gamma, B):
    q, codes = G.fitted(m, n, bits, gamma, B)
    lay = build_layout(q, codes, 16)
    for name in ("words", "inb", "outb", "stream", "row_bit", "seg_bit", "seg_pos", "seg_found",
                 "seg_row", "seg_len"):
        np.ascontiguousarray(lay[name]).tofile(tmp_path / f"{name}.bin")
    for batch in (1, 8):
        X = np.random.default_rng(batch).standard_normal((batch, n)).astype(np.float32)
        X.tofile(tmp_path / "x.bin")
        run([exe, tmp_path, m, n, q.k, bits, B, lay["wpr"], lay["seg_row"].size, batch])
        pos, Wt, y, bound = G.reference(q, codes, X)
        np.testing.assert_array_equal(np.fromfile(tmp_path / "pos.bin", np.int32).reshape(m, q.k), pos)
        np.testing.assert_array_equal(np.fromfile(tmp_path / "W.bin", np.float32).reshape(m, n), Wt)
        got = np.fromfile(tmp_path / "y.bin", np.float32).reshape(batch, m).astype(np.float64)
        assert np.all(np.abs(got - y) <= bound + 1e-30), np.abs(got - y).max()
