// Hand-written CUDA kernels for the serving path (compiled to PTX by build.rs for compute_80,
// so the same binary runs on Ampere, Ada (the L4 the competition uses) and Hopper).
//
// Conventions: bf16 storage, f32 arithmetic; row-major; a "row" is one token of one sequence.
// Every kernel that depends on the decoding position reads it from device memory (pos[]), so a
// decode step can be captured once as a CUDA graph and replayed.

#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

#define NEG_INF (-__int_as_float(0x7f800000))

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

// ---------------------------------------------------------------------------------------------
// Embedding gather: out[r] = table[ids[r]], hidden % 8 == 0.
extern "C" __global__ void embed_rows(const uint32_t *ids, const bf16 *table, bf16 *out, int hidden) {
    int r = blockIdx.x;
    const uint4 *src = (const uint4 *)(table + (size_t)ids[r] * hidden);
    uint4 *dst = (uint4 *)(out + (size_t)r * hidden);
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) dst[i] = src[i];
}

// RMSNorm of input row (blockIdx.x * row_step + row_off): y = bf16(x · rsqrt(mean x² + eps) · w).
// accumulate = 0: out[blockIdx.x] = y;  accumulate = 1: out[blockIdx.x] += y (bf16 add, as
// `h + norm(o)` in the post-norm decoder layer). n % 8 == 0; 16-byte loads.
extern "C" __global__ void rmsnorm_rows(const bf16 *x, const bf16 *w, bf16 *out, int n, float eps,
                                        int accumulate, int row_step, int row_off) {
    __shared__ float red[32];
    const uint4 *xr = (const uint4 *)(x + (size_t)(blockIdx.x * row_step + row_off) * n);
    uint4 *o = (uint4 *)(out + (size_t)blockIdx.x * n);
    const uint4 *wr = (const uint4 *)w;
    float ss = 0.f;
    for (int c = threadIdx.x; c < n / 8; c += blockDim.x) {
        uint4 v = xr[c];
        uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) ss += lo_bf(u[i]) * lo_bf(u[i]) + hi_bf(u[i]) * hi_bf(u[i]);
    }
    ss = block_reduce(ss, red, false);
    float inv = rsqrtf(ss / n + eps);
    for (int c = threadIdx.x; c < n / 8; c += blockDim.x) {
        uint4 v = xr[c], wv = wr[c], prev = accumulate ? o[c] : make_uint4(0, 0, 0, 0);
        uint32_t u[4] = {v.x, v.y, v.z, v.w}, ww[4] = {wv.x, wv.y, wv.z, wv.w}, pp[4] = {prev.x, prev.y, prev.z, prev.w};
        uint32_t res[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float y0 = bf(tobf(lo_bf(u[i]) * inv * lo_bf(ww[i]))), y1 = bf(tobf(hi_bf(u[i]) * inv * hi_bf(ww[i])));
            if (accumulate) { y0 += lo_bf(pp[i]); y1 += hi_bf(pp[i]); }
            __nv_bfloat162 r = __floats2bfloat162_rn(y0, y1);
            res[i] = *(uint32_t *)&r;
        }
        o[c] = make_uint4(res[0], res[1], res[2], res[3]);
    }
}

// SiLU-gated product: gu [R, 2I] = [gate | up] → out [R, I] = bf16(bf16(silu(g)) · u).
extern "C" __global__ void silu_mul_rows(const bf16 *gu, bf16 *out, int inter) {
    int r = blockIdx.y;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= inter) return;
    float g = bf(gu[(size_t)r * 2 * inter + i]);
    float u = bf(gu[(size_t)r * 2 * inter + inter + i]);
    bf16 s = tobf(g / (1.f + __expf(-g)));
    out[(size_t)r * inter + i] = tobf(bf(s) * u);
}

