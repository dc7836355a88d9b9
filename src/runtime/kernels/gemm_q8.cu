// W8A8 int8: the tensor-core GEMM with the dequantization (per-token × per-channel scales) and,
// for the stacked gate/up Linear, SiLU·mul in its epilogue (the template: gemm_q8.cuh). Built for
// compute_80 like the other units. Launcher: src/runtime/launch/gemm_q8.rs.
//
//   gemm_q8_<tile>(A, B, sx, sw, y, M, N, K)       y [M, N]   = bf16(Σ A·B · sx · sw)
//   gemm_q8_silu_<tile>(A, B, sx, sw, y, M, N, K)  y [M, N/2] = silu(gate) · up, B = [gate; up]

#include "gemm_q8.cuh"

Q8_KERNELS(gemm_q8, q8::MmaS8)
