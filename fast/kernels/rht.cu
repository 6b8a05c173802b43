// rht.cu -- orthonormal Hadamard transform G_n = (H_K (x) H_p) / sqrt(n) and the
// randomized Hadamard transform (RHT) y = G_n (s .* x)  /  y = s .* (G_n^T x), applied
// to every row of a row-major (rows, n) array. n = K * p, p = 2^k, K = 1 or a base size
// (12, 20, ..., 172); the K-block is the MAJOR index (row = K sub-rows of length p).
// NumPy reference: quipref/hadamard.py (same math, float64).
//
// Includes only common.cuh: half and bfloat16 are handled as raw 16-bit patterns with PTX
// cvt, so the file compiles with bare NVRTC (fast.cuda._compile.nvrtc_compile, CI, no GPU).
// Arithmetic is float32 for fp16/fp32 data and float64 for fp64 data.
//
// Kernels (all `extern "C"`, instantiated by macros at the bottom; which ones a build
// contains is chosen with -D options, see "Build units" below and
// fast/cuda/hadamard.py:builds()):
//
// 1. rht_pow2_<io>_<logn>   (K = 1, n = 2^logn <= 2^15; also pass 1 of the multi-pass path)
//    Values live in registers. A thread holds C chunks of E = 8 consecutive elements
//    (16-byte loads for fp16), the element index bits are [c | warp | lane | e]:
//      e and c bits: butterflies inside the thread;
//      lane bits:    __shfl_xor_sync butterflies (5 stages);
//      warp bits:    one shared-memory exchange (swizzled, conflict-free) after which a
//                    thread holds all W values of the warp bits, butterflies, store.
//    n <= 256: several rows per warp (n/8 lanes per row), 4 warps per block.
//    n >= 512: W = 2^ceil((logn-8)/2) warps per row, C = n/(256 W) chunks per thread
//    (W = C or 2C; e.g. 4096: 4 warps x 32 values, 8192: 8 warps x 32 values).
//    Launch: grid = ceil(rows / rows_per_block), block = 32 * warps, dynamic smem =
//    rows_per_block * n * sizeof(acc) when W > 1.
//    Bytes: n * (in + out) per row, plus the sign vector (n * 4 B, L1/L2 resident).
//    Signs (optional) flip before (mode 1) or after (mode 2) the transform; the sign of
//    element i of sub-row r (multi-pass) is bit (r % sign_mod) * n + i. The mode is a
//    run-time argument dispatched once to compile-time instantiations (a run-time test
//    left the unused sign code predicated into every element: fp16 8192 spent 45
//    instructions per element), and every load of a thread -- data, then sign words --
//    is issued before the first use (fp32 8192 with signs: 463 -> 380 us).
//    fp16 n = 4096, 8192 use the shuffle-free variant 1b (pow2t_body): two shared-memory
//    transposes instead of the lane shuffles, ~22 instructions per element.
//
//    Signs everywhere are PACKED BITS (uint32 words, bit i set = element i negated):
//    n/8 bytes per row from L1/L2 instead of 4n for a float vector -- with fp16 data a
//    float sign vector is twice the bytes of the row it multiplies (measured: fused
//    28*512 fp16 went from 477 us without signs to 680 us with float signs).
//
// 2. rht_fused_<t>_p<logp>   (K > 1 run-time argument, fp16 / fp32, 2^4 <= p <= 2^11,
//    one row per block)
//    Uses (H_K (x) H_p) = (I (x) H_p)(H_K (x) I): the K-stage runs FIRST, on the raw
//    input, on tensor cores, then the FWHT of length p in fp32:
//      load:   the row (times the forward signs) goes to shared memory as 16-bit planes
//              B[b][j] (b < K sub-row, j < p column; rows K..16*ceil(K/16)-1 zero):
//              fp16 input = 1 plane, exact; fp32 input = 3 bf16 planes hi + mid + lo
//              whose sum is the fp32 value exactly (8 + 8 + 8 significand bits).
//      K-stage: a warp unit (16-row m-tile, range of <= 16 n-tiles of 8 columns)
//              computes Y = H_K B with mma.m16n8k16 (A = H_K or H_K^T as +-1 fp16/bf16
//              zero-padded to 16*ceil(K/16), read per k-tile from global memory, i.e.
//              L1, as packed sign bits, see fused_a_frag; B via ldmatrix.trans;
//              fp32 accumulation). Products are exact; only the fp32 accumulation
//              rounds.
//      FWHT:   on the accumulator fragments: column bit 0 in-thread, bits 1-2 by
//              shuffles, bits 3.. across the warp's n-tiles in-thread; the top bits
//              (column ranges of different warps) after a round trip through shared
//              memory (fp32), fused with the scale, inverse signs and the store.
//    Launch: grid = rows, block = 32 * min(units, 16), dynamic smem = see FusedRt
//    (e.g. 56 KB for 28*512 fp16, 48 KB for 172*64 fp16, 97 / 74 KB in fp32); the
//    kernels take nrows (a block with blockIdx.x >= nrows returns).
//    Bytes: n * (in + out) per row; H_K (<= 16 KB of sign bits) and the sign vector stay
//    in L1/L2.
//    Arithmetic: K_pad*p*K_pad*2 tensor-core flops per row (x3 for fp32), i.e. for
//    K = 172 about 2*176 flops per element: ~0.1 ms of mma for 16384 x 11008 fp16,
//    against ~0.25 ms to stream the bytes -- on CUDA cores (K adds per element) it
//    would be ~1 ms, which is why the K-stage uses the tensor cores.
//
// 3. rht_cols_<io>   (multi-pass fallback: fp64, sizes beyond the fused/register paths)
//    Applies a K' x K' +-1 matrix (int8, row-major, out x in) along the middle axis of
//    an (outer, K', stride) view: a block stages a K' x 32 column tile in shared
//    memory and each thread forms K' sums of +-tile values (K'^2 adds per 32 columns).
//    In-place safe (a block reads exactly what it writes). Used for H_K at stride p and
//    for Sylvester factors H_{2^a} when p itself exceeds the register kernel.
//    Launch: grid = outer * ceil(stride/32), block = (32, 8), dynamic smem =
//    K'*32*sizeof(acc) + K'^2.  Bytes: one extra read + write of the tensor per pass.
//
// Build units (one NVRTC compilation each; fast/cuda/hadamard.py:builds() lists them
// and tests/test_cuda_compile.py compiles exactly that list):
//   (no option)                 every kernel below
//   -DRHT_POW2=1|2|3|4          pow2 kernels for fp16->fp16 | fp32->fp32 | fp64->fp64 |
//                               fp16->fp32 (the last: pass 1 of the fp16 multi-pass path)
//   -DRHT_COLS=1                cols kernels (hh, hf, fh, ff, dd)
//   -DRHT_FUSED=1|2             fused kernels, fp16 | fp32, logp = 4..11

// ------------------------------------------------------------------------------------
// Scalar types and conversions
// ------------------------------------------------------------------------------------

#include "common.cuh"

struct f16 {};  // tag: IEEE half stored as u16

template <class T> struct Tr;
template <> struct Tr<f16> { typedef u16 S; typedef float A; static constexpr int SZ = 2; };
template <> struct Tr<float> { typedef float S; typedef float A; static constexpr int SZ = 4; };
template <> struct Tr<double> { typedef double S; typedef double A; static constexpr int SZ = 8; };

__device__ __forceinline__ float bf2f(u16 h) { return __uint_as_float(((u32)h) << 16); }