// out = bf16(bf16(silu(g)) · u) elementwise over n values (candle's silu then mul, in one pass).
extern "C" __global__ void silu_mul_flat(const bf16 *g, const bf16 *u, bf16 *out, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = bf(g[i]);
    out[i] = tobf(bf(tobf(x / (1.f + __expf(-x)))) * bf(u[i]));
}

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
    gemv_bf16<1>(W, x, y, N, K, rows);
}
extern "C" __global__ void gemv_bf16_4(const bf16 *W, const bf16 *x, bf16 *y, int N, int K, int rows) {
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
    gemv_w4<1>(P, S, Z, x, y, N, K, G, rows);
}
extern "C" __global__ void gemv_w4_4(const uint32_t *P, const bf16 *S, const bf16 *Z, const bf16 *x, bf16 *y,
                                     int N, int K, int G, int rows) {
    gemv_w4<4>(P, S, Z, x, y, N, K, G, rows);
}
extern "C" __global__ void gemv_w4_16(const uint32_t *P, const bf16 *S, const bf16 *Z, const bf16 *x, bf16 *y,
                                      int N, int K, int G, int rows) {
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
// K = 2048) before the prologue, so the weight stream is in flight while the input is built.
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
        wa[u] = in ? __ldg(w0 + lane + 32 * u) : make_uint4(0, 0, 0, 0);
        wb[u] = in ? __ldg(w1 + lane + 32 * u) : make_uint4(0, 0, 0, 0);
    }
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
// warp; `lg` = log2(words per group).
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
        wa[u] = in ? __ldg(pa + lane + 32 * u) : 0u;
        wb[u] = in ? __ldg(pb + lane + 32 * u) : 0u;
    }
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
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;  // one word = 8 weights
    if (idx >= (size_t)N * (K / 8)) return;
    int n = idx / (K / 8), c8 = idx % (K / 8);
    int g = (c8 * 8) / G, ng = K / G;
    float s = bf(S[(size_t)n * ng + g]);
    float z = Z ? bf(Z[(size_t)n * ng + g]) : 0.f;
    uint32_t w = P[idx];
#pragma unroll
    for (int j = 0; j < 8; j++)
        W[(size_t)n * K + c8 * 8 + j] = tobf(((float)((int)((w >> (4 * j)) & 15u) - 8) - z) * s);
}

// ---------------------------------------------------------------------------------------------
// Per-head QK RMSNorm, RoPE (NeoX halves, tables [positions, D/2]) and the KV-cache write.
// qkv [R, (Hq + 2·Hkv)·D]; row r belongs to sequence b = r / T, sits in cache slot pos[r] and has
// RoPE position pos[r] − pad[b]. Writes q_out [R, Hq, D] and kc/vc [B, Hkv, cap, D].
// One warp per (row, head); lane holds elements lane + 32·j.
template <int D>
__device__ void qk_norm_rope_store(const bf16 *qkv, const bf16 *qw, const bf16 *kw, const bf16 *cos_t,
                                   const bf16 *sin_t, const int *pos, const int *pad, bf16 *q_out, bf16 *kc,
                                   bf16 *vc, int Hq, int Hkv, int T, int cap, float eps, int use_rope) {
    constexpr int E = D / 32;  // elements per lane
    int r = blockIdx.x;
    int head = blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (head >= Hq + 2 * Hkv) return;
    int b = r / T, p = pos[r];
    const bf16 *src = qkv + (size_t)r * (Hq + 2 * Hkv) * D + (size_t)head * D;
    float v[E];
#pragma unroll
    for (int j = 0; j < E; j++) v[j] = bf(src[lane + 32 * j]);
    if (head >= Hq + Hkv) {  // V: straight into the cache
        int kvh = head - Hq - Hkv;
        bf16 *dst = vc + (((size_t)b * Hkv + kvh) * cap + p) * D;
#pragma unroll
        for (int j = 0; j < E; j++) dst[lane + 32 * j] = tobf(v[j]);
        return;
    }
    const bf16 *w = head < Hq ? qw : kw;
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < E; j++) ss += v[j] * v[j];
    ss = warp_sum(ss);
    float inv = rsqrtf(ss / D + eps);
