// e8p.cu -- QuIP#'s E8P lattice codebook on the GPU: exact nearest-codeword encode, and
// the fused decode-matvec y = z @ W~^T for E8P (2 bit) and RVQ over E8P (E8P + E8P at
// 4 bit, E8P + E81B at 3 bit), W~ never materialised.
// NumPy references: quipref/quantizers/e8p.py, rvq.py (the codebook, the 16-bit code
// layout); fast/quantizers/e8p.py (the same exact search in Numba).
//
// Includes only common.cuh (typedefs, PTX helpers): compiles with bare NVRTC on CI
// (fast.cuda._compile.nvrtc_compile).
//
// 1. e8p_encode: one thread per 8-vector, float64 throughout (the reference's search is
//    float64). Every codeword is v + t, t = +-1/4, v in D8-hat with |v| in the 256
//    absolute vectors S; for y = x/scale - t and a fixed a in S the best signs are
//    sign(y), and if their minus count has the wrong parity (it must equal sum(a) mod 2)
//    one sign flips, the one with the smallest |y_i| a_i. So the nearest codeword is the
//    best of 2 x 256 candidates scored with 8 products each (fast/quantizers/e8p.py,
//    route 2), against 65,536 x 8 for the brute force. Distances are formed exactly as
//    the Numba scan does (||y||^2 - 2 dot + ||a||^2, first strict minimum, shift +1/4
//    first), so codes equal the CPU's on inputs without ties.
//    S (256 x 8 doubles), ||a||^2 and sum(a) mod 2 sit in shared memory (all threads of a
//    warp read the same a: broadcast).
//
// 2. e8p_matvec_<stage2>_<x dtype>_rg<RG>: y[b, r] = scale * sum_c z[b, c] W~[r, c]
//    (+ the second stage / resid_scale), b < 8 batch rows, on tensor cores:
//    mma.m16n8k16 with A = 16 output rows x 16 input columns of decoded fp16 weights,
//    B = z (16 columns x 8 batch rows; rows >= batch are zero), fp32 accumulation.
//    Device layout of the codes (built once per layer by fast/cuda/e8p.py):
//      codes[R][S][lane][j], uint16 -- R = row group of 16 rows, S = super group of 16
//      code columns (128 weight columns), lane = 4 g + t, j = 2 q + h (q < 4, h < 2):
//      the code of row 16 R + g + 8 h and code column 16 S + 4 q + t. One warp reads 512
//      contiguous bytes; one 16-byte load per lane gives its 8 codes; exactly 2 bits per
//      weight (zero padding to m % 16 and n % 128 only). E81B second stage: the same
//      order, uint8.
//    A thread (g, t) holds, per q, the A fragments of its two codes (rows g and g + 8,
//    code column 16 S + 4 q + t): weights w0..w7 as half2 (w0, w4), (w1, w5) for
//    k-tile 0 and (w2, w6), (w3, w7) for k-tile 1, and the B fragment of batch row g
//    with the matching columns of z. The permutation of the k index inside the mma is
//    free as long as A and B agree; all four A registers carry weights (no zero
//    padding), one mma per code.
//    E8P decode to fp16 (e8p_decode below): one 64 KB shared table of byte entries,
//    row e (256 bytes) = [abs entry of a = e, 16 copies x 8 bytes | sign entry of s = e,
//    16 copies x 8 bytes]; per code 2 prmt (table offsets) + 2 LDS.64 + 2 XOR + 4 prmt +
//    4 HSUB2. The byte abs ^ sign = 4 n' + f lands under the fp16 high byte 0x5C (the
//    binade [256, 512), ulp 1/4): h - 264 = n' - 7.5 +- 1/4 = v_i + t exactly.
//    Lane l reads copy l % 16 of a row: the 16 lanes of a half-warp LDS.64 phase cover the
//    32 banks, conflict-free (QuIP#'s replication trick). The E81B table (RVQ-3) is
//    replicated 8 times (16-byte entries, entry e of lane l at e * 8 + l % 8).
//    Work: grid-stride over tiles of RG row groups (16 RG rows, all columns); the 8
//    warps of a block split the super groups, two ping-pong stages (the codes of super
//    group S + 8 are loaded while S is decoded); partial sums meet in shared memory.
//    Arithmetic: z rounded to fp16 (|z| must stay below 65504), weights exact in fp16,
//    products exact in the fp32 accumulator, fp32 sums.
//    Launch bounds: 3 blocks per SM for rg = 1 (fp16 z, not RVQ-3), else 2 (the rg = 2
//    E8P kernel has no spill at 2 blocks; benchmarks/NOTES_matvec.md has the measured
//    choice). fast/cuda/e8p.py reads the occupancy from the driver.