// storage <-> accumulator
template <class T> __device__ __forceinline__ typename Tr<T>::A to_acc(typename Tr<T>::S v) { return v; }
template <> __device__ __forceinline__ float to_acc<f16>(u16 v) { return h2f(v); }
template <class T> __device__ __forceinline__ typename Tr<T>::S from_acc(typename Tr<T>::A v) { return v; }
template <> __device__ __forceinline__ u16 from_acc<f16>(float v) { return f2h(v); }
// cross-type store (pass 1 of the multi-pass path writes fp32 from fp16 input)
template <class TO, class A> __device__ __forceinline__ typename Tr<TO>::S cvt_out(A v) {
  return from_acc<TO>((typename Tr<TO>::A)v);
}

#ifndef QR_HOST_EMULATION  // tests/emulation/rht_host_driver.cpp supplies these
// 16-byte read-only global load (input rows are read exactly once)
__device__ __forceinline__ uint4 ldg16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ void stg16(void* p, uint4 v) {
  asm volatile("st.global.v4.u32 [%0], {%1,%2,%3,%4};" :: "l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}
#endif  // QR_HOST_EMULATION

// ------------------------------------------------------------------------------------
// Vector load / store of E consecutive elements into accumulator registers
// (E * sizeof >= 8 bytes and aligned: 8- or 16-byte instructions; else element-wise)
// ------------------------------------------------------------------------------------

template <class T, int E>
__device__ __forceinline__ void load_vec(const typename Tr<T>::S* p, typename Tr<T>::A* v) {
  typedef typename Tr<T>::A A;
  constexpr int BYTES = E * Tr<T>::SZ;
  if constexpr (BYTES >= 16) {
    constexpr int NP = BYTES / 16;
    uint4 q[NP];
#pragma unroll
    for (int k = 0; k < NP; ++k) q[k] = ldg16(reinterpret_cast<const char*>(p) + 16 * k);
    if constexpr (Tr<T>::SZ == 2) {
#pragma unroll
      for (int k = 0; k < NP; ++k) {
        const u32 w[4] = {q[k].x, q[k].y, q[k].z, q[k].w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          v[8 * k + 2 * i] = h2f((u16)(w[i] & 0xffffu));
          v[8 * k + 2 * i + 1] = h2f((u16)(w[i] >> 16));
        }
      }
    } else {
      const A* a = reinterpret_cast<const A*>(q);
#pragma unroll
      for (int k = 0; k < E; ++k) v[k] = a[k];
    }
  } else if constexpr (BYTES == 8 && Tr<T>::SZ == 2) {
    const uint2 q = *reinterpret_cast<const uint2*>(p);
    v[0] = h2f((u16)(q.x & 0xffffu)); v[1] = h2f((u16)(q.x >> 16));
    v[2] = h2f((u16)(q.y & 0xffffu)); v[3] = h2f((u16)(q.y >> 16));
  } else {
#pragma unroll
    for (int k = 0; k < E; ++k) v[k] = to_acc<T>(p[k]);
  }
}

template <class TO, int E, class A>
__device__ __forceinline__ void store_vec(typename Tr<TO>::S* p, const A* v) {
  constexpr int BYTES = E * Tr<TO>::SZ;
  if constexpr (BYTES >= 16) {
    constexpr int NP = BYTES / 16;
    uint4 q[NP];
    if constexpr (Tr<TO>::SZ == 2) {
#pragma unroll
      for (int k = 0; k < NP; ++k) {
        u32 w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
          w[i] = (u32)f2h((float)v[8 * k + 2 * i]) | ((u32)f2h((float)v[8 * k + 2 * i + 1]) << 16);
        q[k] = make_uint4(w[0], w[1], w[2], w[3]);
      }
    } else {
      typedef typename Tr<TO>::A AO;
      AO* a = reinterpret_cast<AO*>(q);
#pragma unroll
      for (int k = 0; k < E; ++k) a[k] = (AO)v[k];
    }
#pragma unroll
    for (int k = 0; k < NP; ++k) stg16(reinterpret_cast<char*>(p) + 16 * k, q[k]);
  } else if constexpr (BYTES == 8 && Tr<TO>::SZ == 2) {
    *reinterpret_cast<uint2*>(p) =
        make_uint2((u32)f2h((float)v[0]) | ((u32)f2h((float)v[1]) << 16),
                   (u32)f2h((float)v[2]) | ((u32)f2h((float)v[3]) << 16));
  } else {
#pragma unroll
    for (int k = 0; k < E; ++k) p[k] = cvt_out<TO>(v[k]);
  }
}

// Signs are packed bits: element i is negated when bit (i & 31) of word i >> 5 is set
// (n / 8 bytes per row instead of 4 n for a float vector). E consecutive elements from
// index i, with i a multiple of E and E dividing 32.
template <int E, class A>
__device__ __forceinline__ void apply_signs(A* v, const u32* __restrict__ bits, long long i) {
  const u32 m = __ldg(bits + (i >> 5)) >> (u32)(i & 31);
#pragma unroll
  for (int k = 0; k < E; ++k) v[k] = ((m >> k) & 1u) ? -v[k] : v[k];
}
__device__ __forceinline__ bool sign_bit(const u32* __restrict__ bits, long long i) {
  return (__ldg(bits + (i >> 5)) >> (u32)(i & 31)) & 1u;
}
// Split form of apply_signs: fetch the word first (all of a thread's words are issued
// before any is used, so that the sign loads never serialise the data loads), flip later.
__device__ __forceinline__ u32 sign_word(const u32* __restrict__ bits, long long i) {
  return __ldg(bits + (i >> 5)) >> (u32)(i & 31);
}
template <int E, class A>
__device__ __forceinline__ void flip_bits(A* v, u32 m) {
#pragma unroll
  for (int k = 0; k < E; ++k) v[k] = ((m >> k) & 1u) ? -v[k] : v[k];
}

// row % sign_mod without a 64-bit division in the common cases (sign_mod = 1: one launch)
__device__ __forceinline__ long long row_mod(long long row, int m) {
  if (m == 1) return 0;
  return row < 0x7fffffffLL ? (long long)((int)row % m) : row % m;
}

// In-register FWHT (unnormalised, natural order) of a flat array of 2^LOG values.
template <int LOG, class A>
__device__ __forceinline__ void fwht_regs(A* v) {
#pragma unroll
  for (int h = 0; h < LOG; ++h) {
#pragma unroll
    for (int i = 0; i < (1 << LOG); ++i) {
      if (!(i & (1 << h))) {
        const A a = v[i], b = v[i | (1 << h)];
        v[i] = a + b;
        v[i | (1 << h)] = a - b;
      }
    }
  }
}

// FWHT over the group index of 2^LOG groups of GS consecutive values (v[g * GS + e]).
template <int LOG, int GS, class A>
__device__ __forceinline__ void fwht_regs_groups(A* v) {
#pragma unroll
  for (int h = 0; h < LOG; ++h) {
#pragma unroll
    for (int g = 0; g < (1 << LOG); ++g) {
      if (!(g & (1 << h))) {
#pragma unroll
        for (int e = 0; e < GS; ++e) {
          const A a = v[g * GS + e], b = v[(g | (1 << h)) * GS + e];
          v[g * GS + e] = a + b;
          v[(g | (1 << h)) * GS + e] = a - b;
        }
      }
    }
  }
}

// Butterfly with the partner lane (lane ^ m): lower lane keeps a + b, upper b' = a - b,
// as one FMA: sg * v + u with sg = -1 on the upper lane (exact product, one rounding).
template <class A>
__device__ __forceinline__ A shfl_bfly(A v, int m, int lane) {
  const A u = __shfl_xor_sync(0xffffffffu, v, m);
  const A sg = (lane & m) ? A(-1) : A(1);
  return sg * v + u;
}

// ------------------------------------------------------------------------------------
// 1. Power-of-two FWHT in registers
// ------------------------------------------------------------------------------------

template <int LOGN>
struct Pow2Cfg {
  static constexpr int N = 1 << LOGN;
  static constexpr int LOGE = LOGN < 3 ? LOGN : 3;
  static constexpr int E = 1 << LOGE;
  static constexpr int REM = LOGN - LOGE;
  static constexpr bool SMALL = REM <= 5;                  // one row within a warp
  static constexpr int LOGL = SMALL ? REM : 5;             // lane bits of a row
  static constexpr int LOGW = SMALL ? 0 : (REM - 4) / 2;   // warp bits: ceil((REM-5)/2)
  static constexpr int LOGC = SMALL ? 0 : (REM - 5) - LOGW;  // chunk bits: W = C or 2C
  static constexpr int W = 1 << LOGW, C = 1 << LOGC;
  static constexpr int LOGG = 3 - (LOGW - LOGC);           // after the exchange: G = 8C/W
  static constexpr int G = 1 << LOGG;                      // consecutive elements per slot
  static constexpr int WARPS = SMALL ? 4 : (W >= 4 ? W : 4);
  static constexpr int RB = SMALL ? 4 * (32 >> LOGL) : WARPS / W;  // rows per block
  static constexpr int THREADS = 32 * WARPS;
};

// MODE (compile time, see pow2_entry): 0 no signs, 1 signs on the input, 2 on the output.
template <class T, class TO, int LOGN, int MODE>
__device__ __forceinline__ void pow2_body(const typename Tr<T>::S* __restrict__ x,
                                          typename Tr<TO>::S* __restrict__ y, long long nrows,
                                          const u32* __restrict__ sbits, int sign_mod,
                                          typename Tr<T>::A scale) {
  typedef Pow2Cfg<LOGN> Cf;
  typedef typename Tr<T>::A A;
  constexpr int N = Cf::N, E = Cf::E, C = Cf::C, W = Cf::W, LOGW = Cf::LOGW, LOGC = Cf::LOGC;
  constexpr int LANES = 1 << Cf::LOGL;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (blockDim.x != Cf::THREADS) __trap();

  long long row;
  int lr, w, rg;
  if constexpr (Cf::SMALL) {
    rg = 0;
    w = 0;
    lr = lane & (LANES - 1);
    row = (long long)blockIdx.x * Cf::RB + warp * (32 >> Cf::LOGL) + (lane >> Cf::LOGL);
  } else {
    rg = warp >> LOGW;
    w = warp & (W - 1);
    lr = lane;
    row = (long long)blockIdx.x * Cf::RB + rg;
  }
  const bool active = row < nrows;
  const typename Tr<T>::S* xr = x + row * N;
  const long long sbase = (active ? row_mod(row, sign_mod) : 0) * N;  // sign index base

  // every load of the thread (data, then sign words) is issued before the first use:
  // a per-chunk branch or sign test between them serialised the chunk loads (fp32
  // 8192 with signs: 463 us against 391 us without)
  A v[C * E];
  if (active) {
#pragma unroll
    for (int c = 0; c < C; ++c) load_vec<T, E>(xr + ((c * W + w) * LANES + lr) * E, v + c * E);
    if constexpr (MODE == 1) {
      u32 sw[C];
#pragma unroll
      for (int c = 0; c < C; ++c) sw[c] = sign_word(sbits, sbase + ((c * W + w) * LANES + lr) * E);
#pragma unroll
      for (int c = 0; c < C; ++c) flip_bits<E>(v + c * E, sw[c]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < C * E; ++i) v[i] = A(0);
  }
  fwht_regs<LOGC + Cf::LOGE>(v);  // e bits and c bits
#pragma unroll
  for (int m = 1; m < LANES; m <<= 1) {
#pragma unroll
    for (int i = 0; i < C * E; ++i) v[i] = shfl_bfly(v[i], m, lane);
  }

  if constexpr (Cf::SMALL) {
    if (!active) return;
    typename Tr<TO>::S* yr = y + row * N;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int off = ((c * W + w) * LANES + lr) * E;
#pragma unroll
      for (int e = 0; e < E; ++e) v[c * E + e] *= scale;
      if constexpr (MODE == 2) apply_signs<E>(v + c * E, sbits, sbase + off);
      store_vec<TO, E>(yr + off, v + c * E);
    }
  } else {
    // Exchange through shared memory so that a thread holds all W values of the warp
    // bits. Chunk (c, w, L) (8 elements) is stored at ((c*W + w)*32 + L)*8 as NP 16-byte
    // parts whose order is rotated by L, so that the 32- or 64-byte-strided accesses are
    // bank-conflict free. Afterwards thread (w, lane) owns, for every w2 < W, elements
    // h*G .. h*G+G-1 of chunk (cR, w2, L), G = 8C/W:
    //   W == C:  L = lane, h = 0, cR = w (whole chunks);
    //   W == 2C: L = (lane >> 1) | ((w & 1) << 4), h = lane & 1, cR = w >> 1, so the two
    //            halves of a chunk sit in adjacent lanes and every store instruction
    //            writes whole 32-byte sectors (8-byte halves from different warps
    //            halved the fp16 bandwidth at n = 8192).
    extern __shared__ __align__(16) unsigned char smem_raw[];
    if (dyn_smem_size() < (u32)(Cf::RB * N * sizeof(A))) __trap();
    A* buf = reinterpret_cast<A*>(smem_raw) + rg * N;
    constexpr int NP = 8 * (int)sizeof(A) / 16;   // 16-byte parts per chunk (2 or 4)
    constexpr int EP = 8 / NP;                    // elements per part
    constexpr int RSH = NP == 2 ? 2 : 1;
    {
      const int rot = (lane >> RSH) & (NP - 1);
#pragma unroll
      for (int c = 0; c < C; ++c) {
        A* dst = buf + ((c * W + w) * 32 + lane) * 8;
#pragma unroll
        for (int k = 0; k < NP; ++k) {
          A* d = dst + ((k + rot) & (NP - 1)) * EP;
          *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(v + c * 8 + k * EP);
        }
      }
    }
    __syncthreads();
    constexpr bool SPLIT = LOGW > LOGC;
    constexpr int GP = Cf::G / EP;                // parts per slot
    const int L = SPLIT ? ((lane >> 1) | ((w & 1) << 4)) : lane;
    const int hh = SPLIT ? (lane & 1) : 0;
    const int cR = w >> (LOGW - LOGC);
    const int rotL = (L >> RSH) & (NP - 1);       // the rotation its writer used
#pragma unroll
    for (int s = 0; s < W; ++s) {
      const A* src = buf + ((cR * W + s) * 32 + L) * 8;
#pragma unroll
      for (int k = 0; k < GP; ++k) {
        const int lp = hh * GP + k;
        const A* q = src + ((lp + rotL) & (NP - 1)) * EP;
        *reinterpret_cast<uint4*>(v + s * Cf::G + k * EP) = *reinterpret_cast<const uint4*>(q);
      }
    }
    u32 sw2[W];  // output sign words, fetched before the butterflies that precede their use
    if constexpr (MODE == 2) {
      if (active) {
#pragma unroll
        for (int s = 0; s < W; ++s) sw2[s] = sign_word(sbits, sbase + ((cR * W + s) * 32 + L) * 8 + hh * Cf::G);
      }
    }
    fwht_regs_groups<LOGW, Cf::G>(v);  // the warp bits: slot index s
    if (!active) return;
    typename Tr<TO>::S* yr = y + row * N;
#pragma unroll
    for (int s = 0; s < W; ++s) {
      const int off = ((cR * W + s) * 32 + L) * 8 + hh * Cf::G;
#pragma unroll
      for (int e = 0; e < Cf::G; ++e) v[s * Cf::G + e] *= scale;
      if constexpr (MODE == 2) flip_bits<Cf::G>(v + s * Cf::G, sw2[s]);
      store_vec<TO, Cf::G>(yr + off, v + s * Cf::G);
    }
  }
}

// 1b. Power-of-two FWHT with two shared-memory transposes instead of shuffles ("T2"):
//    fp16 -> fp16, n = 2^12, 2^13 (where the shuffle version was issue bound: 35 and 45
//    instructions per element, 75 % / 58 % of copy speed). One row per block of W =
//    n / 1024 warps; every thread holds 32 values. With element bits i = [c:2 | w | L:5 |
//    e:3] (c = top two bits, w = warp, L = lane, e = 8 consecutive elements):
//      A: thread (w, L) loads the 4 chunks c (16-byte loads, 512 contiguous bytes per warp
//         instruction), FWHT over (c, e) in registers, writes them to its warp's region;
//      B: (__syncwarp) lane (c, e) reads the 32 values of L, FWHT over L, writes them back
//         to the same addresses (no other lane reads them: no barrier needed);
//      C: (__syncthreads) thread t holds the W values of w for G = 32 / W consecutive
//         elements [c | (t << log2 G) mod 256 .. + G), FWHT over w, scale, store: each
//         store instruction of a warp writes 32 G contiguous elements (whole sectors).
//    Warp region: 4 rows (c) of 264 floats (256 + 8: phase B's lanes (c, e) hit 32
//    distinct banks), element (c, L, e) at c*264 + 8L + (e ^ 4*bit2(L)) (the half swap
//    makes A's and C's 16-byte accesses conflict-free). 16 bytes of shared memory traffic
//    per element and no shuffles (the shuffle version: 28 bytes of MIO per element).
//    Instructions per element: 12-13 FADD, 1 convert in, 1/2 convert out, 1 scale, signs
//    (FSEL), ~2.5 shared-memory instructions. smem = W * 4224 bytes.
template <class TI, class TO, int LOGN>
struct UseT2 {
  static constexpr bool value = Tr<TI>::SZ == 2 && Tr<TO>::SZ == 2 && LOGN >= 12 && LOGN <= 13;
};

template <class T, class TO, int LOGN, int MODE>
__device__ __forceinline__ void pow2t_body(const typename Tr<T>::S* __restrict__ x,
                                           typename Tr<TO>::S* __restrict__ y, long long nrows,
                                           const u32* __restrict__ sbits, int sign_mod, float scale) {
  static_assert(LOGN >= 12 && LOGN <= 15, "T2 layout: W = n / 1024 warps, G = 32 / W <= 8");
  constexpr int N = 1 << LOGN, LOGW = LOGN - 10, W = 1 << LOGW;
  constexpr int LOGG = 5 - LOGW, G = 1 << LOGG;
  constexpr int NQ = N / 4;       // stride of the chunk index c (the top two bits)
  constexpr int RS = 264;         // floats per chunk row of a warp region
  constexpr int REG = 4 * RS;     // floats per warp region
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  if (blockDim.x != 32 * W) __trap();
  if (dyn_smem_size() < (u32)(W * REG * 4)) __trap();
  const long long row = blockIdx.x;
  if (row >= nrows) return;  // uniform per block
  const typename Tr<T>::S* xr = x + row * N;
  typename Tr<TO>::S* yr = y + row * N;
  const long long sbase = row_mod(row, sign_mod) * N;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* sm = reinterpret_cast<float*>(smem_raw);

  // phase C ownership (the output sign words are fetched up front)
  const int qb = (tid << LOGG) & 255;      // (L, e) offset of the G consecutive elements
  const int cC = tid >> (8 - LOGG);        // chunk c
  u32 swo[W];
  if constexpr (MODE == 2) {
#pragma unroll
    for (int s = 0; s < W; ++s) swo[s] = sign_word(sbits, sbase + cC * NQ + s * 256 + qb);
  }

  // phase A
  float v[32];
  const int offA = w * 256 + lane * 8;
#pragma unroll
  for (int c = 0; c < 4; ++c) load_vec<T, 8>(xr + c * NQ + offA, v + c * 8);
  if constexpr (MODE == 1) {
    u32 sw[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) sw[c] = sign_word(sbits, sbase + c * NQ + offA);
#pragma unroll
    for (int c = 0; c < 4; ++c) flip_bits<8>(v + c * 8, sw[c]);
  }
  fwht_regs<5>(v);  // bits e (0-2) and c (3-4) of the flat index c * 8 + e
  float* rg = sm + w * REG;
  {
    const int sw4 = ((lane >> 2) & 1) * 4;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<float4*>(rg + c * RS + lane * 8 + ((4 * h) ^ sw4)) =
            make_float4(v[c * 8 + 4 * h], v[c * 8 + 4 * h + 1], v[c * 8 + 4 * h + 2], v[c * 8 + 4 * h + 3]);
    }
  }
  __syncwarp();

  // phase B: lane (cB, eB) owns the 32 values of L
  {
    float* p0 = rg + (lane >> 3) * RS + (lane & 7);
    float* p1 = rg + (lane >> 3) * RS + ((lane & 7) ^ 4);
#pragma unroll
    for (int L = 0; L < 32; ++L) v[L] = ((L & 4) ? p1 : p0)[L * 8];
    fwht_regs<5>(v);
#pragma unroll
    for (int L = 0; L < 32; ++L) ((L & 4) ? p1 : p0)[L * 8] = v[L];
  }
  __syncthreads();

  // phase C
  {
    const int LC = qb >> 3, eC = qb & 7, swC = ((LC >> 2) & 1) * 4;
    const float* src = sm + cC * RS + LC * 8;
#pragma unroll
    for (int s = 0; s < W; ++s) {
      if constexpr (G >= 4) {
#pragma unroll
        for (int k = 0; k < G / 4; ++k) {
          const float4 t = *reinterpret_cast<const float4*>(src + s * REG + ((eC + 4 * k) ^ swC));
          v[s * G + 4 * k] = t.x; v[s * G + 4 * k + 1] = t.y;
          v[s * G + 4 * k + 2] = t.z; v[s * G + 4 * k + 3] = t.w;
        }
      } else if constexpr (G == 2) {
        const float2 t = *reinterpret_cast<const float2*>(src + s * REG + (eC ^ swC));
        v[s * 2] = t.x; v[s * 2 + 1] = t.y;
      } else {
        v[s] = src[s * REG + (eC ^ swC)];
      }
    }
  }
  fwht_regs_groups<LOGW, G>(v);  // the warp bits: slot index s
#pragma unroll
  for (int s = 0; s < W; ++s) {
#pragma unroll
    for (int g = 0; g < G; ++g) v[s * G + g] *= scale;
    if constexpr (MODE == 2) flip_bits<G>(v + s * G, swo[s]);
    store_vec<TO, G>(yr + cC * NQ + s * 256 + qb, v + s * G);
  }
}

template <class TI, class TO, int LOGN>
struct Pow2Launch {
  static constexpr int THREADS = UseT2<TI, TO, LOGN>::value ? 32 << (LOGN - 10) : Pow2Cfg<LOGN>::THREADS;
};

// The sign mode is a run-time argument but a compile-time parameter of the bodies: with a
// run-time test the compiler predicated the unused sign code into every element's path
// (~180 PLOP3 per thread at n = 8192).
template <class TI, class TO, int LOGN, int MODE>
__device__ __forceinline__ void pow2_any(const typename Tr<TI>::S* x, typename Tr<TO>::S* y,
                                         long long nrows, const u32* sbits, int sign_mod,
                                         typename Tr<TI>::A scale) {
  if constexpr (UseT2<TI, TO, LOGN>::value)
    pow2t_body<TI, TO, LOGN, MODE>(x, y, nrows, sbits, sign_mod, scale);
  else
    pow2_body<TI, TO, LOGN, MODE>(x, y, nrows, sbits, sign_mod, scale);
}
template <class TI, class TO, int LOGN>
__device__ __forceinline__ void pow2_entry(const typename Tr<TI>::S* x, typename Tr<TO>::S* y,
                                           long long nrows, const u32* sbits, int sign_mode,
                                           int sign_mod, typename Tr<TI>::A scale) {
  const int mode = sbits ? sign_mode : 0;
  if (mode == 1)
    pow2_any<TI, TO, LOGN, 1>(x, y, nrows, sbits, sign_mod, scale);
  else if (mode == 2)
    pow2_any<TI, TO, LOGN, 2>(x, y, nrows, sbits, sign_mod, scale);
  else
    pow2_any<TI, TO, LOGN, 0>(x, y, nrows, sbits, sign_mod, scale);
}

// ------------------------------------------------------------------------------------
// 3. Column pass: y[o, a, j] = scale * sum_b H[a, b] x[o, b, j]  (times signs)
// ------------------------------------------------------------------------------------

template <class TI, class TO>
__device__ __forceinline__ void cols_body(const typename Tr<TI>::S* x, typename Tr<TO>::S* y,
                                          long long nouter, int K, int stride,
                                          const signed char* __restrict__ H,
                                          const u32* __restrict__ sbits,
                                          int sign_mode, typename Tr<TO>::A scale) {
  typedef typename Tr<TO>::A A;  // fp32 for fp16/fp32 output, fp64 for fp64
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* tile = reinterpret_cast<A*>(smem_raw);                       // K x 32
  signed char* Hs = reinterpret_cast<signed char*>(tile + K * 32);  // K x K
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 32 + tx;
  if (blockDim.x != 32 || blockDim.y != 8) __trap();
  if (dyn_smem_size() < (u32)(K * 32 * sizeof(A) + K * K)) __trap();
  const int njb = (stride + 31) >> 5;
  const long long o = blockIdx.x / njb;
  const int j = (int)(blockIdx.x % njb) * 32 + tx;
  if (o >= nouter) return;
  for (int i = tid; i < K * K; i += 256) Hs[i] = H[i];
  const long long base = o * (long long)K * stride;
  for (int b = ty; b < K; b += 8) {
    A v = A(0);
    if (j < stride) {
      v = (A)to_acc<TI>(x[base + (long long)b * stride + j]);
      if (sign_mode == 1 && sbits && sign_bit(sbits, (long long)b * stride + j)) v = -v;
    }
    tile[b * 32 + tx] = v;
  }
  __syncthreads();
  if (j >= stride) return;
  for (int a = ty; a < K; a += 8) {
    A acc = A(0);
    const signed char* h = Hs + a * K;
    for (int b = 0; b < K; ++b) {
      const A t = tile[b * 32 + tx];
      acc += (h[b] > 0) ? t : -t;
    }
    acc *= scale;
    if (sign_mode == 2 && sbits && sign_bit(sbits, (long long)a * stride + j)) acc = -acc;
    y[base + (long long)a * stride + j] = from_acc<TO>(acc);
  }
}

// ------------------------------------------------------------------------------------
// 2. Fused K-stage (tensor cores) + FWHT for n = K * 2^logp, fp16 / fp32
// ------------------------------------------------------------------------------------

// n-tiles per warp unit: 8 up to p = 512 (32 accumulator registers, the kernel fits in
// 64 registers: two 512-thread blocks per SM), 16 beyond (keeps the column-range count
// WN <= 16).
#define RHT_NTW_RULE(LOGP) ((LOGP) <= 9 ? 3 : 4)
#define RHT_FUSED_MAX_WARPS 16
// blocks per SM requested for p <= 64: fp16 3, fp32 2 (benchmarks/NOTES_matvec.md)
#define RHT_FUSED_SMALLP_BLOCKS_H 3
#define RHT_FUSED_SMALLP_BLOCKS_F 2

// Compile-time part of the layout (depends on p only); K is a run-time argument.
template <class T, int LOGP>
struct FusedCfg {
  static constexpr bool HALF = Tr<T>::SZ == 2;
  static constexpr int P = HALF ? 1 : 3;              // 16-bit planes of the input
  static constexpr int PW = 1 << LOGP;
  static constexpr int LDB = PW + 8;                  // halves; ldmatrix conflict-free
  static constexpr int LDC = PW + 8;                  // floats; float2 stores conflict-free
  static constexpr int LOGNTW = (LOGP - 3) < RHT_NTW_RULE(LOGP) ? (LOGP - 3) : RHT_NTW_RULE(LOGP);
  static constexpr int NTW = 1 << LOGNTW;             // n-tiles (8 columns) per warp unit
  static constexpr int LOGWN = LOGP - 3 - LOGNTW;
  static constexpr int WN = 1 << LOGWN;               // column ranges
  static constexpr int VE = HALF ? 8 : 4;             // input elements per 16-byte vector
  // final phase: VO output elements per item (16-byte stores, or 8 bytes for fp16 with
  // several column ranges, which keeps the WN x VO register tile at <= 64 floats and the
  // kernel at <= 64 registers: 2 blocks of 512 threads per SM)
  static constexpr int VO = (HALF && WN == 1) ? 8 : 4;
  // launch bounds: p <= 64 has one column range (WN = 1), so at most ceil(172/16) = 11
  // warps: ask for 3 (fp16) / 2 (fp32) blocks of <= 352 threads per SM; otherwise 2
  // blocks of 512 threads (<= 64 registers) when the tiles allow it, else 1.
  static constexpr int MAXT = LOGP <= 6 ? 352 : 32 * RHT_FUSED_MAX_WARPS;
  static constexpr int MINB =
      LOGP <= 6 ? (HALF ? RHT_FUSED_SMALLP_BLOCKS_H : RHT_FUSED_SMALLP_BLOCKS_F)
      : ((NTW <= 8 && WN * VO <= 32) ? 2 : 1);
};
// Run-time part (mirrored by fast/cuda/hadamard.py:_fused_geometry):
//   KT = ceil(K/16), KP = 16 KT, units NU = KT * WN, warps = min(NU, 16),
//   B planes P * KP * LDB * 2 bytes, C buffer K * LDC * 4 bytes, C aliases B when every
//   warp owns at most one unit (NU <= warps), else C follows B.
struct FusedRt {
  int KT, KP, NU, NWARPS, BYTES_B, BYTES_C, SMEM;
  bool ALIAS;
  template <class G>
  __device__ __forceinline__ static FusedRt make(int K, int ldb = G::LDB) {
    FusedRt r;
    r.KT = (K + 15) / 16;
    r.KP = 16 * r.KT;
    r.NU = r.KT * G::WN;
    r.NWARPS = r.NU < RHT_FUSED_MAX_WARPS ? r.NU : RHT_FUSED_MAX_WARPS;
    r.ALIAS = r.NU <= r.NWARPS;
    r.BYTES_B = G::P * r.KP * ldb * 2;
    r.BYTES_C = K * G::LDC * 4;
    r.SMEM = (r.ALIAS ? (r.BYTES_B > r.BYTES_C ? r.BYTES_B : r.BYTES_C) : r.BYTES_B + r.BYTES_C);
    return r;
  }
};

#ifndef QR_HOST_EMULATION  // tests/emulation/rht_host_driver.cpp supplies these
__device__ __forceinline__ void ldsm_x4_t(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
#endif  // QR_HOST_EMULATION
// the K-stage mma: fp16 or bf16 operands (common.cuh)
template <bool HALF>
__device__ __forceinline__ void mma_frag(float* c, const u32* a, u32 b0, u32 b1) {
  if constexpr (HALF) mma16816(c, a[0], a[1], a[2], a[3], b0, b1);
  else mma16816_bf16(c, a[0], a[1], a[2], a[3], b0, b1);
}

// H_K operand of the fused K-stage. The m16n8k16 A fragment of
// m-tile mi, k-tile kt: lane (g = lane >> 2, q = lane & 3) holds 4 registers, register r
// = the two 16-bit values H[mi*16 + g + 8 (r & 1)][kt*16 + 2q + 8 (r >> 1) + {0, 1}]
// (lower column in the low half). `Amat` (built on the host,
// fast/cuda/hadamard.py:_fused_a_host, checked on CPU by tests/test_rht_fused_operand.py)
// holds packed signs, u32 [mi][kt][lane]: bit 15 - r = sign of the low half of register
// r, bit 31 - r = sign of the high half, so register r = ONE | ((w << r) & 0x80008000)
// with ONE = +1 +1 (fp16 0x3C00, bf16 0x3F80 per half): one 32-bit load (128 contiguous
// bytes = 1 L1 wavefront) and 7 ALU ops per k-tile; 15.5 KB for K = 172. The padding
// entries are +1, not 0: this relies on the zeroed padding rows K..KP-1 of B
// (fused_zero_pad) for the padding columns, and padding rows of Y (>= K) are never
// stored (fused_store_c; the unit FWHT mixes columns only, never rows); the extra
// products are exact zeros.
__device__ __forceinline__ u32 fused_a_load(const u32* p) { return __ldg(p); }
template <bool HALF>
__device__ __forceinline__ void fused_a_frag(u32 w, u32* a) {
  constexpr u32 ONE = HALF ? 0x3C003C00u : 0x3F803F80u;
#pragma unroll
  for (int r = 0; r < 4; ++r) a[r] = ONE | ((w << r) & 0x80008000u);
}

// One warp unit: rows mi*16..+15 of Y = H_K B, columns [ni*NTW*8, (ni+1)*NTW*8), then the
// FWHT over the unit's column bits. acc[t][0..3] = Y[mi*16+g][col], Y[..][col+1],
// Y[mi*16+g+8][col], Y[..][col+1] with col = (ni*NTW + t)*8 + 2q.
// LDB: B row stride (halves).
template <class T, int LOGP, int LDB>
__device__ __forceinline__ void fused_unit(const u16* Bs, const u32* __restrict__ Amat,
                                           const FusedRt& R, int mi, int ni, int lane,
                                           float (*acc)[4]) {
  typedef FusedCfg<T, LOGP> G;
  // this lane's operand of k-tile kt is element kt * 32 of Af
  const u32* Af = Amat + mi * R.KT * 32 + lane;
  u32 afr = fused_a_load(Af);  // k-tile 0
#pragma unroll
  for (int t = 0; t < G::NTW; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;
  // ldmatrix.x4.trans: lanes 0-7 address rows k0..k0+7 (cols n0), 8-15 rows k0+8..
  // (n0), 16-23 rows k0.. (n0+8), 24-31 rows k0+8.. (n0+8) -> b0,b1 of n-tile t and t+1
  const int lrow = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int lch = (lane >> 4) + ni * G::NTW;  // 16-byte chunk of n-tile pair 0
  // row r = pl*KP + kt*16 + lrow has r & 7 = lane & 7 (KP, 16 are multiples of 8)
  const u32 base = smem_addr(Bs) + 2 * (lrow * LDB);
  auto kstep = [&](int kt) {
    // A fragment (H_K rows mi*16 + g, +8; columns kt*16 + 2q (+1), +8) from its sign bits
    u32 a[4];
    fused_a_frag<G::HALF>(afr, a);
    // prefetch the next k-tile's operand (clamped: no read past this m-tile's rows)
    afr = fused_a_load(Af + (kt + 1 < R.KT ? kt + 1 : kt) * 32);
    const u32 bk = base + 2 * (kt * 16 * LDB);
#pragma unroll
    for (int t2 = 0; t2 < G::NTW / 2; ++t2) {
#pragma unroll
      for (int pl = G::P - 1; pl >= 0; --pl) {  // lo, mid, hi: smallest terms first
        u32 r0, r1, r2, r3;
        ldsm_x4_t(bk + 2 * (pl * R.KP * LDB) + 16u * (u32)(lch + 2 * t2), r0, r1, r2, r3);
        mma_frag<G::HALF>(acc[2 * t2], a, r0, r1);
        mma_frag<G::HALF>(acc[2 * t2 + 1], a, r2, r3);
      }
    }
  };
  // No unrolling (NVVM's runtime unroll of this loop spills: benchmarks/NOTES_matvec.md)
#pragma unroll 1
  for (int kt = 0; kt < R.KT; ++kt) kstep(kt);
  // FWHT over the unit's columns: bit 0 in-thread, bits 1-2 across q, bits 3.. across t
#pragma unroll
  for (int t = 0; t < G::NTW; ++t) {
    const float u0 = acc[t][0], u1 = acc[t][1], u2 = acc[t][2], u3 = acc[t][3];
    acc[t][0] = u0 + u1; acc[t][1] = u0 - u1;
    acc[t][2] = u2 + u3; acc[t][3] = u2 - u3;
  }
#pragma unroll
  for (int m = 1; m <= 2; m <<= 1) {
#pragma unroll
    for (int t = 0; t < G::NTW; ++t) {
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[t][r] = shfl_bfly(acc[t][r], m, lane);
    }
  }
#pragma unroll
  for (int h = 0; h < G::LOGNTW; ++h) {
#pragma unroll
    for (int t = 0; t < G::NTW; ++t) {
      if (!(t & (1 << h))) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const float x0 = acc[t][r], x1 = acc[t | (1 << h)][r];
          acc[t][r] = x0 + x1;
          acc[t | (1 << h)][r] = x0 - x1;
        }
      }
    }
  }
}

template <class T, int LOGP>
__device__ __forceinline__ void fused_store_c(float* Cs, int K, int mi, int ni, int lane,
                                              float (*acc)[4]) {
  typedef FusedCfg<T, LOGP> G;
  const int g = lane >> 2, q = lane & 3;
  const int a0 = mi * 16 + g, a1 = a0 + 8;
#pragma unroll
  for (int t = 0; t < G::NTW; ++t) {
    const int col = (ni * G::NTW + t) * 8 + 2 * q;
    if (a0 < K) *reinterpret_cast<float2*>(Cs + a0 * G::LDC + col) = make_float2(acc[t][0], acc[t][1]);
    if (a1 < K) *reinterpret_cast<float2*>(Cs + a1 * G::LDC + col) = make_float2(acc[t][2], acc[t][3]);
  }
}

// zero the padding sub-rows K..KP-1 of every plane (A's padding columns are zero, but
// 0 * NaN from stale shared memory would not be)
template <class G, int LDB>
__device__ __forceinline__ void fused_zero_pad(u16* Bs, const FusedRt& R, int K, int tid, int nthr) {
  const int padv = (R.KP - K) * LDB / 8;  // 16-byte vectors per plane
  for (int i = tid; i < G::P * padv; i += nthr) {
    const int pl = i / padv, r = i - pl * padv;
    *reinterpret_cast<uint4*>(Bs + pl * R.KP * LDB + K * LDB + r * 8) = make_uint4(0, 0, 0, 0);
  }
}

// one 16-byte input vector (VE elements of sub-row b from column j, signs applied) into
// the B planes: fp16 = 1 exact plane, fp32 = 3 bf16 planes hi + mid + lo (exact sum)
template <class G, int LDB>
__device__ __forceinline__ void fused_put(u16* Bs, int KP, int b, int j, const float* f) {
  const int col = j;
  if constexpr (G::HALF) {
    u32 w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) w[k] = (u32)f2h(f[2 * k]) | ((u32)f2h(f[2 * k + 1]) << 16);
    *reinterpret_cast<uint4*>(Bs + b * LDB + col) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
    u16 hi[4], mid[4], lo[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      hi[k] = f2bf(f[k]);
      const float r1 = f[k] - bf2f(hi[k]);   // exact
      mid[k] = f2bf(r1);
      lo[k] = f2bf(r1 - bf2f(mid[k]));       // exact: <= 8 significant bits remain
    }
    // plane 0 = hi, 1 = mid, 2 = lo
    u16* d = Bs + b * LDB + col;
    *reinterpret_cast<uint2*>(d) = make_uint2(hi[0] | ((u32)hi[1] << 16), hi[2] | ((u32)hi[3] << 16));
    *reinterpret_cast<uint2*>(d + KP * LDB) =
        make_uint2(mid[0] | ((u32)mid[1] << 16), mid[2] | ((u32)mid[3] << 16));
    *reinterpret_cast<uint2*>(d + 2 * KP * LDB) =
        make_uint2(lo[0] | ((u32)lo[1] << 16), lo[2] | ((u32)lo[3] << 16));
  }
}

