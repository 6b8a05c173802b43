// e8p_host_driver.cpp -- runs one decode-matvec kernel of fast/kernels/e8p.cu on the CPU
// (cuda_host.h), for tests/test_e8p_host_emulation.py.
//
//   e8p_host_driver DIR NAME m n R NS batch scale rinv grid smem
// reads DIR/{codes1,codes2,z,tab,e81}.bin (the device layouts fast.cuda.e8p builds),
// writes DIR/y.bin (float32, (batch, m)). Build: g++ -std=c++20 -O2 -pthread
// -DQR_HOST_EMULATION e8p_host_driver.cpp.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>

#include "cuda_host.h"

// the PTX helpers e8p.cu uses (its and common.cuh's #ifndef QR_HOST_EMULATION blocks)
inline uint4 ldg_nc16(const void* p) { uint4 v; std::memcpy(&v, p, 16); return v; }
inline uint2 ldg_nc8(const void* p) { uint2 v; std::memcpy(&v, p, 8); return v; }
inline float4 ldg_f4(const float* p) { float4 v; std::memcpy(&v, p, 16); return v; }
inline unsigned pack_f16x2(float lo, float hi) {
  return (unsigned)emu::f2h(lo) | ((unsigned)emu::f2h(hi) << 16);
}
inline unsigned prmt(unsigned a, unsigned b, unsigned sel) {  // default mode
  const uint64_t src = ((uint64_t)b << 32) | a;
  unsigned r = 0;
  for (int k = 0; k < 4; ++k) r |= (unsigned)((src >> (8 * ((sel >> (4 * k)) & 7))) & 0xFF) << (8 * k);
  return r;
}
inline unsigned hsub2(unsigned a, unsigned b) {
  return (unsigned)emu::f2h(emu::lo(a) - emu::lo(b)) | ((unsigned)emu::f2h(emu::hi(a) - emu::hi(b)) << 16);
}
inline void mma16816(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  emu::mma16816_f16(c, a0, a1, a2, a3, b0, b1);
}

#include "../../fast/kernels/e8p.cu"

static std::vector<char> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

using KH = void (*)(const uint4*, const void*, const u16*, long long, float*, long long, int, int, int,
                    int, int, float, float, const uint4*, const uint4*);
using KF = void (*)(const uint4*, const void*, const float*, long long, float*, long long, int, int, int,
                    int, int, float, float, const uint4*, const uint4*);

int main(int argc, char** argv) {
  if (argc != 12) {
    std::fprintf(stderr, "usage: %s DIR NAME m n R NS batch scale rinv grid smem\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1], name = argv[2];
  const int m = std::stoi(argv[3]), n = std::stoi(argv[4]), R = std::stoi(argv[5]), NS = std::stoi(argv[6]);
  const int batch = std::stoi(argv[7]);
  const float scale = std::stof(argv[8]), rinv = std::stof(argv[9]);
  const unsigned grid = (unsigned)std::stoul(argv[10]);
  const size_t smem_bytes = std::stoul(argv[11]);
  auto c1 = slurp(dir + "/codes1.bin"), c2 = slurp(dir + "/codes2.bin"), z = slurp(dir + "/z.bin");
  auto tb = slurp(dir + "/tab.bin"), e8 = slurp(dir + "/e81.bin");
  std::vector<float> y((size_t)batch * m, NAN);
  const std::map<std::string, KH> kh = {
      {"e8p_matvec_e8p_h_rg1", e8p_matvec_e8p_h_rg1}, {"e8p_matvec_e8p_h_rg2", e8p_matvec_e8p_h_rg2},
      {"e8p_matvec_rvq4_h_rg1", e8p_matvec_rvq4_h_rg1}, {"e8p_matvec_rvq4_h_rg2", e8p_matvec_rvq4_h_rg2},
      {"e8p_matvec_rvq3_h_rg1", e8p_matvec_rvq3_h_rg1}, {"e8p_matvec_rvq3_h_rg2", e8p_matvec_rvq3_h_rg2}};
  const std::map<std::string, KF> kf = {
      {"e8p_matvec_e8p_f_rg1", e8p_matvec_e8p_f_rg1}, {"e8p_matvec_e8p_f_rg2", e8p_matvec_e8p_f_rg2},
      {"e8p_matvec_rvq4_f_rg1", e8p_matvec_rvq4_f_rg1}, {"e8p_matvec_rvq4_f_rg2", e8p_matvec_rvq4_f_rg2},
      {"e8p_matvec_rvq3_f_rg1", e8p_matvec_rvq3_f_rg1}, {"e8p_matvec_rvq3_f_rg2", e8p_matvec_rvq3_f_rg2}};
  const auto* C1 = reinterpret_cast<const uint4*>(c1.data());
  const auto* TB = reinterpret_cast<const uint4*>(tb.data());
  const auto* E8 = reinterpret_cast<const uint4*>(e8.data());
  if (kh.count(name)) {
    KH k = kh.at(name);
    const auto* Z = reinterpret_cast<const u16*>(z.data());
    emu::launch(grid, E8P_THREADS, smem_bytes, [&] {
      k(C1, c2.data(), Z, n, y.data(), m, m, n, R, NS, batch, scale, rinv, TB, E8);
    });
  } else if (kf.count(name)) {
    KF k = kf.at(name);
    const auto* Z = reinterpret_cast<const float*>(z.data());
    emu::launch(grid, E8P_THREADS, smem_bytes, [&] {
      k(C1, c2.data(), Z, n, y.data(), m, m, n, R, NS, batch, scale, rinv, TB, E8);
    });
  } else {
    std::fprintf(stderr, "unknown kernel %s\n", name.c_str());
    return 2;
  }
  std::ofstream(dir + "/y.bin", std::ios::binary).write(reinterpret_cast<const char*>(y.data()),
                                                        (std::streamsize)(y.size() * sizeof(float)));
  return 0;
}
