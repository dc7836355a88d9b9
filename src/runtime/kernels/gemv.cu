// GEMVs: bf16 and packed-int4 (W4A16) for a few rows, the single-row GEMVs whose prologue folds
// the preceding norm/residual or SiLU gate in, and the int4 → bf16 dequantization.
// Launchers: src/runtime/launch/gemv.rs.

#include "common.cuh"

// ---------------------------------------------------------------------------------------------
// bf16 GEMV for a few rows: y[r, n] = Σ_k x[r, k] · W[n, k]. One warp per output feature,
// NB activation rows per block row (blockIdx.y tiles the rows). K % 8 == 0.
template <int NB>
__device__ void gemv_bf16(const bf16 *__restrict__ W, const bf16 *__restrict__ x, bf16 *__restrict__ y,
                          int N, int K, int rows) {
    int n = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (n >= N) return;
    int r0 = blockIdx.y * NB, nb = min(NB, rows - r0);
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) acc[b] = 0.f;
    const uint4 *wr = (const uint4 *)(W + (size_t)n * K);
    const int K8 = K / 8;
    // four independent 16-byte loads in flight per lane: a lone warp per row must keep enough
    // bytes moving to approach the memory bandwidth
    for (int c0 = lane; c0 < K8; c0 += 128) {
        uint4 wv[4];
#pragma unroll
        for (int u = 0; u < 4; u++) wv[u] = c0 + 32 * u < K8 ? __ldg(wr + c0 + 32 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int c = c0 + 32 * u;
            if (c >= K8) break;
            float wf[8] = {lo_bf(wv[u].x), hi_bf(wv[u].x), lo_bf(wv[u].y), hi_bf(wv[u].y),
                           lo_bf(wv[u].z), hi_bf(wv[u].z), lo_bf(wv[u].w), hi_bf(wv[u].w)};
#pragma unroll
            for (int b = 0; b < NB; b++) {
                if (b < nb) {
                    uint4 xv = __ldg((const uint4 *)(x + (size_t)(r0 + b) * K) + c);
                    acc[b] += wf[0] * lo_bf(xv.x) + wf[1] * hi_bf(xv.x) + wf[2] * lo_bf(xv.y) +
                              wf[3] * hi_bf(xv.y) + wf[4] * lo_bf(xv.z) + wf[5] * hi_bf(xv.z) +
                              wf[6] * lo_bf(xv.w) + wf[7] * hi_bf(xv.w);
                }
            }
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        float s = warp_sum(acc[b]);
        if (lane == 0 && b < nb) y[(size_t)(r0 + b) * N + n] = tobf(s);
    }
}

extern "C" __global__ void gemv_bf16_1(const bf16 *W, const bf16 *x, bf16 *y, int N, int K, int rows) {
    grid_dep_sync();
    gemv_bf16<1>(W, x, y, N, K, rows);
}
extern "C" __global__ void gemv_bf16_4(const bf16 *W, const bf16 *x, bf16 *y, int N, int K, int rows) {
    grid_dep_sync();
    gemv_bf16<4>(W, x, y, N, K, rows);
}

// ---------------------------------------------------------------------------------------------
// W4A16 GEMV reading compressed-tensors' pack-quantized weights directly:
//   P [N, K/8] int32, nibble i of word j = column 8j + i, stored as q + 8 (q in −8..7);
//   S [N, K/G] scales; Z [N, K/G] zero points (q units) or null for symmetric.
//   w = (q − z) · s;  y[r, n] = Σ_k x[r, k] · w[n, k].
// One warp per output feature, each lane takes 32 columns (one uint4) at a time; G % 32 == 0.
// float(nibble) − off without an int→float conversion: 2^23 + v has v in its low mantissa bits,
// so one subtraction of off = 2^23 + 8 + zero point removes both (exact: all are integers
// below 2^24).
__device__ __forceinline__ float nib(uint32_t w, int j, float magic_off) {
    return __uint_as_float(((w >> (4 * j)) & 15u) | 0x4b000000u) - magic_off;
}