#pragma unroll
    for (int j = 0; j < E; j++) v[j] = bf(tobf(v[j] * inv * bf(w[lane + 32 * j])));
    if (use_rope) {
        int rp = p - pad[b];
        float o[E];
#pragma unroll
        for (int j = 0; j < E; j++) {
            int i = lane + 32 * j, half = D / 2;
            int f = i % half;
            float c = bf(cos_t[(size_t)rp * half + f]), s = bf(sin_t[(size_t)rp * half + f]);
            // partner element i ± D/2 lives in this lane at j ± E/2
            float partner = j < E / 2 ? v[j + E / 2] : v[j - E / 2];
            o[j] = j < E / 2 ? v[j] * c - partner * s : v[j] * c + partner * s;
        }
#pragma unroll
        for (int j = 0; j < E; j++) v[j] = o[j];
    }
    bf16 *dst;
    if (head < Hq) {
        dst = q_out + ((size_t)r * Hq + head) * D;
    } else {
        int kvh = head - Hq;
        dst = kc + (((size_t)b * Hkv + kvh) * cap + p) * D;
    }
#pragma unroll
    for (int j = 0; j < E; j++) dst[lane + 32 * j] = tobf(v[j]);
}

extern "C" __global__ void qk_norm_rope_store_64(const bf16 *qkv, const bf16 *qw, const bf16 *kw, const bf16 *c,
                                                 const bf16 *s, const int *pos, const int *pad, bf16 *q, bf16 *kc,
                                                 bf16 *vc, int Hq, int Hkv, int T, int cap, float eps, int rope) {
    qk_norm_rope_store<64>(qkv, qw, kw, c, s, pos, pad, q, kc, vc, Hq, Hkv, T, cap, eps, rope);
}
extern "C" __global__ void qk_norm_rope_store_128(const bf16 *qkv, const bf16 *qw, const bf16 *kw, const bf16 *c,
                                                  const bf16 *s, const int *pos, const int *pad, bf16 *q, bf16 *kc,
                                                  bf16 *vc, int Hq, int Hkv, int T, int cap, float eps, int rope) {
    qk_norm_rope_store<128>(qkv, qw, kw, c, s, pos, pad, q, kc, vc, Hq, Hkv, T, cap, eps, rope);
}

