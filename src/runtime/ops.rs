//! Candle ops on the runtime's kernels, forward only (training keeps the differentiable path):
//! flash attention, a one-pass log-softmax, SiLU · mul.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::DevicePtr;
use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};
use half::bf16;

use super::kernels::{addr, allow_smem, func, launch, Arg};

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
        let out = unsafe { dev.alloc::<bf16>(b * t * h * d) }?;
        let name = if d == 64 {
            "flash_fwd_64"
        } else {
            "flash_fwd_128"
        };
        let f = func(&dev, name)?;
        // Q tile + double-buffered K and V tiles, 64 rows each, rows padded by 8 elements
        let smem = 5 * 64 * (d + 8) * 2;
        allow_smem(&f, smem)?;
        let scale_log2 = std::f32::consts::LOG2_E / (d as f32).sqrt();
        {
            let (qp, _a) = q_sl.device_ptr(&stream);
            let (kp, _b) = k_sl.device_ptr(&stream);
            let (vp, _c) = v_sl.device_ptr(&stream);
            let (op, _d) = out.device_ptr(&stream);
            use Arg::*;
            launch(
                &stream,
                &f,
                (t.div_ceil(64) as u32, h as u32, b as u32),
                128,
                smem,
                &[
                    P(qp),
                    P(kp),
                    P(vp),
                    P(op),
                    I(t as i32),
                    I(l as i32),
                    I(h as i32),
                    I(hkv as i32),
                    L(qs[0]),
                    L(qs[1]),
                    L(qs[2]),
                    L(ks[0]),
                    L(ks[1]),
                    L(ks[2]),
                    L(vs[0]),
                    L(vs[1]),
                    L(vs[2]),
                    I(self.causal as i32),
                    I(l as i32 - t as i32),
                    F(scale_log2),
                ],
            )?;
        }
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
        let out = unsafe { dev.alloc::<f32>(rows * v) }?;
        let f = func(&dev, "log_softmax_rows")?;
        let off = l.start_offset();
        let (is_bf16, xp) = match s.dtype() {
            candle_core::DType::BF16 => (
                1,
                addr(s.as_cuda_slice::<bf16>()?, &stream) + 2 * off as u64,
            ),
            candle_core::DType::F32 => {
                (0, addr(s.as_cuda_slice::<f32>()?, &stream) + 4 * off as u64)
            }
            other => candle_core::bail!("fused log-softmax: {other:?} input"),
        };
        use Arg::*;
        launch(
            &stream,
            &f,
            (rows as u32, 1, 1),
            1024,
            0,
            &[P(xp), P(addr(&out, &stream)), I(v as i32), I(is_bf16)],
        )?;
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
        let out = unsafe { dev.alloc::<bf16>(n) }?;
        let gp = addr(g.as_cuda_slice::<bf16>()?, &stream) + 2 * gl.start_offset() as u64;
        let up = addr(u.as_cuda_slice::<bf16>()?, &stream) + 2 * ul.start_offset() as u64;
        use Arg::*;
        launch(
            &stream,
            &func(&dev, "silu_mul_flat")?,
            (n.div_ceil(256) as u32, 1, 1),
            256,
            0,
            &[P(gp), P(up), P(addr(&out, &stream)), L(n as i64)],
        )?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), gl.shape().clone()))
    }
}

/// silu(g) · u in one pass (bf16, CUDA).
pub(crate) fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op2_no_bwd(&u.contiguous()?, &SiluMul)
}