template <int NB>
__device__ void gemv_w4(const uint32_t *__restrict__ P, const bf16 *__restrict__ S,
                        const bf16 *__restrict__ Z, const bf16 *__restrict__ x, bf16 *__restrict__ y,
                        int N, int K, int G, int rows) {
    int n = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (n >= N) return;
    int r0 = blockIdx.y * NB, nb = min(NB, rows - r0);
    int ng = K / G, K8 = K / 8;
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) acc[b] = 0.f;
    const uint32_t *pr = P + (size_t)n * K8;
    for (int c0 = lane; c0 < K8; c0 += 128) {
        uint32_t pw[4];
#pragma unroll
        for (int u = 0; u < 4; u++) pw[u] = c0 + 32 * u < K8 ? __ldg(pr + c0 + 32 * u) : 0u;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int c = c0 + 32 * u;
            if (c >= K8) break;
            int g = (c * 8) / G;
            float s = bf(S[(size_t)n * ng + g]);
            float off = 8388608.f + 8.f + (Z ? bf(Z[(size_t)n * ng + g]) : 0.f);
            float q[8];
#pragma unroll
            for (int j = 0; j < 8; j++) q[j] = nib(pw[u], j, off);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                if (b < nb) {
                    uint4 xv = __ldg((const uint4 *)(x + (size_t)(r0 + b) * K) + c);
                    acc[b] += s * (q[0] * lo_bf(xv.x) + q[1] * hi_bf(xv.x) + q[2] * lo_bf(xv.y) + q[3] * hi_bf(xv.y) +
                                   q[4] * lo_bf(xv.z) + q[5] * hi_bf(xv.z) + q[6] * lo_bf(xv.w) + q[7] * hi_bf(xv.w));
                }
            }
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        float s = warp_sum(acc[b]);
        if (lane == 0 && b < nb) y[(size_t)(r0 + b) * N + n] = tobf(s);
    }
}

extern "C" __global__ void gemv_w4_1(const uint32_t *P, const bf16 *S, const bf16 *Z, const bf16 *x, bf16 *y,
                                     int N, int K, int G, int rows) {
    grid_dep_sync();
    gemv_w4<1>(P, S, Z, x, y, N, K, G, rows);
}
extern "C" __global__ void gemv_w4_4(const uint32_t *P, const bf16 *S, const bf16 *Z, const bf16 *x, bf16 *y,
                                     int N, int K, int G, int rows) {
    grid_dep_sync();
    gemv_w4<4>(P, S, Z, x, y, N, K, G, rows);
}
extern "C" __global__ void gemv_w4_16(const uint32_t *P, const bf16 *S, const bf16 *Z, const bf16 *x, bf16 *y,
                                      int N, int K, int G, int rows) {
    grid_dep_sync();
    gemv_w4<16>(P, S, Z, x, y, N, K, G, rows);
}

