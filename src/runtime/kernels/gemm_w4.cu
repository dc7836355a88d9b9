// W4A16 tensor-core GEMM in the manner of Marlin (IST-DASLab; vLLM's gptq_marlin), written for
// this crate: y[m, n] = Σ_k x[m, k] · w[n, k], x bf16 row-major, w int4 dequantized in registers
// to bf16 right before `mma.sync.m16n8k16` (f32 accumulation). Launchers:
// src/runtime/launch/gemm_w4.rs; the weight layout is written once at load by
// src/runtime/w4_layout.rs (host code, unit-tested there).
//
// Weight layout ("tiles"), the unit the kernel and the shuffle agree on:
//   Q: words[((kt · Np/32 + np) · 32 + lane) · 2 + h], kt = k/16, np = n/32 (a k16 × n32 block is
//   64 words = 256 bytes). Word h of lane l holds the 8 nibbles (q + 8) that lane l needs as the
//   B fragments of n8 tiles 2h and 2h + 1 of that block for one m16n8k16 step:
//     nib 0/4 → tile 2h,   k = kb, kb + 1      nib 1/5 → tile 2h,   k = kb + 8, kb + 9
//     nib 2/6 → tile 2h+1, k = kb, kb + 1      nib 3/7 → tile 2h+1, k = kb + 8, kb + 9
//   with kb = 2·(l % 4), n = 32·np + 16h + 8·tile_in_pair + l / 4. So a lane reads one 8-byte
//   word pair per k16 block (a warp: 256 contiguous bytes, no bank conflicts) and unpacks nibbles
//   i and i + 4 into one bf16x2 register with a single lop3 (below).
//   S: scales transposed, [ceil(Kp / G), Np] bf16 (zero for padding); Z (asymmetric only): the
//   same shape holding −(136 + zero point) in bf16 (exact: 128..143 fit bf16's 8 bits).
//   Np = N rounded up to 32, Kp = K rounded up to 128; padded weights are nibble 8 with scale 0.
//
// Dequantization without int→float conversion (Marlin's trick for bf16): bf16 0x4300 is 128.0
// with an exponent where the mantissa's unit is 1, so OR-ing a nibble v into the low mantissa
// bits gives exactly 128 + v. One lop3 does (word & 0x000f000f) | 0x43004300 for two values;
// then (128 + v) − (136 + z) = q − z exactly, and one bf16 multiply by the scale rounds once —
// the same bf16 value as compressed-tensors' dequantization `(q − zp) · scale` in bf16. Both
// steps are fma.rn.bf16x2 (sm_80 has no bf16x2 mul; a·b + (−0) rounds like a product).
//
// Tiling: a block of WM × WN × WK warps computes a BM × BN tile of y over a range of K (split-K
// across gridDim.z); each warp holds MTW m16 × NTW n8 accumulators and takes KSW of the k16
// steps of every BK-wide K tile (warps that split K inside a tile add their accumulators through
// shared memory at the end: for a few rows this lets every warp amortise one A fragment over
// many n8 tiles, as Marlin does). Global → shared copies are cp.async in a STAGES-deep ring.
// With gridDim.z > 1, each split writes f32 partials to `ws` and the last split to finish a tile
// (a counter in `locks`, reset by it for the next launch) adds them in split order
// (deterministic) and writes bf16.
//
// Epilogue (`pairs`): a stacked gate/up Linear may be stored with gate j and up j in adjacent
// columns 2j, 2j + 1 (src/runtime/w4_layout.rs, pair_rows), so that the thread holding column
// 2j's sum also holds 2j + 1's: with pairs < 0 it writes act[r, j] = silu(gate) · up (rounded as
// the GEMM's bf16 outputs followed by silu_mul_rows), with pairs > 0 the product in the
// checkpoint's column order. One launch less per layer in the batched engines.

