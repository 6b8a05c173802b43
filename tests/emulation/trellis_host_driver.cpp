// trellis_host_driver.cpp -- runs one fused decode-matvec kernel of
// fast/kernels/trellis_decode.cu (trellis_mv_*) on the CPU (cuda_host.h), for tests/test_trellis_host_emulation.py.
//
//   trellis_host_driver DIR NAME b m n NI NJ U Wa outscale grid smem
// reads DIR/{codes,z,lut}.bin (relayout_codes, z (b, n) fp16 or fp32, the 1024 half2 LUT
// words), writes DIR/y.bin (float32 (b, m)) and DIR/cnt.bin (the arrival counters, which
// must be back at zero). Build: g++ -std=c++20 -O2 -pthread -DQR_HOST_EMULATION
// -DTD_MV=<code id> -DTD_THREADS=<threads> trellis_host_driver.cpp
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>

#include "cuda_host.h"

typedef unsigned int u32;
typedef unsigned short u16;
namespace td {
// the PTX helpers trellis_decode.cu uses (its and common.cuh's #ifndef QR_HOST_EMULATION blocks)
inline u32 shf_rc(u32 lo, u32 hi, u32 n) {
  const uint64_t v = ((uint64_t)hi << 32) | lo;
  return (u32)(v >> (n < 32 ? n : 32));
}
inline u32 dp4a_u(u32 a, u32 b, u32 c) {
  u32 s = c;
  for (int i = 0; i < 4; ++i) s += ((a >> (8 * i)) & 0xFF) * ((b >> (8 * i)) & 0xFF);
  return s;
}
inline u32 prmt(u32 a, u32 b, u32 sel) {
  const uint64_t src = ((uint64_t)b << 32) | a;
  u32 r = 0;
  for (int k = 0; k < 4; ++k) r |= (u32)((src >> (8 * ((sel >> (4 * k)) & 7))) & 0xFF) << (8 * k);
  return r;
}
inline u32 hadd2(u32 a, u32 b) {  // each half: the exact float sum rounded once (fp16 operands)
  return (u32)emu::f2h(emu::lo(a) + emu::lo(b)) | ((u32)emu::f2h(emu::hi(a) + emu::hi(b)) << 16);
}
inline float h2f(u16 h) { return emu::h2f(h); }
inline u32 pack_f16x2(float lo, float hi) { return (u32)emu::f2h(lo) | ((u32)emu::f2h(hi) << 16); }
inline u32 ldg1(const void* p) { u32 v; std::memcpy(&v, p, 4); return v; }
inline float2 ldgf2(const void* p) { float2 v; std::memcpy(&v, p, 8); return v; }
inline void mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  emu::mma16816_f16(c, a0, a1, a2, a3, b0, b1);
}
inline u32 lop3_and_xor(u32 a, u32 b, u32 c) { return (a & b) ^ c; }
inline unsigned char* const td_smem = smem;
inline u32 smem_addr(const void* p) { return emu::shared_addr(p); }
inline u32 hyb_lookup(u32 x, u32 lanebase) {   // mad, and, mad, ld.shared
  u32 t = x * x + x;
  t &= 0xFFC0u;
  t = t * 2u + lanebase;
  u32 v;
  std::memcpy(&v, smem + t, 4);
  return v;
}
inline void cp_async16(u32 dst, const void* src) { emu::cp_async16(dst, src); }
inline void cp_async_commit() { emu::cp_async_commit(); }
template <int N>
inline void cp_async_wait() { emu::cp_async_wait(N); }
inline void cp_async_wait_all() { emu::cp_async_wait_all(); }
}  // namespace td

#include "../../fast/kernels/trellis_decode.cu"

static std::vector<char> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

using KFn = void (*)(const u32*, const void*, float*, float*, int*, const u32*, int, int, int, int,
                     int, long long, int, float);


int main(int argc, char** argv) {
  if (argc != 13) {
    std::fprintf(stderr, "usage: %s DIR NAME b m n NI NJ U Wa outscale grid smem\\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1], name = argv[2];
  const int b = std::stoi(argv[3]), m = std::stoi(argv[4]), n = std::stoi(argv[5]);
  const int NI = std::stoi(argv[6]), NJ = std::stoi(argv[7]);
  const long long U = std::stoll(argv[8]);
  const int Wa = std::stoi(argv[9]);
  const float outscale = std::stof(argv[10]);
  const unsigned grid = (unsigned)std::stoul(argv[11]);
  const size_t smem_bytes = std::stoul(argv[12]);
  auto codes = slurp(dir + "/codes.bin"), z = slurp(dir + "/z.bin"), lut = slurp(dir + "/lut.bin");
  std::vector<float> y((size_t)b * m, NAN), part((size_t)Wa * 512, NAN);
  std::vector<int> cnt((size_t)NI, 0);
  std::map<std::string, KFn> ks;
#define ADD(NAME) ks[#NAME] = NAME;
#define PRE(c) ADD(trellis_mv_##c##_k2_h) ADD(trellis_mv_##c##_k2_f) ADD(trellis_mv_##c##_k3_h) \
  ADD(trellis_mv_##c##_k3_f) ADD(trellis_mv_##c##_k4_h) ADD(trellis_mv_##c##_k4_f)
#if TD_MV == TD_HYB
  PRE(hyb)
#elif TD_MV == TD_1MAD
  PRE(1mad)
#else
  PRE(3inst)
#endif
  if (!ks.count(name)) {
    std::fprintf(stderr, "kernel %s is not in this build\n", name.c_str());
    return 2;
  }
  KFn k = ks.at(name);
  const u32* C = reinterpret_cast<const u32*>(codes.data());
  const u32* L = reinterpret_cast<const u32*>(lut.data());
  emu::launch(grid, TD_THREADS, smem_bytes, [&] {
    k(C, z.data(), y.data(), part.data(), cnt.data(), L, b, m, n, NI, NJ, U, Wa, outscale);
    emu::cp_async_wait(0);   // a thread's copies are done when it exits (none may be left)
  });
  std::ofstream(dir + "/y.bin", std::ios::binary).write(reinterpret_cast<const char*>(y.data()),
                                                        (std::streamsize)(y.size() * sizeof(float)));
  std::ofstream(dir + "/cnt.bin", std::ios::binary).write(reinterpret_cast<const char*>(cnt.data()),
                                                          (std::streamsize)(cnt.size() * sizeof(int)));
  return 0;
}