// ---------------------------------------------------------------------------------------------
// Single-row GEMVs whose input is built once per block in shared memory (f32) by a prologue,
// which folds the elementwise step before a Linear into it (one launch instead of two):
//   mode 0: x = a
//   mode 1: x = bf16(c + bf16(rmsnorm(a)·b)), the post-norm residual; block 0 stores x to d
//   mode 2: x = bf16(bf16(silu(a[:K]))·a[K:]), the gated MLP activation
// The results equal the separate kernels' (same roundings).
__device__ void gemv_prologue(float *xs, float *red, int mode, const bf16 *a, const bf16 *b, const bf16 *c,
                              bf16 *d, float eps, int K) {
    const uint4 *a4 = (const uint4 *)a;
    if (mode == 1) {
        float ss = 0.f;
        for (int i = threadIdx.x; i < K / 8; i += blockDim.x) {
            uint4 v = a4[i];
            uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int k = 0; k < 4; k++) ss += lo_bf(u[k]) * lo_bf(u[k]) + hi_bf(u[k]) * hi_bf(u[k]);
        }
        ss = block_reduce(ss, red, false);
        float inv = rsqrtf(ss / K + eps);
        for (int i = threadIdx.x; i < K / 8; i += blockDim.x) {
            uint4 v = a4[i], wv = ((const uint4 *)b)[i], hv = ((const uint4 *)c)[i];
            uint32_t u[4] = {v.x, v.y, v.z, v.w}, ww[4] = {wv.x, wv.y, wv.z, wv.w}, hh[4] = {hv.x, hv.y, hv.z, hv.w};
            uint32_t res[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float x0 = bf(tobf(lo_bf(hh[k]) + bf(tobf(lo_bf(u[k]) * inv * lo_bf(ww[k])))));
                float x1 = bf(tobf(hi_bf(hh[k]) + bf(tobf(hi_bf(u[k]) * inv * hi_bf(ww[k])))));
                xs[8 * i + 2 * k] = x0;
                xs[8 * i + 2 * k + 1] = x1;
                __nv_bfloat162 r2 = __floats2bfloat162_rn(x0, x1);
                res[k] = *(uint32_t *)&r2;
            }
            if (blockIdx.x == 0) ((uint4 *)d)[i] = make_uint4(res[0], res[1], res[2], res[3]);
        }
    } else if (mode == 2) {
        for (int i = threadIdx.x; i < K / 8; i += blockDim.x) {
            uint4 gv = a4[i], uv = a4[K / 8 + i];
            uint32_t gg[4] = {gv.x, gv.y, gv.z, gv.w}, uu[4] = {uv.x, uv.y, uv.z, uv.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float g0 = lo_bf(gg[k]), g1 = hi_bf(gg[k]);
                xs[8 * i + 2 * k] = bf(tobf(bf(tobf(g0 / (1.f + __expf(-g0)))) * lo_bf(uu[k])));
                xs[8 * i + 2 * k + 1] = bf(tobf(bf(tobf(g1 / (1.f + __expf(-g1)))) * hi_bf(uu[k])));
            }
        }
    } else {
        for (int i = threadIdx.x; i < K / 8; i += blockDim.x) {
            uint4 v = a4[i];
            uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                xs[8 * i + 2 * k] = lo_bf(u[k]);
                xs[8 * i + 2 * k + 1] = hi_bf(u[k]);
            }
        }
    }
    __syncthreads();
}

// y[n] = Σ_k x[k] W[n, k], bf16 W; each warp computes two outputs (each x read from shared
// memory serves both), 8 warps per block. Each lane loads its share of both rows (up to
// K = 2048) before the prologue, so the weight stream is in flight while the input is built —
// and, on Hopper, before the wait for the previous kernel (common.cuh), while that one runs.
extern "C" __global__ void gemv1x_bf16(const bf16 *__restrict__ W, int mode, const bf16 *a, const bf16 *b,
                                       const bf16 *c, bf16 *d, float eps, bf16 *__restrict__ y, int N, int K) {
    extern __shared__ float xs[];
    float *red = xs + K;
    constexpr int MAXC = 8;
    int n0 = 2 * (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)), lane = threadIdx.x & 31;
    const int K8 = K / 8;
    const uint4 *w0 = (const uint4 *)(W + (size_t)min(n0, N - 1) * K);
    const uint4 *w1 = (const uint4 *)(W + (size_t)min(n0 + 1, N - 1) * K);
    uint4 wa[MAXC], wb[MAXC];
