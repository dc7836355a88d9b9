// W4A16 on Hopper's warpgroup MMA (wgmma, sm_90a only): the product of gemm_w4.cu — y [M, N] =
// x [M, K] · Wᵀ, x bf16, W int4 in gemm_w4.cu's shuffled layout, f32 accumulation, the same
// split-K fixup and gate/up epilogues — for the row counts where gemm_w4.cu's mma.sync tiles fall
// behind on Hopper (17–64 rows on the wide products; act-order weights, which have no dequantize
// + cuBLAS route, beyond: `launch::gemm_w4::plan_with`, `int4::PackedInt4::route`). build.rs
// builds this unit for compute_90a alone; src/runtime/launch/mod.rs loads it only on a GPU of
// compute capability 9.0. Launcher: src/runtime/launch/gemm_w4.rs (the `wg…` tiles of W4Tile).
//
// The product is computed transposed, yᵀ = W · xᵀ, because wgmma takes its A operand from
// registers but B only from shared memory: the weights are A, dequantized in registers right
// before the MMA, and the activations B, read by the tensor cores from shared memory. The
// weight layout needs no new shuffle: word h of lane l of a k16 × n32 block holds, for the 16
// outputs 32·np + 16h …, exactly the four registers of an m16 × k16 A fragment (rows l/4 and
// l/4 + 8, k = 2·(l mod 4) + {0, 1, 8, 9}), which is what each warp of a warpgroup holds of the
// m64 × k16 A operand (warp w: rows 16w … 16w + 15).
//
// Structure: a CTA of WG warpgroups owns 64·WG outputs (y's columns) × BM rows (tokens); each
// warpgroup its 64 outputs across all BM rows, as BM/128 accumulators of m64n128 (or one of
// m64n64 for BM = 64) in registers. K walks in 64-wide K-tiles (128 bytes of bf16: one row of
// wgmma's 128-byte swizzle per token) through a STAGES-deep cp.async ring holding each tile's
// activations (swizzled, as gemm_q8_wgmma.cu lays out its operands), weight words and scales,
// STAGES − 2 K-tiles ahead. Each K-tile: one barrier (after which the slot of the K-tile before
// the previous one is free and refilled), the warps dequantize its four k16 steps into
// registers, issue their MMAs asynchronously and wait only for the previous K-tile's, so one
// K-tile's dequantization overlaps the previous one's MMAs. The A registers of a K-tile must
// stay untouched until its MMAs complete, so two sets alternate.
//
// Status (H200, `bench_runtime --gemm-sweep --w4-only`, 57d1f65 and the PTX variants of
// `scripts/gpu/ptx_variants.sh` in the next call): every check passes (1,603 of 1,603 with these
// tiles; 1,598 of 1,598 at 55d487c, `reports/gemm_sweep`). At 2,048 rows and more the 256 × 128
// tile is 1.6–2.1× faster than gemm_w4.cu's best (gate/up at 16,384 rows, 55d487c: 1,135 µs against
// l128's 2,382) but only 0.5–0.65× cuBLAS's bf16 GEMM (706 µs there), where dequantize + cuBLAS
// takes 722. Ablations of that case at 57d1f65 (1,266 µs as built): without the in-loop copies 868
// µs, without the MMAs 806 — the cp.async copies by the MMA warps (the activations re-read from L2
// by every output tile) hold the time, not the MMAs; one barrier per K-tile instead of two took it
// to 1,139 (kept), a third stage less moved nothing. So the routing (`launch::gemm_w4::plan_with`,
// `int4::PackedInt4::route`) uses these tiles only where they win: 17–64 rows on the wide products
// (q/k/v 10.1 µs against the 16-row tile's 11.7 at 64 rows; gate/up 14.4 against 17.6; the serving
// engine's W4A16 throughput at 64 sequences +3%), and for act-order weights beyond (no dequantize +
// cuBLAS route). Gate/up at 256 rows, 24.7 µs against dequantize + cuBLAS's 29.6 timed alone, cost
// the serving engine 3% at 256 sequences and is not routed (`int4::GEMM_MAX_ROWS`). The next step
// is TMA loads (one instruction per operand tile, multicast across a cluster) in a warp-specialized
// pipeline.
//
//   gemm_w4_<tile>, gemm_w4_<tile>_z: gemm_w4.cu's arguments (W4_ARGS, gemm_w4.cuh)
//
// Bounds as gemm_w4.cu: M, N arbitrary, K % 16 == 0, groups of a multiple of 16.

