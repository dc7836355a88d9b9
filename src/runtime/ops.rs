//! Candle ops on the runtime's kernels, forward only (training keeps the differentiable path):
//! flash attention, a one-pass log-softmax, SiLU · mul, and attention's inputs from the q/k/v
//! products (QK-norm, RoPE and the heads' layouts in one pass).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use half::bf16;

use super::launch::attention::{flash_fwd, Flash as FlashArgs};
use super::launch::gemm_q8::Q8Kind;
use super::launch::norm_rope::{
    qkv_heads as qkv_heads_kernel, rmsnorm_rows, silu_mul_flat, HeadRows, QkvHeads, RmsNormRows,
};
use super::launch::quant::rmsnorm_quant_rows;
use super::launch::sampling::{log_softmax_rows, Logits};
use super::launch::{cuda_tensor, cuda_view, fp8_supported, Dev};
use crate::model::{ActQuant, QuantizedRows};

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

/// The bf16 values of a contiguous CUDA tensor from its first element, on `f`.
fn with_bf16<R>(
    t: &Tensor,
    f: impl FnOnce(candle_core::cuda::cudarc::driver::CudaView<'_, bf16>) -> Result<R>,
) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    match (&*st, l.is_contiguous()) {
        (candle_core::Storage::Cuda(c), true) => {
            f(c.as_cuda_slice::<bf16>()?.slice(l.start_offset()..))
        }
        _ => candle_core::bail!("qkv heads: a contiguous bf16 CUDA tensor is needed"),
    }
}

struct QkvHeadsOp {
    q_norm: Tensor,
    k_norm: Tensor,
    /// RoPE tables [t, head_dim / 2] (None: no RoPE in this layer)
    rope: Option<(Tensor, Tensor)>,
    heads_q: usize,
    heads_kv: usize,
    head_dim: usize,
    t: usize,
    eps: f32,
}

/// Row stride of a [rows, n] layout whose last dimension is contiguous.
fn row_stride(l: &Layout, what: &str) -> Result<usize> {
    match (l.dims(), l.stride()) {
        ([_, _], [s, 1]) => Ok(*s),
        _ => candle_core::bail!(
            "qkv heads: {what} must be [rows, n] with n contiguous, got {:?} / {:?}",
            l.dims(),
            l.stride()
        ),
    }
}

impl CustomOp3 for QkvHeadsOp {
    fn name(&self) -> &'static str {
        "qkv-heads"
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
        candle_core::bail!("qkv heads run on CUDA only")
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
        let (hq, hkv, d) = (self.heads_q, self.heads_kv, self.head_dim);
        let rows = ql.dims()[0];
        let (qs, ks, vs) = (
            row_stride(ql, "q")?,
            row_stride(kl, "k")?,
            row_stride(vl, "v")?,
        );
        let dev = q.device().clone();
        let stream = dev.cuda_stream();
        let q_sl = q.as_cuda_slice::<bf16>()?.slice(ql.start_offset()..);
        let k_sl = k.as_cuda_slice::<bf16>()?.slice(kl.start_offset()..);
        let v_sl = v.as_cuda_slice::<bf16>()?.slice(vl.start_offset()..);
        let (nq, nkv) = (rows * hq * d, rows * hkv * d);
        // SAFETY: uninitialised memory of the output's size; qkv_heads writes every value of its
        // three parts (q [rows, hq, d], k and v [rows / t, hkv, t, d]) before anything reads them.
        let out = unsafe { dev.alloc::<bf16>(nq + 2 * nkv) }?;
        let d_ = |x| Dev::new(x, &stream);
        with_bf16(&self.q_norm, |qn| {
            with_bf16(&self.k_norm, |kn| {
                let run = |cos: Dev<bf16>, sin: Dev<bf16>| {
                    let o = Dev::new(&out, &stream);
                    qkv_heads_kernel(
                        &dev,
                        &QkvHeads {
                            q: HeadRows {
                                x: d_(&q_sl),
                                row_stride: qs,
                            },
                            k: HeadRows {
                                x: d_(&k_sl),
                                row_stride: ks,
                            },
                            v: HeadRows {
                                x: d_(&v_sl),
                                row_stride: vs,
                            },
                            q_norm: Dev::new(&qn, &stream),
                            k_norm: Dev::new(&kn, &stream),
                            cos,
                            sin,
                            q_out: o,
                            k_out: o.skip(nq),
                            v_out: o.skip(nq + nkv),
                            rows,
                            heads_q: hq,
                            heads_kv: hkv,
                            head_dim: d,
                            t: self.t,
                            eps: self.eps,
                            use_rope: self.rope.is_some(),
                        },
                    )
                };
                match &self.rope {
                    Some((c, s)) => with_bf16(c, |c| {
                        with_bf16(s, |s| run(Dev::new(&c, &stream), Dev::new(&s, &stream)))
                    }),
                    // no tables read without RoPE: the norm weights stand in for the pointers
                    None => run(Dev::new(&qn, &stream), Dev::new(&kn, &stream)),
                }
            })
        })?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from(nq + 2 * nkv),
        ))
    }
}