template <class G>
__device__ __forceinline__ void fused_unpack(const uint4& raw, float* f) {
  if constexpr (G::HALF) {
    const u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      f[2 * k] = h2f((u16)(w[k] & 0xffffu));
      f[2 * k + 1] = h2f((u16)(w[k] >> 16));
    }
  } else {
    f[0] = __uint_as_float(raw.x); f[1] = __uint_as_float(raw.y);
    f[2] = __uint_as_float(raw.z); f[3] = __uint_as_float(raw.w);
  }
}

// Final phase: FWHT over the column-range bits (WN ranges of SPAN columns), scale,
// output signs, store the row.
template <class T, int LOGP, int MODE>
__device__ __forceinline__ void fused_final(const float* Cs, typename Tr<T>::S* __restrict__ yr,
                                            int K, const u32* __restrict__ sbits, float scale,
                                            int tid, int nthr) {
  typedef FusedCfg<T, LOGP> G;
  constexpr int VO = G::VO;
  constexpr int SPAN = 8 * G::NTW, IPS = SPAN / VO;
  constexpr int NP = VO / 4;                        // float4 reads per range
  const int lane = tid & 31;
  const int rot = NP == 2 ? ((lane >> 2) & 1) : 0;  // bank swizzle for 32-byte reads
  const int NIT = K * IPS;
  for (int it = tid; it < NIT; it += nthr) {
    const int a = it / IPS, jl = (it % IPS) * VO;
    u32 sw[G::WN];
    if constexpr (MODE == 2) {
#pragma unroll
      for (int h = 0; h < G::WN; ++h) sw[h] = sign_word(sbits, (long long)a * G::PW + h * SPAN + jl);
    }
    float v[G::WN][VO];
#pragma unroll
    for (int h = 0; h < G::WN; ++h) {
#pragma unroll
      for (int k = 0; k < NP; ++k) {
        const int part = (k + rot) & (NP - 1);
        const float4 t = *reinterpret_cast<const float4*>(Cs + a * G::LDC + h * SPAN + jl + 4 * part);
#pragma unroll
        for (int pp = 0; pp < NP; ++pp) {
          if (part == pp) {
            v[h][4 * pp] = t.x; v[h][4 * pp + 1] = t.y; v[h][4 * pp + 2] = t.z; v[h][4 * pp + 3] = t.w;
          }
        }
      }
    }
#pragma unroll
    for (int hb = 0; hb < G::LOGWN; ++hb) {
#pragma unroll
      for (int h = 0; h < G::WN; ++h) {
        if (!(h & (1 << hb))) {
#pragma unroll
          for (int e = 0; e < VO; ++e) {
            const float x0 = v[h][e], x1 = v[h | (1 << hb)][e];
            v[h][e] = x0 + x1;
            v[h | (1 << hb)][e] = x0 - x1;
          }
        }
      }
    }
#pragma unroll
    for (int h = 0; h < G::WN; ++h) {
      const long long off = (long long)a * G::PW + h * SPAN + jl;
#pragma unroll
      for (int e = 0; e < VO; ++e) v[h][e] *= scale;
      if constexpr (MODE == 2) flip_bits<VO>(v[h], sw[h]);
      if constexpr (G::HALF && VO == 8) {
        uint4 q;
        q.x = (u32)f2h(v[h][0]) | ((u32)f2h(v[h][1]) << 16);
        q.y = (u32)f2h(v[h][2]) | ((u32)f2h(v[h][3]) << 16);
        q.z = (u32)f2h(v[h][4]) | ((u32)f2h(v[h][5]) << 16);
        q.w = (u32)f2h(v[h][6]) | ((u32)f2h(v[h][7]) << 16);
        stg16(yr + off, q);
      } else if constexpr (G::HALF) {
        *reinterpret_cast<uint2*>(yr + off) =
            make_uint2((u32)f2h(v[h][0]) | ((u32)f2h(v[h][1]) << 16),
                       (u32)f2h(v[h][2]) | ((u32)f2h(v[h][3]) << 16));
      } else {
        stg16(yr + off, make_uint4(__float_as_uint(v[h][0]), __float_as_uint(v[h][1]),
                                   __float_as_uint(v[h][2]), __float_as_uint(v[h][3])));
      }
    }
  }
}

