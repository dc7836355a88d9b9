//! The softmax and the RMSNorm that training differentiates through, fused on the CPU with their
//! backward. candle's fused CPU forms (`candle_nn::ops::softmax_last_dim`, `rms_norm`) have no
//! backward, so `Mode::Differentiable` ran their tensor expressions, which allocate and walk
//! about five tensors of the input's size forward and ten backward: in a distillation step of
//! the default model a large part of the work outside the matrix products (attention scores
//! [8, 4 × 256, 256] per layer). Here each is one pass per row forward and one backward, in
//! f32 as the expressions compute. Off the CPU, or for other dtypes, the expressions run.

use super::cpu_exp::exp_minus_max;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Whether `x` is f32 on the CPU, where the fused forms run.
pub fn cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// `f` of the f32 data of a contiguous CPU tensor, read in place.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    match (&*st, l.contiguous_offsets()) {
        (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(f(&v[a..b])),
        _ => candle_core::bail!("a contiguous f32 CPU tensor is needed"),
    }
}

/// The f32 data of a contiguous CPU storage (a custom op's input), or an error naming `what`.
pub fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: a contiguous f32 input is needed"),
    }
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        return x.contiguous()?.apply_op1(Softmax);
    }
    candle_nn::ops::softmax(x, D::Minus1)
}

#[derive(Debug)]
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "softmax")?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
            y.copy_from_slice(x);
            let inv = 1.0 / exp_minus_max(y).1;
            y.iter_mut().for_each(|y| *y *= inv);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    /// dx = y ⊙ (g − Σ g ⊙ y), row by row.
    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let n = y.dim(D::Minus1)?.max(1);
        let g = g.contiguous()?;
        let dx = with_f32(y, |y| {
            with_f32(&g, |g| {
                let mut dx = vec![0f32; y.len()];
                dx.par_chunks_mut(n)
                    .zip(y.par_chunks(n).zip(g.par_chunks(n)))
                    .for_each(|(dx, (y, g))| {
                        let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                        for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                            *dx = y * (g - dot);
                        }
                    });
                dx
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, y.shape(), y.device())?))
    }
}

/// `x · rsqrt(mean(x²) + eps) · w` over the last dimension, differentiable in `x` and `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    if cpu_f32(x) && cpu_f32(w) && w.rank() == 1 && x.dim(D::Minus1)? == w.dim(0)? {
        return x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps });
    }
    candle_nn::ops::rms_norm_slow(x, w, eps)
}

/// Rows whose weight gradients one task sums before the tasks' sums are added in order.
const ROWS_PER_BLOCK: usize = 64;

#[derive(Debug)]
struct RmsNorm {
    eps: f32,
}

/// 1 / sqrt(mean(x²) + eps) of a row.
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "rms-norm")?;
        let w = contiguous_f32(ws, wl, "rms-norm")?;
        let n = w.len().max(1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
            let r = inv_rms(x, self.eps);
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = x * r * w;
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// With r = 1/rms(x) and gw = g ⊙ w: dx = r·gw − x·r³·mean(x ⊙ gw); dw = Σ_rows g ⊙ x·r.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = w.dim(0)?.max(1);
        let g = g.contiguous()?;
        let eps = self.eps;
        let (dx, dw) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(&g, |g| {
                    let mut dx = vec![0f32; x.len()];
                    // dw's sum over rows in blocks of a fixed size, the blocks' partial sums
                    // added in order: the same bits whatever the threads (training is
                    // bit-reproducible on one machine)
                    let block = ROWS_PER_BLOCK * n;
                    let partials: Vec<Vec<f32>> = dx
                        .par_chunks_mut(block)
                        .zip(x.par_chunks(block).zip(g.par_chunks(block)))
                        .map(|(dx, (x, g))| {
                            let mut dw = vec![0f32; n];
                            for (dx, (x, g)) in dx.chunks_mut(n).zip(x.chunks(n).zip(g.chunks(n))) {
                                let r = inv_rms(x, eps);
                                let dot: f32 =
                                    x.iter().zip(g).zip(w).map(|((x, g), w)| x * g * w).sum();
                                let c = r * r * r * dot / n as f32;
                                for (j, dx) in dx.iter_mut().enumerate() {
                                    *dx = r * g[j] * w[j] - x[j] * c;
                                    dw[j] += g[j] * x[j] * r;
                                }
                            }
                            dw
                        })
                        .collect();
                    let mut dw = vec![0f32; n];
                    for p in partials {
                        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
                    }
                    (dx, dw)
                })
            })
        })???;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
        ))
    }
}
