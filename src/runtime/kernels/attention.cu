// Attention: flash attention for the candle forward (prefill), the decode engine's attention of
// each row over its KV cache, and the serving engine's attention over the paged KV pool (prompt
// chunks through the flash tile, single tokens through a split over keys).
// Launchers: src/runtime/launch/attention.rs.

#include "common.cuh"

// ---------------------------------------------------------------------------------------------
// Flash attention (forward, bf16 tensor cores, online softmax; FlashAttention-2's scheme).
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


// common.cuh's cp16 from a generic pointer into shared memory
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred) { cp16(smem_u32(smem), gmem, pred); }

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

// Where a sequence's key/value rows live: rows at a stride (a contiguous cache or tensor), or
// the paged KV pool [blocks, Hkv, bs, D] through the sequence's block table.
struct DenseKV {
    const bf16 *K, *V;
    long long k_st, v_st;
    __device__ const bf16 *k(int j) const { return K + j * k_st; }
    __device__ const bf16 *v(int j) const { return V + j * v_st; }
};
struct PagedKV {
    const bf16 *K, *V;
    const int *table;
    int bs, hkv, kvh, d;
    __device__ size_t off(int j) const { return (((size_t)table[j / bs] * hkv + kvh) * bs + j % bs) * d; }
    __device__ const bf16 *k(int j) const { return K + off(j); }
    __device__ const bf16 *v(int j) const { return V + off(j); }
};

// One tile of 64 queries (q0..q0+63 of T) of one head. Qb/Ob: the head's row 0, rows q_st/o_st
// apart. Query i sees key j iff j < L, (!causal or j ≤ i + offset) and (window ≤ 0 or
// j > i + offset − window): the window counts the token itself, as EXAONE's sliding layers do.
// K/V tiles are double-buffered with cp.async (the next tile loads while this one computes);
// MMA operands come from shared memory through ldmatrix (K as is, V transposed).
template <int D, class KV>
__device__ void flash_tile(const bf16 *Qb, long long q_st, bf16 *Ob, long long o_st, KV kv, int T, int L, int q0,
                           int causal, int offset, int window, float scale_log2) {
    constexpr int BR = 64, BC = 64, DS = D + 8;
    extern __shared__ __align__(16) unsigned char fsm[];
    bf16 *Qs = (bf16 *)fsm;
    bf16 *Ks = Qs + BR * DS;       // [2][BC * DS]
    bf16 *Vs = Ks + 2 * BC * DS;   // [2][BC * DS]
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, cc = (lane & 3) * 2;
    for (int i = tid; i < BR * D / 8; i += blockDim.x) {
        int r = i / (D / 8), c = i % (D / 8);
        bool in = q0 + r < T;
        cp_async16(Qs + r * DS + c * 8, in ? (const void *)(Qb + (q0 + r) * q_st + c * 8) : (const void *)Qb, in);
    }
    int kend = causal ? min(L, q0 + BR + offset) : L;
    // first tile: the window's start for the tile's first query
    int t0 = window > 0 ? max(0, q0 + offset - window + 1) / BC : 0;
    int t1 = (kend + BC - 1) / BC;
    auto load_kv = [&](int tile, int buf) {
        int k0 = tile * BC;
        bf16 *ks = Ks + buf * BC * DS, *vs = Vs + buf * BC * DS;
        for (int i = tid; i < BC * D / 8; i += blockDim.x) {
            int r = i / (D / 8), c = i % (D / 8);
            bool in = k0 + r < L;
            cp_async16(ks + r * DS + c * 8, in ? (const void *)(kv.k(k0 + r) + c * 8) : (const void *)kv.K, in);
            cp_async16(vs + r * DS + c * 8, in ? (const void *)(kv.v(k0 + r) + c * 8) : (const void *)kv.V, in);
        }
    };
    if (t1 > t0) load_kv(t0, 0);
    cp_commit();
    uint32_t qa[D / 16][4];
    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};
    int r0 = warp * 16 + g;
    int lr = lane & 7, lm = lane >> 3;  // ldmatrix: row within a matrix, which matrix
    for (int tile = t0; tile < max(t1, t0 + 1); tile++) {
        int buf = (tile - t0) & 1;
        if (tile + 1 < t1) {
            load_kv(tile + 1, buf ^ 1);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        if (tile == t0) {
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                ldsm4(qa[kk], Qs + (warp * 16 + (lm & 1) * 8 + lr) * DS + kk * 16 + (lm >> 1) * 8);
        }
        if (t1 <= t0) break;
        const bf16 *ks = Ks + buf * BC * DS, *vs = Vs + buf * BC * DS;
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
        bool edge = k0 + BC > L || (causal && k0 + BC - 1 > q0 + offset) || window > 0;
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
                        if (!(key < L && (!causal || key <= row + offset) && (window <= 0 || key > row + offset - window)))
                            v = NEG_INF;
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
        bf16 *orow = Ob + row * o_st;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++)
            *(__nv_bfloat162 *)(orow + dt * 8 + cc) = __floats2bfloat162_rn(o[dt][2 * i] * inv, o[dt][2 * i + 1] * inv);
    }
}