#include "common.cuh"

// ------------------------------------------------------------------------------------
// encode
// ------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(128)
e8p_encode(const double* __restrict__ x, long long nvec, double scale,
           const double* __restrict__ S_g,      // (256, 8) absolute vectors
           const double* __restrict__ sq_g,     // (256,) ||S_a||^2
           const int* __restrict__ odd_g,       // (256,) sum(S_a) mod 2
           u16* __restrict__ codes) {
  __shared__ double S[256 * 8];
  __shared__ double sq[256];
  __shared__ int odd[256];
  for (int i = threadIdx.x; i < 256 * 8; i += blockDim.x) S[i] = S_g[i];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) { sq[i] = sq_g[i]; odd[i] = odd_g[i]; }
  __syncthreads();
  long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= nvec) return;
  double u[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) u[i] = x[t * 8 + i] / scale;  // as the reference: x / scale
  double best_d = 1.0 / 0.0;
  int best_a = 0, best_p = 0;
#pragma unroll 1
  for (int p = 0; p < 2; ++p) {
    const double shift = p == 0 ? 0.25 : -0.25;
    double ay[8];
    double ysq = 0.0;
    int negpar = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      double y = u[i] - shift;
      ysq += y * y;
      negpar ^= (y < 0.0) ? 1 : 0;
      ay[i] = fabs(y);
    }
#pragma unroll 2
    for (int a = 0; a < 256; ++a) {
      const double* s = S + a * 8;
      double v = ay[0] * s[0];
      double dot = v, mn = v;
#pragma unroll
      for (int i = 1; i < 8; ++i) {
        v = ay[i] * s[i];
        dot += v;
        mn = fmin(mn, v);
      }
      if (negpar != odd[a]) dot -= 2.0 * mn;
      double d = ysq - 2.0 * dot + sq[a];
      if (d < best_d) { best_d = d; best_a = a; best_p = p; }
    }
  }
  // rebuild the winner's signs: minus signs of y, one flip if the parity is wrong
  const double shift = best_p == 0 ? 0.25 : -0.25;
  const double* s = S + best_a * 8;
  int neg = 0, negpar = 0, arg = 0;
  double mnv = 1.0 / 0.0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    double y = u[i] - shift;
    if (y < 0.0) { neg |= 1 << i; negpar ^= 1; }
    double vv = fabs(y) * s[i];
    if (vv < mnv) { mnv = vv; arg = i; }
  }
  if (negpar != odd[best_a]) neg ^= 1 << arg;
  int sigma_eff = neg ^ (odd[best_a] << 7);   // relative to the base vector
  codes[t] = (u16)((best_a << 8) | (sigma_eff ^ best_p));
}

// ------------------------------------------------------------------------------------
// decode-matvec
// ------------------------------------------------------------------------------------
#define E8P_WARPS 8
#define E8P_THREADS (E8P_WARPS * 32)

