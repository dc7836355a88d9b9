// Hopper's warpgroup MMA (wgmma, sm_90a only), the pieces every wgmma kernel shares: the
// shared-memory operand descriptor, the fences, commit and wait, and the accumulator operand
// lists of the asm statements. Used by gemm_q8_wgmma.cu (W8A8) and gemm_w4_wgmma.cu (W4A16).
#pragma once

#include <stdint.h>

namespace wg {

// The shared-memory matrix descriptor of an operand tile at `addr` (1024-byte aligned, or
// advanced by whole k-steps within its 128-byte rows): K-major, 128-byte swizzle, 8-row groups
// 1024 bytes apart (the stride byte offset); the leading byte offset is unused in this mode.
__device__ __forceinline__ uint64_t desc(uint32_t addr) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}

__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void arrive() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins registers between asynchronous MMAs (the compiler must not move their reads or writes
// across a wgmma it cannot see into).
__device__ __forceinline__ void pin1(int &v) { asm volatile("" : "+r"(v)::"memory"); }
__device__ __forceinline__ void pin1(float &v) { asm volatile("" : "+f"(v)::"memory"); }
__device__ __forceinline__ void pin1(uint32_t &v) { asm volatile("" : "+r"(v)::"memory"); }
template <class T, int N> __device__ __forceinline__ void pin(T (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) pin1(d[i]);
}

} // namespace wg

// The accumulator operands of an m64n64 (32 per thread) and m64n128 (64) wgmma: their
// place-holders and constraints (C: "+r" for s32, "+f" for f32)
#define WG_REGS32                                                                                         \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define WG_REGS                                                                                           \
    WG_REGS32 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "                                     \
              "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, " \
              "%62, %63"
#define WG_ACC8(C, d, i)                                                                                  \
    C(d[i]), C(d[i + 1]), C(d[i + 2]), C(d[i + 3]), C(d[i + 4]), C(d[i + 5]), C(d[i + 6]), C(d[i + 7])
#define WG_ACC32(C, d) WG_ACC8(C, d, 0), WG_ACC8(C, d, 8), WG_ACC8(C, d, 16), WG_ACC8(C, d, 24)
#define WG_ACC(C, d) WG_ACC32(C, d), WG_ACC8(C, d, 32), WG_ACC8(C, d, 40), WG_ACC8(C, d, 48), WG_ACC8(C, d, 56)
