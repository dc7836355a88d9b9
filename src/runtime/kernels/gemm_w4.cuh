// The W4A16 GEMMs' shared pieces (gemm_w4.cu on mma.sync, gemm_w4_wgmma.cu on Hopper's
// warpgroup MMA): the copies, the dequantization of gemm_w4.cu's weight layout, the gated
// rounding and the split-K fixup. The layout and the tricks are described in gemm_w4.cu.
#pragma once

#include "common.cuh"

namespace w4 {


// (a & b) | c in one instruction: 0xf0, 0xcc, 0xaa are a, b, c's truth tables.
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, %4;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c), "n"((0xf0 & 0xcc) | 0xaa));
    return d;
}

__device__ __forceinline__ uint32_t fma2(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

constexpr uint32_t NIB_MASK = 0x000f000fu, EXP128 = 0x43004300u, ONE2 = 0x3f803f80u, NEG0 = 0x80008000u;
constexpr uint16_t NEG136 = 0xc308u;  // −(128 + 8): the symmetric offset

// One weight word → the B fragments of two n8 tiles: b[0], b[1] for tile 0, b[2], b[3] for
// tile 1, each scaled by its tile's s (bf16 in both halves) after adding its zn = −(136 + z).
__device__ __forceinline__ void dequant(uint32_t q, const uint32_t (&zn)[2], const uint32_t (&s)[2],
                                        uint32_t (&b)[4]) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t v = and_or(q >> (4 * i), NIB_MASK, EXP128);  // 128 + nib i, 128 + nib i+4
        b[i] = fma2(fma2(v, ONE2, zn[i >> 1]), s[i >> 1], NEG0);
    }
}

// silu(gate) · up from the f32 sums, rounded as the unfused path rounds (the GEMM's bf16
// outputs, then silu_mul_rows in kernels/norm_rope.cu)
__device__ __forceinline__ bf16 gated(float g, float u) {
    g = bf(tobf(g));
    return tobf(bf(tobf(g / (1.f + __expf(-g)))) * bf(tobf(u)));
}

__device__ __forceinline__ uint32_t dup(uint16_t h) { return (uint32_t)h | ((uint32_t)h << 16); }

