// The W8A8 GEMM shared by the int8 (gemm_q8.cu) and fp8 e4m3 (gemm_fp8.cu) units:
//     y[m, n] = bf16(acc[m, n] · sx[m] · sw[n]),  acc[m, n] = Σ_k A[m, k] · B[n, k]
// with 8-bit A [M, K] (per-token quantized activations) and B [N, K] (weights, one scale per
// output channel), both row-major with K contiguous — exactly the "row.col" operand layout of
// the 8-bit mma.sync, so neither operand is transposed anywhere.
//
// Structure (CUTLASS sm80 / llm.c style): a CTA owns a BM × BN output tile and walks K in BK-byte
// tiles through a STAGES-deep cp.async ring in shared memory (global → shared without registers,
// STAGES − 1 tiles in flight while the tensor cores chew on the oldest). Warps are laid out
// WM × WN over the output tile and, for the small-M tile, WK-way over the k-steps of each
// K-tile (intra-CTA split-K, summed through shared memory at the end): at M ≤ 16 a CTA has too
// little output to keep enough loads in flight otherwise. Fragments come from shared memory by
// ldmatrix (an 8-bit 16×32 A fragment is exactly a 16×16 b16 fragment, so the b16 instruction
// serves); rows are XOR-swizzled in 16-byte chunks so the eight row addresses of one ldmatrix
// phase fall in eight different bank groups.
//
// Epilogue, in registers: the scales, optionally SiLU·mul, and one bf16 store. The gated variant
// computes the stacked gate/up Linear (B = [gate; up], N = 2I rows) and writes act [M, I] =
// silu(gate)·up: its CTA loads, for each group of 16 B rows, 8 gate rows then the 8 up rows of the
// same output columns, so one thread holds a gate accumulator and its up partner in adjacent
// n8-tiles. The rounding steps match quant.cu's int8_silu_epilogue exactly (so int8 results are
// bit-identical to the cuBLAS + epilogue path).
//
// Bounds: M is arbitrary (rows past M are zero-filled by cp.async's src-size 0 and never
// stored); N % 8 == 0 (gated: I % 8 == 0 is not needed, I even is); K % 16 == 0 (a 16-byte chunk
// is wholly in or out of K, chunks past K are zero-filled, contributing 0 to the sum). The
// launcher (src/runtime/launch/gemm_q8.rs) checks these and the alignments.
#pragma once

#include "common.cuh"

