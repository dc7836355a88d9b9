// Embedding gather, RMSNorm, per-head QK-norm + RoPE + KV-cache store (the engines) and the same
// into the candle forward's attention layouts (qkv_heads), SiLU-gated product.
// Launchers: src/runtime/launch/norm_rope.rs.

#include "common.cuh"

// Embedding gather: out[r] = table[ids[r]], hidden % 8 == 0.
extern "C" __global__ void embed_rows(const uint32_t *ids, const bf16 *table, bf16 *out, int hidden) {
    grid_dep_sync();
    int r = blockIdx.x;
    const uint4 *src = (const uint4 *)(table + (size_t)ids[r] * hidden);
    uint4 *dst = (uint4 *)(out + (size_t)r * hidden);
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) dst[i] = src[i];
}

// RMSNorm of input row idx[blockIdx.x] (blockIdx.x * row_step + row_off where idx is null) into
// output row blockIdx.x: rmsnorm_row (common.cuh), written or added to prev's row (prev may be
// out: the residual in place; null: written).
extern "C" __global__ void rmsnorm_rows(const bf16 *x, const bf16 *w, const bf16 *prev, bf16 *out, int n,
                                        float eps, int row_step, int row_off, const int *idx) {
    grid_dep_sync();
    __shared__ float red[32];
    int in_row = idx ? idx[blockIdx.x] : blockIdx.x * row_step + row_off;
    rmsnorm_row(x, w, prev, out, n, eps, in_row, red);
}

// SiLU-gated product: gu [R, 2I] = [gate | up] → out [R, I] = bf16(bf16(silu(g)) · u).
extern "C" __global__ void silu_mul_rows(const bf16 *gu, bf16 *out, int inter) {
    grid_dep_sync();
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
    grid_dep_sync();
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = bf(g[i]);
    out[i] = tobf(bf(tobf(x / (1.f + __expf(-x)))) * bf(u[i]));
}

