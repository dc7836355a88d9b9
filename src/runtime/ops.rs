//! Candle ops on the runtime's kernels, forward only (training keeps the differentiable path):
//! flash attention, a one-pass log-softmax, SiLU · mul.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};
use half::bf16;

use super::launch::attention::{flash_fwd, Flash as FlashArgs};
use super::launch::norm_rope::silu_mul_flat;
use super::launch::sampling::{log_softmax_rows, Logits};
use super::launch::Dev;

struct Flash {
    causal: bool,
}

/// (batch, head, token) strides of a [b, h, t, d] layout whose last dimension is contiguous.
fn strides(l: &Layout, what: &str) -> Result<[i64; 3]> {
    let s = l.stride();
    if s.len() != 4 || s[3] != 1 {
        candle_core::bail!(
            "flash attention: {what} must be [b, h, t, d] with d contiguous, got strides {s:?}"
        );
    }
    Ok([s[0] as i64, s[1] as i64, s[2] as i64])
}

impl CustomOp3 for Flash {
    fn name(&self) -> &'static str {
        "flash-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("flash attention runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (b, h, t, d) = ql.shape().dims4()?;
        let (kb, hkv, l, kd) = kl.shape().dims4()?;
        if kb != b || kd != d || vl.shape() != kl.shape() || hkv == 0 || h % hkv != 0 {
            candle_core::bail!(
                "flash attention: q {:?}, k {:?}, v {:?} do not fit together",
                ql.shape(),
                kl.shape(),
                vl.shape()
            );
        }
        let (qs, ks, vs) = (strides(ql, "q")?, strides(kl, "k")?, strides(vl, "v")?);
        let dev = q.device().clone();
        let stream = dev.cuda_stream();
        let q_sl = q.as_cuda_slice::<bf16>()?.slice(ql.start_offset()..);
        let k_sl = k.as_cuda_slice::<bf16>()?.slice(kl.start_offset()..);
        let v_sl = v.as_cuda_slice::<bf16>()?.slice(vl.start_offset()..);
        // SAFETY: uninitialised memory of the output's size; flash_fwd writes every element
        // ([b, t, h, d], one value per query row, head and dimension) before anything reads it.
        let out = unsafe { dev.alloc::<bf16>(b * t * h * d) }?;
        flash_fwd(
            &dev,
            &FlashArgs {
                q: Dev::new(&q_sl, &stream),
                k: Dev::new(&k_sl, &stream),
                v: Dev::new(&v_sl, &stream),
                out: Dev::new(&out, &stream),
                batch: b,
                heads: h,
                heads_kv: hkv,
                t,
                l,
                head_dim: d,
                q_strides: qs,
                k_strides: ks,
                v_strides: vs,
                causal: self.causal,
            },
        )?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((b, t, h, d)),
        ))
    }
}

/// q [b, h, t, d], k/v [b, kvh, L, d] (bf16, CUDA) → [b, t, h·d].
pub(crate) fn flash(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    q.apply_op3_no_bwd(k, v, &Flash { causal })?
        .reshape((b, t, h * d))
}

struct LogSoftmax;

impl candle_core::CustomOp1 for LogSoftmax {
    fn name(&self) -> &'static str {
        "log-softmax"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("fused log-softmax runs on CUDA only")
    }
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        if !l.is_contiguous() {
            candle_core::bail!("fused log-softmax: input must be contiguous");
        }
        let dims = l.shape().dims();
        let v = *dims.last().unwrap_or(&1);
        let rows = l.shape().elem_count() / v.max(1);
        let dev = s.device().clone();
        let stream = dev.cuda_stream();
        // SAFETY: uninitialised memory of the output's size; log_softmax_rows writes all of it
        // ([rows, v]) before anything reads it.
        let out = unsafe { dev.alloc::<f32>(rows * v) }?;
        let off = l.start_offset();
        let x = match s.dtype() {
            candle_core::DType::BF16 => {
                Logits::Bf16(Dev::new(s.as_cuda_slice::<bf16>()?, &stream).skip(off))
            }
            candle_core::DType::F32 => {
                Logits::F32(Dev::new(s.as_cuda_slice::<f32>()?, &stream).skip(off))
            }
            other => candle_core::bail!("fused log-softmax: {other:?} input"),
        };
        log_softmax_rows(&dev, x, Dev::new(&out, &stream), rows, v)?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), l.shape().clone()))
    }
}

/// log-softmax over the last dimension, f32 out, in one pass over bf16 or f32 input.
pub(crate) fn log_softmax(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&LogSoftmax)
}

struct SiluMul;

impl candle_core::CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("fused silu·mul runs on CUDA only")
    }
    fn cuda_fwd(
        &self,
        g: &CudaStorage,
        gl: &Layout,
        u: &CudaStorage,
        ul: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        if !gl.is_contiguous() || !ul.is_contiguous() || gl.shape() != ul.shape() {
            candle_core::bail!("fused silu·mul: contiguous inputs of one shape needed");
        }
        let n = gl.shape().elem_count();
        let dev = g.device().clone();
        let stream = dev.cuda_stream();
        // SAFETY: uninitialised memory of the output's size; silu_mul_flat writes all n values
        // before anything reads them.
        let out = unsafe { dev.alloc::<bf16>(n) }?;
        silu_mul_flat(
            &dev,
            Dev::new(g.as_cuda_slice::<bf16>()?, &stream).skip(gl.start_offset()),
            Dev::new(u.as_cuda_slice::<bf16>()?, &stream).skip(ul.start_offset()),
            Dev::new(&out, &stream),
            n,
        )?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), gl.shape().clone()))
    }
}

/// silu(g) · u in one pass (bf16, CUDA).
pub(crate) fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op2_no_bwd(&u.contiguous()?, &SiluMul)
}