// Flash attention of a batch: Q [B, H, T, D], K/V [B, Hkv, L, D] with given batch/head/token
// strides (D contiguous); O [B, T, H, D] contiguous. Query i sees key j iff j < L and (!causal or
// j ≤ i + offset). Grid (T / 64, H, B); blocks start in index order, so block x takes query tile
// T/64 − 1 − x: under a causal mask the longest tiles go first and the short ones fill the last
// wave (as FlashAttention-2 orders them).
// Tried and dropped (H200, 2026-12-03, scripts/gpu/prefill_ab.sh): FlashAttention-2's 128-row
// tile for head size 64 (two m16 tiles per warp, each K/V fragment from shared memory feeding two
// mma; 228 registers, two blocks per multiprocessor): the 30 layers' attention at 8 × 2048 took
// 21.86 / 22.05 ms against 21.71 / 21.83 with 64-row tiles in two runs (~190 TFLOP/s both), so
// fragment reads from shared memory are not what bounds this loop.
template <int D>
__device__ void flash_fwd(const bf16 *Q, const bf16 *K, const bf16 *V, bf16 *O, int T, int L, int H, int Hkv,
                          long long q_sb, long long q_sh, long long q_st, long long k_sb, long long k_sh,
                          long long k_st, long long v_sb, long long v_sh, long long v_st, int causal, int offset,
                          float scale_log2) {
    int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / Hkv);
    DenseKV kv{K + b * k_sb + kvh * k_sh, V + b * v_sb + kvh * v_sh, k_st, v_st};
    flash_tile<D>(Q + b * q_sb + h * q_sh, q_st, O + ((size_t)b * T * H + h) * D, (long long)H * D, kv, T, L,
                  (gridDim.x - 1 - blockIdx.x) * 64, causal, offset, 0, scale_log2);
}

#define FLASH_ARGS                                                                                              \
    const bf16 *Q, const bf16 *K, const bf16 *V, bf16 *O, int T, int L, int H, int Hkv, long long q_sb,          \
        long long q_sh, long long q_st, long long k_sb, long long k_sh, long long k_st, long long v_sb,          \
        long long v_sh, long long v_st, int causal, int offset, float scale_log2
#define FLASH_PASS Q, K, V, O, T, L, H, Hkv, q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st, causal, offset, scale_log2

extern "C" __global__ void __launch_bounds__(128) flash_fwd_64(FLASH_ARGS) { grid_dep_sync(); flash_fwd<64>(FLASH_PASS); }
extern "C" __global__ void __launch_bounds__(128) flash_fwd_128(FLASH_ARGS) { grid_dep_sync(); flash_fwd<128>(FLASH_PASS); }

// ---------------------------------------------------------------------------------------------
// The serving engine's attention over the paged pool: kc/vc [blocks, Hkv, bs, D]; a sequence's
// token j lives in block table[j / bs], slot j % bs; tables are rows `stride` ints apart.

