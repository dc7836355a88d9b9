// Shared by every kernel file of the runtime (each .cu is compiled to its own PTX module by
// build.rs, for compute_80, so the same binary runs on Ampere, Ada (the L4 the competition uses)
// and Hopper, and again for compute_90, which Hopper loads: see grid_dep_wait below).
//
// Conventions: bf16 storage, f32 arithmetic; row-major; a "row" is one token of one sequence.
// Every kernel that depends on the decoding position reads it from device memory (pos[]), so a
// decode step can be captured once as a CUDA graph and replayed.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

#define NEG_INF (-__int_as_float(0x7f800000))

// Programmatic dependent launch (Hopper, sm_90 and up). On such a GPU the host launches our
// kernels with the programmatic-serialization attribute (src/runtime/launch/mod.rs, only for
// entries whose PTX holds the wait), so a kernel's blocks may start while the kernel before it
// still runs: its launch latency and its own prologue overlap the other's tail. So every kernel
// calls grid_dep_wait() before it reads anything an earlier kernel writes or writes anything an
// earlier kernel reads — on every path, before any early return, or a kernel that skipped it
// could complete before its predecessor and release its successor too early — and before the
// wait only work that depends on no earlier kernel (a GEMV's weight loads). grid_dep_launch()
// then lets the next kernel's blocks be scheduled. Below sm_90 (the compute_80 PTX) both are
// empty and launches serialize as usual.
__device__ __forceinline__ void grid_dep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dep_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Loads to issue before grid_dep_wait(): plain (coherent) global loads. ptxas keeps these ahead
// of the wait, but it schedules the wait above non-coherent ones (ld.global.nc: __ldg, or const
// __restrict__ pointers), which would leave a prefetch waiting for the previous kernel too.
__device__ __forceinline__ uint32_t ld_early(const uint32_t *p) {
    uint32_t v;
    asm volatile("ld.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ uint4 ld_early(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
// Both, for kernels with nothing to do before their inputs are ready.
__device__ __forceinline__ void grid_dep_sync() {
    grid_dep_wait();
    grid_dep_launch();
}

// Shared memory's 32-bit address of a generic pointer into it (cp.async's, ldmatrix's and the
// wgmma descriptors' operand).
__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte global → shared copy that bypasses L1, asynchronous; with pred false it writes 16
// zero bytes and reads nothing (src-size 0: src may then be any valid address), which pads rows
// and columns past a tensor's edge with zeros.
__device__ __forceinline__ void cp16(uint32_t dst, const void *src, bool pred) {
    int n = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum (or max) over the block; blockDim.x a multiple of 32. `red` holds 32 floats.
__device__ float block_reduce(float v, float *red, bool is_max) {
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (l == 0) red[w] = v;
    __syncthreads();
    v = l < nw ? red[l] : (is_max ? NEG_INF : 0.f);
    return is_max ? warp_max(v) : warp_sum(v);
}

__device__ __forceinline__ float bf(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 tobf(float x) { return __float2bfloat16(x); }
__device__ __forceinline__ float lo_bf(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float hi_bf(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// The largest |value| of 8 bf16 values (a 16-byte chunk), at least 0.
__device__ __forceinline__ float absmax8(uint4 v, float m) {
    uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) m = fmaxf(m, fmaxf(fabsf(lo_bf(u[i])), fabsf(hi_bf(u[i]))));
    return m;
}

// The 8 bytes of 8 bf16 values (a 16-byte chunk) quantized with scale s: Pack::two of each pair
// divided by s.
template <class Pack> __device__ __forceinline__ uint2 pack8(uint4 v, float s) {
    uint32_t u[4] = {v.x, v.y, v.z, v.w}, packed[2] = {0u, 0u};
#pragma unroll
    for (int i = 0; i < 4; i++) packed[i / 2] |= Pack::two(lo_bf(u[i]) / s, hi_bf(u[i]) / s) << (16 * (i % 2));
    return make_uint2(packed[0], packed[1]);
}

// The second half of a per-token quantizer: row blockIdx.x of x (xr, K values) → its bytes and
// scale, given the row's max |x| (m, the same on every thread). Each thread reads the 16-byte
// chunks c ≡ threadIdx.x (mod blockDim.x), the ones it wrote itself where xr is the output of
// the same block (rmsnorm_quant_rows).
template <class Pack>
__device__ __forceinline__ void quant_row_store(const uint4 *xr, float m, uint8_t *q, float *scale, int K) {
    float s = fmaxf(m / Pack::qmax, 1e-10f);
    uint2 *qr = (uint2 *)(q + (size_t)blockIdx.x * K);
    for (int c = threadIdx.x; c < K / 8; c += blockDim.x) qr[c] = pack8<Pack>(xr[c], s);
    if (threadIdx.x == 0) scale[blockIdx.x] = s;
}

// RMSNorm of input row in_row into output row blockIdx.x (rmsnorm_rows in norm_rope.cu, and the
// fused quantizers below): y = bf16(x · rsqrt(mean x² + eps) · w) — candle's rms_norm, one
// rounding —, written (prev null) or added to row blockIdx.x of prev (bf16 add, `h + norm(o)` of
// the post-norm decoder layer; prev may be out itself). n % 8 == 0; 16-byte loads. Returns the
// largest |value| this thread wrote.
__device__ __forceinline__ float rmsnorm_row(const bf16 *x, const bf16 *w, const bf16 *prev, bf16 *out, int n,
                                             float eps, int in_row, float *red) {
    const uint4 *xr = (const uint4 *)(x + (size_t)in_row * n);
    uint4 *o = (uint4 *)(out + (size_t)blockIdx.x * n);
    const uint4 *pr = prev ? (const uint4 *)(prev + (size_t)blockIdx.x * n) : nullptr;
    const uint4 *wr = (const uint4 *)w;
    float ss = 0.f, m = 0.f;
    for (int c = threadIdx.x; c < n / 8; c += blockDim.x) {
        uint4 v = xr[c];
        uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) ss += lo_bf(u[i]) * lo_bf(u[i]) + hi_bf(u[i]) * hi_bf(u[i]);
    }
    ss = block_reduce(ss, red, false);
    float inv = rsqrtf(ss / n + eps);
    for (int c = threadIdx.x; c < n / 8; c += blockDim.x) {
        uint4 v = xr[c], wv = wr[c], p = pr ? pr[c] : make_uint4(0, 0, 0, 0);
        uint32_t u[4] = {v.x, v.y, v.z, v.w}, ww[4] = {wv.x, wv.y, wv.z, wv.w}, pp[4] = {p.x, p.y, p.z, p.w};
        uint32_t res[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float y0 = bf(tobf(lo_bf(u[i]) * inv * lo_bf(ww[i]))), y1 = bf(tobf(hi_bf(u[i]) * inv * hi_bf(ww[i])));
            if (pr) { y0 += lo_bf(pp[i]); y1 += hi_bf(pp[i]); }
            __nv_bfloat162 r = __floats2bfloat162_rn(y0, y1);
            res[i] = *(uint32_t *)&r;
            m = fmaxf(m, fmaxf(fabsf(lo_bf(res[i])), fabsf(hi_bf(res[i]))));
        }
        o[c] = make_uint4(res[0], res[1], res[2], res[3]);
    }
    return m;
}

// RMSNorm (+ residual) of row blockIdx.x whose output row is also quantized per token for the
// 8-bit GEMM that reads it next: the bytes and scale quant_rows<Pack> would give on that output,
// without a pass of its own (one launch and one read of the row less per product).
template <class Pack>
__device__ void rmsnorm_quant_rows(const bf16 *x, const bf16 *w, const bf16 *prev, bf16 *out, int n, float eps,
                                   uint8_t *q, float *scale) {
    __shared__ float red[32];
    grid_dep_sync();
    float m = rmsnorm_row(x, w, prev, out, n, eps, blockIdx.x, red);
    quant_row_store<Pack>((const uint4 *)(out + (size_t)blockIdx.x * n), block_reduce(m, red, true), q, scale, n);
}

// Row blockIdx.x of a SiLU-gated product whose output is also quantized per token for the 8-bit
// GEMM that reads it next (down's input), without a pass of its own: `gate_up(c, g, u)` gives the
// gate and up values of output chunk c (8 values each, already rounded to bf16 as the unfused
// product rounds them); y [I] = bf16(bf16(silu(g)) · u) (silu_mul_rows' roundings), then
// quant_row_store<Pack>'s bytes and scale of y. I % 8 == 0. With y null, where only the 8-bit
// product reads the activation, the row is staged in the block's dynamic shared memory (I · 2
// bytes) instead of written out: at 16,384 rows of the 1.2B that is 134 MB per layer not written.
template <class Pack, class GateUp>
__device__ void silu_mul_quant_row(GateUp gate_up, bf16 *y, int I, uint8_t *q, float *scale) {
    __shared__ float red[32];
    extern __shared__ __align__(16) unsigned char silu_stage[];
    uint4 *yr = y ? (uint4 *)(y + (size_t)blockIdx.x * I) : (uint4 *)silu_stage;
    float m = 0.f;
    for (int c = threadIdx.x; c < I / 8; c += blockDim.x) {
        float g[8], u[8];
        gate_up(c, g, u);
        uint32_t res[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float v0 = bf(tobf(g[2 * i] / (1.f + __expf(-g[2 * i])))) * u[2 * i];
            float v1 = bf(tobf(g[2 * i + 1] / (1.f + __expf(-g[2 * i + 1])))) * u[2 * i + 1];
            __nv_bfloat162 r = __floats2bfloat162_rn(v0, v1);
            res[i] = *(uint32_t *)&r;
            m = fmaxf(m, fmaxf(fabsf(lo_bf(res[i])), fabsf(hi_bf(res[i]))));
        }
        yr[c] = make_uint4(res[0], res[1], res[2], res[3]);
    }
    quant_row_store<Pack>(yr, block_reduce(m, red, true), q, scale, I);
}

// The gate and up values of chunk c (8 outputs) of a gated product stored as bf16 rows
// gu [rows, 2I] = [gate | up] (row blockIdx.x), for silu_mul_quant_row.
struct GateUpRows {
    const bf16 *gu;
    int I;
    __device__ __forceinline__ void operator()(int c, float *g, float *u) const {
        const bf16 *row = gu + (size_t)blockIdx.x * 2 * I;
        uint4 gv = ((const uint4 *)row)[c], uv = ((const uint4 *)(row + I))[c];
        uint32_t gg[4] = {gv.x, gv.y, gv.z, gv.w}, uu[4] = {uv.x, uv.y, uv.z, uv.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            g[2 * i] = lo_bf(gg[i]); g[2 * i + 1] = hi_bf(gg[i]);
            u[2 * i] = lo_bf(uu[i]); u[2 * i + 1] = hi_bf(uu[i]);
        }
    }
};

// Per-token 8-bit quantization of x [rows, K] (one block per row, K % 8 == 0; a multiple of 32
// threads for block_reduce): scale = max(|x|) / Pack::qmax (at least 1e-10), and each pair of
// values x / scale → two bytes by Pack::two. Shared by the int8 (quant.cu) and fp8 e4m3
// (gemm_fp8.cu) quantizers, which differ only in those two.
template <class Pack> __device__ void quant_rows(const bf16 *x, uint8_t *q, float *scale, int K) {
    __shared__ float red[32];
    grid_dep_sync();
    const uint4 *xr = (const uint4 *)(x + (size_t)blockIdx.x * K);
    float m = 0.f;
    for (int c = threadIdx.x; c < K / 8; c += blockDim.x) m = absmax8(xr[c], m);
    quant_row_store<Pack>(xr, block_reduce(m, red, true), q, scale, K);
}

// quant_rows for rows of K ≤ 32 · 8 · QW_CHUNKS values, one warp per row (blockDim.x / 32 rows
// per block): the row's 16-byte chunks are all requested at once and stay in registers between
// the max and the bytes, and the warp reduces with shuffles alone (no block barrier, one read of
// the row). The same bytes and scales as quant_rows. With one 256-thread block per row of 2,048
// values, each thread loading one chunk and the block waiting twice at its barrier, quant_rows
// leaves the memory system mostly idle on the prefill's 16,384-row products.
constexpr int QW_CHUNKS = 16;
template <class Pack> __device__ void quant_rows_warp(const bf16 *x, uint8_t *q, float *scale, int rows, int K) {
    grid_dep_sync();
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const uint4 *xr = (const uint4 *)(x + (size_t)row * K);
    const int n8 = K / 8;
    uint4 v[QW_CHUNKS];
    float m = 0.f;
#pragma unroll
    for (int i = 0; i < QW_CHUNKS; i++) {
        const int c = lane + 32 * i;
        v[i] = c < n8 ? xr[c] : make_uint4(0, 0, 0, 0);
        m = absmax8(v[i], m);
    }
    const float s = fmaxf(warp_max(m) / Pack::qmax, 1e-10f);
    uint2 *qr = (uint2 *)(q + (size_t)row * K);
#pragma unroll
    for (int i = 0; i < QW_CHUNKS; i++) {
        const int c = lane + 32 * i;
        if (c < n8) qr[c] = pack8<Pack>(v[i], s);
    }
    if (lane == 0) scale[row] = s;
}
