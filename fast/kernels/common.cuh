// common.cuh -- integer typedefs and the raw-PTX helpers shared by the kernels of
// fast/kernels (e8p.cu, trellis_decode.cu, rht.cu, viterbi.cu).
//
// No CUDA headers: half arithmetic is raw PTX on 16-bit patterns, so every source compiles
// with bare NVRTC on a machine without a GPU (tests/test_cuda_compile.py).
// fast.cuda._compile.kernel_source inlines the #include "*.cuh" lines of a source before
// NVRTC sees it (CuPy's kernel cache is keyed on the full text, headers included).
// The CPU emulation (tests/emulation) compiles the sources as host C++ with
// -DQR_HOST_EMULATION and supplies host versions of everything in the #ifndef below.
#ifndef QR_COMMON_CUH
#define QR_COMMON_CUH

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#ifndef QR_HOST_EMULATION
// byte permute, default mode: byte k of the result is byte (sel >> 4k) & 7 of b:a
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
  u32 r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}
// fp16x2 add / subtract, round to nearest even
__device__ __forceinline__ u32 hadd2(u32 a, u32 b) {
  u32 r;
  asm("add.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {
  u32 r;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ float h2f(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ u16 f2h(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ u16 f2bf(float f) {
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
// half2(lo, hi) (lo in the low 16 bits), round to nearest even
__device__ __forceinline__ u32 pack_f16x2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// D = A B + D, m16n8k16, A row-major 16 x 16, B column-major 16 x 8, fp32 accumulators
__device__ __forceinline__ void mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma16816_bf16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0,
                                              u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// 32-bit shared-window address of a generic pointer into shared memory
__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}
// bytes of dynamic shared memory of this launch
__device__ __forceinline__ u32 dyn_smem_size() {
  u32 r;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
  return r;
}
// 16-byte global -> shared copy through L2 only (cp.async.cg), with a 256-byte L2 fetch
// hint (the streams copied this way are sequential); commit / wait groups
__device__ __forceinline__ void cp_async16(u32 dst, const void* src) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;" :: "r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }
#endif  // QR_HOST_EMULATION

#endif  // QR_COMMON_CUH