#pragma unroll
    for (int u = 0; u < MAXC; u++) {
        bool in = lane + 32 * u < K8;
        wa[u] = in ? ld_early(w0 + lane + 32 * u) : make_uint4(0, 0, 0, 0);
        wb[u] = in ? ld_early(w1 + lane + 32 * u) : make_uint4(0, 0, 0, 0);
    }
    grid_dep_sync();  // the weights are no earlier kernel's output: requested before the wait
    gemv_prologue(xs, red, mode, a, b, c, d, eps, K);
    if (n0 >= N) return;
    float acc0 = 0.f, acc1 = 0.f;
    auto dot = [&](uint4 w, float4 x0, float4 x1) {
        return lo_bf(w.x) * x0.x + hi_bf(w.x) * x0.y + lo_bf(w.y) * x0.z + hi_bf(w.y) * x0.w + lo_bf(w.z) * x1.x +
               hi_bf(w.z) * x1.y + lo_bf(w.w) * x1.z + hi_bf(w.w) * x1.w;
    };
#pragma unroll
    for (int u = 0; u < MAXC; u++) {
        int cc = lane + 32 * u;
        if (cc < K8) {
            float4 x0 = *(const float4 *)(xs + cc * 8), x1 = *(const float4 *)(xs + cc * 8 + 4);
            acc0 += dot(wa[u], x0, x1);
            acc1 += dot(wb[u], x0, x1);
        }
    }
    for (int cc = lane + 32 * MAXC; cc < K8; cc += 64) {
        bool second = cc + 32 < K8;
        uint4 a0 = __ldg(w0 + cc), b0 = __ldg(w1 + cc);
        uint4 a1 = second ? __ldg(w0 + cc + 32) : make_uint4(0, 0, 0, 0), b1 = second ? __ldg(w1 + cc + 32) : make_uint4(0, 0, 0, 0);
        float4 x0 = *(const float4 *)(xs + cc * 8), x1 = *(const float4 *)(xs + cc * 8 + 4);
        acc0 += dot(a0, x0, x1);
        acc1 += dot(b0, x0, x1);
        if (second) {
            float4 y0 = *(const float4 *)(xs + (cc + 32) * 8), y1 = *(const float4 *)(xs + (cc + 32) * 8 + 4);
            acc0 += dot(a1, y0, y1);
            acc1 += dot(b1, y0, y1);
        }
    }
    acc0 = warp_sum(acc0);
    acc1 = warp_sum(acc1);
    if (lane == 0) {
        y[n0] = tobf(acc0);
        if (n0 + 1 < N) y[n0 + 1] = tobf(acc1);
    }
}

// The same for packed int4 weights: one 32-bit word (8 weights) per lane at a time, so a warp's
// loads are contiguous and its shared-memory reads of x fall in distinct banks; two rows per
// warp; `lg` = log2(words per group). The scales are read after the prologue: requesting them
// with the weights (cf8c2af, reverted) took 94 registers instead of 64, so half the blocks per
// multiprocessor, and W4A16's batch-1 decode on an H200 went from 1.20 to 1.38 ms per token
// (bf16 unchanged; cf8c2af's GEMM change alone left the engine at 1.22). Staging the block's
// scales in shared memory before the programmatic-launch wait (64 registers, 2 KiB) was no faster
// either (H200, graph: 1.16 vs 1.15 ms per step, 2026-12-01), nor was a word's dot product with
// two weights dequantized per lop3 (128 + v as bf16 halves, the offset applied once per word
// through Σ x): 30% fewer SASS instructions (2,880 vs 4,096, 64 registers under launch bounds),
// 1.169 ms per step against 1.139–1.146 (one call each) — neither the scales' latency nor the
// instruction count is what holds this kernel at bf16's time.
extern "C" __global__ void gemv1x_w4(const uint32_t *__restrict__ P, const bf16 *__restrict__ S,
                                     const bf16 *__restrict__ Z, int mode, const bf16 *a, const bf16 *b,
                                     const bf16 *c, bf16 *d, float eps, bf16 *__restrict__ y, int N, int K, int lg) {
    extern __shared__ float xs[];
    float *red = xs + K;
    constexpr int MAXC = 16;
    int n0 = 2 * (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)), lane = threadIdx.x & 31;
    int K8 = K / 8, ng = K8 >> lg;
    int na = min(n0, N - 1), nb = min(n0 + 1, N - 1);
    const uint32_t *pa = P + (size_t)na * K8, *pb = P + (size_t)nb * K8;
    uint32_t wa[MAXC], wb[MAXC];