// Status (H200, `bench_runtime --gemm-sweep --w4-only`, 2026-12-01): exact to the bf16
// dequantized weights on every checked case (656 of 656). Computing each thread's copy addresses
// once (Loader, below) took an unsplit s16 product of 16 K tiles from 18 to 12 µs (m32, 32
// tiles: 30 → 17). Ablations of that loop, one at a time, on q/k/v and gate/up at 1 and 16
// rows (scripts/gpu/ptx_variants.sh): without its in-loop copies 8.3–8.8 µs unsplit, without the
// mma 10.1–11.0, without the dequantization 10.2–11.2, without the barrier 10.8–11.3, with the
// weights resident in L2 11.6–12.3, waiting for every stage (no pipelining) 13.9–15.3. With the
// plan's splits (2–4 K tiles per block) none of these moves the time by more than ~10%: a launch
// costs ~5 µs before its first tile (launch, pipeline fill, the split-K fixup's round trip), as
// much as bf16's whole product at 16 rows (q/k/v 6.2 µs). That fixed cost is what to cut next.
// Programmatic launches (common.cuh; the first stages' weights are requested before the wait)
// hide part of it in the engine: W4A16 batch-16 step 1.81 → 1.62 ms (H200, 380e7a6).
// A 16 × 32 tile (n32, four warps along K) led nowhere by more than 0.1 µs at 1 and 16 rows with
// every split count (H200, 2026-12-01), so the plan keeps to s16; it stays instantiated for the
// sweep.
// Tried and dropped (H200, 2026-12-02): a norm tail, the last block of each block row adding the
// post-norm residual of its rows once every tile of the row was written (o and down; one launch
// less twice per layer, bit-identical to the GEMM + rmsnorm_rows, 564 of 564 checks). Timed
// with a run-time switch in one call: W4A16 decode batch 16 2.08 ms with the tail against 1.56
// without, batch 1 1.54 against 1.14 — one block normalising sixteen rows after the product is
// a serial tail on the critical path, where rmsnorm_rows spreads them over sixteen
// multiprocessors and its launch overlaps the GEMM's end (programmatic launches).
// Tried and dropped (H200, 2026-12-02, `scripts/gpu/ptx_variants.sh` with EXAONE_W4_TUNE=1): a
// 64 × 64 tile (four warps, 2 along N × 2 along K, two blocks per multiprocessor) for 64–256
// rows, twice m64's output tiles. At its best splits it took the four products at 64 rows in
// 56.8 µs against s16's 49.3; at 256 rows it led only on q/k/v (22.8 µs), still 1.7× the
// 13.4 of dequantize + cuBLAS. m64 at two blocks per
// multiprocessor (128 registers, no spills) moved nothing by more than 4%. From 64 rows up
// these mma.sync tiles lose to cuBLAS's bf16 GEMM (Hopper's wgmma): the four products at 256
// rows take 106 µs at each shape's best tile against 37.6 — so the runtime dequantizes and calls
// cuBLAS there (src/runtime/int4.rs, GEMM_MAX_ROWS).
// Tried and dropped (H200, 2026-12-03, PTX variants in one call; best tile per shape, the four
// products summed at 64 / 256 / 2,048 rows, built-in 48.4 / 108.4 / 648.7 µs): Marlin's order
// (every stage in flight, step k + 1's fragments read from shared memory while step k's mma
// run, the barrier before a tile's last step) 49.8 / 109.3 / 656.4; l128 as one warp along M
// with eight m16 tiles each (half the dequantization per mma) 48.2 / 115.9 / 695.3. Ablations
// of l128 at 2,048 rows (scripts/w4_ablations.py, compute_80 PTX; gate/up 309 µs): without
// the in-loop copies 246, without the mma (each replaced by a few ALU operations) 271,
// without the barrier 279, without the dequantization 285. No one part holds the time; with
// eight warps per multiprocessor the loop is bound by latency at ~230 TFLOP/s, and more of
// what it does in parallel needs wgmma's asynchronous issue, which only Hopper has:
// gemm_w4_wgmma.cu, 1.6–2.1× these tiles from 2,048 rows on an H200 (its status comment).

#include "gemm_w4.cuh"