#include "gemm_w4.cuh"
#include "wgmma.cuh"

namespace w4w {

using namespace w4;

// d (64 outputs × N rows) += A (64 × 16, registers) · B (N × 16, descriptor b)ᵀ; scale-d set
// (accumulate), A and B unscaled, B K-major
template <int N> struct Mma;
template <> struct Mma<64> {
    static __device__ __forceinline__ void run(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" WG_REGS32
                     "}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
                     : WG_ACC32("+f", d)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
    }
};
template <> struct Mma<128> {
    static __device__ __forceinline__ void run(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" WG_REGS
                     "}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
                     : WG_ACC("+f", d)
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
    }
};

template <int WG, int BN_, int STAGES_> struct Cfg {
    static constexpr int THREADS = 128 * WG, STAGES = STAGES_;
    // in y's terms, as finish_split reads them: BM rows (tokens) × BN columns (outputs)
    static constexpr int BM = BN_, BN = 64 * WG;
    static constexpr int BK = 64, KS = BK / 16;
    static constexpr int MMA_N = BM < 128 ? BM : 128, NB = BM / MMA_N, ACC = MMA_N / 2;
    // one stage (w4::Loader's layout): x [BM, 64] bf16 swizzled (1024-aligned), Q (KS × BN/32
    // blocks of 256 B), S and Z
    // rows; rounded up to keep the next stage's X 1024-aligned
    static constexpr int A_BYTES = BM * 128, Q_BYTES = KS * (BN / 32) * 256, S_BYTES = KS * BN * 2;
    // whether the launcher may split K (finish_split holds BM · BN/4 / THREADS positions per thread)
    static constexpr bool SPLIT = BM * (BN / 4) / THREADS <= 16;
    static constexpr int STAGE = (A_BYTES + Q_BYTES + 2 * S_BYTES + 1023) / 1024 * 1024;
    static_assert(BM % 64 == 0 && BM <= 256, "n64 or whole n128 accumulators");
    static_assert(STAGES >= 3, "a K-tile in use, one being multiplied, one or more landing");
    static_assert((BM * 8) % THREADS == 0 && (KS * (BN / 32) * 16) % THREADS == 0, "whole copies");
    static_assert(KS * BN / 8 <= THREADS, "one scale copy per thread at most");
};

template <class C, bool HAS_Z>
__device__ __forceinline__ void gemm(const bf16 *__restrict__ X, const uint32_t *__restrict__ Q,
                                     const bf16 *__restrict__ S, const bf16 *__restrict__ Z, bf16 *__restrict__ Y,
                                     float *__restrict__ ws, unsigned *__restrict__ locks, int M, int N, int K,
                                     int Np, int G, int tiles_per_split, int pairs) {
    extern __shared__ __align__(128) uint8_t smem_raw[];
    // the swizzle repeats every 1024 bytes from a 1024-aligned address (the launcher adds the
    // slack to the dynamic shared memory)
    uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
    const int tid = threadIdx.x, wg = tid / 128, warp = (tid % 128) / 32, lane = tid & 31;
    const int n0 = blockIdx.x * C::BN, m0 = blockIdx.y * C::BM;
    const int ktiles = (K + C::BK - 1) / C::BK;
    const int t0 = blockIdx.z * tiles_per_split, nt = min(ktiles, t0 + tiles_per_split) - t0;
    const int srows = G % C::BK == 0 ? 1 : C::KS;

    float acc[C::NB][C::ACC];
#pragma unroll
    for (int j = 0; j < C::NB; j++)
#pragma unroll
        for (int i = 0; i < C::ACC; i++) acc[j][i] = 0.f;

    const Loader<C, HAS_Z> ld(X, Q, S, Z, M, K, Np, G, srows, m0, n0);
    const uint32_t sbase = smem_u32(smem);
#pragma unroll 1
    for (int s = 0; s < C::STAGES - 2; s++)
        if (s < nt) ld.load_w(sbase + s * C::STAGE, t0 + s);
    grid_dep_sync();
#pragma unroll 1
    for (int s = 0; s < C::STAGES - 2; s++) {
        if (s < nt) ld.load_a(sbase + s * C::STAGE, t0 + s);
        cp_commit();
    }

    // this warp's rows of the A operand: outputs wg·64 + 16·warp … of the tile, word h of
    // block blk; this thread's two outputs (rows lane/4 and lane/4 + 8 of those 16)
    const int blk = wg * 2 + warp / 2, h = warp & 1, fl = wg * 64 + warp * 16 + (lane >> 2);
    // one K-tile: refill the slot of the K-tile before the previous one, dequantize this one's
    // A fragments into `a`, issue its MMAs, wait for the previous K-tile's
    auto step = [&](int t, uint32_t(&a)[C::KS][4]) {
        cp_wait<C::STAGES - 3>();  // K-tile t has landed (this thread's copies)…
        wg::fence_async_smem();    // …visible to the tensor cores' (async) reads…
        __syncthreads();           // …everyone's; and every warpgroup is past K-tile t − 1's wait,
                                   // so K-tile t − 2's MMAs are done: its slot takes t + STAGES − 2
        {
            const int nx = t + C::STAGES - 2;
            if (nx < nt) {
                const uint32_t base = sbase + (nx % C::STAGES) * C::STAGE;
                ld.load_a(base, t0 + nx);
                ld.load_w(base, t0 + nx);
            }
            cp_commit();
        }
        const uint8_t *st = smem + (t % C::STAGES) * C::STAGE;
        const uint32_t *sq = (const uint32_t *)(st + C::A_BYTES);
        const uint16_t *ss = (const uint16_t *)(st + C::A_BYTES + C::Q_BYTES);
        const uint16_t *sz = ss + C::S_BYTES / 2;
        uint32_t sc[2], zn[2];
#pragma unroll
        for (int ks = 0; ks < C::KS; ks++) {
            if (ks == 0 || srows != 1) {
                const int sr = srows == 1 ? 0 : ks;
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    sc[e] = dup(ss[sr * C::BN + fl + 8 * e]);
                    zn[e] = dup(HAS_Z ? sz[sr * C::BN + fl + 8 * e] : NEG136);
                }
            }
            uint32_t b[4];
            dequant(sq[((ks * (C::BN / 32) + blk) * 32 + lane) * 2 + h], zn, sc, b);
            // dequant's order (row l/4: k, k + 8; row l/4 + 8: k, k + 8) → the A fragment's
            a[ks][0] = b[0];
            a[ks][1] = b[2];
            a[ks][2] = b[1];
            a[ks][3] = b[3];
        }
        const uint32_t sx = smem_u32(st);
#pragma unroll
        for (int j = 0; j < C::NB; j++) wg::pin(acc[j]);
        wg::arrive();
#pragma unroll
        for (int ks = 0; ks < C::KS; ks++)
#pragma unroll
            for (int j = 0; j < C::NB; j++)
                Mma<C::MMA_N>::run(acc[j], a[ks], wg::desc(sx + j * 128 * 128 + ks * 32));
        wg::commit();
        wg::wait<1>();  // K-tile t − 1's MMAs are done in this warpgroup
#pragma unroll
        for (int j = 0; j < C::NB; j++) wg::pin(acc[j]);
    };
    uint32_t a0[C::KS][4], a1[C::KS][4];
    for (int t = 0; t < nt; t += 2) {
        step(t, a0);
        if (t + 1 < nt) step(t + 1, a1);
    }
    wg::wait<0>();
#pragma unroll
    for (int j = 0; j < C::NB; j++) wg::pin(acc[j]);
    cp_wait<0>();

