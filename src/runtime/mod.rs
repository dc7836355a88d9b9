//! The CUDA serving path: what makes a measured speed honest. Hand-written kernels
//! (`kernels/*.cu`, one concern per file, each built to its own PTX module by build.rs and
//! launched through one typed launcher per kernel in `launch/`) replace candle's many small
//! launches where it matters:
//! - [`fused_attention`]: flash attention (tensor cores, online softmax) for the candle forward,
//!   so a prefill never materialises a score matrix;
//! - [`engine::DecodeEngine`] (CUDA builds): a greedy decoder that runs a whole step from
//!   pre-allocated buffers in ~10 kernels per layer, optionally replayed as one CUDA graph,
//!   with a W4A16 GEMV that reads compressed-tensors' packed int4 weights directly;
//! - [`serving::ServingEngine`] (CUDA builds): the steps of a continuous-batching scheduler as
//!   one packed forward each (prompt chunks and decoding tokens of many sequences at their own
//!   positions) over a paged KV pool, decode-only steps replayed as CUDA graphs;
//! - [`quantized::attach`] (CUDA builds): W8A8 Linears through an int8 tensor-core GEMM
//!   (cuBLAS) with per-token × per-channel scales, and W4A16 Linears on packed weights, so a
//!   compressed checkpoint runs as compressed on the candle forward too.
//! - [`cpu_attention`]: on the CPU (f32), causal attention in one pass per query row over the
//!   keys it sees, for the same forward (evaluation's perplexity, KL and multiple choice).
//!
//! On a CPU build the CUDA pieces report "not available" and callers fall back to the reference
//! path.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

use crate::model::kernels::QkvShape;
use crate::model::layers::RmsNorm;
use crate::model::{ActQuant, Exaone4, Kernels, QuantizedRows};

#[cfg(feature = "cuda")]
pub mod int4;
// crate-visible for the kernel benchmarks and checks of study::bench (gemm sweep)
#[cfg(feature = "cuda")]
pub(crate) mod launch;

#[cfg(feature = "cuda")]
pub use launch::{programmatic_launch, programmatic_supported, set_programmatic_launch};

#[cfg(feature = "cuda")]
pub mod check;
pub mod cpu_attention;
pub mod cpu_attention_grad;
pub mod cpu_pointwise;
#[cfg(feature = "cuda")]
pub mod engine;
#[cfg(feature = "cuda")]
mod ops;
mod ptx;
#[cfg(feature = "cuda")]
pub mod quantized;
#[cfg(feature = "cuda")]
pub mod serving;
pub mod w4_layout;

/// One numerical check of a kernel (see `check`): its relative L2 error against the f32
/// reference next to the error of the plain bf16 reference path.
#[derive(Debug, Clone)]
pub struct Check {
    pub what: String,
    pub kernel_err: f64,
    pub bf16_err: f64,
    /// share of rows whose top-1 (argmax) agrees with the f32 reference (1.0 where not applicable)
    pub top1: f64,
}

impl Check {
    /// The tolerance: twice the bf16 reference's own error, and never below 1e-3.
    pub fn passes(&self) -> bool {
        self.kernel_err <= (2.0 * self.bf16_err).max(1e-3)
    }
}

/// Whether [`fused_attention`] runs for this device, dtype and head size.
pub fn fused_attention_available(device: &Device, dtype: DType, head_dim: usize) -> bool {
    cfg!(feature = "cuda")
        && device.is_cuda()
        && dtype == DType::BF16
        && (head_dim == 64 || head_dim == 128)
}

/// softmax(q kᵀ / √d) v with a causal mask aligned to the last query (query i of t sees keys
/// j ≤ i + L − t), for q [b, h, t, d] and k/v [b, kvh, L, d] (any batch/head/token strides, d
/// contiguous); GQA when kvh < h. Returns [b, t, h·d], or None where it is not available.
pub fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    if !fused_attention_available(q.device(), q.dtype(), q.dim(3)?) {
        return Ok(None);
    }
    #[cfg(feature = "cuda")]
    {
        ops::flash(q, k, v, true).map(Some)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (k, v);
        Ok(None)
    }
}