// A thread's share of one stage's copies, the same every K tile (the kernel's Cfg C gives the
// tile — BM rows of x, BN outputs, BK of K in KS k16 steps, THREADS — and the stage's layout —
// A_BYTES of activations, then Q_BYTES of weight words, then S_BYTES of scales and as many of
// zero points — and asserts whole copies per thread): shared offsets, global bases and row/column predicates are computed once per block,
// so a tile's copies cost a few instructions each. (Computing them per tile in generic loops cost
// more issue slots than the tile's mma work: the main loop ran ~1 µs per K tile on an H200.)
template <class C, bool HAS_Z> struct Loader {
    static constexpr int CPR = C::BK / 8;                     // A: 16-byte chunks per row
    static constexpr int NA = C::BM * CPR / C::THREADS;       // A chunks per thread
    static constexpr int QPR = (C::BN / 32) * 16;             // Q: 16-byte chunks per k16 row
    static constexpr int NQ = C::KS * QPR / C::THREADS;       // Q chunks per thread
    static constexpr int SPR = C::BN / 8;                     // S: 16-byte chunks per row
    const bf16 *x, *s, *z;
    const uint32_t *q;
    const bf16 *a_src[NA];
    const uint32_t *q_src[NQ];
    uint32_t a_dst[NA], q_dst[NQ], s_dst;
    int a_col[NA], k, g, np, s_row, s_col, s_copies;
    bool a_row[NA], q_ok[NQ], s_ok;
    size_t q_step;  // words of Q per K tile

    __device__ __forceinline__ Loader(const bf16 *X, const uint32_t *Q, const bf16 *S, const bf16 *Z, int M,
                                      int K, int Np, int G, int srows, int m0, int n0)
        : x(X), s(S), z(Z), q(Q), k(K), g(G), np(Np) {
        const int tid = threadIdx.x, nblk = Np / 32;
#pragma unroll
        for (int u = 0; u < NA; u++) {
            // chunk c of row r lands at c ^ (r & 7): the ldmatrix of 8 rows at one chunk column
            // touches 8 distinct bank groups; with 64-wide K tiles (128-byte rows, from a
            // 1024-byte aligned stage) this is wgmma's 128-byte swizzle
            const int i = tid + u * C::THREADS, r = i / CPR, c = i % CPR;
            a_dst[u] = (r * CPR + (c ^ (r & 7))) * 16;
            a_row[u] = m0 + r < M;
            a_col[u] = 8 * c;
            a_src[u] = X + (size_t)(a_row[u] ? m0 + r : 0) * K + 8 * c;
        }
#pragma unroll
        for (int u = 0; u < NQ; u++) {
            // KS rows (k16 blocks) of BN/32 blocks of 256 bytes, contiguous per row in global memory
            const int i = tid + u * C::THREADS, r = i / QPR, c = i % QPR, blk = n0 / 32 + c / 16;
            q_ok[u] = blk < nblk;
            q_src[u] = Q + ((size_t)r * nblk + (q_ok[u] ? blk : 0)) * 64 + (c % 16) * 4;
            q_dst[u] = C::A_BYTES + i * 16;
        }
        q_step = (size_t)C::KS * nblk * 64;
        // S (and Z): one row per k16 step, or a single row when a group spans the whole tile;
        // at most KS · BN/8 ≤ THREADS chunks, so one per thread
        s_copies = srows * SPR;
        s_row = tid / SPR;
        s_col = n0 + 8 * (tid % SPR);
        s_ok = s_col < Np;
        s_dst = C::A_BYTES + C::Q_BYTES + tid * 16;
    }

    // the activation copies of K tile `kt` into the stage at shared address `base`
    __device__ __forceinline__ void load_a(uint32_t base, int kt) const {
        const int k0 = kt * C::BK;
#pragma unroll
        for (int u = 0; u < NA; u++) {
            const bool ok = a_row[u] && k0 + a_col[u] < k;
            cp16(base + a_dst[u], ok ? a_src[u] + k0 : x, ok);
        }
    }
    // the weight copies (words, scales, zero points) of K tile `kt`: no earlier kernel writes
    // them, so the first stages' are requested before the wait for the previous kernel
    __device__ __forceinline__ void load_w(uint32_t base, int kt) const {
        const int k0 = kt * C::BK;
#pragma unroll
        for (int u = 0; u < NQ; u++) cp16(base + q_dst[u], q_ok[u] ? q_src[u] + kt * q_step : q, q_ok[u]);
        if (threadIdx.x < s_copies) {
            const size_t off = (size_t)((k0 + 16 * s_row) / g) * np + s_col;
            cp16(base + s_dst, s_ok ? s + off : s, s_ok);
            if (HAS_Z) cp16(base + s_dst + C::S_BYTES, s_ok ? z + off : z, s_ok);
        }
    }
    __device__ __forceinline__ void load(uint32_t base, int kt) const {
        load_a(base, kt);
        load_w(base, kt);
    }
};

// One output tile's split-K partials, as the last split to finish it sees them.
struct Tile {
    bf16 *y;
    const float *ws;
    int m, n, m0, n0, rows, splits, pairs;
};

// The last split adds the partials of its tile in split order (deterministic) and writes bf16
// (with pairs: gated, or back in the checkpoint's order, as the unsplit epilogue). Each thread
// holds P positions of four columns (positions tid + u · THREADS; P from the rows the tile
// has) and per round requests ZB splits of each before adding, so that P · ZB ≥ 8 loads are in
// flight: walking positions one at a time left a 16-row tile two dependent trips to L2 where
// one does, a 64-row tile eight.
template <class C, int P> __device__ __forceinline__ void add_partials(const Tile &t) {
    constexpr int ZB = P >= 8 ? 1 : 8 / P, Q = C::BN / 4;
    const int tid = threadIdx.x, half = t.pairs < 0 ? -t.pairs : t.pairs;
    const size_t zs = (size_t)t.m * t.n;
    float4 v[P];
#pragma unroll
    for (int u = 0; u < P; u++) v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int z0 = 0; z0 < t.splits; z0 += ZB) {
        float4 l[P][ZB];
#pragma unroll
        for (int u = 0; u < P; u++) {
            const int e = tid + u * C::THREADS, r = e / Q, c = t.n0 + (e % Q) * 4;
            const bool in = r < t.rows && c < t.n;
            const float *p = t.ws + (size_t)(t.m0 + r) * t.n + c;
#pragma unroll
            for (int zz = 0; zz < ZB; zz++)
                l[u][zz] = in && z0 + zz < t.splits ? __ldcg((const float4 *)(p + (z0 + zz) * zs))
                                                    : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < P; u++)
#pragma unroll
            for (int zz = 0; zz < ZB; zz++) {
                v[u].x += l[u][zz].x;
                v[u].y += l[u][zz].y;
                v[u].z += l[u][zz].z;
                v[u].w += l[u][zz].w;
            }
    }
