// Viterbi for QTIP's bitshift trellis on the GPU: plain, constrained and tail-biting
// (QTIP Alg. 4), P sequences per thread block. Read quipref/quantizers/trellis.py first
// (the trellis, the dynamic program, Alg. 4, the packing); fast/cuda/viterbi.py is the
// wrapper that checks inputs, picks a build unit and launches.
//
// The dynamic program ([QTIP] Sec. 2.3, arXiv 2406.11235)
// ---------------------------------------------------
// An (L, k, V) trellis has N = 2^L states, E = 2^kV successors per state and
// G = 2^(L-kV) "groups". State s has predecessor group pg(s) = s >> kV and belongs, as a
// predecessor, to group ng(s) = s & (G-1); write s = e G + ng with e = s >> (L-kV). With
// B_{-1}[g] = 0 (or +inf outside a start constraint g == start_top) one step t is
//
//     cost_t(s) = ||C[s] - y_t||^2 + B_{t-1}[pg(s)]
//     B_t[ng]   = min_e cost_t(e G + ng),    bp_t[ng] = argmin_e (first minimum)
//
// so only the G group minima B_t are ever stored (never the N costs), ping-ponged
// between two buffers, and one backpointer of kV bits per group and step. The end
// state is x_{S-1} = bp_{S-1}[g*] G + g*, where g* minimises (B_{S-1}[g], bp_{S-1}[g] G + g)
// -- the smallest state of minimal cost, the reference's tie rule -- or g* = end_low (the
// end constraint "x_{S-1} & (G-1) == end_low" *is* the choice of g*); then
// x_{t-1} = bp_{t-1}[g] G + g with g = x_t >> kV.
//
// Work split. Write ng = m JW + j with JW = min(E, G), 0 <= j < JW. All states with
// the same m (and any e, j) read their B_{t-1} values from the E entries
// pg = (e G + m JW) >> kV, independent of j. A *unit* is (m, JPER consecutive j): a
// thread loops e = 0..E-1 (one B read per e and tile), and for each of its JPER j
// computes cost_t and keeps a running (min, argmin) in registers, then writes JPER group
// minima and JPER backpointers. Thread `tid` owns units u NT + tid, u < UPT, for all
// steps, so consecutive lanes read consecutive B entries (no bank conflicts).
//
// The values C[s] are computed per state and step (they do not fit in registers: 2^16
// states x V floats is 256-512 KB per sequence):
//   QR_CODE_TABLE       table (N, V) fp32 in global memory (read-only path)
//   QR_CODE_TABLE_SMEM  the same table staged in shared memory (small L)
//   QR_CODE_1MAD        1MAD: LCG, byte sum (one dp4a), centred; times alpha = scale / 147.80...
//   QR_CODE_3INST       3INST: LCG, mask/xor, fp16 add of the halves (PTX add.rn.f16); times alpha
//   QR_CODE_HYB         HYB: hash x^2 + x, a 2^(Q+1)-row LUT in shared memory whose top index bit
//              is the sign flip of component 0 (the LUT is pre-flipped and pre-scaled)
// All arithmetic is fp32: d = (c_0 - y_0)^2 + ... + B via fmaf. P > 1 tiles per block
// share each value computation (and its LUT read) across P sequences.
//
// Backpointers live in global memory: per block, per tile and step one row of WPT x NT
// 32-bit words (thread tid's bits of a step are the WPT words [w NT + tid]); unit u,
// entry j of a thread sits at bit u UNIT_BITS + j KB of its stream (KB = kV rounded up to
// a power of two). A 4096 x 4096 HYB (L=16, k=2, V=2) matrix writes 256 KB per tile and
// pass, 34 GB in all: ~10 ms of HBM bandwidth, far below the compute (~10^12 state
// updates); the rows are written coalesced and read back only along the path. (Keeping
// them in shared memory instead would cost 128 KB per tile for half the steps plus a
// recomputed half pass, and cannot hold V = 1's 4 KB per step at all.)
//
// Tail-biting (Alg. 4), both passes in one launch: pass 1 runs on the sequence rotated
// right by r = S/2 steps (y'_t = y_{(t - r) mod S}), unconstrained, storing only rows
// t >= r (the walk back stops at step r); O = x'_r >> kV. Pass 2 runs on the original
// sequence with B_{-1} = 0 only at O and g* = O. The walk back is done by one warp per
// tile: lane 0 follows the path and lanes 0..E-1 fetch the E candidate words of the step
// after next, so each global-memory round trip advances two steps.
//
// Persistent blocks: gridDim.x blocks (about the resident capacity) loop over the
// ceil(B / P) tile groups; each block owns its backpointer rows (and, with VT_GBEST, its
// two group-minimum buffers in global memory, for configurations whose 2 P G floats do
// not fit in shared memory, e.g. L = 16, kV = 1).
//
// Includes only common.cuh and trellis_codes.cuh (code ids and constants generated from
// quipref/quantizers/_trellis_codes.py by fast/cuda/_codes.py).
//
// Build options (-D): VT_L, VT_KV, VT_V, VT_CODE, VT_Q, VT_JPER, VT_NT, VT_P, VT_GBEST,
// VT_EUNROLL, VT_UUNROLL (unroll factors of the loops over e and over a thread's units),
// VT_MINB (blocks per SM the register allocation must allow). fast/cuda/viterbi.py
// mirrors the derived constants (shared-memory size, words per thread) and the kernel
// traps if the launch disagrees. The plain build (no options) is the QTIP HYB
// configuration L=16, kV=4, V=2.
//
// viterbi_pack: walks (B, S) int64 -> uint16 words (B, W), the reference's canonical
// layout (x_0's L bits MSB first, then the low kV bits of x_1..x_{S-1}, cut to nbits,
// MSB first in each word). One thread per output word.
//
// [QTIP] Tseng, Sun, Hou, De Sa, "QTIP: Quantization with Trellises and Incoherence
// Processing", NeurIPS 2024: Sec. 2.3, 3.1, Alg. 1-4.

