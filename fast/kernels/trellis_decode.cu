// trellis_decode.cu -- QTIP bitshift-trellis codes on the GPU: decode to a dense matrix,
// and the fused decode-matvec y = z W^T that never materialises W.
// NumPy reference: quipref/quantizers/trellis.py and _trellis_codes.py (read their
// docstrings first: the codes, the packing and the tile layout are defined there).
// Host side, layouts and validation: fast/cuda/trellis_decode.py.
//
// Includes only common.cuh (typedefs, PTX helpers) and trellis_codes.cuh (the code ids
// and constants, generated from quipref/quantizers/_trellis_codes.py): half arithmetic is
// raw PTX on 16-bit patterns, so the file compiles with bare NVRTC on a machine without a
// GPU (tests/test_cuda_compile.py).
//
// The trellis (L = 16). Tile (i, j) of an (m, n) matrix is the 16 x 16 block rows
// 16i.., columns 16j..; flattened row-major it is a sequence of T = 256 weights, cut
// into S = 256 / V steps. Its k*256-bit stream (W = 16k uint16 words, MSB first: stream
// bit 0 is bit 15 of word 0) is circular (tail-biting): the state of step t is the
// 16-bit window that starts at bit t*k*V ([QTIP] Sec. 3.2, random access):
//     q = o / 16, s = o % 16, state = ((word[q] << 16 | word[(q+1) % W]) >> (16 - s)) & 0xFFFF.
// Codes (state x -> value; [QTIP] Alg. 1-3, constants of _trellis_codes.py, here through
// trellis_codes.cuh):
//   1MAD  (V = 1): x <- a x + b (mod 2^32); (bytesum(x) - MAD1_OFFSET) / MAD1_DIVISOR
//   3INST (V = 1): x <- a x + b; y = (x & INST3_MASK) ^ INST3_XOR; fp16(y.hi) + fp16(y.lo)
//                  added in fp16 (round to nearest even)
//   HYB   (V = 1 or 2): h = x*x + x; lut[(h >> (15-Q)) & (2^Q-1)], component 0 negated
//                  when bit 15 of h is set.
// Every value is scale * C[state].
//
// ---------------------------------------------------------------------------------------
// 1. trellis_decode: codes (reference layout, (m/16, (n/16) W) uint16) -> float32 (m, n).
//    One thread per two horizontally adjacent weights (one V = 2 step, or two V = 1
//    steps), grid-stride. The value is computed exactly as the reference computes it in
//    float64 and rounded once to float32: 1MAD in double ((u - 510) / D, then * scale),
//    3INST by the fp16 add (add.rn.f16x2; the exact float sum of the two halves rounded
//    to fp16 is the same number) then * scale in double, HYB from the float64 LUT
//    (negation exact) * scale in double. Any k with kV <= 16, any Q, tail-biting or not.
//
// 2. trellis_mv_<code>_k<k>_<z>: y (b, m) = outscale * sum_j W_unscaled[., j] z[., j]
//    for b <= 8, codes re-laid out by the host (fast.cuda.trellis_decode.relayout_codes).
//
//    Tensor cores. One mma.m16n8k16 (f16 x f16 -> f32) per 16 x 16 tile: A = the tile
//    (M = 16 output rows, K = 16 input columns), B = z (K = 16 inputs, N = 8 batch
//    columns), fp32 accumulators. Thread (g, d) = (lane >> 2, lane & 3) owns the A
//    fragment registers
//        a0a1 = (frag row g,   frag K pair d),   a2a3 = (row g+8, pair d),
//        a4a5 = (frag row g,   frag K pair d+4), a6a7 = (row g+8, pair d+4)
//    and we are free to choose which tile rows / column pairs the fragment rows / K
//    pairs mean (B is loaded with the same column map, the output stored with the same
//    row map): fragment row g -> tile row 2g, row g+8 -> tile row 2g+1 (a thread holds
//    two CONSECUTIVE tile rows, so the window of its first row that spills past the row
//    end stays in its own bits); fragment K pair p -> tile column pair PI(p) (identity
//    for k = 2, 3; {0,1,6,7,2,3,4,5} for k = 4, chosen by brute force to minimise the
//    register selects below). A V = 2 step is a horizontally adjacent pair, i.e. exactly
//    one half2 A register; for V = 1 the two weights of a pair are two states.
//
//    Bits a thread needs per tile: rows 2g, 2g+1 (32k bits = k u32 words, its "own"
//    words) + the first 16 bits of row 2g+2 (mod 16: tail-biting) for the windows that
//    run past row 2g+1 (the "spill", the first own word of group g+1). Relayout
//    (exactly k bits per weight, the codes are only permuted): tiles are taken in
//    vertical pairs (R = 2 tile rows = 32 output rows, "row group" I) and the unit
//    (I, j) holds, group-major, for each g: own word i of tile r at u32 index
//    (g * k + i) * R + r. So a thread reads its own words of both tiles with 16-byte
//    (k = 2, 4) or 8-byte (k = 3) loads and the spill words of both tiles (group g+1's
//    word 0 of each tile, adjacent) with one 8-byte load; the 4 threads of a group read
//    the same addresses (broadcast), a unit is 64k bytes.
//    The two tiles of a unit share the B fragment (one z load per two tiles).
//
//    Window extraction, one SHF per state: with the run R[0..k] (R[k] = spill) and the
//    window at bit offset o of the run, x == (R[j-1]:R[j]) >> (32j + 16 - o) (mod 2^16)
//    for any j with 32j - 16 <= o <= 32j + 16: __funnelshift_rc, or a plain shift of
//    R[j] when the shift is <= 16 (then R[j-1] only feeds bits >= 16). The offsets of a
//    register slot depend on d, the shift amount is a per-thread register, and which j
//    (which registers) is fixed at compile time wherever all four d agree (WinPlan
//    below); k = 2 needs no select at all, k = 3 and k = 4 two SELs per tile.
//
//    HYB decode per V = 2 step (5 instructions): SHF (window), IMAD (h = x*x + x; only
//    the low 16 bits matter, so bits above the window are harmless), LOP3 (h & 0xFFC0:
//    hash bits 6..15 = LUT row and sign bit), LEA (byte offset (h & 0xFFC0) * 2 + 4 *
//    lane), LDS. The shared LUT holds 1024 half2 entries (rows 0..511 = the unscaled
//    LUT rounded to fp16, rows 512..1023 = the same with component 0 negated: the sign
//    flip is folded into the table), each replicated 32 times so that lane l always
//    reads bank l: entry e of lane l at word 32 e + l, 128 KB, conflict-free.
//    1MAD per pair: 2 x (SHF, LOP, IMAD lcg, IDP4A) + IMAD + HADD2; values u - 510 are
//    integers, exact in fp16 (1/147.8 is folded into outscale). 3INST per pair:
//    2 x (SHF, LOP, IMAD, LOP3) + 2 PRMT + HADD2 (exactly the reference's fp16 sum).
//
//    Work split: the R-tile units in row-major order (I, j) are cut into Wa equal
//    contiguous ranges, one per warp (Wa = active warps <= number of units). A warp
//    accumulates one row group at a time; a row group that lies inside one warp's range
//    is written directly, otherwise every contributing warp stores its partial sums to
//    part[w][slot] (slot 0: the warp's first row group, 1: its last), fences and
//    increments cnt[I]; the last to arrive sums the partials of all contributors in warp
//    order (deterministic) and writes y, then resets cnt[I] to 0 for the next launch.
//    The codes reach the registers through a shared-memory ring per warp (cp.async,
//    "The ring" below).
//
//    SASS and measured times: benchmarks/NOTES_matvec.md.
//
// [QTIP] Tseng, Sun, Hou, De Sa, "QTIP: Quantization with Trellises and Incoherence
// Processing", NeurIPS 2024, arXiv:2406.11235.
// ---------------------------------------------------------------------------------------