/// log-softmax over the last dimension as f32: one fused pass on CUDA (bf16 or f32 logits),
/// rows in parallel on the CPU in f32 ([`cpu_pointwise`]), candle's ops in f32 elsewhere.
pub fn log_softmax_f32(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && matches!(x.dtype(), DType::BF16 | DType::F32) {
        return ops::log_softmax(x);
    }
    if cpu_pointwise::available(x) {
        return cpu_pointwise::log_softmax(x);
    }
    candle_nn::ops::log_softmax(&x.to_dtype(DType::F32)?, candle_core::D::Minus1)
}

/// silu(g) · u: one fused kernel on CUDA in bf16, one parallel pass on the CPU in f32
/// ([`cpu_pointwise`]), candle's two ops elsewhere.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if g.device().is_cuda() && g.dtype() == DType::BF16 && u.dtype() == DType::BF16 {
        return ops::silu_mul(g, u);
    }
    if cpu_pointwise::available(g) && cpu_pointwise::available(u) {
        return cpu_pointwise::silu_mul(g, u);
    }
    g.silu()? * u
}

/// The runtime's kernels as the model's hooks ([`Kernels`]): flash attention (on the CPU in f32,
/// [`cpu_attention`]), attention's inputs from the q/k/v products in one kernel (QK-norm, RoPE,
/// the heads' layouts), the fused SiLU·mul and the one-pass log-softmax, each declining where it
/// does not run.
#[derive(Debug, Default)]
pub struct RuntimeKernels;

impl Kernels for RuntimeKernels {
    fn causal_attention_available(&self, device: &Device, dtype: DType, head_dim: usize) -> bool {
        fused_attention_available(device, dtype, head_dim)
            || cpu_attention::available(device, dtype)
    }
    fn causal_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
        if cpu_attention::available(q.device(), q.dtype()) {
            return cpu_attention::causal_attention(q, k, v).map(Some);
        }
        fused_attention(q, k, v)
    }
    fn causal_attention_grad_available(&self, device: &Device, dtype: DType) -> bool {
        cpu_attention::available(device, dtype)
    }
    fn causal_attention_grad(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
        if cpu_attention::available(q.device(), q.dtype()) {
            return cpu_attention_grad::causal_attention_grad(q, k, v).map(Some);
        }
        Ok(None)
    }
    fn qkv_heads(
        &self,
        qkv: [&Tensor; 3],
        norms: (&Tensor, &Tensor, f64),
        rope: Option<(&Tensor, &Tensor)>,
        shape: QkvShape,
    ) -> Result<Option<[Tensor; 3]>> {
        let [q, _, _] = qkv;
        let d = shape.head_dim;
        if !q.device().is_cuda() || q.dtype() != DType::BF16 || !matches!(d, 64 | 128) {
            return Ok(None);
        }
        #[cfg(feature = "cuda")]
        {
            let (q, k, v) = ops::qkv_heads(
                qkv[0],
                qkv[1],
                qkv[2],
                norms.0,
                norms.1,
                rope,
                (shape.batch, shape.t),
                (shape.heads_q, shape.heads_kv, d),
                norms.2,
            )?;
            Ok(Some([q, k, v]))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (norms, rope);
            Ok(None)
        }
    }
    fn silu_mul(&self, g: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
        silu_mul(g, u).map(Some)
    }
    fn silu_mul_grad(&self, g: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
        if cpu_pointwise::available(g) && cpu_pointwise::available(u) {
            return cpu_pointwise::silu_mul_grad(g, u).map(Some);
        }
        Ok(None)
    }
    fn log_softmax(&self, x: &Tensor) -> Result<Option<Tensor>> {
        log_softmax_f32(x).map(Some)
    }
    fn add_rms_norm(
        &self,
        h: &Tensor,
        x: &Tensor,
        norm: &RmsNorm,
        quant: Option<ActQuant>,
    ) -> Result<Option<(Tensor, Option<QuantizedRows>)>> {
        let n = h.dim(candle_core::D::Minus1)?;
        if !h.device().is_cuda() || h.dtype() != DType::BF16 || x.dtype() != DType::BF16 {
            return Ok(None);
        }
        if norm.weight.dtype() != DType::BF16 || !n.is_multiple_of(8) {
            return Ok(None);
        }
        #[cfg(feature = "cuda")]
        {
            ops::add_rms_norm(h, x, &norm.weight, norm.eps, quant).map(Some)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = quant;
            Ok(None)
        }
    }
}

