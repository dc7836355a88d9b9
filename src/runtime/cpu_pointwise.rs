//! SiLU·mul and log-softmax on the CPU in f32: rows in parallel, the exponentials eight per
//! instruction ([`crate::model::cpu_exp`]). candle computes `silu`, `exp` and a log-softmax's
//! passes one element at a time on one thread, calling libm's `expf` for each; in the main
//! study's forwards (the gated MLP over 8 × 512 tokens, the log-probabilities of a 4,096-word
//! vocabulary at every position) that kept one of two cores idle while the other ran them.
//!
//! Each element (SiLU·mul) or row (log-softmax) is computed in a fixed order, so the results do
//! not depend on the number of threads. They are candle's formulas — `g / (1 + exp(−g)) · u` and
//! `(x − max) − ln Σ exp(x − max)` — with `cpu_exp`'s exponential (within 2 ulp of the exact
//! value, where libm's is within 1), so the last bits may differ from candle's.

use crate::model::cpu_exp::{exp_minus_max, exp_shifted};
use crate::model::grad_ops::contiguous_f32;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

/// Elements per parallel task of [`silu_mul`]: large enough that a task outweighs its
/// scheduling, small enough that both cores get many.
const CHUNK: usize = 16 * 1024;

/// Whether [`silu_mul`] and [`log_softmax`] run for `x`: f32 on the CPU.
pub fn available(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// silu(g) · u elementwise for `g` and `u` of one shape, f32 on the CPU.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if g.dims() != u.dims() {
        candle_core::bail!("silu_mul: g {:?} and u {:?} differ", g.dims(), u.dims());
    }
    g.contiguous()?.apply_op2_no_bwd(&u.contiguous()?, &SiluMul)
}

/// [`silu_mul`] carrying its backward, for training: g receives grad · u · silu′(g), u receives
/// grad · silu(g), each one parallel pass.
pub fn silu_mul_grad(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if g.dims() != u.dims() {
        candle_core::bail!("silu_mul: g {:?} and u {:?} differ", g.dims(), u.dims());
    }
    g.contiguous()?.apply_op2(&u.contiguous()?, SiluMul)
}

/// log-softmax over the last dimension of `x`, f32 on the CPU.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&LogSoftmax)
}

/// log-softmax over the last dimension: [`log_softmax`] where it runs, candle's op elsewhere
/// (on CUDA too, where `runtime::log_softmax_f32` would switch to the fused kernel: evaluation
/// keeps the numerics it has there).
pub fn log_softmax_or_candle(x: &Tensor) -> Result<Tensor> {
    match available(x) {
        true => log_softmax(x),
        false => candle_nn::ops::log_softmax(&x.contiguous()?, candle_core::D::Minus1),
    }
}

/// exp(−g) for every g, into `o` (of the same length): the sigmoid's denominator, less one.
fn exp_neg(o: &mut [f32], g: &[f32]) {
    for (o, &g) in o.iter_mut().zip(g) {
        *o = -g;
    }
    exp_shifted(o, 0.0);
}

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul-cpu"
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dg = g.apply_op3_no_bwd(u, &grad, &SiluMulGradG)?;
        let du = g.apply_op2_no_bwd(&grad, &SiluMul)?;
        Ok((Some(dg), Some(du)))
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u) = (
            contiguous_f32(gs, gl, "silu_mul")?,
            contiguous_f32(us, ul, "silu_mul")?,
        );
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| {
                exp_neg(o, g);
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = g / (1.0 + *o) * u;
                }
            });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

/// grad · u · silu′(g), silu′(g) = s · (1 + g · (1 − s)) with s = sigmoid(g) = 1 / (1 + exp(−g)).
struct SiluMulGradG;