// Raw PTX loads (the rest is in common.cuh). tests/emulation (QR_HOST_EMULATION) compiles
// this file as host C++ with its own versions of everything inside this #ifndef.
#ifndef QR_HOST_EMULATION
__device__ __forceinline__ uint4 ldg_nc16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ldg_nc8(const void* p) {
  uint2 v;
  asm volatile("ld.global.nc.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ float4 ldg_f4(const float* p) {
  float4 v;
  asm volatile("ld.global.nc.v4.f32 {%0,%1,%2,%3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p));
  return v;
}
#endif  // QR_HOST_EMULATION

// (w0, w4), (w1, w5), (w2, w6), (w3, w7) of one E8P code, fp16, unit codebook
struct Frag { u32 h[4]; };

// decode of one code, 12 instructions + the 2 table loads:
//   table row e (256 bytes) = [abs entry of a = e, 16 copies x 8 bytes |
//                              sign entry of s = e, 16 copies x 8 bytes];
//   abs entry: bytes 4 n_i (n_i = v_i + 7.5 of the base vector, bits 2..5) in pair order
//              (w0, w4, w1, w5 | w2, w6, w3, w7);
//   sign entry: per coordinate 0x3C if it is negated (n -> 15 - n = n ^ 0xF) | f, f = 3
//              (shift +1/4) or 1 (shift -1/4), same byte order;
//   byte b = abs ^ sign = 4 n' + f; prmt puts it under the fp16 high byte 0x5C (the
//   binade [256, 512), ulp 1/4): h = 256 + n' + f / 4, and h - 264 = n' - 7.5 +- 1/4.
//   Lane l reads copy l % 16 of a row (bytes (l % 16) * 8 [+ 128]): the 16 lanes of a
//   half-warp LDS.64 phase cover the 32 banks, conflict-free. The two byte offsets come
//   from the 32-bit code word with one prmt each: [lane offset, code byte, 0, 0].
//   lw = lane offsets (abs, sign) in bytes 0, 1; bytes 2, 3 zero. hi = code 1 of the word.
template <int HI>
__device__ __forceinline__ Frag e8p_decode(u32 word, u32 lw, const unsigned char* __restrict__ tab) {
  const u32 aoff = prmt(word, lw, HI ? 0x6634u : 0x6614u);
  const u32 soff = prmt(word, lw, HI ? 0x6625u : 0x6605u);
  const uint2 A = *reinterpret_cast<const uint2*>(tab + aoff);
  const uint2 S = *reinterpret_cast<const uint2*>(tab + soff);
  const u32 x0 = A.x ^ S.x, x1 = A.y ^ S.y;
  const u32 EXP = 0x5C5C5C5Cu, OFF = 0x5C205C20u;  // fp16 high byte of [256, 512); 264
  Frag f;
  f.h[0] = hsub2(prmt(x0, EXP, 0x4140u), OFF);   // (w0, w4)
  f.h[1] = hsub2(prmt(x0, EXP, 0x4342u), OFF);   // (w1, w5)
  f.h[2] = hsub2(prmt(x1, EXP, 0x4140u), OFF);   // (w2, w6)
  f.h[3] = hsub2(prmt(x1, EXP, 0x4342u), OFF);   // (w3, w7)
  return f;
}

// E81B entry as the same 4 half2 pairs (table of 256 x 4 words, 8x replicated)
__device__ __forceinline__ Frag e81b_decode16(u32 code, const uint4* __restrict__ tabr, int lane) {
  uint4 v = tabr[code * 8 + (lane & 7)];
  Frag f;
  f.h[0] = v.x; f.h[1] = v.y; f.h[2] = v.z; f.h[3] = v.w;
  return f;
}

// z[g][8c .. 8c+8) as the fragment pairs (z0, z4), (z1, z5), (z2, z6), (z3, z7):
// load() issues the global load (raw registers), frag() permutes / converts at the use
template <typename XT> struct ZLoad;
template <> struct ZLoad<u16> {
  struct Raw { uint4 v; };
  static __device__ __forceinline__ Raw load(const u16* row, long long c) { return {ldg_nc16(row + 8 * c)}; }
  static __device__ __forceinline__ Raw load_at(const u16* p) { return {ldg_nc16(p)}; }
  static __device__ __forceinline__ Raw zero() { return {make_uint4(0u, 0u, 0u, 0u)}; }
  static __device__ __forceinline__ Frag frag(const Raw& r) {
    Frag f;
    f.h[0] = prmt(r.v.x, r.v.z, 0x5410u);
    f.h[1] = prmt(r.v.x, r.v.z, 0x7632u);
    f.h[2] = prmt(r.v.y, r.v.w, 0x5410u);
    f.h[3] = prmt(r.v.y, r.v.w, 0x7632u);
    return f;
  }
};
template <> struct ZLoad<float> {
  struct Raw { float4 lo, hi; };
  static __device__ __forceinline__ Raw load(const float* row, long long c) {
    return {ldg_f4(row + 8 * c), ldg_f4(row + 8 * c + 4)};
  }
  static __device__ __forceinline__ Raw load_at(const float* p) { return {ldg_f4(p), ldg_f4(p + 4)}; }
  static __device__ __forceinline__ Raw zero() {
    return {make_float4(0.f, 0.f, 0.f, 0.f), make_float4(0.f, 0.f, 0.f, 0.f)};
  }
  static __device__ __forceinline__ Frag frag(const Raw& r) {
    Frag f;
    f.h[0] = pack_f16x2(r.lo.x, r.hi.x);
    f.h[1] = pack_f16x2(r.lo.y, r.hi.y);
    f.h[2] = pack_f16x2(r.lo.z, r.hi.z);
    f.h[3] = pack_f16x2(r.lo.w, r.hi.w);
    return f;
  }
};

// STAGE2: 0 = E8P alone (2 bit), 1 = + E8P (RVQ 4 bit), 2 = + E81B (RVQ 3 bit)
template <int STAGE2, typename XT, int RG>
__device__ __forceinline__ void e8p_matvec_body(
    const uint4* __restrict__ codes1, const void* __restrict__ codes2,
    const XT* __restrict__ z, long long ldz, float* __restrict__ y, long long ldy,
    int m, int n, int R, int NS, int batch, float scale, float rinv,
    const uint4* __restrict__ tab_g, const uint4* __restrict__ e81b_g) {
  extern __shared__ __align__(16) unsigned char smem[];
  // Replicated tables, conflict-free: a 4-byte load serves 32 lanes per cycle (32 copies),
  // an 8-byte load 16 lanes (16 copies), a 16-byte load 8 lanes (8 copies).
  float* red = reinterpret_cast<float*>(smem + 65536);            // 8 warps x RG x 128, <= 8 KB
  uint4* e81r = reinterpret_cast<uint4*>(smem + 65536 + E8P_WARPS * 2 * 128 * 4);  // 256 x 8, 32 KB
  // 256 rows x 64 words: tab_g is the compact (256, 4) table (abs.x, abs.y, sign.x, sign.y)
  // thread e (256 threads = 256 rows) loads its row's compact entry once (one load round)
  // and writes the row: 8 x (abs.x, abs.y, abs.x, abs.y), 8 x (sign.x, sign.y, ...), 16-byte
  // chunks in the lane-rotated order c = (i + lane) % 16 (the 8 lanes of a store phase hit
  // 8 different bank quads)
  static_assert(E8P_THREADS == 256, "one table row per thread");
  {
    uint4* tab4 = reinterpret_cast<uint4*>(smem);
    const uint4 v = tab_g[threadIdx.x];
    const int ln = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int c = (i + ln) & 15;
      tab4[threadIdx.x * 16 + c] = c < 8 ? make_uint4(v.x, v.y, v.x, v.y) : make_uint4(v.z, v.w, v.z, v.w);
    }
  }
  const unsigned char* tab = smem;
  if (STAGE2 == 2)
    for (int i = threadIdx.x; i < 256 * 8; i += E8P_THREADS) e81r[i] = e81b_g[i >> 3];
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const u32 lw = (u32)((lane & 15) * 8) | ((u32)(128 + (lane & 15) * 8) << 8);
  const int ncodes = n >> 3;                 // code columns actually present
  const int tiles = (R + RG - 1) / RG;
  constexpr int NACC = STAGE2 ? 2 : 1;

  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    float acc[NACC][RG][4];
#pragma unroll
    for (int s2 = 0; s2 < NACC; ++s2)
#pragma unroll
      for (int r = 0; r < RG; ++r)
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[s2][r][k] = 0.f;
    const int r0 = tile * RG;

    // Two stages (ping-pong: no register copies): the codes of super group S + 8 are
    // loaded while S is decoded; z is loaded per super group at its use.
    using ZR = typename ZLoad<XT>::Raw;
    struct Stage {
      uint4 c1[RG];
      uint4 c2v[STAGE2 == 1 ? RG : 1];
      uint2 c2b[STAGE2 == 2 ? RG : 1];
    };
    // per-tile bases, so that a stage only adds S. z: batch row g (a padding batch row
    // g >= batch reads row 0: its products only reach output columns that are never
    // stored), code column t of the super group; codes of row group r at
    // (rg_r NS + S) 32 + lane in uint4 units, 32-bit (rows beyond R clamped: not stored)
    const XT* zbase = z + 8 * t + (g < batch ? (long long)g * ldz : 0);
    const u32 cb0 = (u32)(r0 < R ? r0 : R - 1) * (u32)NS * 32u + (u32)lane;
    const u32 cstep = RG == 2 ? (u32)((r0 + 1 < R ? r0 + 1 : R - 1) - (r0 < R ? r0 : R - 1)) * (u32)NS * 32u : 0u;
    auto load_z = [&](int S, ZR* zz) {
      const XT* zs = zbase + 128 * S;           // one pointer, immediate offsets per q
      if (16 * S + 16 <= ncodes) {              // warp-uniform: a whole super group
#pragma unroll
        for (int q = 0; q < 4; ++q) zz[q] = ZLoad<XT>::load_at(zs + 32 * q);
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q)
          zz[q] = 16 * S + 4 * q + t < ncodes ? ZLoad<XT>::load_at(zs + 32 * q) : ZLoad<XT>::zero();
      }
    };
    auto load = [&](int S, Stage& st) {
      const u32 off = cb0 + 32u * (u32)S;
#pragma unroll
      for (int r = 0; r < RG; ++r) {
        const u32 o = off + (r ? cstep : 0u);
        st.c1[r] = ldg_nc16(codes1 + o);
        if (STAGE2 == 1) st.c2v[r] = ldg_nc16(reinterpret_cast<const uint4*>(codes2) + o);
        if (STAGE2 == 2) st.c2b[r] = ldg_nc8(reinterpret_cast<const uint2*>(codes2) + o);
      }
    };
    auto compute = [&](int S, const Stage& st) {
      Frag zf[4];
      {
        ZR zl[4];
        load_z(S, zl);
#pragma unroll
        for (int q = 0; q < 4; ++q) zf[q] = ZLoad<XT>::frag(zl[q]);
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const Frag& b = zf[q];
#pragma unroll
        for (int r = 0; r < RG; ++r) {
          const uint4& cw = st.c1[r];
          const u32 pair = q == 0 ? cw.x : q == 1 ? cw.y : q == 2 ? cw.z : cw.w;
          Frag w0 = e8p_decode<0>(pair, lw, tab);                  // row g
          Frag w1 = e8p_decode<1>(pair, lw, tab);                  // row g + 8
          mma16816(acc[0][r], w0.h[0], w1.h[0], w0.h[1], w1.h[1], b.h[0], b.h[1]);
          mma16816(acc[0][r], w0.h[2], w1.h[2], w0.h[3], w1.h[3], b.h[2], b.h[3]);
          if (STAGE2 == 1) {
            const uint4& cv = st.c2v[STAGE2 == 1 ? r : 0];
            const u32 p2 = q == 0 ? cv.x : q == 1 ? cv.y : q == 2 ? cv.z : cv.w;
            Frag v0 = e8p_decode<0>(p2, lw, tab);
            Frag v1 = e8p_decode<1>(p2, lw, tab);
            mma16816(acc[1][r], v0.h[0], v1.h[0], v0.h[1], v1.h[1], b.h[0], b.h[1]);
            mma16816(acc[1][r], v0.h[2], v1.h[2], v0.h[3], v1.h[3], b.h[2], b.h[3]);
          }
          if (STAGE2 == 2) {
            const uint2& cb = st.c2b[STAGE2 == 2 ? r : 0];
            const u32 p2 = q < 2 ? cb.x : cb.y;   // bytes j = 2q, 2q + 1
            const int sh = 16 * (q & 1);
            Frag v0 = e81b_decode16((p2 >> sh) & 0xFFu, e81r, lane);
            Frag v1 = e81b_decode16((p2 >> (sh + 8)) & 0xFFu, e81r, lane);
            mma16816(acc[1][r], v0.h[0], v1.h[0], v0.h[1], v1.h[1], b.h[0], b.h[1]);
            mma16816(acc[1][r], v0.h[2], v1.h[2], v0.h[3], v1.h[3], b.h[2], b.h[3]);
          }
        }
      }
    };
    Stage A, B;
    if (warp < NS) load(warp, A);
#pragma unroll 1
    for (int S = warp; S < NS; S += 2 * E8P_WARPS) {
      const int S1 = S + E8P_WARPS;
      if (S1 < NS) load(S1, B);
      compute(S, A);
      if (S1 >= NS) break;
      if (S1 + E8P_WARPS < NS) load(S1 + E8P_WARPS, A);
      compute(S1, B);
    }
    // combine the 8 warps: acc[.][r] = C[row g | g + 8][batch 2t, 2t + 1] of row group r0 + r
#pragma unroll
    for (int r = 0; r < RG; ++r) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        float v = acc[0][r][k];
        if (STAGE2) v += rinv * acc[1][r][k];
        const int row = g + 8 * (k >> 1), bb = 2 * t + (k & 1);
        red[((warp * RG + r) * 16 + row) * 8 + bb] = v;
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < RG * 128; i += E8P_THREADS) {
      const int r = i >> 7, row = (i >> 3) & 15, bb = i & 7;
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < E8P_WARPS; ++w) s += red[((w * RG + r) * 16 + row) * 8 + bb];
      const int orow = 16 * (r0 + r) + row;
      if (bb < batch && orow < m) y[(long long)bb * ldy + orow] = scale * s;
    }
    __syncthreads();
  }
}