// Prompt chunks: tiles[t] = {first packed row of the chunk, its length, tokens before it, q0,
// its table row}; q [rows, H, D], o [rows, H·D]. Grid (tiles, H). Causal within the chunk, every
// earlier token of the sequence visible (up to the window).
template <int D>
__device__ void flash_paged(const bf16 *q, const bf16 *kc, const bf16 *vc, bf16 *o, const int *tiles,
                            const int *tables, int stride, int H, int Hkv, int bs, int window, float scale_log2) {
    const int *t = tiles + 5 * blockIdx.x;
    int row0 = t[0], len = t[1], ctx = t[2], q0 = t[3], trow = t[4];
    int h = blockIdx.y, kvh = h / (H / Hkv);
    PagedKV kv{kc, vc, tables + (size_t)trow * stride, bs, Hkv, kvh, D};
    long long rs = (long long)H * D;
    flash_tile<D>(q + (size_t)row0 * rs + h * D, rs, o + (size_t)row0 * rs + h * D, rs, kv, len, ctx + len, q0, 1,
                  ctx, window, scale_log2);
}

#define PAGED_ARGS                                                                                              \
    const bf16 *q, const bf16 *kc, const bf16 *vc, bf16 *o, const int *tiles, const int *tables, int stride,    \
        int H, int Hkv, int bs, int window, float scale_log2
#define PAGED_PASS q, kc, vc, o, tiles, tables, stride, H, Hkv, bs, window, scale_log2
extern "C" __global__ void __launch_bounds__(128) flash_paged_64(PAGED_ARGS) { grid_dep_sync(); flash_paged<64>(PAGED_PASS); }
extern "C" __global__ void __launch_bounds__(128) flash_paged_128(PAGED_ARGS) { grid_dep_sync(); flash_paged<128>(PAGED_PASS); }

// Single tokens (decoding): rows[3i..] = {packed row, table row, keys n (the token's position +
// 1; 0 for a padding row, which writes zeros)}; q [rows, Hq, D], o [rows, Hq·D]. One block of
// DECODE_WARPS warps per (entry, KV head, split) computes the G = Hq / Hkv query heads that share
// the KV head, so each key and value is read once per sequence. Tensor cores do the arithmetic:
// the G heads are the rows of an m16n8k16 A operand (rows G..15 zero — idle lanes of the MMA
// cost nothing next to the memory traffic), which cuts the per-key instruction count ~10× from
// a CUDA-core dot product per key and makes the kernel bandwidth-bound: reports/serve_bench's
// step profile has it at 2.39 ms over 30 layers for 256 sequences of 512 keys on an H200
// (3.4 TB/s), where the CUDA-core version it replaced took 6.68 ms (1.2 TB/s). Each warp
// streams its own 16-key tiles (tiles w, w + NW, …) through a DECODE_STAGES-deep cp.async ring of
// its own and keeps its own online softmax, so no block barrier is needed until the warps' partial
// results merge at the end. P is rounded to bf16 for the P·V product, as in flash_tile. With
// `splits` > 1 (few sequences: too few blocks to fill the GPU) split z takes the z-th share of
// the keys and writes its unnormalised partial {max, sum, acc[D]} per head (natural-log max) to
// `part` [entries, Hkv, splits, G, D + 2], which paged_decode_combine merges.
#define DECODE_WARPS 4
#define DECODE_STAGES 2
template <int D, int G>
__device__ void paged_decode(const bf16 *q, const bf16 *kc, const bf16 *vc, bf16 *o, const int *rows,
                              const int *tables, int stride, int Hq, int Hkv, int bs, int window, float scale,
                              int splits, float *part) {
    constexpr int NW = DECODE_WARPS, S = DECODE_STAGES, BC = 16, DS = D + 8, CPR = D / 8, TILE = BC * DS;
    extern __shared__ __align__(16) unsigned char dsm4[];
    bf16 *ring = (bf16 *)dsm4;                            // [NW][S][K, V][BC][DS]
    float *red = (float *)(ring + NW * S * 2 * TILE);     // [NW][G][D + 2]
    int e = blockIdx.x, kvh = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int gr = lane >> 2, cc = (lane & 3) * 2, lr = lane & 7, lm = lane >> 3;
    int r = rows[3 * e], n = rows[3 * e + 2];
    const int *tab = tables + (size_t)rows[3 * e + 1] * stride;
    bf16 *orow = o + ((size_t)r * Hq + kvh * G) * D;
    if (n <= 0 && splits == 1) {
        for (int i = tid; i < G * D; i += blockDim.x) orow[i] = tobf(0.f);
        return;
    }
    int lo = window > 0 ? max(0, n - window) : 0;
    if (splits > 1) {
        int span = (n - lo + splits - 1) / splits;
        int a = lo + blockIdx.z * span;
        n = max(a, min(n, a + span));
        lo = a;
    }
    const float scale_log2 = scale * 1.4426950408889634f;
    uint32_t qa[D / 16][4];
    const bf16 *qb = q + ((size_t)r * Hq + kvh * G) * D;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        bool in = gr < G;
        qa[kk][0] = in ? *(const uint32_t *)(qb + gr * D + kk * 16 + cc) : 0u;
        qa[kk][2] = in ? *(const uint32_t *)(qb + gr * D + kk * 16 + 8 + cc) : 0u;
        qa[kk][1] = qa[kk][3] = 0u;
    }
    bf16 *wring = ring + warp * S * 2 * TILE;
    int ntiles = (n - lo + BC - 1) / BC;
    int mine = ntiles > warp ? (ntiles - warp + NW - 1) / NW : 0;
    auto issue = [&](int it) {
        if (it < mine) {
            int k0 = lo + (warp + it * NW) * BC;
            bf16 *ks = wring + (it % S) * 2 * TILE, *vs = ks + TILE;
#pragma unroll
            for (int c = lane; c < BC * CPR; c += 32) {
                int key = c / CPR, part8 = (c % CPR) * 8, j = k0 + key;
                bool ok = j < n;
                size_t a = ok ? (((size_t)tab[j / bs] * Hkv + kvh) * bs + j % bs) * D + part8 : 0;
                cp_async16(ks + key * DS + part8, kc + a, ok);
                cp_async16(vs + key * DS + part8, vc + a, ok);
            }
        }
        cp_commit();
    };
