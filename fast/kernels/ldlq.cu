// LDLQ in-leaf recursion with a fused uniform scalar grid (ScalarGrid / IntegerGrid).
//
// The CPU reference is quipref/ldlq.py::ldlq; the lazy-batch driver that calls this kernel
// once per leaf of LEAF columns is fast/ldlq.py::_lazy_batch (through fast/cuda/ldlq.py).
//
// For the leaf [a, a + L) and every row i (one thread per row, ROWS rows per block):
//
//     acc_j   = G[i, a + j]                      feedback from all columns < a (cuBLAS)
//     x_j     = W[i, a + j] + acc_j
//     t       = (x_j - offset_i) / step_i
//     q       = clip(floor(t + 1/2 or t + u), 0, hi)        (no clip when !bounded)
//     W_hat   = offset_i + step_i * q,   e = W - W_hat
//     acc_jj += e * U[a + j, a + jj]          for jj > j     (right-looking, in shared memory)
//
// The quantizer arithmetic is the reference's, operation for operation, in float64 and
// with the round-to-nearest intrinsics where the compiler could otherwise contract a
// multiply and an add into an FMA (the decode offset + step * q), so that a code can only
// differ from the reference where the *sum* x_j differs (summation order), never because
// of the rounding step itself.
//
// Memory: the leaf's U block (L x L), and per block three (ROWS x L) tiles - the running
// sums (later the errors), W (later W_hat) and the codes - all in dynamic shared memory.
// Tiles are loaded and stored row-contiguously (coalesced); during the recursion every
// thread of a warp reads the same U entry (a broadcast) and its own row of the tile
// (row stride LD = LEAF + 1 doubles, odd, so a half-warp's 8-byte accesses hit distinct
// banks).
//
// Launch: grid = ceil(m / ROWS), block = ROWS, dynamic shared memory =
// (LEAF * LD + 3 * ROWS * LD) * 8 bytes (83,200 B: the host raises the kernel's limit).

#define LEAF 64
#define ROWS 32
#define LD (LEAF + 1)
#define CHUNK 8   // loads in flight per thread while filling shared memory

static_assert(LEAF * LEAF % (CHUNK * ROWS) == 0 && ROWS * LEAF % (CHUNK * ROWS) == 0, "tiling");

extern "C" __global__ void __launch_bounds__(ROWS)
ldlq_leaf_grid(const double* __restrict__ W,       // (m, n) row-major
               const double* __restrict__ G,       // (m, n) pending feedback
               const double* __restrict__ U,       // (n, n) row-major, strictly upper
               const long long m, const long long n,
               const int a, const int L,           // leaf columns [a, a + L), L <= LEAF
               const double* __restrict__ step,    // (m,)
               const double* __restrict__ offset,  // (m,)
               const double hi, const int bounded, // largest code; clip or not
               const double* __restrict__ u,       // (L, m) uniforms, or unused
               const int stochastic,
               long long* __restrict__ codes,      // (m, n)
               double* __restrict__ W_hat,         // (m, n)
               double* __restrict__ E,             // (m, n): W - W_hat
               int* __restrict__ bad)              // (1,): set when an input to Q is not finite
{
    extern __shared__ double smem[];
    double* Us = smem;                   // [LEAF][LD]
    double* As = Us + LEAF * LD;         // [ROWS][LD] running sums, then errors
    double* Ws = As + ROWS * LD;         // [ROWS][LD] W, then W_hat
    long long* Cs = reinterpret_cast<long long*>(Ws + ROWS * LD);  // [ROWS][LD] codes

    const int tid = threadIdx.x;
    const long long row0 = (long long)blockIdx.x * ROWS;

    // ---- load the U block and the row tiles (coalesced along the row) ----
    // Compile-time trip counts, CHUNK loads issued before their stores: with one warp per
    // block, loads one at a time would each wait a full memory latency.
#pragma unroll 1
    for (int t0 = 0; t0 < LEAF * LEAF; t0 += CHUNK * ROWS) {
        double v[CHUNK];
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            const int idx = t0 + c * ROWS + tid, j = idx / LEAF, jj = idx % LEAF;
            v[c] = (j < L && jj < L) ? U[(long long)(a + j) * n + a + jj] : 0.0;
        }
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            const int idx = t0 + c * ROWS + tid;
            Us[(idx / LEAF) * LD + idx % LEAF] = v[c];
        }
    }
#pragma unroll 1
    for (int t0 = 0; t0 < ROWS * LEAF; t0 += CHUNK * ROWS) {
        double vw[CHUNK], vg[CHUNK];
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            const int idx = t0 + c * ROWS + tid, r = idx / LEAF, j = idx % LEAF;
            const long long row = row0 + r;
            const bool in = row < m && j < L;
            const long long g = row * n + a + j;
            vw[c] = in ? W[g] : 0.0;
            vg[c] = in ? G[g] : 0.0;
        }
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            const int idx = t0 + c * ROWS + tid, r = idx / LEAF, j = idx % LEAF;
            Ws[r * LD + j] = vw[c];
            As[r * LD + j] = vg[c];
        }
    }
    __syncthreads();

    // ---- the recursion: one thread per row ----
    const long long row = row0 + tid;
    if (row < m) {
        const double s = step[row];
        const double o = offset[row];
        double* acc = As + tid * LD;
        double* wr = Ws + tid * LD;
        long long* cr = Cs + tid * LD;
        int flag = 0;
        for (int j = 0; j < L; ++j) {
            const double w = wr[j];
            const double x = w + acc[j];
            const double t = (x - o) / s;                       // IEEE division
            double q = stochastic ? floor(t + u[(long long)j * m + row]) : floor(t + 0.5);
            if (bounded) {
                if (q < 0.0) q = 0.0;
                else if (q > hi) q = hi;
            }
            if (!isfinite(q)) { flag = 1; q = 0.0; }
            const long long k = (long long)q;
            const double wh = __dadd_rn(o, __dmul_rn(s, (double)k));  // no FMA: as NumPy
            const double e = w - wh;
            cr[j] = k;
            wr[j] = wh;
            acc[j] = e;
            const double* urow = Us + j * LD;
#pragma unroll 4
            for (int jj = j + 1; jj < L; ++jj) acc[jj] = fma(e, urow[jj], acc[jj]);
        }
        if (flag) atomicExch(bad, 1);
    }
    __syncthreads();

    // ---- store W_hat, E and the codes (coalesced along the row) ----
#pragma unroll 4
    for (int idx = tid; idx < ROWS * LEAF; idx += ROWS) {
        const int r = idx / LEAF, j = idx % LEAF;
        const long long row = row0 + r;
        if (row < m && j < L) {
            const long long g = row * n + a + j;
            W_hat[g] = Ws[r * LD + j];
            E[g] = As[r * LD + j];
            codes[g] = Cs[r * LD + j];
        }
    }
}
