//! The causal attention of [`super::cpu_attention`] with its backward, so that training (the
//! distillations of every study) runs it too: candle's autograd through the masked ops built
//! and walked every [t, L] score of every head several times per layer and step, the masked
//! half included.
//!
//! The backward recomputes each query row's probabilities from q and k (nothing of the forward
//! is kept but its output), then, as FlashAttention's backward does, with D_i = dO_i · O_i:
//! dS_ij = P_ij (dO_i · v_j − D_i), dQ_i = s Σ_j dS_ij k_j, dK_j = s Σ_i dS_ij q_i,
//! dV_j = Σ_i P_ij dO_i (s = 1/√d). One task per (batch row, KV head) owns the dK and dV of
//! its keys and the dQ of its query heads, and walks heads and rows in a fixed order, so the
//! gradients do not depend on the number of threads.

use crate::model::cpu_exp::exp_minus_max;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_attention::{d_contiguous, fma_available, mul_add, CausalAttention};

/// [`super::cpu_attention::causal_attention`] (the same forward, the same figures) carrying its
/// backward: q, k and v receive their gradients when the result is differentiated.
pub fn causal_attention_grad(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    d_contiguous(q)?.apply_op3(&d_contiguous(k)?, &d_contiguous(v)?, CausalAttentionGrad)
}

struct CausalAttentionGrad;

impl CustomOp3 for CausalAttentionGrad {
    fn name(&self) -> &'static str {
        "causal-attention-cpu-grad"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        CausalAttention.cpu_fwd(qs, ql, ks, kl, vs, vl)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, h, t, d) = q.dims4()?;
        let (_, kvh, l, _) = k.dims4()?;
        let flat = |x: &Tensor| x.contiguous()?.flatten_all()?.to_vec1::<f32>();
        let s = Sizes {
            h,
            g: h / kvh,
            t,
            l,
            d,
            scale: 1.0 / (d as f32).sqrt(),
        };
        let x = Saved {
            q: flat(q)?,
            k: flat(k)?,
            v: flat(v)?,
            o: flat(res)?,
            d_o: flat(grad_res)?,
        };
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; b * h * t * d],
            vec![0f32; b * kvh * l * d],
            vec![0f32; b * kvh * l * d],
        );
        let fma = fma_available();
        if !dq.is_empty() && !dk.is_empty() {
            dq.par_chunks_mut(s.g * t * d)
                .zip(dk.par_chunks_mut(l * d))
                .zip(dv.par_chunks_mut(l * d))
                .enumerate()
                .for_each_init(Vec::new, |p, (task, ((dq, dk), dv))| {
                    let out = Grads { dq, dk, dv };
                    let at = (task / kvh, task % kvh, kvh);
                    #[cfg(target_arch = "x86_64")]
                    if fma {
                        // SAFETY: the CPU has AVX2 and FMA (checked at run time just above)
                        return unsafe { task_fma(&x, &s, at, p, out) };
                    }
                    let _ = fma; // off x86-64 there is no FMA path
                    task_grads::<false>(&x, &s, at, p, out)
                });
        }
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, (b, h, t, d), dev)?),
            Some(Tensor::from_vec(dk, (b, kvh, l, d), dev)?),
            Some(Tensor::from_vec(dv, (b, kvh, l, d), dev)?),
        ))
    }
}

/// The forward's inputs, output and output gradient, contiguous: q [b, h, t, d], k and v
/// [b, kvh, L, d], o and dO [b, t, h·d].
struct Saved {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    d_o: Vec<f32>,
}

/// Query heads, heads per KV head, queries, keys, head size, 1/√d.
struct Sizes {
    h: usize,
    g: usize,
    t: usize,
    l: usize,
    d: usize,
    scale: f32,
}

/// One task's outputs: the dQ of its g query heads [g, t, d], the dK and dV of its keys [L, d].
struct Grads<'a> {
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
}

/// [`task_grads`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn task_fma(x: &Saved, s: &Sizes, at: (usize, usize, usize), p: &mut Vec<f32>, out: Grads) {
    task_grads::<true>(x, s, at, p, out)
}

/// Σ a_i b_i in eight interleaved partial sums (so the compiler keeps them in one register).
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] = mul_add::<FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (x, y) in ar.iter().zip(br) {
        sum = mul_add::<FMA>(*x, *y, sum);
    }
    sum
}

/// y += a · x
#[inline(always)]
fn axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = mul_add::<FMA>(a, *x, *y);
    }
}