#pragma unroll
    for (int s = 0; s < S - 1; s++) issue(s);
    float acc[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    float m = NEG_INF, l = 0.f;
    for (int it = 0; it < mine; it++) {
        __syncwarp();  // every lane is done reading the slot the next issue refills
        issue(it + S - 1);
        asm volatile("cp.async.wait_group %0;\n" ::"n"(S - 1));
        __syncwarp();
        const bf16 *ks = wring + (it % S) * 2 * TILE, *vs = ks + TILE;
        int k0 = lo + (warp + it * NW) * BC;
        float s[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk += 2) {
                uint32_t kb[4];
                ldsm4(kb, ks + (nt * 8 + lr) * DS + kk * 16 + lm * 8);
                mma16816(s[nt], qa[kk], kb[0], kb[1]);
                mma16816(s[nt], qa[kk + 1], kb[2], kb[3]);
            }
        }
        float mx = NEG_INF;
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int x = 0; x < 2; x++) {
                float v = k0 + nt * 8 + cc + x < n ? s[nt][x] * scale_log2 : NEG_INF;
                s[nt][x] = v;
                mx = fmaxf(mx, v);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float mnew = fmaxf(m, mx);
        float base = mnew == NEG_INF ? 0.f : mnew;
        float alpha = exp2f(m - base);
        m = mnew;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int x = 0; x < 2; x++) {
                float p = exp2f(s[nt][x] - base);
                s[nt][x] = p;
                sum += p;
            }
        l = l * alpha + sum;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            acc[dt][0] *= alpha;
            acc[dt][1] *= alpha;
        }
        uint32_t pa[4] = {pack_bf16(s[0][0], s[0][1]), 0u, pack_bf16(s[1][0], s[1][1]), 0u};