#pragma unroll
    for (int u = 0; u < MAXC; u++) {
        bool in = lane + 32 * u < K8;
        wa[u] = in ? ld_early(pa + lane + 32 * u) : 0u;
        wb[u] = in ? ld_early(pb + lane + 32 * u) : 0u;
    }
    grid_dep_sync();  // as in gemv1x_bf16
    gemv_prologue(xs, red, mode, a, b, c, d, eps, K);
    if (n0 >= N) return;
    float acc0 = 0.f, acc1 = 0.f;
    auto word = [&](uint32_t w, uint32_t v, int cc) {
        int g = cc >> lg;
        float sa = bf(S[(size_t)na * ng + g]), sb = bf(S[(size_t)nb * ng + g]);
        float oa = 8388608.f + 8.f + (Z ? bf(Z[(size_t)na * ng + g]) : 0.f);
        float ob = 8388608.f + 8.f + (Z ? bf(Z[(size_t)nb * ng + g]) : 0.f);
        float4 x0 = *(const float4 *)(xs + cc * 8), x1 = *(const float4 *)(xs + cc * 8 + 4);
        acc0 += sa * (nib(w, 0, oa) * x0.x + nib(w, 1, oa) * x0.y + nib(w, 2, oa) * x0.z + nib(w, 3, oa) * x0.w +
                      nib(w, 4, oa) * x1.x + nib(w, 5, oa) * x1.y + nib(w, 6, oa) * x1.z + nib(w, 7, oa) * x1.w);
        acc1 += sb * (nib(v, 0, ob) * x0.x + nib(v, 1, ob) * x0.y + nib(v, 2, ob) * x0.z + nib(v, 3, ob) * x0.w +
                      nib(v, 4, ob) * x1.x + nib(v, 5, ob) * x1.y + nib(v, 6, ob) * x1.z + nib(v, 7, ob) * x1.w);
    };
#pragma unroll
    for (int u = 0; u < MAXC; u++)
        if (lane + 32 * u < K8) word(wa[u], wb[u], lane + 32 * u);
    for (int cc = lane + 32 * MAXC; cc < K8; cc += 32) word(__ldg(pa + cc), __ldg(pb + cc), cc);
    acc0 = warp_sum(acc0);
    acc1 = warp_sum(acc1);
    if (lane == 0) {
        y[n0] = tobf(acc0);
        if (n0 + 1 < N) y[n0 + 1] = tobf(acc1);
    }
}

// Dequantizes packed int4 weights to bf16 W [N, K] (for many-row products through cuBLAS).
extern "C" __global__ void dequant_w4(const uint32_t *P, const bf16 *S, const bf16 *Z, bf16 *W, int N, int K,
                                      int G) {
    grid_dep_sync();
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;  // one word = 8 weights
    if (idx >= (size_t)N * (K / 8)) return;
    int n = idx / (K / 8), c8 = idx % (K / 8);
    int g = (c8 * 8) / G, ng = K / G;
    float s = bf(S[(size_t)n * ng + g]);
    float z = Z ? bf(Z[(size_t)n * ng + g]) : 0.f;
    uint32_t w = P[idx];
    // the 8 values as one 16-byte store (K % 8 == 0 keeps it aligned): 8 scalar 2-byte stores
    // made this kernel ~5x slower than its memory traffic
    uint32_t o[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float a = ((float)((int)((w >> (8 * j)) & 15u) - 8) - z) * s;
        float b = ((float)((int)((w >> (8 * j + 4)) & 15u) - 8) - z) * s;
        __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        o[j] = *(uint32_t *)&h;
    }
    *(uint4 *)(W + (size_t)n * K + c8 * 8) = make_uint4(o[0], o[1], o[2], o[3]);
}