    // acc[j][4·i + e]: output n0 + fl + 8·(e / 2), row m0 + 128·j + 8·i + 2·(lane mod 4) + e mod 2
    const int col = n0 + fl, half = pairs < 0 ? -pairs : pairs;
    const bool odd = (lane >> 2) & 1;  // col is odd (n0, fl − lane/4 are multiples of 8)
    if (gridDim.z == 1) {
#pragma unroll
        for (int j = 0; j < C::NB; j++)
#pragma unroll
            for (int i = 0; i < C::ACC / 4; i++)
#pragma unroll
                for (int e2 = 0; e2 < 2; e2++) {
                    const int r0 = m0 + 128 * j + 8 * i + 2 * (lane & 3), c = col + 8 * e2;
                    const float v0 = acc[j][4 * i + 2 * e2], v1 = acc[j][4 * i + 2 * e2 + 1];
                    if (pairs < 0) {
                        // gate j and up j (columns 2j, 2j + 1) sit in lanes l and l ^ 4: the even one
                        // gates row r0, the odd one row r0 + 1
                        const float other = __shfl_xor_sync(0xffffffffu, odd ? v0 : v1, 4);
                        const int r = odd ? r0 + 1 : r0;
                        if (r < M && c < N) Y[(size_t)r * half + c / 2] = odd ? gated(other, v1) : gated(v0, other);
                        continue;
                    }
                    if (c >= N) continue;
                    // pairs > 0: gate j (even column) to j, up j to half + j (the checkpoint's order)
                    const int oc = pairs > 0 ? (odd ? half : 0) + c / 2 : c;
                    if (r0 < M) Y[(size_t)r0 * N + oc] = tobf(v0);
                    if (r0 + 1 < M) Y[(size_t)(r0 + 1) * N + oc] = tobf(v1);
                }
        return;
    }

