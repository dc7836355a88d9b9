// W8A8 on Hopper's warpgroup MMA (wgmma, sm_90a only): the products of gemm_q8.cu (int8) and
// gemm_fp8.cu (fp8 e4m3) — the same operands, scales, gated epilogue and rounding
// (gemm_q8.cuh's load_stage and store_rows16) — for the row counts where the mma.sync tiles fall
// behind cuBLAS: plain int8 products of 1024 rows or more (prefills, prefill chunks) run on the
// 128 × 128 tile (`quantized::q8_path`, `pick_tile`). build.rs builds this unit for compute_90a
// alone; src/runtime/launch/mod.rs loads it only on a GPU of compute capability 9.0. Launcher:
// src/runtime/launch/gemm_q8.rs (the tiles `w…` of its menu).
//
// Status (H200 sweep at 8140ea6, `reports/gemm_sweep`): the 128 × 128 tile is 1.32× faster than
// cuBLAS int8 + our epilogue over the plain products at 2,048 rows and 1.04× at 16,384, slower on
// the gated one (cuBLAS 1.1× ahead) and 1.2–1.7× slower per product than cuBLASLt's fp8 GEMM,
// which loads by TMA in warp-specialized, persistent CTAs; the second CTA per SM (overlapping one
// CTA's fill and epilogue with the other's MMAs) was worth 1.06–1.35×. The next step is that
// structure: a producer warp issuing TMA loads, mbarrier-tracked stages, consumers that only
// issue wgmma.
//
//   gemm_q8_<tile>, gemm_q8_silu_<tile>, gemm_fp8_<tile>, gemm_fp8_silu_<tile>
//       (A, B, sx, sw, y, M, N, K): as gemm_q8.cu's kernels of the same names
//
// Structure: a CTA of WG warpgroups owns a (64·WG) × BN output tile; each warpgroup its 64 rows
// across all BN columns, as BN/128 accumulators of m64n128 in registers. K walks in 128-byte
// K-tiles through a STAGES-deep cp.async ring laid out in wgmma's 128-byte swizzle (row r's
// 16-byte chunk c at chunk c ^ (r mod 8): exactly gemm_q8.cuh's swz for 128-byte rows, from a
// 1024-byte-aligned base), so both operands are read by the tensor cores straight from shared
// memory through descriptors, K-major as the 8-bit wgmma requires — A [M, K] and B [N, K] are both
// K-contiguous already. The MMAs run asynchronously: each iteration issues the current K-tile's
// MMAs, then waits only for the previous K-tile's and, once every warpgroup has (a barrier the
// tensor cores do not wait for: they are busy with the current K-tile), refills that K-tile's
// slot — STAGES − 1 K-tiles in flight or in use, one being multiplied.
//
// Bounds as gemm_q8.cuh: M arbitrary, N % 8 == 0, K % 16 == 0 (zero-filled chunks past K).

#include "gemm_q8.cuh"
#include "wgmma.cuh"

namespace q8w {

using wg::desc;
using wg::fence_async_smem;
using wg::pin;

// d (64 × 128 per warpgroup) += A (64 × 32, descriptor a) · B (128 × 32, descriptor b)ᵀ; the
// predicate (scale-d, operand 66) set: accumulate
struct WgS8 {
    typedef int acc_t;
    static __device__ __forceinline__ void mma(int (&d)[64], uint64_t a, uint64_t b) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {" WG_REGS "}, %64, %65, p;\n}\n"
                     : WG_ACC("+r", d)
                     : "l"(a), "l"(b), "r"(1));
    }
};
struct WgE4M3 {
    typedef float acc_t;
    static __device__ __forceinline__ void mma(float (&d)[64], uint64_t a, uint64_t b) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {" WG_REGS "}, %64, %65, p, 1, 1;\n}\n"
                     : WG_ACC("+f", d)
                     : "l"(a), "l"(b), "r"(1));
    }
};

template <int WG, int BN, int STAGES, class Wg, bool GATED>
__device__ __forceinline__ void gemm(const uint8_t *__restrict__ A, const uint8_t *__restrict__ B,
                                     const float *__restrict__ sx, const float *__restrict__ sw, bf16 *__restrict__ y,
                                     int M, int N, int K) {
    typedef typename Wg::acc_t acc_t;
    constexpr int BM = 64 * WG, BK = 128, THREADS = 128 * WG, NB = BN / 128;
    constexpr int STAGE_BYTES = (BM + BN) * BK;
    static_assert(BN % 128 == 0 && STAGES >= 3, "n128 accumulators; K-tiles in flight beside two in use");
    extern __shared__ __align__(128) uint8_t smem_raw[];
    // the swizzle repeats every 1024 bytes from a 1024-aligned address (the launcher adds the
    // slack to the dynamic shared memory)
    uint8_t *smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);

    const int tid = threadIdx.x, wg = tid / 128, lane = tid & 31, warp = (tid % 128) / 32;
    const int m0 = blockIdx.y * BM, nt = blockIdx.x;
    const int KT = (K + BK - 1) / BK;

    acc_t acc[NB][64];