#include "common.cuh"
#include "trellis_codes.cuh"

#ifndef VT_L
#define VT_L 16
#endif
#ifndef VT_KV
#define VT_KV 4
#endif
#ifndef VT_V
#define VT_V 2
#endif
#ifndef VT_CODE
#define VT_CODE QR_CODE_HYB
#endif
#ifndef VT_Q
#define VT_Q 9
#endif
#ifndef VT_P
#define VT_P 2
#endif
#ifndef VT_JPER
#define VT_JPER 8
#endif
#ifndef VT_NT
#define VT_NT 512
#endif
#ifndef VT_GBEST
#define VT_GBEST 0
#endif
#ifndef VT_EUNROLL
#define VT_EUNROLL 1
#endif
#ifndef VT_UUNROLL
#define VT_UUNROLL 1
#endif
#ifndef VT_MINB
#define VT_MINB 2
#endif

namespace vt {

constexpr int L = VT_L, KV = VT_KV, V = VT_V, CODE = VT_CODE, Q = VT_Q;
constexpr int P = VT_P, JPER = VT_JPER, NT = VT_NT;
constexpr bool GBEST = VT_GBEST != 0;
constexpr int EUNROLL = VT_EUNROLL;  // unroll factor of the loop over e
constexpr int UUNROLL = VT_UUNROLL;  // unroll factor of the loop over a thread's units
constexpr int N = 1 << L;
constexpr int E = 1 << KV;
constexpr int G = 1 << (L - KV);
constexpr int JW = E < G ? E : G;
constexpr int NU = G / JPER;                      // units per tile and step
constexpr int UPT = NU / NT;                      // units per thread
constexpr int KB = KV <= 1 ? 1 : (KV <= 2 ? 2 : (KV <= 4 ? 4 : 8));  // bits per backpointer
constexpr int UNIT_BITS = JPER * KB;
constexpr int TB = UPT * UNIT_BITS;               // backpointer bits per thread and step
constexpr int WPT = (TB + 31) / 32;               // words per thread and step
constexpr int WARPW = NT < 32 ? NT : 32;          // lanes of a (possibly partial) warp
constexpr int NWARPS = (NT + 31) / 32;
constexpr unsigned WMASK = WARPW == 32 ? 0xffffffffu : ((1u << WARPW) - 1u);
constexpr bool SPEC = E <= WARPW;                 // two steps per round trip in the walk
constexpr int LUT_FLOATS = CODE == QR_CODE_HYB ? (2 << Q) * V : (CODE == QR_CODE_TABLE_SMEM ? N * V : 0);
constexpr int BEST_FLOATS = GBEST ? 0 : 2 * P * G;
constexpr int SMEM_FLOATS = BEST_FLOATS + LUT_FLOATS + 2 * 32 * P + 2 * P;

static_assert(1 <= L && L <= 16, "VT_L must be in 1..16");
static_assert(1 <= KV && KV <= 8 && KV <= L, "VT_KV must be in 1..min(8, L)");
static_assert(V == 1 || V == 2, "VT_V must be 1 or 2");
static_assert(CODE == QR_CODE_TABLE || CODE == QR_CODE_1MAD || CODE == QR_CODE_3INST ||
              CODE == QR_CODE_HYB || CODE == QR_CODE_TABLE_SMEM, "VT_CODE: a QR_CODE_* id");
static_assert(!(CODE == QR_CODE_1MAD || CODE == QR_CODE_3INST) || V == 1,
              "1MAD and 3INST are scalar codes (V = 1)");
static_assert(CODE != QR_CODE_HYB || (Q >= 1 && Q <= 15), "VT_Q must be in 1..15");
static_assert(JPER >= 1 && (JPER & (JPER - 1)) == 0 && JW % JPER == 0,
              "VT_JPER must be a power of two dividing min(E, G)");
static_assert(NT >= 1 && NT <= 1024 && (NT & (NT - 1)) == 0 && NU % NT == 0,
              "VT_NT must be a power of two dividing G / VT_JPER");
static_assert(UNIT_BITS % 32 == 0 || 32 % UNIT_BITS == 0, "units must tile 32-bit words");
static_assert(P >= 1 && (P == 1 || NT >= 32 * P), "one warp per tile walks the path back");
static_assert(NWARPS <= 32, "reduction scratch holds one entry per warp");

__device__ __forceinline__ float inf_f() { return __int_as_float(0x7f800000); }

// The three PTX snippets (a host emulation of this file, compiled as C++ with
// -DQR_HOST_EMULATION, would supply its own versions before including it).
#ifndef QR_HOST_EMULATION

// c + sum of the four unsigned bytes of x (one dp4a)
__device__ __forceinline__ unsigned byte_sum_plus(unsigned x, unsigned c) {
  unsigned r;
  asm("dp4a.u32.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "r"(0x01010101u), "r"(c));
  return r;
}

// fp32 value of fp16(hi) + fp16(lo), added in fp16 with round-to-nearest-even
__device__ __forceinline__ float half_pair_sum(unsigned y) {
  float f;
  asm("{\n\t.reg .b16 lo, hi, sm;\n\tmov.b32 {lo, hi}, %1;\n\t"
      "add.rn.f16 sm, hi, lo;\n\tcvt.f32.f16 %0, sm;\n\t}"
      : "=f"(f) : "r"(y));
  return f;
}
#endif

__device__ __forceinline__ float ld_best(const float* p) {
  if constexpr (GBEST) return __ldcg(p);  // written by this block during the kernel: L2 path
  else return *p;
}

// The value C[s] (times the trellis scale) of state s.
struct Code {
  const float* tab;  // TABLE: global table; HYB / TABLE_SMEM: shared-memory LUT / table
  float alpha;       // 1MAD / 3INST: scale of the computed value

  __device__ __forceinline__ void value(unsigned s, float (&c)[V]) const {
    if constexpr (CODE == QR_CODE_TABLE) {
      if constexpr (V == 2) {
        const float2 v = __ldg(reinterpret_cast<const float2*>(tab) + s);
        c[0] = v.x;
        c[1] = v.y;
      } else {
        c[0] = __ldg(tab + s);
      }
    } else if constexpr (CODE == QR_CODE_TABLE_SMEM) {
      if constexpr (V == 2) {
        const float2 v = reinterpret_cast<const float2*>(tab)[s];
        c[0] = v.x;
        c[1] = v.y;
      } else {
        c[0] = tab[s];
      }
    } else if constexpr (CODE == QR_CODE_1MAD) {  // 1MAD ([QTIP] Alg. 1)
      const unsigned x = s * QR_MAD1_A + QR_MAD1_B;
      // 0x4B400000 = 1.5 * 2^23 as fp32: adding the byte sum (< 2^10) keeps the exponent
      const unsigned r = byte_sum_plus(x, 0x4B400000u);
      // (byte sum - MAD1_OFFSET), exact, times alpha
      c[0] = (__uint_as_float(r) - (12582912.0f + (float)QR_MAD1_OFFSET)) * alpha;
    } else if constexpr (CODE == QR_CODE_3INST) {  // 3INST ([QTIP] Alg. 2): fp16 sum of halves
      const unsigned x = s * QR_INST3_A + QR_INST3_B;
      const unsigned y = (x & QR_INST3_MASK) ^ QR_INST3_XOR;
      c[0] = half_pair_sum(y) * alpha;
    } else {  // HYB ([QTIP] Alg. 3): bits 15-Q .. 15 of x^2 + x index the pre-flipped LUT
      const unsigned h = s * s + s;
      const unsigned idx = (h >> (15 - Q)) & ((2u << Q) - 1u);
      if constexpr (V == 2) {
        const float2 v = reinterpret_cast<const float2*>(tab)[idx];
        c[0] = v.x;
        c[1] = v.y;
      } else {
        c[0] = tab[idx];
      }
    }
  }
};

// One unit (m, JPER consecutive j) of one step: running (min, argmin) over e.
template <bool STORE>
__device__ __forceinline__ void unit_update(int m, int ng0, const float* __restrict__ bin,
                                            const float (&y)[P][V], const Code& code,
                                            float (&mn)[P][JPER], int (&ar)[P][JPER]) {
#pragma unroll
  for (int p = 0; p < P; ++p)
#pragma unroll
    for (int j = 0; j < JPER; ++j) {
      mn[p][j] = inf_f();
      ar[p][j] = 0;
    }
#pragma unroll EUNROLL
  for (int e = 0; e < E; ++e) {
    const int hi = e << (L - KV);
    const int pg = (hi + m * JW) >> KV;
    float b[P];
#pragma unroll
    for (int p = 0; p < P; ++p) b[p] = ld_best(bin + p * G + pg);
#pragma unroll
    for (int j = 0; j < JPER; ++j) {
      float c[V];
      code.value(static_cast<unsigned>(hi + ng0 + j), c);
#pragma unroll
      for (int p = 0; p < P; ++p) {
        float acc = b[p];
        if constexpr (V == 2) {
          const float d1 = c[1] - y[p][1];
          acc = fmaf(d1, d1, acc);
        }
        const float d0 = c[0] - y[p][0];
        acc = fmaf(d0, d0, acc);
        if constexpr (STORE) {
          if (acc < mn[p][j]) {  // strict: the first minimum (smallest e), like np.argmin
            mn[p][j] = acc;
            ar[p][j] = e;
          }
        } else {
          mn[p][j] = fminf(mn[p][j], acc);
        }
      }
    }
  }
}

template <int n>
__device__ __forceinline__ void store_row(float* dst, const float (&v)[n]) {
  if constexpr (n % 4 == 0) {
#pragma unroll
    for (int q = 0; q < n / 4; ++q)
      reinterpret_cast<float4*>(dst)[q] = make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
  } else if constexpr (n == 2) {
    *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
  } else {
    dst[0] = v[0];
  }
}

// One step: B_t from B_{t-1} for the P tiles; with STORE the backpointer row of step t.
// A unit's backpointers form UNIT_BITS bits of the thread's stream: units of >= 32 bits
// are stored as whole words right away; smaller ones are collected in one word, stored
// when it is full. Register arrays are indexed by compile-time constants only, so the
// loop over units may stay rolled (UUNROLL) without spilling to local memory.
template <bool STORE>
__device__ __forceinline__ void step(const float* __restrict__ bin, float* __restrict__ bout,
                                     const float (&y)[P][V], const Code& code,
                                     unsigned* __restrict__ bprow, int S, int tid) {
  constexpr int UW = UNIT_BITS >= 32 ? UNIT_BITS / 32 : 1;  // words of one unit
  unsigned acc[P];
#pragma unroll
  for (int p = 0; p < P; ++p) acc[p] = 0u;
#pragma unroll UUNROLL
  for (int u = 0; u < UPT; ++u) {
    const int ng0 = (u * NT + tid) * JPER;
    const int m = ng0 / JW;
    float mn[P][JPER];
    int ar[P][JPER];
    unit_update<STORE>(m, ng0, bin, y, code, mn, ar);
#pragma unroll
    for (int p = 0; p < P; ++p) store_row<JPER>(bout + p * G + ng0, mn[p]);
    if constexpr (STORE) {
#pragma unroll
      for (int p = 0; p < P; ++p) {
        unsigned uw[UW];
#pragma unroll
        for (int q = 0; q < UW; ++q) uw[q] = 0u;
#pragma unroll
        for (int j = 0; j < JPER; ++j)
          uw[(j * KB) >> 5] |= static_cast<unsigned>(ar[p][j]) << ((j * KB) & 31);
        unsigned* row = bprow + static_cast<size_t>(p) * S * WPT * NT + tid;
        if constexpr (UNIT_BITS >= 32) {
#pragma unroll
          for (int q = 0; q < UW; ++q) row[static_cast<size_t>(u * UW + q) * NT] = uw[q];
        } else {
          const int bit = u * UNIT_BITS;
          acc[p] |= uw[0] << (bit & 31);
          if (((bit + UNIT_BITS) & 31) == 0 || u == UPT - 1) {
            row[static_cast<size_t>(bit >> 5) * NT] = acc[p];
            acc[p] = 0u;
          }
        }
      }
    }
  }
}

__device__ __forceinline__ void load_y(float (&y)[P][V], const float* __restrict__ X, int tile0,
                                       int B, int S, int src) {
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int tile = tile0 + p < B ? tile0 + p : B - 1;  // idle slots compute on a copy
    const float* x = X + (static_cast<size_t>(tile) * S + src) * V;
#pragma unroll
    for (int v = 0; v < V; ++v) y[p][v] = __ldg(x + v);
  }
}

// The forward pass over S steps on y_{(t - rot) mod S}; rows t >= store_from are stored.
// Returns the buffer holding B_{S-1}. Ends with a barrier.
__device__ __forceinline__ float* forward(float* bin, float* bout, const float* __restrict__ X,
                                       int tile0, int B, int S, int rot, int store_from,
                                       Code code, unsigned* __restrict__ bpb, int tid) {
  float y[P][V], yn[P][V];
  load_y(y, X, tile0, B, S, rot == 0 ? 0 : S - rot);
  for (int t = 0; t < S; ++t) {
    if (t + 1 < S) {
      int src = t + 1 - rot;
      if (src < 0) src += S;
      load_y(yn, X, tile0, B, S, src);
    }
    unsigned* bprow = bpb + static_cast<size_t>(t) * WPT * NT;
    if (t >= store_from) step<true>(bin, bout, y, code, bprow, S, tid);
    else step<false>(bin, bout, y, code, bprow, S, tid);
    __syncthreads();
    float* tmp = bin;
    bin = bout;
    bout = tmp;
#pragma unroll
    for (int p = 0; p < P; ++p)
#pragma unroll
      for (int v = 0; v < V; ++v) y[p][v] = yn[p][v];
  }
  return bin;
}

__device__ __forceinline__ void init_best(float* buf, const int (&O)[P], int tid) {
#pragma unroll
  for (int p = 0; p < P; ++p)
    for (int g = tid; g < G; g += NT) buf[p * G + g] = (O[p] < 0 || g == O[p]) ? 0.0f : inf_f();
}

// Backpointer of group g at step t (bpt: one tile's rows).
__device__ __forceinline__ int bp_get(const unsigned* bpt, int t, int g) {
  const int unit = g / JPER, j = g % JPER;
  const int owner = unit % NT, u = unit / NT;
  const int bit = u * UNIT_BITS + j * KB;
  const unsigned w = __ldcg(bpt + (static_cast<size_t>(t) * WPT + (bit >> 5)) * NT + owner);
  return static_cast<int>((w >> (bit & 31)) & static_cast<unsigned>(E - 1));
}

// The free end: sG[p] = the group g* of the final state x = bp_{S-1}[g] G + g that
// minimises (B_{S-1}[g], x) lexicographically, i.e. the smallest state among the
// minimal costs -- the reference's np.argmin over all states. Barriers inside.
__device__ __forceinline__ void block_argmin(const float* fin, const unsigned* bpb, int S,
                                             size_t tile_words, float* red_v, int* red_i,
                                             int* sG, int tid) {
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const unsigned* bpt = bpb + p * tile_words;
    float bv = inf_f();
    int bx = 0x7fffffff;
    for (int g = tid; g < G; g += NT) {
      const float v = ld_best(fin + p * G + g);
      const int x = bp_get(bpt, S - 1, g) * G + g;
      if (v < bv || (v == bv && x < bx)) {
        bv = v;
        bx = x;
      }
    }
#pragma unroll
    for (int off = WARPW / 2; off > 0; off >>= 1) {
      const float ov = __shfl_down_sync(WMASK, bv, off, WARPW);
      const int ox = __shfl_down_sync(WMASK, bx, off, WARPW);
      if (ov < bv || (ov == bv && ox < bx)) {
        bv = ov;
        bx = ox;
      }
    }
    if (lane == 0) {
      red_v[p * 32 + warp] = bv;
      red_i[p * 32 + warp] = bx;
    }
  }
  __syncthreads();
  if (tid < P) {
    const int p = tid;
    float bv = red_v[p * 32];
    int bx = red_i[p * 32];
    for (int w = 1; w < NWARPS; ++w) {
      const float v = red_v[p * 32 + w];
      const int x = red_i[p * 32 + w];
      if (v < bv || (v == bv && x < bx)) {
        bv = v;
        bx = x;
      }
    }
    sG[p] = bx & (G - 1);
  }
  __syncthreads();
}