// General fused path: one row per block.
template <class T, int LOGP, int MODE>
__device__ __forceinline__ void fused_body(const typename Tr<T>::S* __restrict__ x,
                                           typename Tr<T>::S* __restrict__ y, long long nrows,
                                           int K, const u32* __restrict__ Amat,
                                           const u32* __restrict__ sbits, float scale) {
  typedef FusedCfg<T, LOGP> G;
  typedef typename Tr<T>::S S;
  const FusedRt R = FusedRt::make<G>(K);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  u16* Bs = reinterpret_cast<u16*>(smem_raw);
  float* Cs = reinterpret_cast<float*>(smem_raw + (R.ALIAS ? 0 : R.BYTES_B));
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int nthr = blockDim.x;
  if (nthr != 32 * R.NWARPS) __trap();
  if (dyn_smem_size() < (u32)R.SMEM) __trap();
  const long long N = (long long)K * G::PW;
  const long long row = blockIdx.x;
  if (row >= nrows) return;
  const S* xr = x + row * N;
  S* yr = y + row * N;

  fused_zero_pad<G, G::LDB>(Bs, R, K, tid, nthr);
  // load the row (16-byte vectors, U in flight per thread, then their sign words), split
  // into planes
  constexpr int VE = G::VE, VPR = G::PW / VE, U = 4;
  const int NV = K * VPR;
  for (int v0 = tid; v0 < NV; v0 += nthr * U) {
    uint4 raw[U];
    u32 sw[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int v = v0 + u * nthr;
      if (v < NV) raw[u] = ldg16(xr + (long long)v * VE);
    }
    if constexpr (MODE == 1) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int v = v0 + u * nthr;
        if (v < NV) sw[u] = sign_word(sbits, (long long)v * VE);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int v = v0 + u * nthr;
      if (v >= NV) continue;
      float f[VE];
      fused_unpack<G>(raw[u], f);
      if constexpr (MODE == 1) flip_bits<VE>(f, sw[u]);
      fused_put<G, G::LDB>(Bs, R.KP, v / VPR, (v % VPR) * VE, f);
    }
  }
  __syncthreads();

  float acc[G::NTW][4];
  if (R.ALIAS) {
    const int mi = warp % R.KT, ni = warp / R.KT;
    if (warp < R.NU) fused_unit<T, LOGP, G::LDB>(Bs, Amat, R, mi, ni, lane, acc);
    __syncthreads();  // every warp is done reading B before C overwrites it
    if (warp < R.NU) fused_store_c<T, LOGP>(Cs, K, mi, ni, lane, acc);
  } else {
    for (int u = warp; u < R.NU; u += R.NWARPS) {
      const int mi = u % R.KT, ni = u / R.KT;
      fused_unit<T, LOGP, G::LDB>(Bs, Amat, R, mi, ni, lane, acc);
      fused_store_c<T, LOGP>(Cs, K, mi, ni, lane, acc);
    }
  }
  __syncthreads();
  fused_final<T, LOGP, MODE>(Cs, yr, K, sbits, scale, tid, nthr);
}