    // split-K: partials to ws [splits, M, N] (f32), then the last split of this tile adds them.
    // The largest tile is never split (its fixup would hold 32 positions per thread: spills).
    if constexpr (!C::SPLIT) {
        __trap();
    } else {
        float *part = ws + (size_t)blockIdx.z * M * N;
#pragma unroll
        for (int j = 0; j < C::NB; j++)
#pragma unroll
            for (int i = 0; i < C::ACC; i++) {
                const int r = m0 + 128 * j + 8 * (i / 4) + 2 * (lane & 3) + (i & 1), c = col + 8 * ((i >> 1) & 1);
                if (r < M && c < N) part[(size_t)r * N + c] = acc[j][i];
            }
        finish_split<C>(Y, ws, locks, M, N, m0, n0, pairs);
    }
}

} // namespace w4w

// The tiles (rows × outputs of y; keep in step with W4Tile's `wg…` tiles in
// src/runtime/launch/gemm_w4.rs, which sizes the grid and the dynamic shared memory, + 1024
// bytes of alignment slack):
//   wg64x64:   one warpgroup, 64 rows,  4 stages of 11 KiB (17–64 rows, wide products)
//   wg128x64:  one warpgroup, 128 rows, 4 stages of 19 KiB (timed, not picked)
//   wg128x128: two warpgroups, 128 rows, 4 stages of 21 KiB (act-order weights, 65–1023 rows)
//   wg256x128: two warpgroups, 256 rows, 4 stages of 39 KiB (one CTA per SM; forced routes from
//              1024 rows: act-order weights, which have no dequantize + cuBLAS route)
#define WG_KERNEL(name, WG, BM, STAGES, MINB)                                                           \
    extern "C" __global__ void __launch_bounds__(WG * 128, MINB) name(W4_ARGS) {                          \
        w4w::gemm<w4w::Cfg<WG, BM, STAGES>, false>(W4_PASS);                                            \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(WG * 128, MINB) name##_z(W4_ARGS) {                      \
        w4w::gemm<w4w::Cfg<WG, BM, STAGES>, true>(W4_PASS);                                             \
    }

WG_KERNEL(gemm_w4_wg64x64, 1, 64, 4, 3)
WG_KERNEL(gemm_w4_wg128x64, 1, 128, 4, 2)
WG_KERNEL(gemm_w4_wg128x128, 2, 128, 4, 1)
WG_KERNEL(gemm_w4_wg256x128, 2, 256, 4, 1)
