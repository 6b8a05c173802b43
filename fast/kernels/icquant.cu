// ICQuant layers on the GPU: gap-code position decode, full dequantize and the fused
// decode-matvec y = W~ x (batch 1..8) with the weights never materialised.
//
// Layout (built by fast/cuda/icquant.py from a fitted ICQuant; see its docstring):
//   words   (m, wpr) uint32   b-bit codes of every weight, row-major, code j of a row in
//                             bits [b*(j % cpw), b*(j % cpw) + b) of word j / cpw
//                             (cpw = 32 / b codes per word, b in {1, 2, 4, 8})
//   inb     (m, L)  float32   inlier levels of each row (L = 2^b)
//   outb    (m, L)  float32   outlier levels of each row (sign + magnitude, sorted)
//   stream  bytes             the gap code, rows concatenated, every B-bit symbol least
//                             significant bit first (stream bit t = bit t % 8 of byte
//                             t / 8), padded with >= 4 zero bytes so that a 3-byte read
//                             at the last symbol stays inside
//   row_bit (m + 1,) int64    first bit of each row's symbols
//   segments (position decode only): the symbols of every row are cut into segments of
//   at most S symbols; seg_bit / seg_pos / seg_found / seg_row / seg_len give, per
//   segment, its first bit, the position reached before it (-1 at a row start), the
//   outliers decoded before it, its row and its symbol count, so segments decode
//   independently (one thread each).
//
// Symbol u < M = 2^B - 1: next outlier u + 1 positions ahead; u == M: advance M, no outlier.
// (arXiv 2505.00850 describes index coding of outlier positions; this gap code is the
// library's reconstruction, see quipref/quantizers/index_coding.py.)

#ifndef ICQ_THREADS
#define ICQ_THREADS 256
#endif

__device__ __forceinline__ unsigned int icq_symbol(const unsigned char* __restrict__ s,
                                                   long long bit, int B) {
    const long long byte = bit >> 3;
    const unsigned int w = (unsigned int)s[byte] | ((unsigned int)s[byte + 1] << 8) |
                           ((unsigned int)s[byte + 2] << 16);
    return (w >> (bit & 7)) & ((1u << B) - 1u);
}

__device__ __forceinline__ int icq_code(const unsigned int* __restrict__ words, long long row_word,
                                        int j, int b) {
    const int cpw = 32 / b;
    const unsigned int w = words[row_word + j / cpw];
    return (int)((w >> (b * (j % cpw))) & ((1u << b) - 1u));
}

// One thread per segment: the positions of the outliers it holds, out[row * k + f].
extern "C" __global__ void __launch_bounds__(ICQ_THREADS)
icq_decode_positions(const unsigned char* __restrict__ stream, const long long* __restrict__ seg_bit,
                     const int* __restrict__ seg_pos, const int* __restrict__ seg_found,
                     const int* __restrict__ seg_row, const int* __restrict__ seg_len, int nseg,
                     int B, int k, int* __restrict__ out) {
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= nseg) return;
    const int M = (1 << B) - 1;
    long long bit = seg_bit[s];
    int pos = seg_pos[s];
    int f = seg_found[s];
    const long long base = (long long)seg_row[s] * k;
    const int len = seg_len[s];
    for (int t = 0; t < len; ++t, bit += B) {
        const int u = (int)icq_symbol(stream, bit, B);
        if (u == M) {
            pos += M;
        } else {
            pos += u + 1;
            out[base + f] = pos;
            ++f;
        }
    }
}

// Every weight from its inlier level: W[r, j] = inb[r, code(r, j)] (then icq_scatter_outliers).
extern "C" __global__ void __launch_bounds__(ICQ_THREADS)
icq_dequantize_inliers(const unsigned int* __restrict__ words, const float* __restrict__ inb,
                       int m, int n, int wpr, int b, float* __restrict__ W) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)m * n) return;
    const int r = (int)(idx / n), j = (int)(idx % n);
    W[idx] = inb[(long long)r * (1 << b) + icq_code(words, (long long)r * wpr, j, b)];
}