/// The gradients of batch row `bi`, KV head `kh` (`at` = (bi, kh, kvh)): every query head of
/// the group, every query row in order. `p` is scratch for a row's probabilities.
#[inline(always)]
fn task_grads<const FMA: bool>(
    x: &Saved,
    s: &Sizes,
    (bi, kh, kvh): (usize, usize, usize),
    p: &mut Vec<f32>,
    out: Grads,
) {
    let (d, t, l) = (s.d, s.t, s.l);
    let kv_base = (bi * kvh + kh) * l * d;
    let (k, v) = (&x.k[kv_base..][..l * d], &x.v[kv_base..][..l * d]);
    for gi in 0..s.g {
        let head = kh * s.g + gi;
        for i in 0..t {
            // keys 0..=i + L − t, as the forward's causal mask
            let n = i + l - t + 1;
            let qi = &x.q[((bi * s.h + head) * t + i) * d..][..d];
            let row = ((bi * t + i) * s.h + head) * d;
            let (oi, doi) = (&x.o[row..][..d], &x.d_o[row..][..d]);
            // a loop, not a closure: a closure would not inherit the caller's FMA target
            // feature, and mul_add outside it is a libm call (a fifth of the time in a profile)
            p.clear();
            for j in 0..n {
                p.push(dot::<FMA>(qi, &k[j * d..][..d]) * s.scale);
            }
            let inv = 1.0 / exp_minus_max(p).1;
            let di = dot::<FMA>(doi, oi);
            let dqi = &mut out.dq[(gi * t + i) * d..][..d];
            for (j, &e) in p.iter().enumerate() {
                let pj = e * inv;
                let (kj, vj) = (&k[j * d..][..d], &v[j * d..][..d]);
                let ds = pj * (dot::<FMA>(doi, vj) - di);
                axpy::<FMA>(dqi, ds, kj);
                axpy::<FMA>(&mut out.dk[j * d..][..d], ds * s.scale, qi);
                axpy::<FMA>(&mut out.dv[j * d..][..d], pj, doi);
            }
            dqi.iter_mut().for_each(|x| *x *= s.scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::{attend, Mode};
    use candle_core::{Device, Var};

    /// candle's masked ops, differentiated by candle's autograd.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let mask = crate::runtime::cpu_attention::tests::causal_mask(q, k);
        attend(q, k, v, Some(&mask), Mode::Differentiable).unwrap()
    }

    /// (dq, dk, dv) of Σ w ⊙ attention(q, k, v) for a fixed random w, by `f`.
    fn grads(
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
        (q, k, v): (&Var, &Var, &Var),
        w: &Tensor,
    ) -> [Tensor; 3] {
        // q as the forward makes it: [b, t, h, d] transposed to [b, h, t, d]
        let qt = q.as_tensor().transpose(1, 2).unwrap();
        let y = f(&qt, k.as_tensor(), v.as_tensor());
        let loss = (y * w).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        [q, k, v].map(|x| g.get(x.as_tensor()).expect("a gradient").clone())
    }

    /// The gradients equal autograd's through the masked ops within rounding: GQA and not,
    /// queries behind a cache (L > t), a head size that is not a multiple of 8.
    #[test]
    fn gradients_equal_autograd_through_the_masked_ops() {
        let dev = Device::Cpu;
        for (b, h, kvh, t, l, d) in [
            (2, 4, 1, 13, 13, 64),
            (1, 4, 4, 7, 20, 24),
            (3, 6, 2, 1, 9, 20),
            (1, 2, 1, 33, 33, 5),
        ] {
            let var = |shape: (usize, usize, usize, usize)| {
                Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev).unwrap()).unwrap()
            };
            let (q, k, v) = (var((b, t, h, d)), var((b, kvh, l, d)), var((b, kvh, l, d)));
            let w = Tensor::randn(0f32, 1.0, (b, t, h * d), &dev).unwrap();
            let ours = grads(
                |q, k, v| causal_attention_grad(q, k, v).unwrap(),
                (&q, &k, &v),
                &w,
            );
            let want = grads(reference, (&q, &k, &v), &w);
            for (name, (a, r)) in ["dq", "dk", "dv"].iter().zip(ours.iter().zip(&want)) {
                let err = (a - r).unwrap().abs().unwrap().max_all().unwrap();
                let scale = r.abs().unwrap().max_all().unwrap();
                let (err, scale) = (
                    err.to_scalar::<f32>().unwrap(),
                    scale.to_scalar::<f32>().unwrap(),
                );
                assert!(
                    err <= 1e-5 * scale.max(1.0),
                    "{name} {:?}: max error {err} (largest {scale})",
                    (b, h, kvh, t, l, d)
                );
            }
        }
    }

    /// The same gradients whatever the number of threads.
    #[test]
    fn gradients_independent_of_thread_count() {
        let dev = Device::Cpu;
        let var = |shape: (usize, usize, usize, usize)| {
            Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev).unwrap()).unwrap()
        };
        let (q, k, v) = (
            var((2, 40, 4, 64)),
            var((2, 2, 40, 64)),
            var((2, 2, 40, 64)),
        );
        let w = Tensor::randn(0f32, 1.0, (2, 40, 4 * 64), &dev).unwrap();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    grads(
                        |q, k, v| causal_attention_grad(q, k, v).unwrap(),
                        (&q, &k, &v),
                        &w,
                    )
                    .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                })
        };
        assert_eq!(run(1), run(3));
    }
}