// Walk back from x_{S-1} = bp_{S-1}[gstar] G + gstar down to step `stop`; returns x_stop.
// Executed by all WARPW lanes of one warp; lane 0 writes out[t] when out is given.
__device__ __forceinline__ int walk(const unsigned* bpt, int S, int stop, int gstar,
                                    long long* out, int lane) {
  int x = bp_get(bpt, S - 1, gstar) * G + gstar;
  if (out != nullptr && lane == 0) out[S - 1] = x;
  int t = S - 1;
  while (t > stop) {
    const int g = x >> KV;
    const bool two = SPEC && t - 2 >= stop;  // uniform across the warp
    int cand = 0;
    if (two && lane < E) cand = bp_get(bpt, t - 2, ((lane << (L - KV)) + g) >> KV);
    const int e0 = bp_get(bpt, t - 1, g);
    const int x1 = e0 * G + g;
    if (out != nullptr && lane == 0) out[t - 1] = x1;
    if (two) {
      const int e1 = __shfl_sync(WMASK, cand, e0, WARPW);  // lane e0 fetched x_{t-1}'s word
      const int x2 = e1 * G + (x1 >> KV);
      if (out != nullptr && lane == 0) out[t - 2] = x2;
      x = x2;
      t -= 2;
    } else {
      x = x1;
      t -= 1;
    }
  }
  return x;
}

}  // namespace vt

