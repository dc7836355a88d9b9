// W8A8 fp8 e4m3 (compressed-tensors "float-quantized", FP8 dynamic): per-token activation
// quantization and the tensor-core GEMM with the dequantization in its epilogue (the template of
// the int8 GEMM, gemm_q8.cuh, with the e4m3 mma and f32 accumulators). The e4m3 mma needs sm_89+
// (Ada, Hopper): build.rs builds this unit alone for compute_89, and src/runtime/launch/mod.rs
// loads it only on such a device. Launcher: src/runtime/launch/gemm_q8.rs.
//
//   quant_rows_fp8(x, q, scale, K)                   q [rows, K] e4m3, scale [rows]
//   quant_rows_fp8_warp(x, q, scale, rows, K)        the same, one warp per row (K ≤ 4096)
//   rmsnorm_quant_fp8(x, w, prev, out, n, eps, q, s) rmsnorm_rows + quant_rows_fp8 of its output
//   silu_mul_quant_fp8(gu, y, I, q, s)               silu_mul_rows + quant_rows_fp8 of its output
//   gemm_fp8_<tile>, gemm_fp8_silu_<tile>            as gemm_q8_* (gemm_q8.cu; tiles: gemm_q8.cuh)

#define Q8_FP8
#include "gemm_q8.cuh"

#include <cuda_fp8.h>

// Per-token fp8 quantization as the model's ActQuant::Fp8PerToken (and vLLM's dynamic per-token
// scaled_fp8_quant): scale = max(|x|) / 448 (at least 1e-10), q = e4m3(x / scale), round to
// nearest even, saturating at ±448. One block per row, K % 8 == 0.
struct PackE4M3 {
    static constexpr float qmax = 448.f;
    static __device__ __forceinline__ uint32_t two(float a, float b) {
        return (uint32_t)__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
    }
};
extern "C" __global__ void quant_rows_fp8(const bf16 *x, uint8_t *q, float *scale, int K) {
    quant_rows<PackE4M3>(x, q, scale, K);
}
extern "C" __global__ void quant_rows_fp8_warp(const bf16 *x, uint8_t *q, float *scale, int rows, int K) {
    quant_rows_warp<PackE4M3>(x, q, scale, rows, K);
}
// rmsnorm_rows whose output also leaves quant_rows_fp8's bytes and scale (as rmsnorm_quant_int8)
extern "C" __global__ void rmsnorm_quant_fp8(const bf16 *x, const bf16 *w, const bf16 *prev, bf16 *out, int n,
                                             float eps, uint8_t *q, float *scale) {
    rmsnorm_quant_rows<PackE4M3>(x, w, prev, out, n, eps, q, scale);
}
// silu_mul_rows whose output rows also leave quant_rows_fp8's bytes and scale for the fp8 GEMM
// that reads them next (down's input, after cuBLASLt's gate/up product): one block per row.
extern "C" __global__ void silu_mul_quant_fp8(const bf16 *gu, bf16 *y, int I, uint8_t *q, float *scale) {
    grid_dep_sync();
    silu_mul_quant_row<PackE4M3>(GateUpRows{gu, I}, y, I, q, scale);
}

Q8_KERNELS(gemm_fp8, q8::MmaE4M3)