// blocks per multiprocessor the register allocation must allow: 3 for one-row-group
// tiles with fp16 z (not RVQ-3), else 2
#define E8P_MIN_BLOCKS(STAGE2, ZBYTES, RG) ((RG == 1 && STAGE2 != 2 && ZBYTES == 2) ? 3 : 2)
#define E8P_MATVEC(NAME, STAGE2, XT, RG)                                                  \
  extern "C" __global__ void __launch_bounds__(                                          \
      E8P_THREADS, E8P_MIN_BLOCKS(STAGE2, sizeof(XT), RG)) NAME(                           \
      const uint4* __restrict__ codes1, const void* __restrict__ codes2,                  \
      const XT* __restrict__ z, long long ldz, float* __restrict__ y, long long ldy,      \
      int m, int n, int R, int NS, int batch, float scale, float rinv,                    \
      const uint4* __restrict__ tab_g, const uint4* __restrict__ e81b_g) {                \
    e8p_matvec_body<STAGE2, XT, RG>(codes1, codes2, z, ldz, y, ldy, m, n, R, NS, batch,   \
                                    scale, rinv, tab_g, e81b_g);                   \
  }

E8P_MATVEC(e8p_matvec_e8p_h_rg1, 0, u16, 1)
E8P_MATVEC(e8p_matvec_e8p_h_rg2, 0, u16, 2)
E8P_MATVEC(e8p_matvec_e8p_f_rg1, 0, float, 1)
E8P_MATVEC(e8p_matvec_e8p_f_rg2, 0, float, 2)
E8P_MATVEC(e8p_matvec_rvq4_h_rg1, 1, u16, 1)
E8P_MATVEC(e8p_matvec_rvq4_h_rg2, 1, u16, 2)
E8P_MATVEC(e8p_matvec_rvq4_f_rg1, 1, float, 1)
E8P_MATVEC(e8p_matvec_rvq4_f_rg2, 1, float, 2)
E8P_MATVEC(e8p_matvec_rvq3_h_rg1, 2, u16, 1)
E8P_MATVEC(e8p_matvec_rvq3_h_rg2, 2, u16, 2)
E8P_MATVEC(e8p_matvec_rvq3_f_rg1, 2, float, 1)
E8P_MATVEC(e8p_matvec_rvq3_f_rg2, 2, float, 2)