namespace w4 {

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int WM, int WN, int WK, int MTW, int NTW, int KSW, int STAGES> struct Cfg {
    static constexpr int THREADS = 32 * WM * WN * WK;
    static constexpr int BM = 16 * MTW * WM, BN = 8 * NTW * WN, BK = 16 * KSW * WK;
    static constexpr int KS = BK / 16;  // k16 steps per tile
    // bytes of one stage: A [BM, BK] bf16, Q (BK/16 × BN/32 blocks of 256 B), S and Z rows
    static constexpr int A_BYTES = BM * BK * 2, Q_BYTES = KS * (BN / 32) * 256, S_BYTES = KS * BN * 2;
    static constexpr int STAGE = A_BYTES + Q_BYTES + 2 * S_BYTES;
    static constexpr int PIPE = STAGES * STAGE;
    static constexpr int RED = (WK - 1) * WM * WN * MTW * NTW * 4 * 32 * 4;
    static constexpr int SMEM = PIPE > RED ? PIPE : RED;
    static_assert(NTW % 4 == 0, "a warp takes whole k16 x n32 blocks");
    static_assert(BK >= 64 && 128 % BK == 0, "A rows swizzle 8 chunks; Kp is a multiple of 128");
    static_assert((BM * BK / 8) % THREADS == 0 && (KS * (BN / 32) * 16) % THREADS == 0, "whole copies");
};

template <int WM, int WN, int WK, int MTW, int NTW, int KSW, int STAGES, bool HAS_Z>
__device__ __forceinline__ void gemm_w4(const bf16 *__restrict__ X, const uint32_t *__restrict__ Q,
                                        const bf16 *__restrict__ S, const bf16 *__restrict__ Z,
                                        bf16 *__restrict__ Y, float *__restrict__ ws,
                                        unsigned *__restrict__ locks, int M, int N, int K, int Np, int G,
                                        int tiles_per_split, int pairs) {
    using C = Cfg<WM, WN, WK, MTW, NTW, KSW, STAGES>;
    extern __shared__ __align__(16) uint8_t smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wk = warp % WK, wn = (warp / WK) % WN, wm = warp / (WK * WN);
    const int m0 = blockIdx.y * C::BM, n0 = blockIdx.x * C::BN;
    const int ktiles = (K + C::BK - 1) / C::BK;
    const int t0 = blockIdx.z * tiles_per_split, nt = min(ktiles, t0 + tiles_per_split) - t0;
    // one scale row per tile when a group covers the whole tile (the usual group 128 / channel)
    const int srows = G % C::BK == 0 ? 1 : C::KS;

    float acc[MTW][NTW][4];
#pragma unroll
    for (int i = 0; i < MTW; i++)
#pragma unroll
        for (int j = 0; j < NTW; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

    const Loader<C, HAS_Z> ld(X, Q, S, Z, M, K, Np, G, srows, m0, n0);
    const uint32_t sbase = smem_u32(smem);
    // the pipeline's first stages: weights before the wait for the previous kernel (they land
    // in the first group, which the first wait_group completes), activations after it
#pragma unroll 1
    for (int s = 0; s < STAGES - 1; s++)
        if (s < nt) ld.load_w(sbase + s * C::STAGE, t0 + s);
    grid_dep_sync();
#pragma unroll 1
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < nt) ld.load_a(sbase + s * C::STAGE, t0 + s);
        cp_commit();  // always, so that wait_group counts stages
    }

