// Picking and scoring tokens: greedy argmax, the device-side advance of a replayed decode graph,
// and the one-pass log-softmax.
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

// Log-softmax over the last dimension in one read of the logits: out[r, j] = x[r, j] − m − log Σ e^(x − m),
// bf16 or f32 in (is_bf16), f32 out. One block per row; online max/sum per thread.
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