/// Attention's inputs from the q/k/v products q [b·t, hq·d], k and v [b·t, hkv·d] (bf16, CUDA;
/// each row-strided with d contiguous): q [b, hq, t, d] (a strided view), k and v [b, hkv, t, d],
/// with q and k RMS-normalised per head (`q_norm`, `k_norm` [d]) and, with `rope` (tables
/// [t, d/2] for the t positions), rotated — what the forward computes with candle's ops, in one
/// kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn qkv_heads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    q_norm: &Tensor,
    k_norm: &Tensor,
    rope: Option<(&Tensor, &Tensor)>,
    (b, t): (usize, usize),
    (heads_q, heads_kv, head_dim): (usize, usize, usize),
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = QkvHeadsOp {
        q_norm: q_norm.contiguous()?,
        k_norm: k_norm.contiguous()?,
        rope: rope
            .map(|(c, s)| Ok::<_, candle_core::Error>((c.contiguous()?, s.contiguous()?)))
            .transpose()?,
        heads_q,
        heads_kv,
        head_dim,
        t,
        eps: eps as f32,
    };
    let out = q.apply_op3_no_bwd(k, v, &op)?;
    let (nq, nkv) = (b * t * heads_q * head_dim, b * t * heads_kv * head_dim);
    let q = out
        .narrow(0, 0, nq)?
        .reshape((b, t, heads_q, head_dim))?
        .transpose(1, 2)?;
    let k = out
        .narrow(0, nq, nkv)?
        .reshape((b, heads_kv, t, head_dim))?;
    let v = out
        .narrow(0, nq + nkv, nkv)?
        .reshape((b, heads_kv, t, head_dim))?;
    Ok((q, k, v))
}

/// h + rmsnorm(x)·w (each [.., n], bf16, CUDA; `rmsnorm_rows` adding the residual's rows: the
/// model's `h + norm(x)` in one pass) and, with `quant`, the sum's rows quantized per token for
/// the 8-bit Linear that reads them next (`rmsnorm_quant_rows`).
pub(crate) fn add_rms_norm(
    h: &Tensor,
    x: &Tensor,
    w: &Tensor,
    eps: f64,
    quant: Option<ActQuant>,
) -> Result<(Tensor, Option<QuantizedRows>)> {
    let dev = match h.device() {
        candle_core::Device::Cuda(d) => d.clone(),
        _ => candle_core::bail!("add_rms_norm runs on CUDA"),
    };
    let n = h.dim(D::Minus1)?;
    if x.dims() != h.dims() || w.dims() != [n] {
        candle_core::bail!(
            "add_rms_norm: residual {:?}, input {:?}, weight {:?}",
            h.dims(),
            x.dims(),
            w.dims()
        );
    }
    let rows = h.elem_count() / n.max(1);
    let (h, x, w) = (h.contiguous()?, x.contiguous()?, w.contiguous()?);
    let ((hs, hl), (xs, xl), (ws, wl)) = (
        h.storage_and_layout(),
        x.storage_and_layout(),
        w.storage_and_layout(),
    );
    let stream = dev.cuda_stream();
    let (hv, xv, wv) = (
        cuda_view::<bf16>(&hs, hl)?,
        cuda_view::<bf16>(&xs, xl)?,
        cuda_view::<bf16>(&ws, wl)?,
    );
    // SAFETY: uninitialised; the norm writes every row in full (and the quantizer its bytes and
    // scales) before anything reads them.
    let out = unsafe { dev.alloc::<bf16>(rows * n) }?;
    let norm = RmsNormRows {
        x: Dev::new(&xv, &stream),
        w: Dev::new(&wv, &stream),
        out: Dev::new(&out, &stream),
        rows,
        n,
        eps: eps as f32,
        prev: Some(Dev::new(&hv, &stream)),
        row_step: 1,
        row_off: 0,
        idx: None,
    };
    let kind = match quant {
        Some(ActQuant::Int8PerToken) => Some(Q8Kind::Int8),
        Some(ActQuant::Fp8PerToken) if fp8_supported(&stream)? => Some(Q8Kind::Fp8),
        _ => None,
    };
    let quantized = match (kind, quant) {
        (Some(kind), Some(format)) => {
            // SAFETY: as `out`.
            let (q, sx) = unsafe { (dev.alloc::<u8>(rows * n)?, dev.alloc::<f32>(rows)?) };
            let (qd, sxd) = (Dev::new(&q, &stream), Dev::new(&sx, &stream));
            rmsnorm_quant_rows(&dev, &norm, kind, qd, sxd)?;
            Some(QuantizedRows {
                format,
                bytes: cuda_tensor(q, &dev, (rows, n)),
                scales: cuda_tensor(sx, &dev, rows),
            })
        }
        _ => {
            rmsnorm_rows(&dev, &norm)?;
            None
        }
    };
    Ok((cuda_tensor(out, &dev, h.shape()), quantized))
}
