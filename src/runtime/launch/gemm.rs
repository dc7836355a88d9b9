//! The GEMMs the runtime takes from cuBLAS: bf16 (f32 accumulation) and int8 (int32 results,
//! tensor cores), y[m, n] = x[m, k] · W[n, k]ᵀ with row-major operands.

use candle_core::cuda::cudarc::cublas::{result as blas, sys as bsys, CudaBlas};
use candle_core::Result;
use half::bf16;

use super::{cuda_err, int, require, Dev};

/// y[m, n] = x[m, k] · W[n, k]ᵀ in bf16 with f32 accumulation.
pub(crate) fn gemm_bf16(
    blas: &CudaBlas,
    x: Dev<bf16>,
    w: Dev<bf16>,
    y: Dev<bf16>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    const K: &str = "gemm_bf16";
    require!(
        K,
        x.len() >= m * k && w.len() >= n * k,
        "operands [{m}, {k}] and [{n}, {k}]"
    );
    require!(
        K,
        y.len() >= m * n,
        "output of {} values for [{m}, {n}]",
        y.len()
    );
    let (mi, ni, ki) = (int(m, "m")?, int(n, "n")?, int(k, "k")?);
    let (alpha, beta) = (1f32, 0f32);
    // SAFETY: a column-major view, yᵀ [n, m] = W [n, k] · xᵀ [k, m], with leading dimensions k,
    // k and n: cuBLAS reads m·k and n·k values and writes m·n, all inside their buffers
    // (checked); alpha and beta are f32, as CUBLAS_COMPUTE_32F takes them, and outlive the call.
    // The handle's stream is the one the buffers are used on.
    unsafe {
        blas::gemm_ex(
            *blas.handle(),
            bsys::cublasOperation_t::CUBLAS_OP_T,
            bsys::cublasOperation_t::CUBLAS_OP_N,
            ni,
            mi,
            ki,
            &alpha as *const f32 as *const _,
            w.addr() as *const _,
            bsys::cudaDataType_t::CUDA_R_16BF,
            ki,
            x.addr() as *const _,
            bsys::cudaDataType_t::CUDA_R_16BF,
            ki,
            &beta as *const f32 as *const _,
            y.addr() as *mut _,
            bsys::cudaDataType_t::CUDA_R_16BF,
            ni,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        )
    }
    .map_err(cuda_err)
}

/// acc[m, n] = q[m, k] · W[n, k]ᵀ, int8 in, int32 out (tensor cores; k % 4 == 0).
pub(crate) fn gemm_int8(
    blas: &CudaBlas,
    q: Dev<u8>,
    w: Dev<u8>,
    acc: Dev<i32>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    const K: &str = "gemm_int8";
    require!(
        K,
        k.is_multiple_of(4),
        "k {k}: int8 tensor-core GEMMs take k % 4 == 0"
    );
    require!(
        K,
        q.len() >= m * k && w.len() >= n * k,
        "operands [{m}, {k}] and [{n}, {k}]"
    );
    require!(
        K,
        acc.len() >= m * n,
        "output of {} values for [{m}, {n}]",
        acc.len()
    );
    let (mi, ni, ki) = (int(m, "m")?, int(n, "n")?, int(k, "k")?);
    let (alpha, beta) = (1i32, 0i32);
    // SAFETY: as gemm_bf16, with int8 operands (stored as bytes) and int32 results:
    // cuBLAS reads m·k and n·k bytes and writes m·n int32, all inside their buffers (checked);
    // alpha and beta are i32, as CUBLAS_COMPUTE_32I takes them, and outlive the call.
    unsafe {
        blas::gemm_ex(
            *blas.handle(),
            bsys::cublasOperation_t::CUBLAS_OP_T,
            bsys::cublasOperation_t::CUBLAS_OP_N,
            ni,
            mi,
            ki,
            &alpha as *const i32 as *const _,
            w.addr() as *const _,
            bsys::cudaDataType_t::CUDA_R_8I,
            ki,
            q.addr() as *const _,
            bsys::cudaDataType_t::CUDA_R_8I,
            ki,
            &beta as *const i32 as *const _,
            acc.addr() as *mut _,
            bsys::cudaDataType_t::CUDA_R_32I,
            ni,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_32I,
            bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        )
    }
    .map_err(cuda_err)
}