template <class T, int LOGP>
__device__ __forceinline__ void fused_entry(const typename Tr<T>::S* x, typename Tr<T>::S* y,
                                            long long nrows, int K, const u32* Amat,
                                            const u32* sbits, int sign_mode, float scale) {
  const int mode = sbits ? sign_mode : 0;
  if (mode == 1)
    fused_body<T, LOGP, 1>(x, y, nrows, K, Amat, sbits, scale);
  else if (mode == 2)
    fused_body<T, LOGP, 2>(x, y, nrows, K, Amat, sbits, scale);
  else
    fused_body<T, LOGP, 0>(x, y, nrows, K, Amat, sbits, scale);
}

// ------------------------------------------------------------------------------------
// Instantiations
// ------------------------------------------------------------------------------------

#define RHT_POW2_KERNEL(IO, TI, TO, LOGN)                                                   \
  extern "C" __global__ void __launch_bounds__(Pow2Launch<TI, TO, LOGN>::THREADS)           \
      rht_pow2_##IO##_##LOGN(const Tr<TI>::S* x, Tr<TO>::S* y, long long nrows,              \
                             const u32* signs, int sign_mode, int sign_mod,                 \
                             Tr<TI>::A scale) {                                              \
    pow2_entry<TI, TO, LOGN>(x, y, nrows, signs, sign_mode, sign_mod, scale);               \
  }