#pragma unroll
    for (int u = 0; u < P; u++) {
        const int e = tid + u * C::THREADS, r = t.m0 + e / Q, c = t.n0 + (e % Q) * 4;
        if (e / Q >= t.rows || c >= t.n) continue;
        if (t.pairs < 0) {  // n % 4 == 0 with pairs (the launcher checks): c / 2 is even
            bf16 a = gated(v[u].x, v[u].y), b = gated(v[u].z, v[u].w);
            *(__nv_bfloat162 *)(t.y + (size_t)r * half + c / 2) = __halves2bfloat162(a, b);
        } else if (t.pairs > 0) {
            *(__nv_bfloat162 *)(t.y + (size_t)r * t.n + c / 2) = __floats2bfloat162_rn(v[u].x, v[u].z);
            *(__nv_bfloat162 *)(t.y + (size_t)r * t.n + half + c / 2) = __floats2bfloat162_rn(v[u].y, v[u].w);
        } else {
            __nv_bfloat162 *o = (__nv_bfloat162 *)(t.y + (size_t)r * t.n + c);
            o[0] = __floats2bfloat162_rn(v[u].x, v[u].y);
            o[1] = __floats2bfloat162_rn(v[u].z, v[u].w);
        }
    }
}

// The split-K tail of the output tile [m0, m0 + C::BM) × [n0, n0 + C::BN) of y [M, N]: with
// this block's partials in ws [splits, M, N] (gridDim.z splits), count it in the tile's lock
// (locks[blockIdx.y · gridDim.x + blockIdx.x]); the last split to finish adds them all and
// writes y (with pairs, as add_partials).
template <class C>
__device__ __forceinline__ void finish_split(bf16 *__restrict__ Y, const float *__restrict__ ws,
                                             unsigned *__restrict__ locks, int M, int N, int m0, int n0,
                                             int pairs) {
    const int tid = threadIdx.x;
    __threadfence();  // this thread's partials are visible device-wide before the count
    __syncthreads();
    __shared__ int last;
    unsigned *lock = locks + blockIdx.y * gridDim.x + blockIdx.x;
    if (tid == 0) {
        unsigned prev = atomicAdd(lock, 1u);
        last = prev == gridDim.z - 1;
        if (last) *lock = 0u;  // every split has counted: ready for the next launch
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    // the whole block adds the splits' partials of this tile (in split order: deterministic),
    // with P = the positions of four columns each thread holds (rows may be fewer than BM)
    const int rows = min(C::BM, M - m0), splits = gridDim.z;
    const size_t zs = (size_t)M * N;
    if ((N & 3) == 0) {
        constexpr int R = C::BM * (C::BN / 4) / C::THREADS;
        static_assert(C::BM * (C::BN / 4) % C::THREADS == 0, "whole positions per thread");
        const int need = (rows * (C::BN / 4) + C::THREADS - 1) / C::THREADS;
        const Tile t{Y, ws, M, N, m0, n0, rows, splits, pairs};
        if (need <= 1) add_partials<C, 1>(t);
        else if constexpr (R >= 2) {
            if (need <= 2) add_partials<C, 2>(t);
            else if constexpr (R >= 4) {
                if (need <= 4) add_partials<C, 4>(t);
                else if constexpr (R >= 8) {
                    if (need <= 8) add_partials<C, 8>(t);
                    else add_partials<C, R>(t);
                }
            }
        }
        return;
    }
    for (int e = tid; e < rows * (C::BN / 4); e += C::THREADS) {
        const int r = m0 + e / (C::BN / 4), c = n0 + (e % (C::BN / 4)) * 4;
        if (c >= N) continue;
        const float *p = ws + (size_t)r * N + c;
        for (int q = 0; q < 4 && c + q < N; q++) {
            float v = 0.f;
            for (int z = 0; z < splits; z++) v += __ldcg(p + q + z * zs);
            Y[(size_t)r * N + c + q] = tobf(v);
        }
    }
}

}  // namespace w4

// The W4A16 GEMM kernels' arguments (both files' entries take the same), and their pass-through
#define W4_ARGS                                                                                          \
    const bf16 *X, const uint32_t *Q, const bf16 *S, const bf16 *Z, bf16 *Y, float *ws, unsigned *locks, \
        int M, int N, int K, int Np, int G, int tiles_per_split, int pairs
#define W4_PASS X, Q, S, Z, Y, ws, locks, M, N, K, Np, G, tiles_per_split, pairs