#pragma unroll
    for (int j = 0; j < NB; j++)
#pragma unroll
        for (int i = 0; i < 64; i++) acc[j][i] = 0;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < KT) q8::load_stage<BM, BN, BK, THREADS, GATED>(smem + s * STAGE_BYTES, A, B, m0, nt, M, N, K, s * BK, tid);
        cp_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        cp_wait<STAGES - 2>(); // K-tile kt has landed (this thread's chunks)…
        fence_async_smem();          // …visible to the tensor cores' (async) reads…
        __syncthreads();             // …everyone's
        const uint32_t sa = smem_u32(smem + (kt % STAGES) * STAGE_BYTES) + wg * 64 * BK;
        const uint32_t sb = smem_u32(smem + (kt % STAGES) * STAGE_BYTES) + BM * BK;
#pragma unroll
        for (int j = 0; j < NB; j++) pin(acc[j]);
        wg::arrive();
#pragma unroll
        for (int ks = 0; ks < BK / 32; ks++)
#pragma unroll
            for (int j = 0; j < NB; j++) Wg::mma(acc[j], desc(sa + ks * 32), desc(sb + j * 128 * BK + ks * 32));
        wg::commit();
        wg::wait<1>(); // K-tile kt − 1's MMAs are done in this warpgroup…
#pragma unroll
        for (int j = 0; j < NB; j++) pin(acc[j]);
        __syncthreads(); // …and in every one (while kt's run): its slot takes K-tile kt + STAGES − 1
        if (kt + STAGES - 1 < KT)
            q8::load_stage<BM, BN, BK, THREADS, GATED>(smem + ((kt + STAGES - 1) % STAGES) * STAGE_BYTES, A, B, m0, nt,
                                                       M, N, K, (kt + STAGES - 1) * BK, tid);
        cp_commit();
    }
    wg::wait<0>();
#pragma unroll
    for (int j = 0; j < NB; j++) pin(acc[j]);

    // warp w of warpgroup wg holds rows wg·64 + 16w…+16; n8 fragment f is accumulator f / 16,
    // registers 4·(f mod 16)…+4
    const int col0 = GATED ? nt * (BN / 2) : nt * BN;
    q8::store_rows16<BN / 8, GATED>([&](int f, int r) { return acc[f / 16][(f % 16) * 4 + r]; },
                                    m0 + wg * 64 + warp * 16, col0, sx, sw, y, M, N, lane);
}

} // namespace q8w

// The tiles (keep in step with the `w…` tiles of TILES in src/runtime/launch/gemm_q8.rs, which
// sizes the grid and the dynamic shared memory, + 1024 bytes of alignment slack):
//   wl: 128 × 256, two warpgroups, 4 stages of 48 KiB (one CTA per SM; timed, not picked)
//   wm: 128 × 128, two warpgroups, 3 stages of 32 KiB (two CTAs per SM, ≤ 128 registers): picked
//   ws:  64 × 128, one warpgroup, 4 stages of 24 KiB (two CTAs per SM; timed, not picked)
#define WG_KERNEL(name, WG, BN, STAGES, MINB, WGMMA, GATED)                                                 \
    extern "C" __global__ void __launch_bounds__(WG * 128, MINB)                                          \
        name(const uint8_t *A, const uint8_t *B, const float *sx, const float *sw, bf16 *y, int M, int N,  \
             int K) {                                                                                      \
        grid_dep_sync();                                                                                  \
        q8w::gemm<WG, BN, STAGES, WGMMA, GATED>(A, B, sx, sw, y, M, N, K);                                 \
    }
#define WG_TILES(prefix, WGMMA, GATED)                                                                      \
    WG_KERNEL(prefix##_wl, 2, 256, 4, 1, WGMMA, GATED)                                                    \
    WG_KERNEL(prefix##_wm, 2, 128, 3, 2, WGMMA, GATED)                                                    \
    WG_KERNEL(prefix##_ws, 1, 128, 4, 2, WGMMA, GATED)

WG_TILES(gemm_q8, q8w::WgS8, false)
WG_TILES(gemm_q8_silu, q8w::WgS8, true)
WG_TILES(gemm_fp8, q8w::WgE4M3, false)
WG_TILES(gemm_fp8_silu, q8w::WgE4M3, true)