// Attention of row r over its cached keys pad[b] ..= pos[r] (causal by construction: a row only
// sees slots written before or with it). q [R, Hq, D]; kc/vc [B, Hkv, cap, D]; o [R, Hq·D].
// One block of 256 threads per (row, query head): scores one key per thread into shared memory,
// then each warp sums p·V over its own contiguous run of keys (lanes across D, eight keys in
// flight), and the warps' partial outputs are added.
extern "C" __global__ void attn_rows(const bf16 *q, const bf16 *kc, const bf16 *vc, const int *pos,
                                     const int *pad, bf16 *o, int Hq, int Hkv, int D, int T, int cap,
                                     float scale) {
    extern __shared__ float sm[];
    const int NW = 8;
    float *qs = sm;               // D
    float *part = qs + D;         // NW · D
    float *red = part + NW * D;   // 32
    float *sc = red + 32;         // cap
    int r = blockIdx.x, h = blockIdx.y, b = r / T, kvh = h / (Hq / Hkv);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int start = pad[b], end = pos[r] + 1, n = end - start;
    for (int i = threadIdx.x; i < D; i += blockDim.x) qs[i] = bf(q[((size_t)r * Hq + h) * D + i]);
    __syncthreads();
    const bf16 *K = kc + ((size_t)b * Hkv + kvh) * cap * D;
    const bf16 *V = vc + ((size_t)b * Hkv + kvh) * cap * D;
    float mx = NEG_INF;
    for (int j = start + threadIdx.x; j < end; j += blockDim.x) {
        const uint4 *kr = (const uint4 *)(K + (size_t)j * D);
        float d = 0.f;
        for (int c = 0; c < D / 8; c++) {
            uint4 kv = kr[c];
            const float *qq = qs + c * 8;
            d += qq[0] * lo_bf(kv.x) + qq[1] * hi_bf(kv.x) + qq[2] * lo_bf(kv.y) + qq[3] * hi_bf(kv.y) +
                 qq[4] * lo_bf(kv.z) + qq[5] * hi_bf(kv.z) + qq[6] * lo_bf(kv.w) + qq[7] * hi_bf(kv.w);
        }
        d *= scale;
        sc[j] = d;
        mx = fmaxf(mx, d);
    }
    mx = block_reduce(mx, red, true);
    float sum = 0.f;
    for (int j = start + threadIdx.x; j < end; j += blockDim.x) {
        float e = __expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = block_reduce(sum, red, false);  // its barrier also publishes sc[]
    // lanes hold D/32 elements as bf16 pairs: d = 2·lane + 64·e
    constexpr int EMAX = 2;
    float acc[2 * EMAX] = {0.f, 0.f, 0.f, 0.f};
    int ne = D / 64;
    int chunk = (n + NW - 1) / NW, j0 = start + warp * chunk, j1 = min(end, j0 + chunk);
    for (int j = j0; j < j1; j += 8) {
        uint32_t vv[8][EMAX];
        float p[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            bool in = j + u < j1;
            p[u] = in ? sc[j + u] : 0.f;
#pragma unroll
            for (int e = 0; e < EMAX; e++)
                vv[u][e] = (in && e < ne) ? *(const uint32_t *)(V + (size_t)(j + u) * D + 2 * lane + 64 * e) : 0u;
        }
#pragma unroll
        for (int u = 0; u < 8; u++)
#pragma unroll
            for (int e = 0; e < EMAX; e++) {
                acc[2 * e] += p[u] * lo_bf(vv[u][e]);
                acc[2 * e + 1] += p[u] * hi_bf(vv[u][e]);
            }
    }
    for (int e = 0; e < ne; e++) {
        part[warp * D + 2 * lane + 64 * e] = acc[2 * e];
        part[warp * D + 2 * lane + 64 * e + 1] = acc[2 * e + 1];
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float t = 0.f;
        for (int w = 0; w < NW; w++) t += part[w * D + d];
        o[((size_t)r * Hq + h) * D + d] = tobf(t / sum);
    }
}

// Greedy pick per row: out[r] = argmax_j logits[r, j] (lowest index among ties).
extern "C" __global__ void argmax_rows(const bf16 *logits, uint32_t *out, int V) {
    __shared__ float bv[32];
    __shared__ int bi[32];
    const bf16 *x = logits + (size_t)blockIdx.x * V;
    float best = NEG_INF;
    int idx = 0x7fffffff;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float v = bf(x[j]);
        if (v > best) { best = v; idx = j; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > best || (ov == best && oi < idx)) { best = ov; idx = oi; }
    }
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    if (l == 0) { bv[w] = best; bi[w] = idx; }
    __syncthreads();
    if (w == 0) {
        int nw = blockDim.x >> 5;
        best = l < nw ? bv[l] : NEG_INF;
        idx = l < nw ? bi[l] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, idx, o);
            if (ov > best || (ov == best && oi < idx)) { best = ov; idx = oi; }
        }
        if (l == 0) out[blockIdx.x] = (uint32_t)idx;
    }
}

// The device-side step of a replayed decode graph: the picked tokens become the next inputs and
// every sequence moves one cache slot on.
extern "C" __global__ void advance(const uint32_t *next, uint32_t *ids, int *pos, int B) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b < B) { ids[b] = next[b]; pos[b] += 1; }
}

// Log-softmax over the last dimension in one read of the logits: out[r, j] = x[r, j] − m − log Σ e^(x − m),
// bf16 or f32 in (is_bf16), f32 out. One block per row; online max/sum per thread.
extern "C" __global__ void log_softmax_rows(const void *x, float *out, int V, int is_bf16) {
    __shared__ float rm[32], rs[32];
    size_t base = (size_t)blockIdx.x * V;
    auto at = [&](int j) -> float {
        return is_bf16 ? bf(((const bf16 *)x)[base + j]) : ((const float *)x)[base + j];
    };
    float m = NEG_INF, s = 0.f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float v = at(j);
        if (v > m) { s = s * __expf(m - v) + 1.f; m = v; } else { s += __expf(v - m); }
    }
    // combine (m, s) pairs: warp, then block
    for (int o = 16; o > 0; o >>= 1) {
        float om = __shfl_xor_sync(0xffffffffu, m, o), os = __shfl_xor_sync(0xffffffffu, s, o);
        float nm = fmaxf(m, om);
        s = (m == NEG_INF ? 0.f : s * __expf(m - nm)) + (om == NEG_INF ? 0.f : os * __expf(om - nm));
        m = nm;
    }
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0) { rm[w] = m; rs[w] = s; }
    __syncthreads();
    m = l < nw ? rm[l] : NEG_INF;
    s = l < nw ? rs[l] : 0.f;
    for (int o = 16; o > 0; o >>= 1) {
        float om = __shfl_xor_sync(0xffffffffu, m, o), os = __shfl_xor_sync(0xffffffffu, s, o);
        float nm = fmaxf(m, om);
        s = (m == NEG_INF ? 0.f : s * __expf(m - nm)) + (om == NEG_INF ? 0.f : os * __expf(om - nm));
        m = nm;
    }
    float lse = m + logf(s);
    for (int j = threadIdx.x; j < V; j += blockDim.x) out[base + j] = at(j) - lse;
}

