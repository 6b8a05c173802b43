"""The E8P / RVQ decode-matvec kernels of fast/kernels/e8p.cu, run on the CPU.

tests/emulation/cuda_host.h supplies just enough CUDA (one std::thread per CUDA thread,
block barriers, shared memory, a lane-exchanging emulation of mma.m16n8k16, exact fp16
conversions) to compile the kernel source itself as host C++ (-DQR_HOST_EMULATION
replaces only the PTX one-liners: loads, prmt, sub.f16x2, cvt, mma). The shipped build
runs on the device layouts fast.cuda.e8p builds, with small grids
so that the grid-stride loop, both ping-pong stages, partial super groups (n % 128) and
partial row groups (m % 16) are exercised, and is checked against the float64 reference
with the bound of tests/gpu/test_e8p_gpu.py: |y - ref| <= (2^-11 + n 2^-22) |z| |W~|
(z rounded to fp16, exact fp16 weights; the emulated mma sums in double, so the bound
holds with room). This is what a machine without a GPU can check of the kernels' index
arithmetic and tables; tests/gpu runs them on the device.
"""
from __future__ import annotations

import numpy as np
import pytest
from emulation.harness import GXX, compile_driver, gpu_test_module, run

from quipref.quantizers import E8P as RefE8P
from quipref.quantizers.rvq import RVQ as RefRVQ

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ not found")
G = gpu_test_module("test_e8p_gpu.py")


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    d = tmp_path_factory.mktemp("e8p_emu")
    return compile_driver("e8p_host_driver.cpp", [], d / "e8p")


def run_kernel(exe, kind, codes, m, n, z, rg, grid, scale, resid_scale, workdir):
    from fast.cuda import e8p

    R, NS = -(-m // e8p.GROUP_ROWS), -(-(n // 8) // e8p.GROUP_CODES)
    if kind == "e8p":
        c1 = e8p.device_codes(codes, np.uint16)
        c2 = c1
        rinv = 0.0
    else:
        shift = 16 if kind == "rvq4" else 8
        c = codes.astype(np.uint32)
        c1 = e8p.device_codes(c >> shift, np.uint16)
        c2 = e8p.device_codes(c & ((1 << shift) - 1), np.uint16 if kind == "rvq4" else np.uint8)
        rinv = 1.0 / resid_scale
    _, _, _, tab, e81 = e8p._host_tables()
    for fname, arr in (("codes1", c1), ("codes2", c2), ("z", z), ("tab", tab), ("e81", e81)):
        np.ascontiguousarray(arr).tofile(workdir / f"{fname}.bin")
    tag = "h" if z.dtype == np.float16 else "f"
    name = f"e8p_matvec_{kind}_{tag}_rg{rg}"
    smem = e8p.SMEM_BYTES[{"e8p": 0, "rvq4": 1, "rvq3": 2}[kind]]
    args = [str(exe), str(workdir), name, str(m), str(n), str(R), str(NS), str(z.shape[0]),
            repr(float(scale)), repr(float(rinv)), str(grid), str(smem)]
    run(args)
    return np.fromfile(workdir / "y.bin", dtype=np.float32).reshape(z.shape[0], m)


CASES = [  # kind, m, n, b, z dtype, rg, grid
    ("e8p", 40, 2176, 1, np.float16, 2, 1),     # NS = 17: 3 super groups for warp 0, 2 stages
    ("e8p", 37, 1032, 8, np.float32, 1, 2),     # partial super group, partial row group
    ("e8p", 16, 256, 3, np.float16, 1, 1),
    ("e8p", 33, 1160, 8, np.float16, 2, 1),     # odd row-group count (clamped rows), NS = 2
    ("rvq4", 24, 1160, 2, np.float16, 2, 1),
    ("rvq3", 24, 1160, 5, np.float32, 2, 2),
    ("rvq3", 9, 2056, 1, np.float16, 1, 1),
]


@pytest.mark.parametrize("kind,m,n,b,dt,rg,grid", CASES)
def test_emulated_kernel_equals_reference(binary, tmp_path, kind, m, n, b, dt, rg, grid):
    rng = np.random.default_rng(m * 131 + n + b)
    scale = 0.031
    codes = G._random_codes(rng, kind, m, n // 8)
    if kind == "e8p":
        W = RefE8P(scale).decode(codes)
        resid = 1.0
    else:
        q = RefRVQ(4 if kind == "rvq4" else 3, scale)
        W = q.decode(codes)
        resid = q.resid_scale
    z = rng.normal(size=(b, n)).astype(dt)
    y = run_kernel(binary, kind, codes, m, n, z, rg, grid, scale, resid, tmp_path)
    zf = z.astype(np.float64)
    ref = zf @ W.T
    bound = (2.0**-11 + n * 2.0**-22) * (np.abs(zf) @ np.abs(W).T) + 1e-30
    err = np.abs(y - ref)
    assert np.isfinite(y).all()
    assert np.all(err <= bound), (kind, float((err / bound).max()))
