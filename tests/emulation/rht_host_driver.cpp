// rht_host_driver.cpp -- runs one fused K*2^k Hadamard kernel of fast/kernels/rht.cu
// (rht_fused_<h|f>_p<logp>) on the CPU (cuda_host.h), for tests/test_rht_host_emulation.py.
//
//   rht_host_driver DIR NAME rows K sign_mode scale grid threads smem
// reads DIR/{x,A,signs}.bin (the rows, fp16 or fp32; the H_K operand built by
// fast.cuda.hadamard._fused_a_host (packed sign bits); the packed sign vector),
// writes DIR/y.bin. Build: g++ -std=c++20 -O2 -pthread -DQR_HOST_EMULATION -DRHT_FUSED=1|2
// rht_host_driver.cpp
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>

#include "cuda_host.h"

typedef unsigned short u16;
typedef unsigned int u32;

// the PTX helpers rht.cu uses (its and common.cuh's #ifndef QR_HOST_EMULATION blocks)
inline float h2f(u16 h) { return emu::h2f(h); }
inline u16 f2h(float f) { return emu::f2h(f); }
inline u16 f2bf(float f) {  // round to nearest even (finite inputs)
  u32 u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7FC0;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (u16)(u >> 16);
}
inline u32 smem_addr(const void* p) { return emu::shared_addr(p); }
inline u32 dyn_smem_size() { return (u32)emu::dyn_smem_bytes; }
inline uint4 ldg16(const void* p) { uint4 v; std::memcpy(&v, p, 16); return v; }
inline void stg16(void* p, uint4 v) { std::memcpy(p, &v, 16); }

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: lanes 8j .. 8j+7 give the addresses of
// rows 0..7 of matrix j (8 b16 each); register j of lane t = (M_j[2(t%4)][t/4],
// M_j[2(t%4)+1][t/4]) (low, high half): the transposed fragment
inline std::vector<u32> ldsm_buf;
inline void ldsm_x4_t(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (ldsm_buf.size() < (warp + 1) * 32) throw std::runtime_error("ldsm buffer");
  ldsm_buf[warp * 32 + lane] = addr;
  emu::warp_bar[warp]->arrive_and_wait();
  u32 r[4];
  const int t = (int)lane;
  for (int j = 0; j < 4; ++j) {
    auto el = [&](int row, int col) {
      u16 v;
      std::memcpy(&v, smem + ldsm_buf[warp * 32 + 8 * j + row] + 2 * col, 2);
      return (u32)v;
    };
    r[j] = el(2 * (t % 4), t / 4) | (el(2 * (t % 4) + 1, t / 4) << 16);
  }
  emu::warp_bar[warp]->arrive_and_wait();
  r0 = r[0]; r1 = r[1]; r2 = r[2]; r3 = r[3];
}
// mma m16n8k16 with f16 or bf16 inputs, f32 accumulation
inline void mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  emu::mma16816_f16(c, a0, a1, a2, a3, b0, b1);
}
inline void mma16816_bf16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  emu::mma16816_bf16(c, a0, a1, a2, a3, b0, b1);
}

#define smem_raw smem  // rht.cu names its dynamic shared memory smem_raw
#include "../../fast/kernels/rht.cu"
#undef smem_raw

static std::vector<char> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

#if RHT_FUSED == 1
typedef u16 ST;
#define FUSED(LP) {"rht_fused_h_p" #LP, rht_fused_h_p##LP}
#else
typedef float ST;
#define FUSED(LP) {"rht_fused_f_p" #LP, rht_fused_f_p##LP}
#endif
using KFn = void (*)(const ST*, ST*, long long, int, const u32*, const u32*, int, float);

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr, "usage: %s DIR NAME rows K sign_mode scale grid threads smem\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1], name = argv[2];
  const long long rows = std::stoll(argv[3]);
  const int K = std::stoi(argv[4]), mode = std::stoi(argv[5]);
  const float scale = std::stof(argv[6]);
  const unsigned grid = (unsigned)std::stoul(argv[7]), threads = (unsigned)std::stoul(argv[8]);
  const size_t smem_bytes = std::stoul(argv[9]);
  auto x = slurp(dir + "/x.bin"), A = slurp(dir + "/A.bin"), sg = slurp(dir + "/signs.bin");
  std::vector<char> y(x.size(), 0);
  const std::map<std::string, KFn> ks = {FUSED(4), FUSED(5), FUSED(6), FUSED(7),
                                         FUSED(8), FUSED(9), FUSED(10), FUSED(11)};
  if (!ks.count(name)) {
    std::fprintf(stderr, "kernel %s is not in this build\n", name.c_str());
    return 2;
  }
  KFn k = ks.at(name);
  ldsm_buf.assign((threads + 31) / 32 * 32, 0u);
  emu::launch(grid, threads, smem_bytes, [&] {
    k(reinterpret_cast<const ST*>(x.data()), reinterpret_cast<ST*>(y.data()), rows, K,
      reinterpret_cast<const u32*>(A.data()), sg.empty() ? nullptr : reinterpret_cast<const u32*>(sg.data()),
      mode, scale);
    emu::cp_async_wait(0);
  });
  std::ofstream(dir + "/y.bin", std::ios::binary).write(y.data(), (std::streamsize)y.size());
  return 0;
}