// Outlier positions (m, k) from icq_decode_positions: W[r, p] = outb[r, code(r, p)].
extern "C" __global__ void __launch_bounds__(ICQ_THREADS)
icq_scatter_outliers(const unsigned int* __restrict__ words, const float* __restrict__ outb,
                     const int* __restrict__ pos, int m, int n, int k, int wpr, int b,
                     float* __restrict__ W) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)m * k) return;
    const int r = (int)(idx / k);
    const int p = pos[idx];
    W[(long long)r * n + p] = outb[(long long)r * (1 << b) + icq_code(words, (long long)r * wpr, p, b)];
}

// Fused decode-matvec, one warp per row r:
//   y[q, r] = sum_j inb[r, c_j] x[q, j] + sum_{outliers p} (outb[r, c_p] - inb[r, c_p]) x[q, p]
// The first sum walks the packed words (each lane one 32-bit word = 32 / b codes at a
// time); the second decodes the row's gap symbols 32 at a time, one per lane, with a warp
// prefix sum of the advances (positions), the carry passed on by lane 31.
template <int BATCH>
__device__ __forceinline__ void icq_matvec_body(const unsigned int* __restrict__ words,
                                                const float* __restrict__ inb,
                                                const float* __restrict__ outb,
                                                const unsigned char* __restrict__ stream,
                                                const long long* __restrict__ row_bit,
                                                const float* __restrict__ x, int m, int n, int wpr,
                                                int b, int B, float* __restrict__ y) {
    const int warp = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (warp >= m) return;
    const int r = warp;
    const int L = 1 << b, cpw = 32 / b;
    const float* lin = inb + (long long)r * L;
    const float* lout = outb + (long long)r * L;
    const unsigned int* rw = words + (long long)r * wpr;
    float acc[BATCH];
#pragma unroll
    for (int q = 0; q < BATCH; ++q) acc[q] = 0.f;
    for (int w = lane; w < wpr; w += 32) {
        const unsigned int word = rw[w];
        const int j0 = w * cpw;
        for (int i = 0; i < cpw; ++i) {
            const int j = j0 + i;
            if (j >= n) break;
            const float v = lin[(word >> (b * i)) & (L - 1)];
#pragma unroll
            for (int q = 0; q < BATCH; ++q) acc[q] += v * x[(long long)q * n + j];
        }
    }
    // outliers: symbols of this row, 32 per step
    const int M = (1 << B) - 1;
    const long long b0 = row_bit[r];
    const long long nsym = (row_bit[r + 1] - b0) / B;
    int carry = -1;
    for (long long t0 = 0; t0 < nsym; t0 += 32) {
        const long long t = t0 + lane;
        int adv = 0;
        bool is_out = false;
        if (t < nsym) {
            const int u = (int)icq_symbol(stream, b0 + t * B, B);
            is_out = (u != M);
            adv = is_out ? u + 1 : M;
        }
        int incl = adv;
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
            const int o = __shfl_up_sync(0xffffffffu, incl, d);
            if (lane >= d) incl += o;
        }
        const int p = carry + incl;
        if (is_out) {
            const int c = icq_code(words, (long long)r * wpr, p, b);
            const float dv = lout[c] - lin[c];
#pragma unroll
            for (int q = 0; q < BATCH; ++q) acc[q] += dv * x[(long long)q * n + p];
        }
        carry = __shfl_sync(0xffffffffu, p, 31);
    }
#pragma unroll
    for (int q = 0; q < BATCH; ++q) {
        float v = acc[q];
#pragma unroll
        for (int d = 16; d > 0; d >>= 1) v += __shfl_xor_sync(0xffffffffu, v, d);
        if (lane == 0) y[(long long)q * m + r] = v;
    }
}

#define ICQ_MV(BATCH)                                                                          \
    extern "C" __global__ void __launch_bounds__(ICQ_THREADS) icq_matvec_b##BATCH(              \
        const unsigned int* __restrict__ words, const float* __restrict__ inb,                 \
        const float* __restrict__ outb, const unsigned char* __restrict__ stream,              \
        const long long* __restrict__ row_bit, const float* __restrict__ x, int m, int n,      \
        int wpr, int b, int B, float* __restrict__ y) {                                        \
        icq_matvec_body<BATCH>(words, inb, outb, stream, row_bit, x, m, n, wpr, b, B, y);      \
    }

ICQ_MV(1)
ICQ_MV(2)
ICQ_MV(3)
ICQ_MV(4)
ICQ_MV(5)
ICQ_MV(6)
ICQ_MV(7)
ICQ_MV(8)