// X: (B, S V) fp32 sequences. lut: the code's table (TABLE / TABLE_SMEM: (N, V); HYB: (2^(Q+1), V)).
// start_top / end_low: (B,) int32, -1 = free (ignored when tail_biting). bp: gridDim.x * P *
// S * WPT * NT words; gbest: gridDim.x * 2 P G floats (VT_GBEST only). Outputs: states
// (B, S) int64, cost (B,) fp32 (the DP's value of the walk; +inf when infeasible).
extern "C" __global__ void __launch_bounds__(vt::NT, VT_MINB)
viterbi_tiles(const float* __restrict__ X, int B, int S, const float* __restrict__ lut, float alpha,
              const int* __restrict__ start_top, const int* __restrict__ end_low, int tail_biting,
              unsigned* __restrict__ bp, float* __restrict__ gbest, long long* __restrict__ states,
              float* __restrict__ cost) {
  using namespace vt;
  extern __shared__ __align__(16) float smem[];
  if (blockDim.x != NT || dyn_smem_size() < SMEM_FLOATS * 4u) __trap();
  float* slut = smem + BEST_FLOATS;
  float* red_v = slut + LUT_FLOATS;
  int* red_i = reinterpret_cast<int*>(red_v + 32 * P);
  int* sG = red_i + 32 * P;
  int* sO = sG + P;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  Code code;
  code.alpha = alpha;
  code.tab = lut;
  if constexpr (LUT_FLOATS > 0) {
    for (int i = tid; i < LUT_FLOATS; i += NT) slut[i] = lut[i];
    code.tab = slut;
  }
  __syncthreads();

  float* buf0 = GBEST ? gbest + static_cast<size_t>(blockIdx.x) * 2 * P * G : smem;
  float* buf1 = buf0 + P * G;
  unsigned* bpb = bp + static_cast<size_t>(blockIdx.x) * P * S * WPT * NT;
  const size_t tile_words = static_cast<size_t>(S) * WPT * NT;
  const int ngroups = (B + P - 1) / P;

  const int npass = tail_biting ? 2 : 1;
  for (int grp = blockIdx.x; grp < ngroups; grp += gridDim.x) {
    const int tile0 = grp * P;
    for (int pass = 0; pass < npass; ++pass) {
      // tail-biting pass 0: rotated by r = S/2, free, rows t >= r; pass 1: constrained to O
      const bool rotated = tail_biting && pass == 0;
      const int r = rotated ? S / 2 : 0;
      int O[P];
#pragma unroll
      for (int p = 0; p < P; ++p)
        O[p] = rotated ? -1 : tail_biting ? sO[p] : (tile0 + p < B ? start_top[tile0 + p] : -1);
      init_best(buf0, O, tid);
      __syncthreads();
      const float* fin = forward(buf0, buf1, X, tile0, B, S, r, r, code, bpb, tid);
      if (tail_biting && !rotated) {
        if (tid < P) sG[tid] = sO[tid];  // the end constraint is the choice g* = O
        __syncthreads();
      } else {
        block_argmin(fin, bpb, S, tile_words, red_v, red_i, sG, tid);
        if (!tail_biting && tid < P && tile0 + tid < B && end_low[tile0 + tid] >= 0)
          sG[tid] = end_low[tile0 + tid];
        __syncthreads();
      }
      if (rotated) {
        if (warp < P) {
          const int xr = walk(bpb + warp * tile_words, S, r, sG[warp], nullptr, lane);
          if (lane == 0) sO[warp] = xr >> KV;  // the overlap: top L-kV bits of x'_r
        }
      } else if (warp < P && tile0 + warp < B) {
        const int tile = tile0 + warp;
        const int gs = sG[warp];
        walk(bpb + warp * tile_words, S, 0, gs, states + static_cast<size_t>(tile) * S, lane);
        if (lane == 0) cost[tile] = ld_best(fin + warp * G + gs);
      }
      __syncthreads();  // sO is set; the buffers, sG and the rows are free for what follows
    }
  }
}

// states (B, S) int64 walks -> out (B, W) uint16, the canonical stream of nbits bits.
extern "C" __global__ void viterbi_pack(const long long* __restrict__ states, int B, int S, int L,
                                        int kV, int nbits, int W, unsigned short* __restrict__ out) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<long long>(B) * W) return;
  const int b = static_cast<int>(i / W), w = static_cast<int>(i % W);
  const long long* st = states + static_cast<size_t>(b) * S;
  unsigned v = 0;
  for (int q = 0; q < 16; ++q) {
    const int pos = w * 16 + q;
    unsigned bit = 0;
    if (pos < nbits) {
      if (pos < L) {
        bit = static_cast<unsigned>(st[0] >> (L - 1 - pos)) & 1u;
      } else {
        const int t = 1 + (pos - L) / kV, k = (pos - L) % kV;
        bit = static_cast<unsigned>(st[t] >> (kV - 1 - k)) & 1u;
      }
    }
    v |= bit << (15 - q);
  }
  out[i] = static_cast<unsigned short>(v);
}