    for (int t = 0; t < nt; t++) {
        cp_wait<STAGES - 2>();
        __syncthreads();  // stage t landed for all; everyone is done with stage t − 1
        {
            int nx = t + STAGES - 1;
            if (nx < nt) ld.load(sbase + (nx % STAGES) * C::STAGE, t0 + nx);
            cp_commit();
        }
        const uint8_t *st = smem + (t % STAGES) * C::STAGE;
        const uint8_t *sq = st + C::A_BYTES;
        const uint16_t *ss = (const uint16_t *)(sq + C::Q_BYTES);
        const uint16_t *sz = ss + C::S_BYTES / 2;
        uint32_t sc[NTW], zn[NTW];
#pragma unroll
        for (int j = 0; j < KSW; j++) {
            const int ks = wk * KSW + j;  // k16 step inside the tile
            uint32_t a[MTW][4];
#pragma unroll
            for (int i = 0; i < MTW; i++) {
                int r = wm * MTW * 16 + i * 16 + (lane & 15), c = 2 * ks + (lane >> 4);
                ldsm_x4(smem_u32(st + (r * (C::BK / 8) + (c ^ (r & 7))) * 16), a[i]);
            }
            // this thread's scale (and offset) per n8 tile: once per tile when a group spans it
            if (j == 0 || srows != 1) {
                const int sr = srows == 1 ? 0 : ks;
#pragma unroll
                for (int t = 0; t < NTW; t++) {
                    int col = wn * NTW * 8 + t * 8 + (lane >> 2);
                    sc[t] = dup(ss[sr * C::BN + col]);
                    zn[t] = dup(HAS_Z ? sz[sr * C::BN + col] : NEG136);
                }
            }
#pragma unroll
            for (int p = 0; p < NTW / 4; p++) {
                const int blk = wn * (NTW / 4) + p;
                uint2 q = *(const uint2 *)(sq + ((ks * (C::BN / 32) + blk) * 32 + lane) * 8);
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int tl = p * 4 + h * 2;
                    uint32_t b[4];
                    const uint32_t zp[2] = {zn[tl], zn[tl + 1]}, sp[2] = {sc[tl], sc[tl + 1]};
                    dequant(h ? q.y : q.x, zp, sp, b);
#pragma unroll
                    for (int i = 0; i < MTW; i++) {
                        mma(acc[i][tl], a[i], b[0], b[1]);
                        mma(acc[i][tl + 1], a[i], b[2], b[3]);
                    }
                }
            }
        }
    }
    cp_wait<0>();
    __syncthreads();  // the pipeline's shared memory is free for the reduction

    // warps that split K inside the tile: add into warp wk = 0, in order wk = 1, 2, …
    if (WK > 1) {
        float *red = (float *)smem;
        constexpr int PER = MTW * NTW * 4;
        const int wmn = warp / WK;
        if (wk > 0) {
            float *dst = red + ((wk - 1) * WM * WN + wmn) * PER * 32 + lane;
#pragma unroll
            for (int i = 0; i < MTW; i++)
#pragma unroll
                for (int j = 0; j < NTW; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) dst[((i * NTW + j) * 4 + e) * 32] = acc[i][j][e];
        }
        __syncthreads();
        if (wk == 0) {
            for (int w = 1; w < WK; w++) {
                const float *src = red + ((w - 1) * WM * WN + wmn) * PER * 32 + lane;
#pragma unroll
                for (int i = 0; i < MTW; i++)
#pragma unroll
                    for (int j = 0; j < NTW; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) acc[i][j][e] += src[((i * NTW + j) * 4 + e) * 32];
            }
        }
    }

    const bool even = (N & 1) == 0;
    // c0, c1 at (row, col), (row, col + 1); c2, c3 at row + 8. With pairs (the stored columns
    // 2j, 2j + 1 are gate j and up j of a stacked gate/up Linear, N = 2·I, col even): pairs > 0
    // writes y [M, N] in the checkpoint's order (gate j at j, up j at I + j), pairs < 0 writes
    // act [M, I] = bf16(bf16(silu(bf16 gate)) · bf16 up), silu_mul_rows' roundings.
    const int half = pairs < 0 ? -pairs : pairs;
    auto store = [&](bf16 *y, int r, int c, float v0, float v1) {
        if (r >= M || c >= N) return;
        if (pairs < 0) {
            y[(size_t)r * half + c / 2] = gated(v0, v1);
        } else if (pairs > 0) {
            y[(size_t)r * N + c / 2] = tobf(v0);
            y[(size_t)r * N + half + c / 2] = tobf(v1);
        } else if (even) {
            *(__nv_bfloat162 *)(y + (size_t)r * N + c) = __floats2bfloat162_rn(v0, v1);
        } else {
            y[(size_t)r * N + c] = tobf(v0);
            if (c + 1 < N) y[(size_t)r * N + c + 1] = tobf(v1);
        }
    };
    const int rbase = m0 + wm * MTW * 16 + (lane >> 2), cbase = n0 + wn * NTW * 8 + 2 * (lane & 3);
    if (gridDim.z == 1) {
        if (wk == 0) {
#pragma unroll
            for (int i = 0; i < MTW; i++)
#pragma unroll
                for (int j = 0; j < NTW; j++) {
                    store(Y, rbase + 16 * i, cbase + 8 * j, acc[i][j][0], acc[i][j][1]);
                    store(Y, rbase + 16 * i + 8, cbase + 8 * j, acc[i][j][2], acc[i][j][3]);
                }
        }
        return;
    }

    // split-K: partials to ws [splits, M, N] (f32), then the last split of this tile adds them
    float *part = ws + (size_t)blockIdx.z * M * N;
    if (wk == 0) {
#pragma unroll
        for (int i = 0; i < MTW; i++)
#pragma unroll
            for (int j = 0; j < NTW; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int r = rbase + 16 * i + 8 * (e >> 1), c = cbase + 8 * j + (e & 1);
                    if (r < M && c < N) part[(size_t)r * N + c] = acc[i][j][e];
                }
    }
    finish_split<C>(Y, ws, locks, M, N, m0, n0, pairs);
}

}  // namespace w4