// ---------------------------------------------------------------------------------------------
// W8A8: per-token int8 activation quantization, as vLLM's dynamic scaled_int8_quant:
// scale = max(|x|) / 127 (at least 1e-10), q = clamp(rint(x / scale)) with ties to even.
extern "C" __global__ void quant_rows_int8(const bf16 *x, int8_t *q, float *scale, int K) {
    __shared__ float red[32];
    const uint4 *xr = (const uint4 *)(x + (size_t)blockIdx.x * K);
    float m = 0.f;
    for (int c = threadIdx.x; c < K / 8; c += blockDim.x) {
        uint4 v = xr[c];
        uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) m = fmaxf(m, fmaxf(fabsf(lo_bf(u[i])), fabsf(hi_bf(u[i]))));
    }
    m = block_reduce(m, red, true);
    float s = fmaxf(m / 127.f, 1e-10f);
    uint2 *qr = (uint2 *)(q + (size_t)blockIdx.x * K);
    for (int c = threadIdx.x; c < K / 8; c += blockDim.x) {
        uint4 v = xr[c];
        uint32_t u[4] = {v.x, v.y, v.z, v.w}, packed[2] = {0u, 0u};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int q0 = max(-128, min(127, __float2int_rn(lo_bf(u[i]) / s)));
            int q1 = max(-128, min(127, __float2int_rn(hi_bf(u[i]) / s)));
            packed[i / 2] |= ((uint32_t)(q0 & 255) | ((uint32_t)(q1 & 255) << 8)) << (16 * (i % 2));
        }
        qr[c] = make_uint2(packed[0], packed[1]);
    }
    if (threadIdx.x == 0) scale[blockIdx.x] = s;
}

// y[m, n] = bf16(acc[m, n] · sx[m] · sw[n]) for the int32 result of an int8 GEMM; blockIdx.y = m,
// four outputs per thread (N % 4 == 0).
extern "C" __global__ void int8_epilogue(const int32_t *acc, const float *sx, const float *sw, bf16 *y, int M,
                                         int N) {
    int m = blockIdx.y, n4 = blockIdx.x * blockDim.x + threadIdx.x;
    if (n4 >= N / 4) return;
    int4 a = ((const int4 *)(acc + (size_t)m * N))[n4];
    float4 w = ((const float4 *)sw)[n4];
    float s = sx[m];
    __nv_bfloat162 lo = __floats2bfloat162_rn((float)a.x * s * w.x, (float)a.y * s * w.y);
    __nv_bfloat162 hi = __floats2bfloat162_rn((float)a.z * s * w.z, (float)a.w * s * w.w);
    ((uint2 *)(y + (size_t)m * N))[n4] = make_uint2(*(uint32_t *)&lo, *(uint32_t *)&hi);
}