impl CustomOp3 for SiluMulGradG {
    fn name(&self) -> &'static str {
        "silu-mul-grad-cpu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "silu_mul backward";
        let (g, u, d) = (
            contiguous_f32(gs, gl, op)?,
            contiguous_f32(us, ul, op)?,
            contiguous_f32(ds, dl, op)?,
        );
        if u.len() != g.len() || d.len() != g.len() {
            candle_core::bail!(
                "{op}: inputs of {}, {} and {} values",
                g.len(),
                u.len(),
                d.len()
            );
        }
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(u.par_chunks(CHUNK).zip(d.par_chunks(CHUNK)))
            .for_each(|((o, g), (u, d))| {
                exp_neg(o, g);
                for (((o, &g), &u), &d) in o.iter_mut().zip(g).zip(u).zip(d) {
                    let s = 1.0 / (1.0 + *o);
                    *o = d * u * (s * (1.0 + g * (1.0 - s)));
                }
            });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

struct LogSoftmax;

impl CustomOp1 for LogSoftmax {
    fn name(&self) -> &'static str {
        "log-softmax-cpu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "log_softmax")?;
        let n = l.dims().last().copied().unwrap_or(1);
        let mut out = x.to_vec();
        if n == 0 || out.is_empty() {
            return Ok((CpuStorage::F32(out), l.shape().clone()));
        }
        out.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .for_each(|(o, x)| {
                let (m, sum) = exp_minus_max(o);
                let ln = sum.ln();
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = (x - m) - ln;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Both ops equal candle's expressions to a few ulp on values spanning the exponential's
    /// range (including strided inputs, which are copied first), and keep the shape.
    #[test]
    fn equal_candles_ops() {
        let dev = Device::Cpu;
        let g = (Tensor::randn(0f32, 6.0, (7, 3001), &dev).unwrap() - 1.0).unwrap();
        let u = Tensor::randn(0f32, 1.0, (7, 3001), &dev).unwrap();
        let ours = silu_mul(&g, &u).unwrap();
        let theirs = (g.silu().unwrap() * &u).unwrap();
        assert_eq!(ours.dims(), &[7, 3001]);
        assert!(
            max_diff(&ours, &theirs) < 1e-5,
            "{}",
            max_diff(&ours, &theirs)
        );
        let gt = g.t().unwrap();
        let ut = u.t().unwrap();
        let ours_t = silu_mul(&gt, &ut).unwrap();
        let theirs_t = (gt.silu().unwrap() * &ut).unwrap();
        assert!(max_diff(&ours_t, &theirs_t) < 1e-5);

        let x = (Tensor::randn(0f32, 8.0, (2, 5, 4096), &dev).unwrap() * 3.0).unwrap();
        let ours = log_softmax(&x).unwrap();
        let theirs = candle_nn::ops::log_softmax(&x, D::Minus1).unwrap();
        assert_eq!(ours.dims(), &[2, 5, 4096]);
        assert!(
            max_diff(&ours, &theirs) < 1e-4,
            "{}",
            max_diff(&ours, &theirs)
        );
        // rows still sum to one in probability
        let p = ours
            .exp()
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .flatten_all()
            .unwrap();
        for s in p.to_vec1::<f32>().unwrap() {
            assert!((s - 1.0).abs() < 1e-4, "{s}");
        }
    }

    /// The backward equals candle's autograd of `silu(g) · u` (both inputs' gradients) to a few
    /// ulp, under a loss that weighs every output differently.
    #[test]
    fn backward_equals_candles() {
        let dev = Device::Cpu;
        let g0 = (Tensor::randn(0f32, 4.0, (5, 777), &dev).unwrap() - 0.5).unwrap();
        let u0 = Tensor::randn(0f32, 1.0, (5, 777), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (5, 777), &dev).unwrap();
        let grads = |ours: bool| {
            let (g, u) = (
                candle_core::Var::from_tensor(&g0).unwrap(),
                candle_core::Var::from_tensor(&u0).unwrap(),
            );
            let y = match ours {
                true => silu_mul_grad(g.as_tensor(), u.as_tensor()).unwrap(),
                false => (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap(),
            };
            let gs = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            (
                gs.get(g.as_tensor()).unwrap().clone(),
                gs.get(u.as_tensor()).unwrap().clone(),
            )
        };
        let ((dg, du), (dg_ref, du_ref)) = (grads(true), grads(false));
        assert!(max_diff(&dg, &dg_ref) < 1e-5, "{}", max_diff(&dg, &dg_ref));
        assert!(max_diff(&du, &du_ref) < 1e-5, "{}", max_diff(&du, &du_ref));
    }

    /// The extremes: silu of large negative and positive inputs, a row with −inf entries
    /// (masked logits) and a NaN, which stays NaN.
    #[test]
    fn extremes() {
        let dev = Device::Cpu;
        let g = Tensor::new(&[-200f32, -90.0, -1.0, 0.0, 1.0, 90.0, 200.0], &dev).unwrap();
        let u = Tensor::ones(7, DType::F32, &dev).unwrap();
        let y = silu_mul(&g, &u).unwrap().to_vec1::<f32>().unwrap();
        let want = [0.0f32, 0.0, -0.268_941_43, 0.0, 0.731_058_6, 90.0, 200.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{y:?}");
        }
        let x = Tensor::new(
            &[[0f32, f32::NEG_INFINITY, 1.0], [0.0, f32::NAN, 1.0]],
            &dev,
        )
        .unwrap();
        let lp = log_softmax(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(lp[0][1], f32::NEG_INFINITY);
        assert!((lp[0][0] - (-1.313_261_7)).abs() < 1e-6, "{lp:?}");
        assert!(lp[1].iter().all(|v| v.is_nan()), "{lp:?}");
    }
}
