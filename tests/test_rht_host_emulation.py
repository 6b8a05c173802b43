"""The fused K * 2^k Hadamard kernels of fast/kernels/rht.cu (rht_fused_<h|f>_p<logp>),
run on the CPU.

The kernel source is compiled as host C++ (-DQR_HOST_EMULATION) against
tests/emulation/cuda_host.h (a thread per CUDA thread, barriers, shuffles, exact fp16 /
bf16, lane-exchanging ldmatrix.x4.trans and
mma.m16n8k16) with the build options fast.cuda.hadamard plans for each size, and its
output is checked against quipref's float64 transform with the tolerance of
tests/gpu/test_rht_gpu.py (the emulated mma sums exactly: inside it). The H_K operand is
the shipped packed-sign layout (fast.cuda.hadamard._fused_a_host). The GPU tests run the
same kernels on the device.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from emulation.harness import GXX, compile_driver, gpu_test_module, run

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ not found")
G = gpu_test_module("test_rht_gpu.py")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    d = tmp_path_factory.mktemp("rht_emu")
    cache = {}

    def get(opts):
        opts = tuple(opts)
        if opts not in cache:
            cache[opts] = compile_driver("rht_host_driver.cpp", list(opts),
                                         d / f"rht_{len(cache)}")
        return cache[opts]

    return get


def pack_bits(s):
    neg = (np.asarray(s) < 0).astype(np.uint64)
    n = neg.size
    words = np.zeros((n + 31) // 32, dtype=np.uint64)
    np.add.at(words, np.arange(n) // 32, neg << (np.arange(n) % 32).astype(np.uint64))
    return words.astype(np.uint32)


def run_fused(build, x, K, p, signs, inverse, workdir):
    from fast.cuda import hadamard as H

    tag = "h" if x.dtype == np.float16 else "f"
    ((name, opts, kind, prm),) = H._passes(tag, K, p)
    assert kind == "fused", name
    A = H._fused_a_host(K, inverse)
    rows = x.shape[0]
    grid = rows
    mode = 0 if signs is None else (2 if inverse else 1)
    np.ascontiguousarray(x).tofile(workdir / "x.bin")
    np.ascontiguousarray(A).tofile(workdir / "A.bin")
    (pack_bits(signs) if signs is not None else np.zeros(0, np.uint32)).tofile(workdir / "signs.bin")
    args = [str(build(opts)), str(workdir), name, str(rows), str(K), str(mode),
            repr(float(np.float32(1.0 / math.sqrt(K * p)))), str(grid), str(prm["threads"]), str(prm["smem"])]
    run(args)
    return np.fromfile(workdir / "y.bin", dtype=x.dtype).reshape(x.shape), name


CASES = [  # n = K * p, dtype, rows
    (172 * 16, np.float16, 2),
    (172 * 64, np.float16, 1),
    (172 * 64, np.float32, 1),
    (12 * 64, np.float32, 3),
    (28 * 512, np.float16, 1),
    (124 * 64, np.float16, 1),
]


@pytest.mark.parametrize("n,dtype,rows", CASES, ids=lambda v: str(v) if not isinstance(v, type) else np.dtype(v).name)
def test_emulated_fused_kernel(build, tmp_path, n, dtype, rows):
    from quipref import hadamard as ref

    K, p = ref.factor_dimension(n)
    rng = np.random.default_rng(n + rows)
    x = G._random(rng, (rows, n), dtype)
    x64 = x.astype(np.float64)
    s = G._signs(rng, n)
    for signs, inverse in ((None, False), (s, True), (s, False)):
        if signs is None:
            want = ref.hadamard_transform(x64, inverse=inverse)
        elif inverse:
            want = s * ref.hadamard_transform(x64, inverse=True)
        else:
            want = ref.hadamard_transform(x64 * s)
        y, name = run_fused(build, x, K, p, signs, inverse, tmp_path)
        g = y.astype(np.float64)
        assert np.all(np.isfinite(g)), f"{name}: non-finite output"
        tol = G._tol(x64, want, dtype, K, p)
        err = np.abs(g - want)
        assert (err <= tol).all(), (name, signs is not None, inverse, float((err / tol).max()))