#include "common.cuh"
#include "trellis_codes.cuh"

#define TD_HYB QR_CODE_HYB
#define TD_1MAD QR_CODE_1MAD
#define TD_3INST QR_CODE_3INST

#ifndef TD_THREADS   // threads per matvec block; only the CPU emulation overrides it
#define TD_THREADS 512
#endif

namespace td {

constexpr u32 MAD1_A = QR_MAD1_A;
constexpr u32 MAD1_B = QR_MAD1_B;
constexpr int MAD1_OFFSET = QR_MAD1_OFFSET;
constexpr double MAD1_DIVISOR = QR_MAD1_DIVISOR;
constexpr u32 INST3_A = QR_INST3_A;
constexpr u32 INST3_B = QR_INST3_B;
constexpr u32 INST3_MASK = QR_INST3_MASK;
constexpr u32 INST3_XOR = QR_INST3_XOR;
constexpr u32 HALF2_M1534 = QR_HALF2_M_MAD1_BIAS;  // half2(-(1024 + 510)) twice

constexpr int RT = 2;  // tile rows per unit (row group = 32 output rows)

// ------------------------------------------------------------------------------------
// Raw PTX helpers besides common.cuh's (a host emulation of this file, compiled as C++
// with -DQR_HOST_EMULATION, supplies its own versions of everything in this #ifndef)
// ------------------------------------------------------------------------------------
#ifndef QR_HOST_EMULATION
__device__ __forceinline__ u32 shf_rc(u32 lo, u32 hi, u32 n) {  // (hi:lo) >> min(n, 32)
  u32 r;
  asm("shf.r.clamp.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(lo), "r"(hi), "r"(n));
  return r;
}
__device__ __forceinline__ u32 dp4a_u(u32 a, u32 b, u32 c) {
  u32 r;
  asm("dp4a.u32.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}
// read-only global loads (z and the LUT do not change during a launch)
__device__ __forceinline__ u32 ldg1(const void* p) {
  u32 v;
  asm("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ float2 ldgf2(const void* p) {
  float2 v;
  asm("ld.global.nc.v2.f32 {%0,%1}, [%2];" : "=f"(v.x), "=f"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ u32 lop3_and_xor(u32 a, u32 b, u32 c) {  // (a & b) ^ c, one LOP3
  u32 r;
  asm("lop3.b32 %0, %1, %2, %3, 0x6A;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}
#endif  // QR_HOST_EMULATION

// ------------------------------------------------------------------------------------
// The codes, one state (decode kernel) or one pair of weights (matvec)
// ------------------------------------------------------------------------------------
__device__ __forceinline__ u32 lcg_1mad(u32 x) { return MAD1_A * x + MAD1_B; }
__device__ __forceinline__ u32 y_3inst(u32 x) {  // (l & MASK) ^ XOR as one LOP3
  return lop3_and_xor(INST3_A * x + INST3_B, INST3_MASK, INST3_XOR);
}
// 1MAD pair from two exact 16-bit states: half2(u0 - 510, u1 - 510), exact.
// dp4a gives 0x6400 + u0 in the low half (fp16 1024 + u0, u0 <= 1020 < 1024: no carry)
// and u1 << 16 adds 1024 + u1 to the high half; subtracting 1534 = 1024 + 510 is exact.
__device__ __forceinline__ u32 pair_1mad(u32 x0, u32 x1) {
  u32 p = dp4a_u(lcg_1mad(x0), 0x01010101u, 0x64006400u);
  u32 q = dp4a_u(lcg_1mad(x1), 0x01010101u, 0u);
  return hadd2(p + (q << 16), HALF2_M1534);
}
// 3INST pair: half2(y0.lo + y0.hi, y1.lo + y1.hi) in fp16 (the reference's hi + lo)
__device__ __forceinline__ u32 pair_3inst(u32 x0, u32 x1) {
  u32 y0 = y_3inst(x0), y1 = y_3inst(x1);
  return hadd2(prmt(y0, y1, 0x5410u), prmt(y0, y1, 0x7632u));
}

// ------------------------------------------------------------------------------------
// Window plan: which registers and shift give each state (matvec). Mirrored in Python
// by fast.cuda.trellis_decode._win_* (the CPU emulation test checks that mirror against
// the reference; a mismatch with this code shows up in the GPU parity tests).
//   wt = RR * 4 + S * 2 + E: RR = tile row in the pair (0: 2g, 1: 2g+1), S = register
//   slot (0: frag K pair d, 1: pair d + 4), E = weight within the pair (V = 1 only).
// ------------------------------------------------------------------------------------
__host__ __device__ constexpr int pi_of(int K, int p) {
  return K == 4 ? (p < 2 ? p : (p < 4 ? p + 4 : p - 2)) : p;
}
__host__ __device__ constexpr int win_off(int K, int V, int wt, int d) {
  return 16 * K * (wt >> 2) + 2 * K * pi_of(K, 4 * ((wt >> 1) & 1) + d) + (V == 1 ? (wt & 1) * K : 0);
}
__host__ __device__ constexpr int win_jlo(int o) { return o <= 16 ? 0 : (o - 16 + 31) / 32; }
__host__ __device__ constexpr int win_jhi(int o) { return (o + 16) / 32; }
// greedy interval stabbing over d = 0..3 (offsets increase with d)
__host__ __device__ constexpr int win_j(int K, int V, int wt, int d) {
  int cur = win_jhi(win_off(K, V, wt, 0));
  for (int dd = 1; dd <= d; ++dd) {
    int o = win_off(K, V, wt, dd);
    if (win_jlo(o) > cur) cur = win_jhi(o);
  }
  return cur;
}
__host__ __device__ constexpr int win_n(int K, int V, int wt, int d) {
  return 32 * win_j(K, V, wt, d) + 16 - win_off(K, V, wt, d);
}
__host__ __device__ constexpr bool win_needhi(int K, int V, int wt, int d) {
  return win_n(K, V, wt, d) > 16;
}
// register of the high word: -1 none needed (shift <= 16 for every d), >= 0 fixed,
// -2 select between R[J0 - 1] and R[J1 - 1] with the same predicate as the low word
// (J0 = j of d = 0, J1 = j of d = 3; every d uses one of the two)
__host__ __device__ constexpr int win_hi(int K, int V, int wt) {
  int j0 = win_j(K, V, wt, 0), j1 = win_j(K, V, wt, 3);
  bool na = false, nb = false;
  for (int d = 0; d < 4; ++d)
    if (win_needhi(K, V, wt, d)) {
      if (win_j(K, V, wt, d) == j0) na = true; else nb = true;
    }
  return (na && nb) ? -2 : na ? j0 - 1 : nb ? j1 - 1 : -1;
}
__host__ __device__ constexpr bool win_plan_valid(int K, int V) {
  for (int wt = 0; wt < 8; ++wt) {
    if (V == 2 && (wt & 1)) continue;
    int j0 = win_j(K, V, wt, 0), j1 = win_j(K, V, wt, 3);
    for (int d = 0; d < 4; ++d) {
      int o = win_off(K, V, wt, d), j = win_j(K, V, wt, d);
      if (j < win_jlo(o) || j > win_jhi(o) || j > K || (j != j0 && j != j1)) return false;
      if (win_needhi(K, V, wt, d) && j < 1) return false;
    }
  }
  return true;
}

template <int K, int V, int WT>
__device__ __forceinline__ u32 window(const u32 (&r)[K + 1], u32 n, bool p) {
  constexpr int J0 = win_j(K, V, WT, 0), J1 = win_j(K, V, WT, 3), H = win_hi(K, V, WT);
  u32 lo = r[J0];
  if constexpr (J1 > J0) lo = p ? r[J1] : r[J0];
  if constexpr (H == -1) {
    return lo >> n;
  } else if constexpr (H >= 0) {
    return shf_rc(lo, r[H], n);
  } else {
    return shf_rc(lo, p ? r[J1 - 1] : r[J0 - 1], n);
  }
}

// per-thread shift amounts and selects of the 8 window types
struct WinRegs {
  u32 n[8];
  bool p[8];
};
template <int K, int V>
__device__ __forceinline__ WinRegs win_regs(int d) {
  WinRegs w;
#pragma unroll
  for (int wt = 0; wt < 8; ++wt) {
    u32 n = 0;
    bool p = false;
#pragma unroll
    for (int dd = 0; dd < 4; ++dd)
      if (d == dd) {
        n = (u32)win_n(K, V, wt, dd);
        p = win_j(K, V, wt, dd) > win_j(K, V, wt, 0);
      }
    w.n[wt] = n;
    w.p[wt] = p;
  }
  return w;
}

// ------------------------------------------------------------------------------------
// Kernel 1: decode to float32 (reference layout in, (m, n) out)
// ------------------------------------------------------------------------------------
__device__ __forceinline__ u32 state_at(const u16* __restrict__ tile, int W, int o) {
  int q = o >> 4, s = o & 15;
  int q1 = q + 1 == W ? 0 : q + 1;
  u32 win = ((u32)tile[q] << 16) | (u32)tile[q1];
  return (win >> (16 - s)) & 0xFFFFu;
}

// value of one state, component c, unscaled, as the reference computes it (float64)
__device__ __forceinline__ double value_of(int code, u32 x, int c, int V, int Q,
                                           const double* __restrict__ lut) {
  if (code == TD_1MAD) {
    u32 u = dp4a_u(lcg_1mad(x), 0x01010101u, 0u);
    return (double)((int)u - MAD1_OFFSET) / MAD1_DIVISOR;
  }
  if (code == TD_3INST) {
    u32 y = y_3inst(x);
    u32 s = hadd2(y, y >> 16);  // low half: fp16(lo) + fp16(hi), RN
    return (double)h2f((u16)(s & 0xFFFFu));
  }
  u32 h = x * x + x;
  u32 row = (h >> (15 - Q)) & ((1u << Q) - 1u);
  double v = lut[row * V + c];
  return (c == 0 && ((h >> 15) & 1u)) ? -v : v;
}

}  // namespace td

// codes: (m/16, nj * W) uint16, out: (m, n) float32 row-major; kV bits per step
extern "C" __global__ void __launch_bounds__(256)
trellis_decode(const u16* __restrict__ codes, float* __restrict__ out, int m, int n, int W,
               int kV, int V, int code, int Q, double scale, const double* __restrict__ lut) {
  using namespace td;
  const long long half_n = n >> 1;
  const long long total = (long long)m * half_n;
  const int nj = n >> 4;
  for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x) {
    int r = (int)(idx / half_n);
    int c = (int)(idx - (long long)r * half_n) * 2;
    const u16* tile = codes + ((long long)(r >> 4) * nj + (c >> 4)) * W;
    int p = ((r & 15) << 4) | (c & 15);  // sequence position of weight (r, c)
    double v0, v1;
    if (V == 2) {
      u32 x = state_at(tile, W, (p >> 1) * kV);
      v0 = value_of(code, x, 0, 2, Q, lut);
      v1 = value_of(code, x, 1, 2, Q, lut);
    } else {
      v0 = value_of(code, state_at(tile, W, p * kV), 0, 1, Q, lut);
      v1 = value_of(code, state_at(tile, W, (p + 1) * kV), 0, 1, Q, lut);
    }
    float2 o;
    o.x = (float)(scale * v0);
    o.y = (float)(scale * v1);
    *reinterpret_cast<float2*>(out + (long long)r * n + c) = o;
  }
}

// ------------------------------------------------------------------------------------
// Kernel 2: fused decode-matvec
// ------------------------------------------------------------------------------------
namespace td {

#ifndef QR_HOST_EMULATION
extern __shared__ __align__(16) unsigned char td_smem[];
#endif

template <int K>
struct Buf {
  u32 own[K * RT];  // own word i of tile r at [i * RT + r]
  u32 sp[RT];       // spill word of tile r
};

// B fragment of one 16-column block of z (b0b1 = columns 2 PI(d) + {0,1}, b2b3 =
// 2 PI(d+4) + {0,1} of batch row min(g, b-1)); fp32 z is rounded to fp16 here
template <bool ZF>
__device__ __forceinline__ void load_z(u32& b0, u32& b1, const unsigned char* __restrict__ p0,
                                       const unsigned char* __restrict__ p1) {
  if constexpr (ZF) {
    float2 a = ldgf2(p0), c = ldgf2(p1);
    b0 = pack_f16x2(a.x, a.y);
    b1 = pack_f16x2(c.x, c.y);
  } else {
    b0 = ldg1(p0);
    b1 = ldg1(p1);
  }
}

#ifndef QR_HOST_EMULATION
// HYB step: LUT entry of state x (low 16 bits; bits above are ignored by the hash).
// One asm block so that the compiler keeps the 2-instruction address (LOP3 + IMAD/LEA
// with the lane's base folded in) instead of re-deriving shift, mask, lane and base.
__device__ __forceinline__ u32 hyb_lookup(u32 x, u32 lanebase) {
  u32 v;
  asm volatile(
      "{\n\t.reg .b32 t;\n\t"
      "mad.lo.u32 t, %1, %1, %1;\n\t"
      "and.b32 t, t, 0xFFC0;\n\t"
      "mad.lo.u32 t, t, 2, %2;\n\t"
      "ld.shared.b32 %0, [t];\n\t}"
      : "=r"(v) : "r"(x), "r"(lanebase));
  return v;
}
#endif

template <int CODE, int K, int V, int WT>
__device__ __forceinline__ u32 decode_pair(const u32 (&r)[K + 1], const WinRegs& w, u32 lanebase) {
  if constexpr (CODE == TD_HYB) {
    return hyb_lookup(window<K, V, WT>(r, w.n[WT], w.p[WT]), lanebase);
  } else {
    u32 x0 = window<K, V, WT>(r, w.n[WT], w.p[WT]) & 0xFFFFu;
    u32 x1 = window<K, V, WT + 1>(r, w.n[WT + 1], w.p[WT + 1]) & 0xFFFFu;
    if constexpr (CODE == TD_1MAD) return pair_1mad(x0, x1);
    else return pair_3inst(x0, x1);
  }
}

template <int CODE, int K>
__device__ __forceinline__ void compute_unit(const Buf<K>& b, float (&acc)[RT][4], u32 b0, u32 b1,
                                             const WinRegs& w, u32 lanebase) {
  constexpr int V = CODE == TD_HYB ? 2 : 1;
#pragma unroll
  for (int t = 0; t < RT; ++t) {
    u32 r[K + 1];
#pragma unroll
    for (int i = 0; i < K; ++i) r[i] = b.own[i * RT + t];
    r[K] = b.sp[t];
    // wt = RR * 4 + S * 2 (+ E): a0a1 (RR 0, S 0), a2a3 (RR 1, S 0), a4a5 (0, 1), a6a7 (1, 1)
    u32 a0 = decode_pair<CODE, K, V, 0>(r, w, lanebase);
    u32 a1 = decode_pair<CODE, K, V, 4>(r, w, lanebase);
    u32 a2 = decode_pair<CODE, K, V, 2>(r, w, lanebase);
    u32 a3 = decode_pair<CODE, K, V, 6>(r, w, lanebase);
    mma16816(acc[t], a0, a1, a2, a3, b0, b1);
  }
}

struct MvArgs {
  const u32* codes;   // relayout, (NI * NJ) units of 16 * K * RT u32
  const void* z;      // (b, n) fp16 or fp32, row-major
  float* y;           // (b, m) fp32
  float* part;        // (Wa, 2, 8, 32) fp32 partial sums
  int* cnt;           // (NI,) arrival counters, zero between launches
  const u32* lut2;    // 1024 half2 (HYB)
  int b, m, n, NI, NJ;
  long long U;        // NI * NJ units
  int Wa;             // active warps
  float outscale;
};

__device__ __forceinline__ long long range_start(long long w, long long U, long long Wa) {
  return (long long)(((unsigned long long)w * (unsigned long long)U) / (unsigned long long)Wa);
}
// the warp whose range contains unit f (every warp has >= 1 unit: Wa <= U)
__device__ __forceinline__ long long warp_of(long long f, long long U, long long Wa) {
  return (long long)(((unsigned long long)(f + 1) * (unsigned long long)Wa - 1ull) / (unsigned long long)U);
}

// Flush one row group: output row I*32 + t*16 + 2g + rr,
// batch column 2d + e is acc[t][rr * 2 + e] (C fragment: c0, c1 row g; c2, c3 row g + 8).
// A row group inside one warp's range is written directly; otherwise the split-K partial
// sums, counter and deterministic last-arriver reduction of the header.
// The replicated HYB LUT (entry e of lane l at word 32 e + l, 128 KB), then a block barrier.
// Every thread first loads all its entries (e = tid + j TD_THREADS: one round of L2
// latency), then writes their 8 chunks in the lane-rotated order q = (i + lane) % 8, so
// that the 8 lanes of a 16-byte store phase hit 8 different bank quads.
__device__ __forceinline__ void fill_lut(const u32* __restrict__ lut2) {
  u32* lut_s = reinterpret_cast<u32*>(td_smem);
  constexpr int PER = (1024 + TD_THREADS - 1) / TD_THREADS;
  u32 v[PER];
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int e = threadIdx.x + j * TD_THREADS;
    v[j] = e < 1024 ? ldg1(lut2 + e) : 0u;
  }
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int e = threadIdx.x + j * TD_THREADS;
    if (e < 1024) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int q = (i + lane) & 7;
        *reinterpret_cast<uint4*>(lut_s + e * 32 + q * 4) = make_uint4(v[j], v[j], v[j], v[j]);
      }
    }
  }
  __syncthreads();
}

__device__ __forceinline__ void flush_row_group(const MvArgs& a, const float (&acc)[RT][4],
                                                long long I, int jb, int je, bool first,
                                                long long w, int lane, int g, int d) {
  if (jb == 0 && je == a.NJ) {  // the whole row group is in this warp's range
#pragma unroll
    for (int t = 0; t < RT; ++t)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int bb = 2 * d + (q & 1);
        const int row = (int)I * 32 + t * 16 + 2 * g + (q >> 1);
        if (bb < a.b && row < a.m) a.y[(long long)bb * a.m + row] = acc[t][q] * a.outscale;
      }
  } else {
    float* pw = a.part + (w * 2 + (first ? 0 : 1)) * 256;
#pragma unroll
    for (int t = 0; t < RT; ++t)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int bb = 2 * d + (q & 1);
        if (bb < a.b) pw[bb * 32 + t * 16 + 2 * g + (q >> 1)] = acc[t][q];
      }
    __threadfence();
    __syncwarp();
    const long long wa = warp_of(I * a.NJ, a.U, a.Wa);
    const long long wb = warp_of(I * a.NJ + a.NJ - 1, a.U, a.Wa);
    int old = 0;
    if (lane == 0) {
      __threadfence();  // release: every lane's partial (ordered by the syncwarp) first
      old = atomicAdd(a.cnt + I, 1);
    }
    old = __shfl_sync(0xffffffffu, old, 0);
    if (old == (int)(wb - wa)) {  // last contributor: sum every partial in warp order
      __threadfence();
      float s[8];
#pragma unroll
      for (int bb = 0; bb < 8; ++bb) s[bb] = 0.f;
      // slot 0 for every contributor but the first (a later warp's range starts inside
      // row group I, so I is its first row group); the first one's slot from its range.
      // Per batch row, the partials of 8 contributors are loaded before they are added
      // (one L2 round trip per 8 warps instead of per warp; 8 registers, so the main loop
      // keeps its allocation); the adds keep warp order (deterministic sums).
      // lane 0's atomic + fence acquired the other warps' partials; the warp barrier
      // orders that before every lane's loads (a shuffle alone gives no memory order in
      // the PTX model)
      __syncwarp();
      const int sl_a = (range_start(wa, a.U, a.Wa) / a.NJ == I) ? 0 : 1;
      const int nc = (int)(wb - wa + 1);
      const float* p0 = a.part + (wa * 2 + sl_a) * 256 + lane;   // contributor 0
      const float* p1 = a.part + (wa + 1) * 2 * 256 + lane;      // contributor c >= 1: p1 + (c - 1) 512
#pragma unroll 1
      for (int bb = 0; bb < a.b; ++bb) {
        float sb = 0.f;
#pragma unroll 1
        for (int c0 = 0; c0 < nc; c0 += 8) {
          float v[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            const int c = c0 + j;
            const float* pr = c == 0 ? p0 : p1 + (long long)(c - 1) * 512;
            v[j] = c < nc ? __ldcg(pr + bb * 32) : 0.f;
          }
#pragma unroll
          for (int j = 0; j < 8; ++j)
            if (c0 + j < nc) sb += v[j];
        }
        s[bb] = sb;
      }
      const int row = (int)I * 32 + lane;
      if (row < a.m) {
#pragma unroll
        for (int bb = 0; bb < 8; ++bb)
          if (bb < a.b) a.y[(long long)bb * a.m + row] = s[bb] * a.outscale;
      }
      if (lane == 0) a.cnt[I] = 0;
    }
  }
}

// ------------------------------------------------------------------------------------
// The ring: the codes streamed through shared memory. Each warp copies its contiguous
// byte range [f0 UB, f1 UB) with cp.async.cg 16-byte copies (L2 -> shared, bypassing L1
// and the registers) into its own ring of NSLOT slots
// of SU units (SU UB bytes, <= RING_SLOT). While the warp computes on slot S, slots
// S+1 .. S+NSLOT-1 are in flight (NSLOT-1 commit groups): 3 KB per warp at the default
// 4 x 1 KB, i.e. 48 KB per SM at 16 warps. Protocol, per warp (all lanes uniform):
//   prologue: copy slots 0 .. NSLOT-2 (one commit group each);
//   advance (before the first read of slot S): wait_group(NSLOT-2) (group S of this
//     lane done), __syncwarp (every lane's copies of slot S visible to all lanes, and
//     every lane done reading slot S-1), then copy slot S+NSLOT-1 into the physical slot
//     of S-1 and commit (always a group, possibly empty, so the counting stays exact).
// Copies past f1 UB are not issued (the slot tail holds stale bytes that are read only
// by the look-ahead of unit f1, never used), so the ring never reads past the codes.
// Each unit is then read with LDS (own words: LDS.128 at k = 2, 4 (x2), LDS.64 x3 at
// k = 3; spill LDS.64), the 4 lanes of a group at one address (broadcast), one unit ahead
// of the compute in registers; the z B fragment is also loaded one unit ahead (the next
// row group starts at column 0, so the look-ahead of a row group's last unit is column 0).
// Shared memory: [HYB LUT 128 KB] then (TD_THREADS / 32) rings of NSLOT SU UB bytes
// (fast.cuda.trellis_decode.ring_smem mirrors this).
// ------------------------------------------------------------------------------------
constexpr int RING_SLOT = 1024;  // bytes per slot, at most (SU = RING_SLOT / UB units)
constexpr int RING_NSLOT = 4;    // slots per warp ring (NSLOT - 1 in flight)

template <int K>
struct RingCfg {
  static constexpr int UB = 64 * K;                                  // bytes per unit
  static constexpr int SU = RING_SLOT / UB > 0 ? RING_SLOT / UB : 1;  // units per slot
  static constexpr int SLOTB = SU * UB;                              // bytes per slot
  static constexpr int NSLOT = RING_NSLOT;
  static constexpr int RINGB = NSLOT * SLOTB;                        // bytes per warp
  static constexpr int CH = SLOTB / 16;                              // 16-byte chunks per slot
  static_assert(NSLOT >= 2, "the ring needs at least 2 slots");
};

// One warp's ring: ro / rs_ point at this lane's own words / spill words of the next
// unit to read (generic pointers into td_smem); left: units of the read slot not read
// yet; slot: physical read slot; src: next slot to copy (global); end: f1 UB (no copy at
// or beyond it).
template <int K>
struct Ring {
  const unsigned char* base;  // this warp's ring (generic pointer into td_smem)
  u32 sbase;                  // the same, shared-window address (cp.async destination)
  const unsigned char* ro;
  const unsigned char* rsp;
  int left, slot;
  const unsigned char* src;
  const unsigned char* end;
};

template <int K>
__device__ __forceinline__ void ring_copy_slot(Ring<K>& r, int slot, int lane) {
  using C = RingCfg<K>;
  const long long rem = r.end - r.src;  // bytes of the range left from src (may be <= 0)
  const u32 dst = r.sbase + (u32)(slot * C::SLOTB);
#pragma unroll
  for (int c0 = 0; c0 < C::CH; c0 += 32) {
    const int c = c0 + lane;
    if ((c0 + 32 <= C::CH || c < C::CH) && (long long)c * 16 < rem)
      cp_async16(dst + (u32)c * 16u, r.src + c * 16);
  }
  cp_async_commit();
  r.src += C::SLOTB;
}

// before the first read of the next slot S: wait for its group, make every lane's copies
// visible (and every lane's reads of slot S-1 finished), copy slot S+NSLOT-1 into the
// physical slot of S-1
template <int K>
__device__ __forceinline__ void ring_advance(Ring<K>& r, int own_b, int sp_b, int lane) {
  using C = RingCfg<K>;
  cp_async_wait<C::NSLOT - 2>();
  __syncwarp();
  const int prev = r.slot;
  r.slot = r.slot + 1 == C::NSLOT ? 0 : r.slot + 1;
  ring_copy_slot<K>(r, prev, lane);
  const unsigned char* u = r.base + r.slot * C::SLOTB;
  r.ro = u + own_b;
  r.rsp = u + sp_b;
  r.left = C::SU;
}

// read the next unit of the read slot (the caller guarantees left > 0 and accounts it)
template <int K>
__device__ __forceinline__ void ring_read(Buf<K>& b, Ring<K>& r) {
  const unsigned char* o = r.ro;
  if constexpr (K * RT == 4) {
    uint4 v = *reinterpret_cast<const uint4*>(o);
    b.own[0] = v.x; b.own[1] = v.y; b.own[2] = v.z; b.own[3] = v.w;
  } else if constexpr (K * RT == 8) {
    uint4 v = *reinterpret_cast<const uint4*>(o), w = *reinterpret_cast<const uint4*>(o + 16);
    b.own[0] = v.x; b.own[1] = v.y; b.own[2] = v.z; b.own[3] = v.w;
    b.own[4] = w.x; b.own[5] = w.y; b.own[6] = w.z; b.own[7] = w.w;
  } else {
#pragma unroll
    for (int i = 0; i < K * RT; i += 2) {
      uint2 v = *reinterpret_cast<const uint2*>(o + 4 * i);
      b.own[i] = v.x; b.own[i + 1] = v.y;
    }
  }
  uint2 s = *reinterpret_cast<const uint2*>(r.rsp);
  b.sp[0] = s.x; b.sp[1] = s.y;
  r.ro += RingCfg<K>::UB;
  r.rsp += RingCfg<K>::UB;
}

// the next unit of the stream, advancing to the next slot when the read slot is used up
template <int K>
__device__ __forceinline__ void ring_fetch(Buf<K>& b, Ring<K>& r, int own_b, int sp_b, int lane) {
  if (r.left == 0) ring_advance<K>(r, own_b, sp_b, lane);
  ring_read<K>(b, r);
  --r.left;
}

template <int CODE, int K, bool ZF>
__device__ __forceinline__ void mv_body(const MvArgs& a) {
  using C = RingCfg<K>;
  constexpr int V = CODE == TD_HYB ? 2 : 1;
  constexpr int UW = 8 * K * RT;
  constexpr int ZB = ZF ? 4 : 2;
  constexpr int RING_OFF = CODE == TD_HYB ? 1024 * 32 * 4 : 0;  // after the LUT
  static_assert(C::UB == 4 * UW, "unit size");
  static_assert(win_plan_valid(K, V), "a window type needs more than two register choices");
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, d = lane & 3;
  const long long w = (long long)blockIdx.x * (TD_THREADS / 32) + (threadIdx.x >> 5);
  const bool active = w < a.Wa;
  const long long f0 = active ? range_start(w, a.U, a.Wa) : 0;
  const long long f1 = active ? range_start(w + 1, a.U, a.Wa) : 1;

  const WinRegs wr = win_regs<K, V>(d);
  const u32 lanebase = smem_addr(td_smem) + (u32)lane * 4u;
  const int own_b = g * K * RT * 4;               // bytes into a unit
  const int sp_b = ((g + 1) & 7) * K * RT * 4;
  const int gb = g < a.b ? g : a.b - 1;
  const unsigned char* zrow = (const unsigned char*)a.z + (long long)gb * a.n * ZB;
  const int zc0 = 2 * pi_of(K, d) * ZB;
  const int zd = 2 * pi_of(K, d + 4) * ZB - zc0;
  const unsigned char* zrow0 = zrow + zc0;        // column block 0 of this lane's z

  Ring<K> ring;
  ring.base = td_smem + RING_OFF + (threadIdx.x >> 5) * C::RINGB;
  ring.sbase = smem_addr(ring.base);
  ring.ro = ring.base;
  ring.rsp = ring.base;
  ring.left = 0;                 // the first fetch advances to slot 0
  ring.slot = C::NSLOT - 1;
  ring.src = (const unsigned char*)(a.codes + f0 * UW);
  ring.end = (const unsigned char*)(a.codes + f1 * UW);

  long long I = f0 / a.NJ;
  int jb = (int)(f0 - I * a.NJ);
  const long long Ilast = (f1 - 1) / a.NJ;
  // prologue (before the LUT fill, so that its latency overlaps the fill): slots
  // 0 .. NSLOT-2 in flight
  if (active) {
#pragma unroll
    for (int s = 0; s < C::NSLOT - 1; ++s) ring_copy_slot<K>(ring, s, lane);
  }

  if constexpr (CODE == TD_HYB) fill_lut(a.lut2);
  if (!active) return;

  Buf<K> cur;                    // unit f0, then always the unit being computed
  ring_fetch<K>(cur, ring, own_b, sp_b, lane);
  u32 zb0, zb1;                  // its B fragment
  load_z<ZF>(zb0, zb1, zrow0 + (long long)jb * 16 * ZB, zrow0 + (long long)jb * 16 * ZB + zd);

  bool first = true;
  for (; I <= Ilast; ++I, jb = 0) {
    const int je = (int)(I == Ilast ? (f1 - 1 - I * a.NJ) + 1 : a.NJ);
    const int cnt = je - jb;
    const unsigned char* pz = zrow0 + (long long)(jb + 1) * 16 * ZB;  // z of the next unit

    float acc[RT][4];
#pragma unroll
    for (int t = 0; t < RT; ++t)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[t][q] = 0.f;

    // units 0 .. cnt-2 of the row group (the next unit is in the same row group), in
    // segments whose look-ahead reads stay in the read slot (no slot check per unit):
    // when the read slot is used up, the ring advances first (the slot it overwrites is
    // the previous one, whose last unit is already in registers: cur)
    // Steady state: a whole slot of SU units, fully unrolled (compile-time count, no loop
    // counter); otherwise (range start, row-group end) a plain loop over the n units.
    int t = 0;
    while (t < cnt - 1) {
      if (ring.left == 0) ring_advance<K>(ring, own_b, sp_b, lane);
      if (ring.left == C::SU && cnt - 1 - t >= C::SU) {
        ring.left = 0;
        t += C::SU;
#pragma unroll
        for (int i = 0; i < C::SU; ++i) {
          Buf<K> nx;
          ring_read<K>(nx, ring);
          u32 nb0, nb1;
          load_z<ZF>(nb0, nb1, pz, pz + zd);
          compute_unit<CODE, K>(cur, acc, zb0, zb1, wr, lanebase);
          cur = nx;
          zb0 = nb0;
          zb1 = nb1;
          pz += 16 * ZB;
        }
      } else {
        const int n = ring.left < cnt - 1 - t ? ring.left : cnt - 1 - t;
        ring.left -= n;
        t += n;
#pragma unroll 1
        for (int i = 0; i < n; ++i) {
          Buf<K> nx;
          ring_read<K>(nx, ring);
          u32 nb0, nb1;
          load_z<ZF>(nb0, nb1, pz, pz + zd);
          compute_unit<CODE, K>(cur, acc, zb0, zb1, wr, lanebase);
          cur = nx;
          zb0 = nb0;
          zb1 = nb1;
          pz += 16 * ZB;
        }
      }
    }
    {  // the last unit: the next one (if any) starts the next row group at column 0;
       // after the warp's last unit, the look-ahead reads unused ring bytes
      Buf<K> nx;
      ring_fetch<K>(nx, ring, own_b, sp_b, lane);
      u32 nb0, nb1;
      load_z<ZF>(nb0, nb1, zrow0, zrow0 + zd);
      compute_unit<CODE, K>(cur, acc, zb0, zb1, wr, lanebase);
      cur = nx;
      zb0 = nb0;
      zb1 = nb1;
    }

    flush_row_group(a, acc, I, jb, je, first, w, lane, g, d);
    first = false;
  }
  cp_async_wait_all();  // only empty groups are left
}

}  // namespace td

#define TD_MV_KERNEL(NAME, CODE, K, ZF)                                                    \
  extern "C" __global__ void __launch_bounds__(TD_THREADS, 1)                                \
  NAME(const u32* codes, const void* z, float* y, float* part, int* cnt, const u32* lut2,    \
       int b, int m, int n, int NI, int NJ, long long U, int Wa, float outscale) {           \
    const td::MvArgs a{codes, z, y, part, cnt, lut2, b, m, n, NI, NJ, U, Wa, outscale};      \
    td::mv_body<CODE, K, ZF>(a);                                                           \
  }

// trellis_mv_<code>_k<k>_<z>
#define TD_MV_CODE(CODE, TAG)                          \
  TD_MV_KERNEL(trellis_mv_##TAG##_k2_h, CODE, 2, false) \
  TD_MV_KERNEL(trellis_mv_##TAG##_k2_f, CODE, 2, true)  \
  TD_MV_KERNEL(trellis_mv_##TAG##_k3_h, CODE, 3, false) \
  TD_MV_KERNEL(trellis_mv_##TAG##_k3_f, CODE, 3, true)  \
  TD_MV_KERNEL(trellis_mv_##TAG##_k4_h, CODE, 4, false) \
  TD_MV_KERNEL(trellis_mv_##TAG##_k4_f, CODE, 4, true)

// Build units (fast.cuda.trellis_decode.builds): -DTD_MV=<code id> compiles the six
// matvec kernels of one code (and trellis_decode), -DTD_MV=-1 only trellis_decode;
// without TD_MV (the plain CI compile) every kernel is built.
#if !defined(TD_MV) || TD_MV == TD_HYB
TD_MV_CODE(TD_HYB, hyb)
#endif
#if !defined(TD_MV) || TD_MV == TD_1MAD
TD_MV_CODE(TD_1MAD, 1mad)
#endif
#if !defined(TD_MV) || TD_MV == TD_3INST
TD_MV_CODE(TD_3INST, 3inst)
#endif