namespace q8 {

// volatile: must not move across the __syncthreads that publish a stage
__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// The tensor-core step of each unit: d += a (16×32) · b (32×8).
struct MmaS8 {
    typedef int acc_t;
    static __device__ __forceinline__ void mma(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

#ifdef Q8_FP8
// PTX ISA 8.4+, sm_89+: the unit is built for compute_89 (build.rs)
struct MmaE4M3 {
    typedef float acc_t;
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};
#endif

// Chunk c (16 bytes) of row r of a tile with CPR chunks per row, XOR-swizzled: the rows one
// ldmatrix phase reads (8 consecutive, same logical chunk) land in 8 distinct 16-byte bank groups.
template <int CPR> __device__ __forceinline__ int swz(int r, int c) {
    constexpr int per = CPR >= 8 ? 1 : 8 / CPR; // rows sharing one 128-byte line
    constexpr int mask = (CPR >= 8 ? 8 : CPR) - 1;
    return c ^ ((r / per) & mask);
}

// B row of tile row r of N-tile nt, and whether it exists. Gated: in each group of 16 tile rows,
// 8 gate rows (output columns oc) then the 8 up rows of the same columns.
template <int BN, bool GATED> __device__ __forceinline__ int brow(int nt, int r, int N, bool &ok) {
    if (!GATED) {
        int g = nt * BN + r;
        ok = g < N;
        return g;
    }
    int oc = nt * (BN / 2) + (r / 16) * 8 + (r % 8);
    ok = oc < N / 2;
    return (r % 16) < 8 ? oc : oc + N / 2;
}

// The K-tile from byte k0 into one ring slot at sa (A's BM rows, then B's BN rows, BK bytes
// each, chunks swizzled by swz), every thread of THREADS issuing its share of 16-byte chunks.
template <int BM, int BN, int BK, int THREADS, bool GATED>
__device__ __forceinline__ void load_stage(uint8_t *sa, const uint8_t *__restrict__ A, const uint8_t *__restrict__ B,
                                           int m0, int nt, int M, int N, int K, int k0, int tid) {
    constexpr int CPR = BK / 16;
    uint8_t *sb = sa + BM * BK;
#pragma unroll
    for (int i = 0; i < (BM * CPR + THREADS - 1) / THREADS; i++) {
        int id = tid + i * THREADS;
        if ((BM * CPR) % THREADS == 0 || id < BM * CPR) {
            int r = id / CPR, c = id % CPR, gk = k0 + c * 16;
            bool ok = m0 + r < M && gk < K;
            cp16(smem_u32(sa + r * BK + swz<CPR>(r, c) * 16), ok ? A + (size_t)(m0 + r) * K + gk : A, ok);
        }
    }
#pragma unroll
    for (int i = 0; i < (BN * CPR + THREADS - 1) / THREADS; i++) {
        int id = tid + i * THREADS;
        if ((BN * CPR) % THREADS == 0 || id < BN * CPR) {
            int r = id / CPR, c = id % CPR, gk = k0 + c * 16;
            bool ok;
            int g = brow<BN, GATED>(nt, r, N, ok);
            ok = ok && gk < K;
            cp16(smem_u32(sb + r * BK + swz<CPR>(r, c) * 16), ok ? B + (size_t)g * K + gk : B, ok);
        }
    }
}

// The epilogue of one warp's 16 output rows from row0, in registers: fragment j (n8, j < NI)
// register r (frag(j, r)) holds row g (+8 for r ≥ 2), columns 2t, 2t + 1 of its 8 — the mma.sync
// accumulator layout, which wgmma's repeats per warp. col0: the weight row of fragment 0 (GATED:
// the output column of pair 0, fragments 2p and 2p + 1 its gate and up). The scales, optionally
// SiLU·mul, one bf16 store.
template <int NI, bool GATED, class Frag>
__device__ __forceinline__ void store_rows16(Frag frag, int row0, int col0, const float *__restrict__ sx,
                                             const float *__restrict__ sw, bf16 *__restrict__ y, int M, int N,
                                             int lane) {
    const int g = lane >> 2, t = lane & 3, half = N / 2;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int row = row0 + g + 8 * h;
        if (row >= M) continue;
        const float s = sx[row];
        if (!GATED) {
            bf16 *yr = y + (size_t)row * N;
#pragma unroll
            for (int j = 0; j < NI; j++) {
                int col = col0 + j * 8 + 2 * t;
                if (col >= N) continue;
                // (acc · sx) · sw in that order, as int8_epilogue
                __nv_bfloat162 v = __floats2bfloat162_rn((float)frag(j, 2 * h) * s * sw[col],
                                                         (float)frag(j, 2 * h + 1) * s * sw[col + 1]);
                *(__nv_bfloat162 *)(yr + col) = v;
            }
        } else {
            bf16 *yr = y + (size_t)row * half;
#pragma unroll
            for (int p = 0; p < NI / 2; p++) {
                int col = col0 + p * 8 + 2 * t;
                if (col >= half) continue;
                float v[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    // as int8_silu_epilogue: g, u rounded to bf16, silu(g) rounded, times u
                    float gt = bf(tobf((float)frag(2 * p, 2 * h + e) * s * sw[col + e]));
                    float up = bf(tobf((float)frag(2 * p + 1, 2 * h + e) * s * sw[half + col + e]));
                    v[e] = bf(tobf(gt / (1.f + __expf(-gt)))) * up;
                }
                *(__nv_bfloat162 *)(yr + col) = __floats2bfloat162_rn(v[0], v[1]);
            }
        }
    }
}

// The kernel body: a BM × BN tile of y per CTA (blockIdx.x over N, blockIdx.y over M), warps
// WM × WN × WK, a STAGES-deep ring of BK-byte K-tiles. N: rows of B (2I when GATED); y is [M, N]
// or, GATED, [M, N/2].
template <int BM, int BN, int BK, int WM, int WN, int WK, int STAGES, class Mma, bool GATED>
__device__ __forceinline__ void gemm_q8(const uint8_t *__restrict__ A, const uint8_t *__restrict__ B,
                                        const float *__restrict__ sx, const float *__restrict__ sw,
                                        bf16 *__restrict__ y, int M, int N, int K) {
    typedef typename Mma::acc_t acc_t;
    constexpr int THREADS = WM * WN * WK * 32;
    constexpr int TM = BM / WM, TN = BN / WN; // one warp's output tile
    constexpr int MI = TM / 16, NI = TN / 8;  // its m16 and n8 fragments
    constexpr int CPR = BK / 16;              // 16-byte chunks per tile row
    constexpr int KSTEPS = BK / 32;           // mma k-steps per K-tile
    constexpr int STAGE_BYTES = (BM + BN) * BK;
    static_assert(TM % 16 == 0 && TN % 16 == 0, "warp tile: m16 fragments, n8 fragments in pairs");
    static_assert(KSTEPS % WK == 0, "split-K warps share a K-tile's k-steps evenly");
    static_assert(BK % 32 == 0 && CPR <= 16, "K-tile of whole k-steps");
    static_assert(WK == 1 || (WK - 1) * WM * WN * MI * NI * 4 * 32 * 4 <= STAGES * STAGE_BYTES,
                  "the split-K partial sums fit in the pipeline's shared memory");
    extern __shared__ __align__(128) uint8_t smem[];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    // (wk a compile-time 0 without split-K, so the k-step loop unrolls)
    const int wk = WK == 1 ? 0 : warp / (WM * WN), wmn = warp % (WM * WN), wm = wmn / WN, wn = wmn % WN;
    const int m0 = blockIdx.y * BM, nt = blockIdx.x;
    const int KT = (K + BK - 1) / BK;

    auto load = [&](int stage, int kt) {
        load_stage<BM, BN, BK, THREADS, GATED>(smem + stage * STAGE_BYTES, A, B, m0, nt, M, N, K, kt * BK, tid);
    };

    acc_t acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NI; j++)
#pragma unroll
            for (int r = 0; r < 4; r++) acc[i][j][r] = 0;