#define RHT_POW2_ALL(IO, TI, TO)                                                            \
  RHT_POW2_KERNEL(IO, TI, TO, 0) RHT_POW2_KERNEL(IO, TI, TO, 1) RHT_POW2_KERNEL(IO, TI, TO, 2) \
  RHT_POW2_KERNEL(IO, TI, TO, 3) RHT_POW2_KERNEL(IO, TI, TO, 4) RHT_POW2_KERNEL(IO, TI, TO, 5) \
  RHT_POW2_KERNEL(IO, TI, TO, 6) RHT_POW2_KERNEL(IO, TI, TO, 7) RHT_POW2_KERNEL(IO, TI, TO, 8) \
  RHT_POW2_KERNEL(IO, TI, TO, 9) RHT_POW2_KERNEL(IO, TI, TO, 10) RHT_POW2_KERNEL(IO, TI, TO, 11) \
  RHT_POW2_KERNEL(IO, TI, TO, 12) RHT_POW2_KERNEL(IO, TI, TO, 13) RHT_POW2_KERNEL(IO, TI, TO, 14)

#define RHT_COLS_KERNEL(IO, TI, TO)                                                          \
  extern "C" __global__ void __launch_bounds__(256)                                          \
      rht_cols_##IO(const Tr<TI>::S* x, Tr<TO>::S* y, long long nouter, int K, int stride,   \
                    const signed char* H, const u32* signs, int sign_mode,                   \
                    Tr<TO>::A scale) {                                                        \
    cols_body<TI, TO>(x, y, nouter, K, stride, H, signs, sign_mode, scale);                  \
  }

