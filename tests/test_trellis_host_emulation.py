"""The QTIP fused decode-matvec kernels of fast/kernels/trellis_decode.cu, run on the CPU.

The kernel source is compiled as host C++ (-DQR_HOST_EMULATION) against
tests/emulation/cuda_host.h (one std::thread per CUDA thread, block / warp barriers,
shuffles, atomics, a lane-exchanging mma.m16n8k16, exact fp16, and cp.async copies that
land only when a wait_group lets their group complete), with 64-thread blocks so that a
few blocks of 2 warps split the units between them. The shipped kernels (trellis_mv_*:
codes streamed through a shared-memory ring per warp, 8-at-once partial-sum loads,
one-round LUT fill) run on the layouts fast.cuda.trellis_decode builds, every warp split of the units from
one warp to one unit per warp (row groups split between warps, the cross-warp partial
sums and arrival counters), and are checked against the float64 model and reference of
tests/gpu/test_trellis_decode_gpu.py with its bounds (the emulated mma sums exactly,
which is inside them), and the counters must be back at zero. The GPU tests run the same
kernels on the device.
"""
from __future__ import annotations

import numpy as np
import pytest
from emulation.harness import GXX, compile_driver, gpu_test_module, run

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ not found")
THREADS = 64
G = gpu_test_module("test_trellis_decode_gpu.py")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    d = tmp_path_factory.mktemp("trellis_emu")
    cache = {}

    from fast.cuda import trellis_decode as TD

    def get(code):
        key = code
        if key not in cache:
            defines = [f"-DTD_MV={TD._CODE_ID[code]}", f"-DTD_THREADS={THREADS}"]
            cache[key] = compile_driver("trellis_host_driver.cpp", defines, d / f"tr_{len(cache)}")
        return cache[key]

    return get


def run_kernel(exe, t, codes, shape, z, warps, workdir):
    from fast.cuda import trellis_decode as TD

    m, n = shape
    NI, NJ = (codes.shape[0] + 1) // 2, n // 16
    U = NI * NJ
    warps = max(1, min(warps, U))
    grid = -(-warps // (THREADS // 32))
    smem = TD.ring_smem(t.code, t.k, THREADS)
    outscale = np.float32(t.scale / TD.MAD1_DIVISOR if t.code == "1mad" else t.scale)
    TD.relayout_codes(codes, t.k, np).tofile(workdir / "codes.bin")
    np.ascontiguousarray(z).tofile(workdir / "z.bin")
    lut = TD._hyb_lut2(t.lut) if t.code == "hyb" else np.zeros(0, dtype=np.uint32)
    lut.tofile(workdir / "lut.bin")
    zt = "h" if z.dtype == np.float16 else "f"
    name = f"trellis_mv_{t.code}_k{t.k}_{zt}"
    args = [str(exe), str(workdir), name, str(z.shape[0]), str(m), str(n), str(NI), str(NJ), str(U),
            str(warps), repr(float(outscale)), str(grid), str(smem)]
    run(args)
    y = np.fromfile(workdir / "y.bin", dtype=np.float32).reshape(z.shape[0], m)
    cnt = np.fromfile(workdir / "cnt.bin", dtype=np.int32)
    return y, cnt, U


CASES = [  # code, k, (m, n), batch, z dtype, warp counts
    ("hyb", 2, (48, 336), 1, np.float16, (1, 5, 10**9)),
    ("hyb", 3, (80, 272), 8, np.float32, (3, 7)),
    ("hyb", 4, (32, 528), 2, np.float16, (2, 9)),
    ("1mad", 2, (64, 400), 3, np.float16, (4, 10**9)),
    ("3inst", 2, (48, 208), 5, np.float32, (1, 6)),
    ("1mad", 3, (16, 1040), 1, np.float32, (3,)),
    ("3inst", 4, (96, 144), 8, np.float16, (5,)),
]


@pytest.mark.parametrize("code,k,shape,b,dt,warp_counts", CASES)
def test_emulated_matvec_equals_reference(build, tmp_path, code, k, shape, b, dt, warp_counts):
    m, n = shape
    t = G.make_trellis(code, k, scale=0.21 + 0.1 * k)
    rng = np.random.default_rng(G._seed(code, k, shape, "emu"))
    codes = G.random_codes(rng, t, m, n)
    ref = G.Reference(t, codes)
    z = rng.standard_normal((b, n)).astype(dt)
    for warps in warp_counts:
        y, cnt, U = run_kernel(build(code), t, codes, shape, z, warps, tmp_path)
        G._check_matvec(y.astype(np.float64), ref, z, f"{code} k={k} {shape} b={b} warps={warps}")
        assert not cnt.any(), f"arrival counters not reset: {cnt}"