    // prologue: STAGES − 1 K-tiles in flight (a group is committed even when empty, so the
    // wait_group count below always names the right tile)
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < KT) load(s, s);
        cp_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        cp_wait<STAGES - 2>(); // K-tile kt has landed (this thread's chunks)…
        __syncthreads();             // …everyone's, and slot (kt − 1) % STAGES is free again
        if (kt + STAGES - 1 < KT) load((kt + STAGES - 1) % STAGES, kt + STAGES - 1);
        cp_commit();
        const uint8_t *sa = smem + (kt % STAGES) * STAGE_BYTES, *sb = sa + BM * BK;
#pragma unroll
        for (int ks = wk; ks < KSTEPS; ks += WK) {
            uint32_t a[MI][4], b[NI][2];
#pragma unroll
            for (int i = 0; i < MI; i++) {
                // lanes 0-15: rows 0-15, bytes 0-15; lanes 16-31: the same rows, bytes 16-31
                int r = wm * TM + i * 16 + (lane & 15), c = ks * 2 + (lane >> 4);
                ldmatrix_x4(smem_u32(sa + r * BK + swz<CPR>(r, c) * 16), a[i][0], a[i][1], a[i][2], a[i][3]);
            }
#pragma unroll
            for (int p = 0; p < NI / 2; p++) {
                // two n8 fragments: lanes 0-7 / 8-15 rows 0-7 bytes 0-15 / 16-31, lanes 16-31
                // the same for rows 8-15
                int r = wn * TN + p * 16 + (lane & 7) + ((lane >> 4) << 3), c = ks * 2 + ((lane >> 3) & 1);
                ldmatrix_x4(smem_u32(sb + r * BK + swz<CPR>(r, c) * 16), b[2 * p][0], b[2 * p][1], b[2 * p + 1][0],
                            b[2 * p + 1][1]);
            }
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int j = 0; j < NI; j++) Mma::mma(acc[i][j], a[i], b[j]);
        }
    }

    if (WK > 1) {
        // split-K: warps wk > 0 leave their partial sums in the (now idle) ring, wk == 0 adds
        cp_wait<0>();
        __syncthreads();
        acc_t *red = (acc_t *)smem;
        if (wk > 0) {
            acc_t *mine = red + ((wk - 1) * WM * WN + wmn) * (MI * NI * 4) * 32;
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int j = 0; j < NI; j++)
#pragma unroll
                    for (int r = 0; r < 4; r++) mine[((i * NI + j) * 4 + r) * 32 + lane] = acc[i][j][r];
        }
        __syncthreads();
        if (wk > 0) return;