// The gated activation straight from the stacked gate/up int8 GEMM: acc [M, 2I] (gate | up),
// out [M, I] = bf16(bf16(silu(g))·u) with g, u = bf16(acc · sx · sw) as the plain epilogue would
// give them. Four outputs per thread (I % 4 == 0).
extern "C" __global__ void int8_silu_epilogue(const int32_t *acc, const float *sx, const float *sw, bf16 *y,
                                              int M, int I) {
    int m = blockIdx.y, i4 = blockIdx.x * blockDim.x + threadIdx.x;
    if (i4 >= I / 4) return;
    const int32_t *row = acc + (size_t)m * 2 * I;
    int4 ga = ((const int4 *)row)[i4], ua = ((const int4 *)(row + I))[i4];
    float4 gw = ((const float4 *)sw)[i4], uw = ((const float4 *)(sw + I))[i4];
    float s = sx[m];
    float g[4] = {bf(tobf((float)ga.x * s * gw.x)), bf(tobf((float)ga.y * s * gw.y)), bf(tobf((float)ga.z * s * gw.z)),
                  bf(tobf((float)ga.w * s * gw.w))};
    float u[4] = {bf(tobf((float)ua.x * s * uw.x)), bf(tobf((float)ua.y * s * uw.y)), bf(tobf((float)ua.z * s * uw.z)),
                  bf(tobf((float)ua.w * s * uw.w))};
    float v[4];
#pragma unroll
    for (int k = 0; k < 4; k++) v[k] = bf(tobf(g[k] / (1.f + __expf(-g[k])))) * u[k];
    __nv_bfloat162 lo = __floats2bfloat162_rn(v[0], v[1]), hi = __floats2bfloat162_rn(v[2], v[3]);
    ((uint2 *)(y + (size_t)m * I))[i4] = make_uint2(*(uint32_t *)&lo, *(uint32_t *)&hi);
}

// ---------------------------------------------------------------------------------------------
// Flash attention (forward, bf16 tensor cores, online softmax; FlashAttention-2's scheme).
// Q [B, H, T, D], K/V [B, Hkv, L, D] with given batch/head/token strides (D contiguous);
// O [B, T, H, D] contiguous. Query i sees key j iff j < L and (!causal or j ≤ i + offset).
// Block: 4 warps × 16 query rows; key tiles of 64; mma.sync m16n8k16.
__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}


__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    int n = pred ? 16 : 0;  // 0: zero-fill
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm4(uint32_t *r, const void *p) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sa));
}
__device__ __forceinline__ void ldsm4t(uint32_t *r, const void *p) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sa));
}