#define RHT_FUSED_KERNEL(TAG, T, LP)                                                         \
  extern "C" __global__ void                                                                 \
  __launch_bounds__(FusedCfg<T, LP>::MAXT, FusedCfg<T, LP>::MINB)                          \
      rht_fused_##TAG##_p##LP(const Tr<T>::S* x, Tr<T>::S* y, long long nrows, int K,        \
                              const u32* A, const u32* signs, int sign_mode, float scale) {  \
    fused_entry<T, LP>(x, y, nrows, K, A, signs, sign_mode, scale);                          \
  }
#define RHT_FUSED_ALL(TAG, T)                                                                \
  RHT_FUSED_KERNEL(TAG, T, 4) RHT_FUSED_KERNEL(TAG, T, 5) RHT_FUSED_KERNEL(TAG, T, 6)        \
  RHT_FUSED_KERNEL(TAG, T, 7) RHT_FUSED_KERNEL(TAG, T, 8) RHT_FUSED_KERNEL(TAG, T, 9)        \
  RHT_FUSED_KERNEL(TAG, T, 10) RHT_FUSED_KERNEL(TAG, T, 11)

#if !defined(RHT_POW2) && !defined(RHT_COLS) && !defined(RHT_FUSED)
#define RHT_ALL 1
#endif