#pragma unroll
        for (int w = 1; w < WK; w++) {
            const acc_t *theirs = red + ((w - 1) * WM * WN + wmn) * (MI * NI * 4) * 32;
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int j = 0; j < NI; j++)
#pragma unroll
                    for (int r = 0; r < 4; r++) acc[i][j][r] += theirs[((i * NI + j) * 4 + r) * 32 + lane];
        }
    }

#pragma unroll
    for (int i = 0; i < MI; i++) {
        const int col0 = GATED ? nt * (BN / 2) + wn * (TN / 2) : nt * BN + wn * TN;
        store_rows16<NI, GATED>([&](int j, int r) { return acc[i][j][r]; }, m0 + wm * TM + i * 16, col0, sx, sw, y,
                                M, N, lane);
    }
}

} // namespace q8

// The tiles the launcher picks from by M (and N): keep in step with TILES in
// src/runtime/launch/gemm_q8.rs (which sizes the grid and the dynamic shared memory from them and
// names each kernel `<prefix>_<tile>`).
//   s:      M ≤ 16 (decode): 16 × 32, 4 warps splitting each 256-byte K-tile's 8 k-steps, 6 stages
//           (72 KiB: 40 KiB of weights in flight per CTA, what a memory-bound product needs)
//   s16:    the same 16 × 16: twice the CTAs, for N = 2048 products that fill half the SMs at 32
//   m:      mid M: 64 × 64, 2 × 2 warps of 32 × 32, 64-byte K-tiles, 4 stages
//   m128k:  64 × 64 with 128-byte K-tiles (half the barriers per k-step), 4 stages (64 KiB)
//   n32:    32 × 64, 1 × 2 warps × 2-way split of each 128-byte K-tile, 4 stages (48 KiB)
//   w:      64 × 128, 2 × 4 warps of 32 × 32, 128-byte K-tiles, 3 stages (72 KiB)
//   l:      large M: 128 × 128, 2 × 4 warps of 64 × 32, 64-byte K-tiles, 4 stages (64 KiB)
//   l128k:  128 × 128 with 128-byte K-tiles, 3 stages (96 KiB)
#define Q8_TILES(prefix, MMA, GATED)                                                                     \
    Q8_KERNEL(prefix##_s, 16, 32, 256, 1, 1, 4, 6, 1, MMA, GATED)                                        \
    Q8_KERNEL(prefix##_s16, 16, 16, 256, 1, 1, 4, 6, 1, MMA, GATED)                                      \
    Q8_KERNEL(prefix##_m, 64, 64, 64, 2, 2, 1, 4, 1, MMA, GATED)                                         \
    Q8_KERNEL(prefix##_m128k, 64, 64, 128, 2, 2, 1, 4, 1, MMA, GATED)                                    \
    Q8_KERNEL(prefix##_n32, 32, 64, 128, 1, 2, 2, 4, 1, MMA, GATED)                                      \
    Q8_KERNEL(prefix##_w, 64, 128, 128, 2, 4, 1, 3, 1, MMA, GATED)                                       \
    Q8_KERNEL(prefix##_l, 128, 128, 64, 2, 4, 1, 4, 1, MMA, GATED)                                       \
    Q8_KERNEL(prefix##_l128k, 128, 128, 128, 2, 4, 1, 3, 1, MMA, GATED)
#define Q8_KERNELS(prefix, MMA)                                                                          \
    Q8_TILES(prefix, MMA, false)                                                                         \
    Q8_TILES(prefix##_silu, MMA, true)

// MINB: the CTAs per SM to budget registers for (2 for the 128 × 128 tile caps it at 128
// registers but spills a few; it takes ~140 at 1)
#define Q8_KERNEL(name, BM, BN, BK, WM, WN, WK, STAGES, MINB, MMA, GATED)                                 \
    extern "C" __global__ void __launch_bounds__(WM *WN *WK * 32, MINB)                                  \
        name(const uint8_t *A, const uint8_t *B, const float *sx, const float *sw, bf16 *y, int M, int N, \
             int K) {                                                                                     \
        grid_dep_sync();                                                                                 \
        q8::gemm_q8<BM, BN, BK, WM, WN, WK, STAGES, MMA, GATED>(A, B, sx, sw, y, M, N, K);                \
    }

