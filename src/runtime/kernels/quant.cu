// W8A8: per-token int8 activation quantization (alone or in the RMSNorm before the GEMM) and the
// epilogues of the int8 GEMM.
// Launchers: src/runtime/launch/quant.rs.

#include "common.cuh"

// ---------------------------------------------------------------------------------------------
// W8A8: per-token int8 activation quantization, as vLLM's dynamic scaled_int8_quant:
// scale = max(|x|) / 127 (at least 1e-10), q = clamp(rint(x / scale)) with ties to even.
struct PackInt8 {
    static constexpr float qmax = 127.f;
    static __device__ __forceinline__ uint32_t two(float a, float b) {
        int q0 = max(-128, min(127, __float2int_rn(a)));
        int q1 = max(-128, min(127, __float2int_rn(b)));
        return (uint32_t)(q0 & 255) | ((uint32_t)(q1 & 255) << 8);
    }
};
extern "C" __global__ void quant_rows_int8(const bf16 *x, uint8_t *q, float *scale, int K) {
    quant_rows<PackInt8>(x, q, scale, K);
}
extern "C" __global__ void quant_rows_int8_warp(const bf16 *x, uint8_t *q, float *scale, int rows, int K) {
    quant_rows_warp<PackInt8>(x, q, scale, rows, K);
}
// rmsnorm_rows (one input row per output row) whose output also leaves quant_rows_int8's bytes
// and scale for the int8 GEMM that reads it next (common.cuh, rmsnorm_quant_rows).
extern "C" __global__ void rmsnorm_quant_int8(const bf16 *x, const bf16 *w, const bf16 *prev, bf16 *out, int n,
                                              float eps, uint8_t *q, float *scale) {
    rmsnorm_quant_rows<PackInt8>(x, w, prev, out, n, eps, q, scale);
}

// y[m, n] = bf16(acc[m, n] · sx[m] · sw[n]) for the int32 result of an int8 GEMM; blockIdx.y = m,
// four outputs per thread (N % 4 == 0).
extern "C" __global__ void int8_epilogue(const int32_t *acc, const float *sx, const float *sw, bf16 *y, int M,
                                         int N) {
    grid_dep_sync();
    int m = blockIdx.y, n4 = blockIdx.x * blockDim.x + threadIdx.x;
    if (n4 >= N / 4) return;
    int4 a = ((const int4 *)(acc + (size_t)m * N))[n4];
    float4 w = ((const float4 *)sw)[n4];
    float s = sx[m];
    __nv_bfloat162 lo = __floats2bfloat162_rn((float)a.x * s * w.x, (float)a.y * s * w.y);
    __nv_bfloat162 hi = __floats2bfloat162_rn((float)a.z * s * w.z, (float)a.w * s * w.w);
    ((uint2 *)(y + (size_t)m * N))[n4] = make_uint2(*(uint32_t *)&lo, *(uint32_t *)&hi);
}

// The gated activation straight from the stacked gate/up int8 GEMM: acc [M, 2I] (gate | up),
// out [M, I] = bf16(bf16(silu(g))·u) with g, u = bf16(acc · sx · sw) as the plain epilogue would
// give them. Four outputs per thread (I % 4 == 0).
extern "C" __global__ void int8_silu_epilogue(const int32_t *acc, const float *sx, const float *sw, bf16 *y,
                                              int M, int I) {
    grid_dep_sync();
    int m = blockIdx.y, i4 = blockIdx.x * blockDim.x + threadIdx.x;
    if (i4 >= I / 4) return;
    const int32_t *row = acc + (size_t)m * 2 * I;
    int4 ga = ((const int4 *)row)[i4], ua = ((const int4 *)(row + I))[i4];
    float4 gw = ((const float4 *)sw)[i4], uw = ((const float4 *)(sw + I))[i4];
    float s = sx[m];
    float g[4] = {bf(tobf((float)ga.x * s * gw.x)), bf(tobf((float)ga.y * s * gw.y)), bf(tobf((float)ga.z * s * gw.z)),
                  bf(tobf((float)ga.w * s * gw.w))};
    float u[4] = {bf(tobf((float)ua.x * s * uw.x)), bf(tobf((float)ua.y * s * uw.y)), bf(tobf((float)ua.z * s * uw.z)),
                  bf(tobf((float)ua.w * s * uw.w))};
    float v[4];
#pragma unroll
    for (int k = 0; k < 4; k++) v[k] = bf(tobf(g[k] / (1.f + __expf(-g[k])))) * u[k];
    __nv_bfloat162 lo = __floats2bfloat162_rn(v[0], v[1]), hi = __floats2bfloat162_rn(v[2], v[3]);
    ((uint2 *)(y + (size_t)m * I))[i4] = make_uint2(*(uint32_t *)&lo, *(uint32_t *)&hi);
}

// int8_silu_epilogue whose output rows also leave quant_rows_int8's bytes and scale for the int8
// GEMM that reads them next (down's input): one block per row (common.cuh, silu_mul_quant_row),
// the same values as int8_silu_epilogue followed by quant_rows_int8. I % 8 == 0.
struct GateUpInt8 {
    const int32_t *acc;
    const float *sx, *sw;
    int I;
    __device__ __forceinline__ void operator()(int c, float *g, float *u) const {
        const int32_t *row = acc + (size_t)blockIdx.x * 2 * I;
        float s = sx[blockIdx.x];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int4 ga = ((const int4 *)row)[2 * c + h], ua = ((const int4 *)(row + I))[2 * c + h];
            float4 gw = ((const float4 *)sw)[2 * c + h], uw = ((const float4 *)(sw + I))[2 * c + h];
            float *gh = g + 4 * h, *uh = u + 4 * h;
            gh[0] = bf(tobf((float)ga.x * s * gw.x)); gh[1] = bf(tobf((float)ga.y * s * gw.y));
            gh[2] = bf(tobf((float)ga.z * s * gw.z)); gh[3] = bf(tobf((float)ga.w * s * gw.w));
            uh[0] = bf(tobf((float)ua.x * s * uw.x)); uh[1] = bf(tobf((float)ua.y * s * uw.y));
            uh[2] = bf(tobf((float)ua.z * s * uw.z)); uh[3] = bf(tobf((float)ua.w * s * uw.w));
        }
    }
};
extern "C" __global__ void int8_silu_epilogue_quant(const int32_t *acc, const float *sx, const float *sw, bf16 *y,
                                                    int I, uint8_t *q, float *scale) {
    grid_dep_sync();
    silu_mul_quant_row<PackInt8>(GateUpInt8{acc, sx, sw, I}, y, I, q, scale);
}
