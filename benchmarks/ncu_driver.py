"""Run each fused decode-matvec kernel a few times on one large shape, for a profiler.

    ncu --clock-control none -k regex:"e8p_matvec|trellis_mv" --launch-skip 2 --launch-count 2 \
        --section SpeedOfLight --section WarpStateStats python -m benchmarks.ncu_driver

No timing here (benchmarks/quipsharp_gpu.py and qtip_matvec_gpu.py time the kernels);
this only gives Nsight Compute a representative launch: 8192 x 28672, batch 1, fp16 z.
"""
import numpy as np


def main():
    import cupy as cp

    import fast
    from fast.cuda.e8p import MatvecPlan
    from fast.cuda.trellis_decode import MatvecPlan as TrellisPlan

    m, n = 8192, 28672
    rng = np.random.default_rng(0)
    z = cp.asarray(rng.normal(size=(1, n)).astype(np.float16))
    e8p = MatvecPlan(fast.quantizers.E8P(0.02), rng.integers(0, 2**16, size=(m, n // 8)).astype(np.uint16), (m, n))
    t = fast.quantizers.Trellis(16, 2, 2, "hyb", seed=0)
    codes = rng.integers(0, 2**16, size=(m // 16, (n // 16) * t.words_per_tile)).astype(np.uint16)
    hyb = TrellisPlan(t, cp.asarray(codes), (m, n))
    for _ in range(4):
        e8p(z)
        hyb(z)
    cp.cuda.Device().synchronize()


if __name__ == "__main__":
    main()