// ---------------------------------------------------------------------------------------------
// Per-head QK RMSNorm, RoPE (NeoX halves, tables [positions, D/2]) and the KV-cache write, for
// row r, whose head h (q heads, then k's, then v's) `src_of(h)` points to: q goes to
// q_out [R, Hq, D]; head kvh of k and v to kc/vc + kv_base + kvh · kv_head_stride (no write
// where kv_base < 0), RoPE at position rp. One warp per (row, head); lane holds elements
// lane + 32·j.
template <int D, class Src>
__device__ void qk_norm_rope_row(Src src_of, const bf16 *qw, const bf16 *kw, const bf16 *cos_t,
                                 const bf16 *sin_t, int r, int rp, long long kv_base, long long kv_head_stride,
                                 bf16 *q_out, bf16 *kc, bf16 *vc, int Hq, int Hkv, float eps, int use_rope) {
    constexpr int E = D / 32;  // elements per lane
    int head = blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (head >= Hq + 2 * Hkv || (head >= Hq && kv_base < 0)) return;
    const bf16 *src = src_of(head);
    float v[E];
#pragma unroll
    for (int j = 0; j < E; j++) v[j] = bf(src[lane + 32 * j]);
    if (head >= Hq + Hkv) {  // V: straight into the cache
        bf16 *dst = vc + kv_base + (head - Hq - Hkv) * kv_head_stride;
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
    bf16 *dst = head < Hq ? q_out + ((size_t)r * Hq + head) * D : kc + kv_base + (head - Hq) * kv_head_stride;
#pragma unroll
    for (int j = 0; j < E; j++) dst[lane + 32 * j] = tobf(v[j]);
}

// Head h of row r in the engines' stacked product qkv [R, (Hq + 2·Hkv)·D].
template <int D> struct stacked {
    const bf16 *qkv;
    int r, Hq, Hkv;
    __device__ stacked(const bf16 *qkv, int r, int Hq, int Hkv) : qkv(qkv), r(r), Hq(Hq), Hkv(Hkv) {}
    __device__ const bf16 *operator()(int h) const { return qkv + ((size_t)r * (Hq + 2 * Hkv) + h) * D; }
};

// The decode engine's caches kc/vc [B, Hkv, cap, D]: row r belongs to sequence b = r / T, sits
// in cache slot pos[r] and has RoPE position pos[r] − pad[b].
template <int D>
__device__ void qk_norm_rope_store(const bf16 *qkv, const bf16 *qw, const bf16 *kw, const bf16 *cos_t,
                                   const bf16 *sin_t, const int *pos, const int *pad, bf16 *q_out, bf16 *kc,
                                   bf16 *vc, int Hq, int Hkv, int T, int cap, float eps, int use_rope) {
    int r = blockIdx.x, b = r / T, p = pos[r];
    long long base = ((long long)b * Hkv * cap + p) * D;
    qk_norm_rope_row<D>(stacked<D>(qkv, r, Hq, Hkv), qw, kw, cos_t, sin_t, r, p - pad[b], base, (long long)cap * D,
                        q_out, kc, vc, Hq, Hkv, eps, use_rope);
}

extern "C" __global__ void qk_norm_rope_store_64(const bf16 *qkv, const bf16 *qw, const bf16 *kw, const bf16 *c,
                                                 const bf16 *s, const int *pos, const int *pad, bf16 *q, bf16 *kc,
                                                 bf16 *vc, int Hq, int Hkv, int T, int cap, float eps, int rope) {
    grid_dep_sync();
    qk_norm_rope_store<64>(qkv, qw, kw, c, s, pos, pad, q, kc, vc, Hq, Hkv, T, cap, eps, rope);
}
extern "C" __global__ void qk_norm_rope_store_128(const bf16 *qkv, const bf16 *qw, const bf16 *kw, const bf16 *c,
                                                  const bf16 *s, const int *pos, const int *pad, bf16 *q, bf16 *kc,
                                                  bf16 *vc, int Hq, int Hkv, int T, int cap, float eps, int rope) {
    grid_dep_sync();
    qk_norm_rope_store<128>(qkv, qw, kw, c, s, pos, pad, q, kc, vc, Hq, Hkv, T, cap, eps, rope);
}

// The serving engine's paged pool kc/vc [blocks, Hkv, bs, D]: row r has RoPE position pos[r]
// and goes to pool slot slot[r] (block slot / bs, offset slot % bs); slot < 0 (a padding row)
// writes no K/V.
template <int D>
__device__ void qk_norm_rope_paged(const bf16 *qkv, const bf16 *qw, const bf16 *kw, const bf16 *cos_t,
                                   const bf16 *sin_t, const int *pos, const int *slot, bf16 *q_out, bf16 *kc,
                                   bf16 *vc, int Hq, int Hkv, int bs, float eps, int use_rope) {
    int r = blockIdx.x, sl = slot[r];
    long long base = sl < 0 ? -1 : ((long long)(sl / bs) * Hkv * bs + sl % bs) * D;
    qk_norm_rope_row<D>(stacked<D>(qkv, r, Hq, Hkv), qw, kw, cos_t, sin_t, r, pos[r], base, (long long)bs * D, q_out,
                        kc, vc, Hq, Hkv, eps, use_rope);
}

extern "C" __global__ void qk_norm_rope_paged_64(const bf16 *qkv, const bf16 *qw, const bf16 *kw, const bf16 *c,
                                                 const bf16 *s, const int *pos, const int *slot, bf16 *q, bf16 *kc,
                                                 bf16 *vc, int Hq, int Hkv, int bs, float eps, int rope) {
    grid_dep_sync();
    qk_norm_rope_paged<64>(qkv, qw, kw, c, s, pos, slot, q, kc, vc, Hq, Hkv, bs, eps, rope);
}
extern "C" __global__ void qk_norm_rope_paged_128(const bf16 *qkv, const bf16 *qw, const bf16 *kw, const bf16 *c,
                                                  const bf16 *s, const int *pos, const int *slot, bf16 *q, bf16 *kc,
                                                  bf16 *vc, int Hq, int Hkv, int bs, float eps, int rope) {
    grid_dep_sync();
    qk_norm_rope_paged<128>(qkv, qw, kw, c, s, pos, slot, q, kc, vc, Hq, Hkv, bs, eps, rope);
}

// The candle forward's attention inputs (src/runtime/ops.rs, qkv_heads) from its q, k and v
// products, each [R, H·D] with its own row stride (three column ranges of one stacked product, or
// three products), rows r = b·T + i: q_out [B, T, Hq, D] (attention reads it as [B, Hq, T, D]
// through strides), k_out/v_out [B, Hkv, T, D]; QK-norm, then RoPE at table row i (the tables
// narrowed to the forward's positions).
template <int D> struct split_heads {
    const bf16 *q, *k, *v;
    long long rq, rk, rv;  // offsets of row r in each
    int Hq, Hkv;
    __device__ const bf16 *operator()(int h) const {
        return h < Hq ? q + rq + (size_t)h * D
                      : h < Hq + Hkv ? k + rk + (size_t)(h - Hq) * D : v + rv + (size_t)(h - Hq - Hkv) * D;
    }
};

template <int D>
__device__ void qkv_heads(const bf16 *q, const bf16 *k, const bf16 *v, long long q_rs, long long k_rs, long long v_rs,
                          const bf16 *qw, const bf16 *kw, const bf16 *cos_t, const bf16 *sin_t, bf16 *q_out,
                          bf16 *k_out, bf16 *v_out, int Hq, int Hkv, int T, float eps, int use_rope) {
    const int r = blockIdx.x, b = r / T, i = r % T;
    const split_heads<D> src{q, k, v, r * q_rs, r * k_rs, r * v_rs, Hq, Hkv};
    const long long base = ((long long)b * Hkv * T + i) * D;
    qk_norm_rope_row<D>(src, qw, kw, cos_t, sin_t, r, i, base, (long long)T * D, q_out, k_out, v_out, Hq, Hkv, eps,
                        use_rope);
}

#define QKV_HEADS_ARGS                                                                                        \
    const bf16 *q, const bf16 *k, const bf16 *v, long long q_rs, long long k_rs, long long v_rs, const bf16 *qw, \
        const bf16 *kw, const bf16 *c, const bf16 *s, bf16 *qo, bf16 *ko, bf16 *vo, int Hq, int Hkv, int T,      \
        float eps, int rope
extern "C" __global__ void qkv_heads_64(QKV_HEADS_ARGS) {
    grid_dep_sync();
    qkv_heads<64>(q, k, v, q_rs, k_rs, v_rs, qw, kw, c, s, qo, ko, vo, Hq, Hkv, T, eps, rope);
}
extern "C" __global__ void qkv_heads_128(QKV_HEADS_ARGS) {
    grid_dep_sync();
    qkv_heads<128>(q, k, v, q_rs, k_rs, v_rs, qw, kw, c, s, qo, ko, vo, Hq, Hkv, T, eps, rope);
}