/// Installs the runtime's kernels on `model`. Off CUDA every hook declines, so this changes
/// nothing there; on CUDA the forward runs flash attention and the fused ops.
pub fn accelerate(model: &mut Exaone4) {
    model.kernels = Some(Arc::new(RuntimeKernels));
}

/// The device a command-line word names (`cpu`, `cuda`, `cuda:N`), with CUDA's memory pool set
/// to keep freed memory ([`keep_freed_memory`]).
pub fn open_device(s: &str) -> crate::Result<Device> {
    let d = crate::device::parse_device(s)?;
    keep_freed_memory(&d)?;
    Ok(d)
}

/// Loads a model directory with the runtime's kernels installed (see [`accelerate`]).
pub fn load_model(dir: &std::path::Path, dtype: DType, device: &Device) -> crate::Result<Exaone4> {
    let mut m = crate::checkpoint::load_model(dir, dtype, device)?;
    accelerate(&mut m);
    Ok(m)
}

/// Loads an opened checkpoint's model with the runtime's kernels installed.
pub fn load_checkpoint(
    ckpt: &crate::checkpoint::Checkpoint,
    dtype: DType,
    device: &Device,
) -> crate::Result<Exaone4> {
    let mut m = ckpt.load_model(dtype, device)?;
    accelerate(&mut m);
    Ok(m)
}

/// Keeps device memory that is freed in CUDA's stream-ordered pool (where candle allocates)
/// instead of returning it to the driver at every synchronisation, the pool's default. As with
/// PyTorch's caching allocator, a forward that allocates gigabytes of temporaries (logits,
/// int32 GEMM results) then reuses them rather than mapping them anew each time. No-op off CUDA.
pub fn keep_freed_memory(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda::cudarc::driver::sys;
        let ctx = d.cuda_stream().context().clone();
        ctx.bind_to_thread().map_err(launch::cuda_err)?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut threshold = u64::MAX;
        // SAFETY: the context is bound to this thread; `pool` receives the device's default pool
        // before it is used, and the attribute takes a pointer to a u64 (the release threshold)
        // that outlives the call.
        unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
                .result()
                .map_err(launch::cuda_err)?;
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            )
            .result()
            .map_err(launch::cuda_err)?;
        }
    }
    let _ = device;
    Ok(())
}

/// Returns the memory pooled by [`keep_freed_memory`] to the driver (after a synchronisation),
/// e.g. so that a peak-memory figure measures one phase rather than what earlier ones left.
pub fn trim_freed_memory(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda::cudarc::driver::sys;
        device.synchronize()?;
        let ctx = d.cuda_stream().context().clone();
        ctx.bind_to_thread().map_err(launch::cuda_err)?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: the context is bound to this thread and synchronised; `pool` receives the
        // device's default pool before it is trimmed (trimming frees only unused pool memory).
        unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
                .result()
                .map_err(launch::cuda_err)?;
            sys::cuMemPoolTrimTo(pool, 0)
                .result()
                .map_err(launch::cuda_err)?;
        }
    }
    let _ = device;
    Ok(())
}
