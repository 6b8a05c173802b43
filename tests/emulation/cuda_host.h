// cuda_host.h -- just enough of CUDA to run a kernel source on the CPU, one std::thread
// per CUDA thread, for tests on machines without a GPU (tests/test_e8p_host_emulation.py).
//
// * a block runs as blockDim.x threads (blocks one after another); __syncthreads() is a
//   std::barrier of the block; threadIdx / blockIdx are thread_local;
// * dynamic shared memory is one static buffer (EMU_SMEM_BYTES), zeroed per block;
// * warp-collective mma.m16n8k16 (row.col, f32 += f16 x f16) is emulated by exchanging the
//   32 lanes' fragments through a per-warp buffer between two warp barriers: every lane
//   of a warp must call it the same number of times (as on the GPU, where it is .aligned);
// * warp primitives: __syncwarp (a barrier of the warp's 32 threads), __shfl_sync (full
//   warps), atomicAdd on int, __threadfence (a seq_cst fence), __ldcg (atomic load);
// * cp.async (emu::cp_async16 / commit / wait): deferred copies, see below;
// * fp16 arithmetic: exact conversions (half -> float), round-to-nearest-even float ->
//   half, sub.rn.f16x2 as the float difference rounded once (exact for the operands the
//   E8P decode forms, which lie in one binade).
// The products in the emulated mma are summed in double and rounded to float once: the
// GPU's fp32 accumulation order is not modelled, which is why the tests compare against
// the float64 reference with the kernel's documented error bound, not bit for bit.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct uint4 { unsigned int x, y, z, w; };
struct uint2 { unsigned int x, y; };
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
struct dim3e { unsigned int x = 1, y = 1, z = 1; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
inline float2 make_float2(float a, float b) { return {a, b}; }

inline thread_local dim3e threadIdx, blockIdx;
inline dim3e blockDim, gridDim;

#ifndef EMU_SMEM_BYTES
#define EMU_SMEM_BYTES (228 * 1024)
#endif
alignas(16) inline unsigned char smem[EMU_SMEM_BYTES];

namespace emu {
inline std::unique_ptr<std::barrier<>> block_bar;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_bar;
struct MmaLane { float c[4]; unsigned a[4], b[2]; };
inline std::vector<MmaLane> mma_buf;   // [warp * 32 + lane]
inline std::vector<uint64_t> shfl_buf;
inline size_t dyn_smem_bytes = 0;   // the launch's dynamic shared memory (%dynamic_smem_size)

inline float h2f(uint16_t h) {
  const uint32_t s = (h >> 15) & 1, e = (h >> 10) & 0x1F, m = h & 0x3FF;
  float v;
  if (e == 0) v = std::ldexp((float)m, -24);
  else if (e == 31) v = m ? NAN : INFINITY;
  else v = std::ldexp((float)(m | 0x400), (int)e - 25);
  return s ? -v : v;
}
inline uint16_t f2h(float f) {  // round to nearest even
  if (std::isnan(f)) return 0x7E00;
  const uint16_t s = std::signbit(f) ? 0x8000 : 0;
  double a = std::fabs((double)f);
  if (a >= 65520.0) return s | 0x7C00;                  // overflow (65504 + ulp/2 ties up)
  if (a < std::ldexp(1.0, -14)) {                       // subnormal: multiples of 2^-24
    const double q = std::nearbyint(a * std::ldexp(1.0, 24));   // FE_TONEAREST
    return s | (uint16_t)q;
  }
  int e;
  std::frexp(a, &e);                                    // a = f * 2^e, f in [0.5, 1)
  const double ulp = std::ldexp(1.0, e - 11);
  double q = std::nearbyint(a / ulp) * ulp;
  std::frexp(q, &e);
  const int E = e - 1 + 15;
  const uint32_t M = (uint32_t)std::nearbyint(q / std::ldexp(1.0, e - 11)) - 0x400;
  if (E >= 31) return s | 0x7C00;
  return s | (uint16_t)(E << 10) | (uint16_t)M;
}
inline float lo(unsigned w) { return h2f((uint16_t)(w & 0xFFFF)); }
inline float hi(unsigned w) { return h2f((uint16_t)(w >> 16)); }

// run kernel(args...) over grid x block threads (1-D), `smem_bytes` of shared memory
template <typename F>
void launch(unsigned grid, unsigned block, size_t smem_bytes, F&& body) {
  if (smem_bytes > EMU_SMEM_BYTES) throw std::runtime_error("shared memory too large");
  gridDim.x = grid;
  blockDim.x = block;
  const unsigned warps = (block + 31) / 32;
  for (unsigned b = 0; b < grid; ++b) {
    std::memset(smem, 0xCD, smem_bytes);                // poison: the kernel must fill it
    block_bar = std::make_unique<std::barrier<>>(block);
    warp_bar.clear();
    for (unsigned w = 0; w < warps; ++w) warp_bar.push_back(std::make_unique<std::barrier<>>(32));
    mma_buf.assign(warps * 32, MmaLane{});
    shfl_buf.assign(warps * 32, 0u);
    dyn_smem_bytes = smem_bytes;
    std::vector<std::thread> th;
    for (unsigned t = 0; t < block; ++t)
      th.emplace_back([&, b, t] {
        threadIdx.x = t;
        blockIdx.x = b;
        body();
        // a thread that returns early must keep arriving at the block barrier
        block_bar->arrive_and_drop();
      });
    for (auto& x : th) x.join();
  }
}
}  // namespace emu

inline void __syncthreads() { emu::block_bar->arrive_and_wait(); }

namespace emu {
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32, lane = 4 g + t:
// a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9];
// b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]; c = D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]
template <float (*CV)(uint16_t)>
inline void mma16816_conv(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  emu::MmaLane* buf = &emu::mma_buf[warp * 32];
  buf[lane] = {{c[0], c[1], c[2], c[3]}, {a0, a1, a2, a3}, {b0, b1}};
  emu::warp_bar[warp]->arrive_and_wait();
  auto LO = [](unsigned w) { return CV((uint16_t)(w & 0xFFFF)); };
  auto HI = [](unsigned w) { return CV((uint16_t)(w >> 16)); };
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const unsigned* a = buf[l].a;
    A[g][2 * t] = LO(a[0]);         A[g][2 * t + 1] = HI(a[0]);
    A[g + 8][2 * t] = LO(a[1]);     A[g + 8][2 * t + 1] = HI(a[1]);
    A[g][2 * t + 8] = LO(a[2]);     A[g][2 * t + 9] = HI(a[2]);
    A[g + 8][2 * t + 8] = LO(a[3]); A[g + 8][2 * t + 9] = HI(a[3]);
    B[2 * t][g] = LO(buf[l].b[0]);     B[2 * t + 1][g] = HI(buf[l].b[0]);
    B[2 * t + 8][g] = LO(buf[l].b[1]); B[2 * t + 9][g] = HI(buf[l].b[1]);
  }
  const int g = lane >> 2, t = lane & 3;
  const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  float out[4];
  for (int i = 0; i < 4; ++i) {
    double s = buf[lane].c[i];
    for (int k = 0; k < 16; ++k) s += (double)A[rows[i]][k] * (double)B[k][cols[i]];
    out[i] = (float)s;
  }
  emu::warp_bar[warp]->arrive_and_wait();   // every lane has read buf
  for (int i = 0; i < 4; ++i) c[i] = out[i];
}
inline float bf16_to_f(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; std::memcpy(&f, &u, 4); return f; }
// the f16 and bf16 tensor-core products (operand halves converted exactly to float)
inline void mma16816_f16(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  mma16816_conv<h2f>(c, a0, a1, a2, a3, b0, b1);
}
inline void mma16816_bf16(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  mma16816_conv<bf16_to_f>(c, a0, a1, a2, a3, b0, b1);
}

// warp shuffle: every lane of the warp must call it (full mask only); values up to 8 bytes
template <class T>
inline T shfl_from(T v, int src) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint64_t w = 0;
  std::memcpy(&w, &v, sizeof(T));
  shfl_buf[warp * 32 + lane] = w;
  warp_bar[warp]->arrive_and_wait();
  w = shfl_buf[warp * 32 + (src & 31)];
  warp_bar[warp]->arrive_and_wait();
  T r;
  std::memcpy(&r, &w, sizeof(T));
  return r;
}
inline unsigned shfl_idx(unsigned v, int src) { return shfl_from(v, src); }
}  // namespace emu

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int m) { return emu::shfl_from(v, (int)((threadIdx.x & 31) ^ (unsigned)m)); }
template <class T>
inline T __ldg(const T* p) { return *p; }
[[noreturn]] inline void __trap() { std::fprintf(stderr, "__trap() in block %u thread %u\n", blockIdx.x, threadIdx.x); std::abort(); }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }

inline void __syncwarp(unsigned = 0xffffffffu) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  emu::warp_bar[threadIdx.x >> 5]->arrive_and_wait();
}
inline int __shfl_sync(unsigned, int v, int src) { return (int)emu::shfl_idx((unsigned)v, src); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline float __ldcg(const float* p) { return std::atomic_ref<const float>(*p).load(); }

// shared-window addresses (the kernels' 32-bit cvta.to.shared values): byte offsets into smem
namespace emu {
inline unsigned shared_addr(const void* p) {
  return (unsigned)(reinterpret_cast<const unsigned char*>(p) - smem);
}
// cp.async: a copy's bytes are read at issue and land in shared memory only when a
// wait_group lets its group complete (never earlier), so that a read before the wait sees
// stale bytes (the launch poisons shared memory) and a missing wait shows up.
struct Pending { unsigned dst; unsigned char bytes[16]; };
inline thread_local std::vector<std::vector<Pending>> cp_groups;   // committed, oldest first
inline thread_local std::vector<Pending> cp_open;                   // not committed yet
inline void cp_async16(unsigned dst, const void* src) {
  Pending p;
  p.dst = dst;
  std::memcpy(p.bytes, src, 16);
  cp_open.push_back(p);
}
inline void cp_async_commit() { cp_groups.push_back(std::move(cp_open)); cp_open.clear(); }
inline void cp_async_wait(size_t n) {   // all but the newest n committed groups complete
  while (cp_groups.size() > n) {
    for (const Pending& p : cp_groups.front()) std::memcpy(smem + p.dst, p.bytes, 16);
    cp_groups.erase(cp_groups.begin());
  }
}
inline void cp_async_wait_all() { cp_async_commit(); cp_async_wait(0); }
}  // namespace emu