// The instantiations the launcher picks from (name: rows per block, _z: asymmetric):
//   s16:  BM 16,  BN 128, BK 128, 8 warps = 2 along N × 4 along K   (1–16 rows: memory bound)
//   n32:  BM 16,  BN 32,  BK 128, 4 warps along K                   (1–16 rows, four times the
//         output tiles: as many blocks as s16's splits give, without the partials' round trip)
//   m32:  BM 32,  BN 128, BK 64,  8 warps = 4 along N × 2 along K
//   m64:  BM 64,  BN 128, BK 64,  8 warps = 4 along N × 2 along K
//   l128: BM 128, BN 128, BK 64,  8 warps = 2 along M × 4 along N   (compute bound)
// All 4 stages deep (8 measured no faster on an H200: the main loop is not waiting on memory).
#define W4_KERNEL(name, WM, WN, WK, MTW, NTW, KSW, ST, MINB)                                             \
    extern "C" __global__ void __launch_bounds__(32 * WM * WN * WK, MINB) name(W4_ARGS) {                     \
        w4::gemm_w4<WM, WN, WK, MTW, NTW, KSW, ST, false>(W4_PASS);                                      \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * WM * WN * WK, MINB) name##_z(W4_ARGS) {                 \
        w4::gemm_w4<WM, WN, WK, MTW, NTW, KSW, ST, true>(W4_PASS);                                      \
    }

W4_KERNEL(gemm_w4_s16, 1, 2, 4, 1, 8, 2, 4, 2)
W4_KERNEL(gemm_w4_n32, 1, 1, 4, 1, 4, 2, 4, 4)
W4_KERNEL(gemm_w4_m32, 1, 4, 2, 2, 4, 2, 4, 2)
// 64 f32 accumulators per thread: at two blocks per SM (128 registers) these spilled
W4_KERNEL(gemm_w4_m64, 1, 4, 2, 4, 4, 2, 4, 1)
W4_KERNEL(gemm_w4_l128, 2, 4, 1, 4, 4, 4, 4, 1)

// Act-order: xp[m, j] = x[m, perm[j]], the activation columns in the order the weights were
// sorted into at load (by group index), so that groups are contiguous runs of K.
extern "C" __global__ void w4_permute_cols(const bf16 *__restrict__ x, const uint32_t *__restrict__ perm,
                                           bf16 *__restrict__ xp, int M, int K) {
    grid_dep_sync();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)M * K) return;
    size_t m = i / K;
    int j = (int)(i % K);
    xp[i] = x[m * K + perm[j]];
}