#pragma unroll
        for (int dt = 0; dt < D / 8; dt += 2) {
            uint32_t vb[4];
            ldsm4t(vb, vs + ((lm & 1) * 8 + lr) * DS + (dt + (lm >> 1)) * 8);
            mma16816(acc[dt], pa, vb[0], vb[1]);
            mma16816(acc[dt + 1], pa, vb[2], vb[3]);
        }
    }
    asm volatile("cp.async.wait_group 0;\n" ::);
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (gr < G) {
        float *rw = red + (warp * G + gr) * (D + 2);
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            rw[2 + dt * 8 + cc] = acc[dt][0];
            rw[2 + dt * 8 + cc + 1] = acc[dt][1];
        }
        if (cc == 0) {
            rw[0] = m;  // log2 domain
            rw[1] = l;
        }
    }
    __syncthreads();
    float *out = splits > 1 ? part + (((size_t)e * Hkv + kvh) * splits + blockIdx.z) * G * (D + 2) : nullptr;
    for (int i = tid; i < G * D; i += blockDim.x) {
        int g = i / D, d = i % D;
        float mx = NEG_INF;
#pragma unroll
        for (int w = 0; w < NW; w++) mx = fmaxf(mx, red[(w * G + g) * (D + 2)]);
        float num = 0.f, den = 0.f;
        if (mx != NEG_INF) {
#pragma unroll
            for (int w = 0; w < NW; w++) {
                const float *rw = red + (w * G + g) * (D + 2);
                float f = rw[0] == NEG_INF ? 0.f : exp2f(rw[0] - mx);
                num += f * rw[2 + d];
                den += f * rw[1];
            }
        }
        if (out) {  // the combine kernel works in natural-log units
            out[g * (D + 2) + 2 + d] = num;
            if (d == 0) {
                out[g * (D + 2)] = mx == NEG_INF ? NEG_INF : mx * 0.6931471805599453f;
                out[g * (D + 2) + 1] = den;
            }
        } else {
            orow[i] = tobf(den > 0.f ? num / den : 0.f);
        }
    }
}

// Merges the splits of paged_decode: per (entry, KV head), for each of its G heads,
// o = Σ_z e^(m_z − m) acc_z / Σ_z e^(m_z − m) l_z with m = max_z m_z (zeros where no key).
extern "C" __global__ void paged_decode_combine(const float *part, const int *rows, bf16 *o, int Hq, int Hkv,
                                                int D, int splits) {
    grid_dep_sync();
    int e = blockIdx.x, kvh = blockIdx.y, G = Hq / Hkv;
    bf16 *orow = o + ((size_t)rows[3 * e] * Hq + kvh * G) * D;
    const float *p = part + ((size_t)e * Hkv + kvh) * splits * G * (D + 2);
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        int g = i / D, d = i % D;
        float m = NEG_INF;
        for (int z = 0; z < splits; z++) m = fmaxf(m, p[(z * G + g) * (D + 2)]);
        float num = 0.f, den = 0.f;
        if (m != NEG_INF) {
            for (int z = 0; z < splits; z++) {
                const float *pz = p + (z * G + g) * (D + 2);
                float w = pz[0] == NEG_INF ? 0.f : __expf(pz[0] - m);
                num += w * pz[2 + d];
                den += w * pz[1];
            }
        }
        orow[i] = tobf(den > 0.f ? num / den : 0.f);
    }
}

#define DECODE_ARGS                                                                                             \
    const bf16 *q, const bf16 *kc, const bf16 *vc, bf16 *o, const int *rows, const int *tables, int stride,     \
        int Hq, int Hkv, int bs, int window, float scale, int splits, float *part
#define DECODE_PASS q, kc, vc, o, rows, tables, stride, Hq, Hkv, bs, window, scale, splits, part
#define DECODE_KERNEL(D, G)                                                                                     \
    extern "C" __global__ void __launch_bounds__(DECODE_WARPS * 32) paged_decode_##D##_g##G(DECODE_ARGS) {                    \
        grid_dep_sync();                                                                                \
        paged_decode<D, G>(DECODE_PASS);                                                                        \
    }
DECODE_KERNEL(64, 1)
DECODE_KERNEL(64, 2)
DECODE_KERNEL(64, 4)
DECODE_KERNEL(64, 8)
DECODE_KERNEL(128, 1)
DECODE_KERNEL(128, 2)
DECODE_KERNEL(128, 4)
DECODE_KERNEL(128, 8)

// Attention of row r over its cached keys pad[b] ..= pos[r] (causal by construction: a row only
// sees slots written before or with it). q [R, Hq, D]; kc/vc [B, Hkv, cap, D]; o [R, Hq·D].
// One block of 256 threads per (row, query head): scores one key per thread into shared memory,
// then each warp sums p·V over its own contiguous run of keys (lanes across D, eight keys in
// flight), and the warps' partial outputs are added.
extern "C" __global__ void attn_rows(const bf16 *q, const bf16 *kc, const bf16 *vc, const int *pos,
                                     const int *pad, bf16 *o, int Hq, int Hkv, int D, int T, int cap,
                                     float scale) {
    grid_dep_sync();
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