#if defined(RHT_ALL) || (defined(RHT_POW2) && RHT_POW2 == 1)
RHT_POW2_ALL(hh, f16, f16)
RHT_POW2_KERNEL(hh, f16, f16, 15)
#endif
#if defined(RHT_ALL) || (defined(RHT_POW2) && RHT_POW2 == 2)
RHT_POW2_ALL(ff, float, float)
RHT_POW2_KERNEL(ff, float, float, 15)
#endif
#if defined(RHT_ALL) || (defined(RHT_POW2) && RHT_POW2 == 3)
RHT_POW2_ALL(dd, double, double)
#endif
#if defined(RHT_ALL) || (defined(RHT_POW2) && RHT_POW2 == 4)
RHT_POW2_ALL(hf, f16, float)
#endif
#if defined(RHT_ALL) || defined(RHT_COLS)
RHT_COLS_KERNEL(hh, f16, f16)
RHT_COLS_KERNEL(hf, f16, float)
RHT_COLS_KERNEL(fh, float, f16)
RHT_COLS_KERNEL(ff, float, float)
RHT_COLS_KERNEL(dd, double, double)
#endif
#if defined(RHT_ALL) || (defined(RHT_FUSED) && RHT_FUSED == 1)
RHT_FUSED_ALL(h, f16)
#endif
#if defined(RHT_ALL) || (defined(RHT_FUSED) && RHT_FUSED == 2)
RHT_FUSED_ALL(f, float)
#endif
