// Picking and scoring tokens: greedy argmax, the device-side advance of a replayed decode graph,
// and the log-softmax (one read of the logits).
// Launchers: src/runtime/launch/sampling.rs.

#include "common.cuh"

// Greedy pick per row: out[r] = argmax_j logits[r, j] (lowest index among ties).
extern "C" __global__ void argmax_rows(const bf16 *logits, uint32_t *out, int V) {
    grid_dep_sync();
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
    grid_dep_sync();
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b < B) { ids[b] = next[b]; pos[b] += 1; }
}

// The row's log-sum-exp from each thread's online (max, sum of e^(x − max)): warp, then block.
// rm/rs: 32 floats each; blockDim.x a multiple of 32.
__device__ __forceinline__ float block_lse(float m, float s, float *rm, float *rs) {
    auto merge = [&](float om, float os) {
        float nm = fmaxf(m, om);
        s = (m == NEG_INF ? 0.f : s * __expf(m - nm)) + (om == NEG_INF ? 0.f : os * __expf(om - nm));
        m = nm;
    };
    for (int o = 16; o > 0; o >>= 1) merge(__shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0) { rm[w] = m; rs[w] = s; }
    __syncthreads();
    m = l < nw ? rm[l] : NEG_INF;
    s = l < nw ? rs[l] : 0.f;
    for (int o = 16; o > 0; o >>= 1) merge(__shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    return m + logf(s);
}

// Log-softmax over the last dimension: out[r, j] = x[r, j] − m − log Σ e^(x − m), bf16 or f32 in
// (is_bf16), f32 out, any V. One block per row; online max/sum per thread, then a second read of
// the row for the output.
extern "C" __global__ void log_softmax_rows(const void *x, float *out, int V, int is_bf16) {
    grid_dep_sync();
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
    float lse = block_lse(m, s, rm, rs);
    for (int j = threadIdx.x; j < V; j += blockDim.x) out[base + j] = at(j) - lse;
}

// log_softmax_rows for bf16 rows of V % 8 == 0 values (16-byte aligned) whose row fits the
// block's dynamic shared memory (V · 2 bytes: the 1.2B's 102,400-token vocabulary takes 200 KiB,
// which Hopper and Ampere's A100 offer, not Ada): each 16-byte chunk is read from global memory
// once, folded into the thread's running (max, sum) and kept in shared memory until the row's
// log-sum-exp is known, then written as two 16-byte f32 stores. The plain kernel reads the
// logits twice with 2-byte loads; at 16,384 rows of the 1.2B that is 3.4 GB more read.
extern "C" __global__ void log_softmax_bf16_staged(const bf16 *x, float *out, int V) {
    extern __shared__ __align__(16) uint4 row[];
    __shared__ float rm[32], rs[32];
    grid_dep_sync();
    const uint4 *src = (const uint4 *)(x + (size_t)blockIdx.x * V);
    const int n8 = V / 8;
    float m = NEG_INF, s = 0.f;
    // four 16-byte loads in flight per thread (one row per multiprocessor at a time: each
    // must keep enough bytes moving)
    constexpr int U = 4;
    for (int c0 = threadIdx.x; c0 < n8; c0 += U * blockDim.x) {
        uint4 v[U];
#pragma unroll
        for (int k = 0; k < U; k++) {
            int c = c0 + k * blockDim.x;
            if (c < n8) v[k] = src[c];
        }
#pragma unroll
        for (int k = 0; k < U; k++) {
            int c = c0 + k * blockDim.x;
            if (c >= n8) break;
            row[c] = v[k];
            uint32_t u[4] = {v[k].x, v[k].y, v[k].z, v[k].w};
            float cm = m;
#pragma unroll
            for (int i = 0; i < 4; i++) cm = fmaxf(cm, fmaxf(lo_bf(u[i]), hi_bf(u[i])));
            float base = cm == NEG_INF ? 0.f : cm;
            float acc = m == NEG_INF ? 0.f : s * __expf(m - base);
#pragma unroll
            for (int i = 0; i < 4; i++) acc += __expf(lo_bf(u[i]) - base) + __expf(hi_bf(u[i]) - base);
            m = cm;
            s = acc;
        }
    }
    const float lse = block_lse(m, s, rm, rs);
    // each thread reads back only the chunks it stored itself: no barrier needed for them
    float4 *dst = (float4 *)(out + (size_t)blockIdx.x * V);
    for (int c = threadIdx.x; c < n8; c += blockDim.x) {
        uint4 v = row[c];
        dst[2 * c] = make_float4(lo_bf(v.x) - lse, hi_bf(v.x) - lse, lo_bf(v.y) - lse, hi_bf(v.y) - lse);
        dst[2 * c + 1] = make_float4(lo_bf(v.z) - lse, hi_bf(v.z) - lse, lo_bf(v.w) - lse, hi_bf(v.w) - lse);
    }
}
