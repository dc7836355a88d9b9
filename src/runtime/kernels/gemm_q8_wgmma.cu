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

namespace q8w {

using q8::cp_async_commit;
using q8::cp_async_wait;
using q8::smem_addr;

// The shared-memory matrix descriptor of an operand tile at `addr` (1024-byte aligned, or
// advanced by whole k-steps within its 128-byte rows): K-major, 128-byte swizzle, 8-row groups
// 1024 bytes apart (the stride byte offset); the leading byte offset is unused in this mode.
__device__ __forceinline__ uint64_t desc(uint32_t addr) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}

__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wg_arrive() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins the accumulators between asynchronous MMAs (the compiler must not move their reads or
// writes across a wgmma it cannot see into).
__device__ __forceinline__ void pin(int (&d)[64]) {
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+r"(d[i])::"memory");
}
__device__ __forceinline__ void pin(float (&d)[64]) {
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// d (64 × 128 per warpgroup) += A (64 × 32, descriptor a) · B (128 × 32, descriptor b)ᵀ
struct WgS8 {
    typedef int acc_t;
    static __device__ __forceinline__ void mma(int (&d)[64], uint64_t a, uint64_t b) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                     "}, %64, %65, p;\n}\n"
                     :
      "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
      "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
      "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
      "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
      "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
      "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
      "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
      "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
                     : "l"(a), "l"(b), "r"(1));
    }
};
struct WgE4M3 {
    typedef float acc_t;
    static __device__ __forceinline__ void mma(float (&d)[64], uint64_t a, uint64_t b) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                     "}, %64, %65, p, 1, 1;\n}\n"
                     :
      "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
      "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
      "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
      "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
      "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
      "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
      "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
      "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
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
    uint8_t *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);

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
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        cp_async_wait<STAGES - 2>(); // K-tile kt has landed (this thread's chunks)…
        fence_async_smem();          // …visible to the tensor cores' (async) reads…
        __syncthreads();             // …everyone's
        const uint32_t sa = smem_addr(smem + (kt % STAGES) * STAGE_BYTES) + wg * 64 * BK;
        const uint32_t sb = smem_addr(smem + (kt % STAGES) * STAGE_BYTES) + BM * BK;
#pragma unroll
        for (int j = 0; j < NB; j++) pin(acc[j]);
        wg_arrive();
#pragma unroll
        for (int ks = 0; ks < BK / 32; ks++)
#pragma unroll
            for (int j = 0; j < NB; j++) Wg::mma(acc[j], desc(sa + ks * 32), desc(sb + j * 128 * BK + ks * 32));
        wg_commit();
        wg_wait<1>(); // K-tile kt − 1's MMAs are done in this warpgroup…
#pragma unroll
        for (int j = 0; j < NB; j++) pin(acc[j]);
        __syncthreads(); // …and in every one (while kt's run): its slot takes K-tile kt + STAGES − 1
        if (kt + STAGES - 1 < KT)
            q8::load_stage<BM, BN, BK, THREADS, GATED>(smem + ((kt + STAGES - 1) % STAGES) * STAGE_BYTES, A, B, m0, nt,
                                                       M, N, K, (kt + STAGES - 1) * BK, tid);
        cp_async_commit();
    }
    wg_wait<0>();
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