// K/V tiles are double-buffered with cp.async (the next tile loads while this one computes);
// MMA operands come from shared memory through ldmatrix (K as is, V transposed).
template <int D>
__device__ void flash_fwd(const bf16 *Q, const bf16 *K, const bf16 *V, bf16 *O, int T, int L, int H, int Hkv,
                          long long q_sb, long long q_sh, long long q_st, long long k_sb, long long k_sh,
                          long long k_st, long long v_sb, long long v_sh, long long v_st, int causal, int offset,
                          float scale_log2) {
    constexpr int BR = 64, BC = 64, DS = D + 8;
    extern __shared__ __align__(16) unsigned char fsm[];
    bf16 *Qs = (bf16 *)fsm;
    bf16 *Ks = Qs + BR * DS;       // [2][BC * DS]
    bf16 *Vs = Ks + 2 * BC * DS;   // [2][BC * DS]
    int q0 = blockIdx.x * BR, h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, cc = (lane & 3) * 2;
    const bf16 *Qb = Q + b * q_sb + h * q_sh;
    const bf16 *Kb = K + b * k_sb + kvh * k_sh;
    const bf16 *Vb = V + b * v_sb + kvh * v_sh;
    for (int i = tid; i < BR * D / 8; i += blockDim.x) {
        int r = i / (D / 8), c = i % (D / 8);
        bool in = q0 + r < T;
        cp_async16(Qs + r * DS + c * 8, in ? (const void *)(Qb + (q0 + r) * q_st + c * 8) : (const void *)Qb, in);
    }
    int kend = causal ? min(L, q0 + BR + offset) : L;
    int ntiles = (kend + BC - 1) / BC;
    auto load_kv = [&](int tile, int buf) {
        int k0 = tile * BC;
        bf16 *ks = Ks + buf * BC * DS, *vs = Vs + buf * BC * DS;
        for (int i = tid; i < BC * D / 8; i += blockDim.x) {
            int r = i / (D / 8), c = i % (D / 8);
            bool in = k0 + r < L;
            cp_async16(ks + r * DS + c * 8, in ? (const void *)(Kb + (k0 + r) * k_st + c * 8) : (const void *)Kb, in);
            cp_async16(vs + r * DS + c * 8, in ? (const void *)(Vb + (k0 + r) * v_st + c * 8) : (const void *)Vb, in);
        }
    };
    if (ntiles > 0) load_kv(0, 0);
    cp_commit();
    uint32_t qa[D / 16][4];
    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};
    int r0 = warp * 16 + g;
    int lr = lane & 7, lm = lane >> 3;  // ldmatrix: row within a matrix, which matrix
    for (int tile = 0; tile < max(ntiles, 1); tile++) {
        if (tile + 1 < ntiles) {
            load_kv(tile + 1, (tile + 1) & 1);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        if (tile == 0) {
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                ldsm4(qa[kk], Qs + (warp * 16 + (lm & 1) * 8 + lr) * DS + kk * 16 + (lm >> 1) * 8);
        }
        if (ntiles == 0) break;
        const bf16 *ks = Ks + (tile & 1) * BC * DS, *vs = Vs + (tile & 1) * BC * DS;
        int k0 = tile * BC;
        float s[BC / 8][4];
#pragma unroll
        for (int nt = 0; nt < BC / 8; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk += 2) {
                uint32_t kb[4];
                ldsm4(kb, ks + (nt * 8 + lr) * DS + kk * 16 + lm * 8);
                mma16816(s[nt], qa[kk], kb[0], kb[1]);
                mma16816(s[nt], qa[kk + 1], kb[2], kb[3]);
            }
        }
        bool edge = k0 + BC > L || (causal && k0 + BC - 1 > q0 + offset);
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int row = q0 + r0 + 8 * i;
            float mx = NEG_INF;
#pragma unroll
            for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float v = s[nt][2 * i + e] * scale_log2;
                    if (edge) {
                        int key = k0 + nt * 8 + cc + e;
                        if (!(key < L && (!causal || key <= row + offset))) v = NEG_INF;
                    }
                    s[nt][2 * i + e] = v;
                    mx = fmaxf(mx, v);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mnew = fmaxf(m[i], mx);
            float base = mnew == NEG_INF ? 0.f : mnew;
            float alpha = exp2f(m[i] - base);
            m[i] = mnew;
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float p = exp2f(s[nt][2 * i + e] - base);
                    s[nt][2 * i + e] = p;
                    sum += p;
                }
            l[i] = l[i] * alpha + sum;
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++) {
                o[dt][2 * i] *= alpha;
                o[dt][2 * i + 1] *= alpha;
            }
        }
#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
            uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dt = 0; dt < D / 8; dt += 2) {
                uint32_t vb[4];
                ldsm4t(vb, vs + (kk * 16 + (lm & 1) * 8 + lr) * DS + (dt + (lm >> 1)) * 8);
                mma16816(o[dt], pa, vb[0], vb[1]);
                mma16816(o[dt + 1], pa, vb[2], vb[3]);
            }
        }
        __syncthreads();  // this buffer is refilled two tiles on
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        int row = q0 + r0 + 8 * i;
        if (row >= T) continue;
        float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
        bf16 *orow = O + (((size_t)b * T + row) * H + h) * D;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++)
            *(__nv_bfloat162 *)(orow + dt * 8 + cc) = __floats2bfloat162_rn(o[dt][2 * i] * inv, o[dt][2 * i + 1] * inv);
    }
}

#define FLASH_ARGS                                                                                              \
    const bf16 *Q, const bf16 *K, const bf16 *V, bf16 *O, int T, int L, int H, int Hkv, long long q_sb,          \
        long long q_sh, long long q_st, long long k_sb, long long k_sh, long long k_st, long long v_sb,          \
        long long v_sh, long long v_st, int causal, int offset, float scale_log2
#define FLASH_PASS Q, K, V, O, T, L, H, Hkv, q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st, causal, offset, scale_log2

extern "C" __global__ void __launch_bounds__(128) flash_fwd_64(FLASH_ARGS) { flash_fwd<64>(FLASH_PASS); }
extern "C" __global__ void __launch_bounds__(128) flash_fwd_128(FLASH_ARGS) { flash_fwd<128>(FLASH_PASS); }
