//! AWQ for EXAONE 4: per-channel scales that move quantization difficulty from a Linear's
//! inputs into its weights, found by grid search on calibration activations, then RTN.
//! EXAONE 4 is post-norm, so only up→down and v→o can absorb a scale. llm-compressor skips v→o
//! under GQA (v_proj has fewer outputs than o_proj inputs); here it is done exactly: o_proj
//! input column h·d + j shares the scale of v_proj row kv·d + j for the query heads h of kv.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use super::{fake_quantize, to_f32_matrix, Scheme};

#[derive(Clone, Debug)]
pub struct AwqConfig {
    pub grid: usize,
    /// also smooth v→o (GQA-aware); false reproduces llm-compressor's up→down only
    pub v_to_o: bool,
    /// weight clipping search steps (AutoAWQ's auto-clip; 0 = plain RTN after scaling, as
    /// llm-compressor does)
    pub clip_steps: usize,
    /// input rows used by the clipping search
    pub clip_rows: usize,
}

impl Default for AwqConfig {
    fn default() -> Self {
        Self {
            grid: 20,
            v_to_o: true,
            clip_steps: 10,
            clip_rows: 256,
        }
    }
}

/// Mean over rows of |W| normalised per group by the group's max: AWQ's weight statistic [in].
/// Rows are summed in fixed blocks (in parallel), the blocks then in order: the same sums
/// whatever the thread count or scheduling (a work-stealing reduction would not be).
fn w_mean(w: &[f32], out: usize, inp: usize, group: usize) -> Vec<f32> {
    const ROWS: usize = 64;
    let blocks: Vec<Vec<f32>> = (0..out.div_ceil(ROWS))
        .into_par_iter()
        .map(|b| {
            let mut m = vec![0f32; inp];
            for r in b * ROWS..((b + 1) * ROWS).min(out) {
                for g0 in (0..inp).step_by(group) {
                    let g1 = (g0 + group).min(inp);
                    let row = &w[r * inp + g0..r * inp + g1];
                    let mx = row.iter().fold(0f32, |a, &x| a.max(x.abs())) + 1e-6;
                    for (k, &x) in row.iter().enumerate() {
                        m[g0 + k] += x.abs() / mx;
                    }
                }
            }
            m
        })
        .collect();
    let mut m = vec![0f32; inp];
    for b in &blocks {
        m.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    }
    m.iter_mut().for_each(|x| *x /= out as f32);
    m
}

/// Output MSE of x·Wᵀ against x·(Q(W·s)/s)ᵀ for the balance layer `w` [out, in] on rows `x`,
/// all on `x`'s device.
fn loss(x: &Tensor, w: &Tensor, s: &[f32], scheme: &Scheme, reference: &Tensor) -> Result<f64> {
    let s = Tensor::from_vec(s.to_vec(), (1, s.len()), x.device())?;
    let q = fake_quantize(&w.broadcast_mul(&s)?, &scheme.weights, None)?;
    let y = x.matmul(&q.broadcast_div(&s)?.t()?)?;
    (y - reference)?
        .sqr()?
        .mean_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

/// Grid-searches the scale for balance layer `w` [out, in] whose inputs are `x` [rows, in],
/// with per-channel activation means `x_mean` [in]. `tie` maps each of the `k` free scales to
/// the input columns it multiplies (identity for up→down, the GQA expansion for v→o).
/// Returns the `k` scales (1.0 = no change is among the candidates at ratio 0 only if it wins).
pub fn search(
    x: &Tensor,
    w: &Tensor,
    x_mean: &[f32],
    tie: &[usize],
    k: usize,
    scheme: &Scheme,
    cfg: &AwqConfig,
) -> Result<(Vec<f32>, f64, f64)> {
    let (wv, out, inp) = to_f32_matrix(w)?;
    let group = scheme.weights.group_size(inp);
    let wm_full = w_mean(&wv, out, inp, group);
    // reduce column statistics to the k free scales
    let reduce = |v: &[f32]| -> Vec<f32> {
        let mut s = vec![0f32; k];
        let mut n = vec![0f32; k];
        for (c, &t) in tie.iter().enumerate() {
            s[t] += v[c];
            n[t] += 1.0;
        }
        s.iter().zip(&n).map(|(a, b)| a / b).collect()
    };
    let (xm, wm) = (reduce(x_mean), reduce(&wm_full));
    let x = x.to_dtype(DType::F32)?;
    let wt = Tensor::from_vec(wv, (out, inp), x.device())?;
    let reference = x.matmul(&wt.t()?)?;
    let ones = vec![1f32; inp];
    let base_loss = loss(&x, &wt, &ones, scheme, &reference)?;
    let (mut best, mut best_loss) = (vec![1f32; k], base_loss);
    for i in 0..cfg.grid {
        let r = i as f32 / cfg.grid as f32;
        let mut s: Vec<f32> = xm
            .iter()
            .zip(&wm)
            .map(|(&a, &b)| (a.powf(r) / (b.powf(1.0 - r) + 1e-4)).max(1e-4))
            .collect();
        let (mx, mn) = s
            .iter()
            .fold((f32::MIN, f32::MAX), |(a, b), &v| (a.max(v), b.min(v)));
        let norm = (mx * mn).sqrt();
        s.iter_mut().for_each(|v| *v /= norm);
        let full: Vec<f32> = tie.iter().map(|&t| s[t]).collect();
        let l = loss(&x, &wt, &full, scheme, &reference)?;
        if l < best_loss {
            best_loss = l;
            best = s;
        }
    }
    Ok((best, base_loss, best_loss))
}

/// Multiplies columns of `w` [out, in] by `s_cols` and returns the new weight.
pub fn scale_columns(w: &Tensor, s_cols: &[f32]) -> Result<Tensor> {
    let s = Tensor::from_vec(s_cols.to_vec(), (1, s_cols.len()), &Device::Cpu)?
        .to_dtype(w.dtype())?
        .to_device(w.device())?;
    w.broadcast_mul(&s)
}

/// Divides rows of `w` [out, in] by `s_rows`.
pub fn unscale_rows(w: &Tensor, s_rows: &[f32]) -> Result<Tensor> {
    let s = Tensor::from_vec(s_rows.to_vec(), (s_rows.len(), 1), &Device::Cpu)?
        .to_dtype(w.dtype())?
        .to_device(w.device())?;
    w.broadcast_div(&s)
}

/// AWQ's weight clipping: for every (row, group) choose the range shrink α (from 1.0 down to
/// 0.5) whose quantization error on sample inputs `x` [n, in] is least, then round to nearest.
/// The scales and zero points stay min-max in form (computed from α·min, α·max), so the
/// on-disk format is unchanged. The search runs on `w`'s device: per α, the error of every
/// (row, group) on the samples is one batched matmul.
pub fn rtn_clipped(
    w: &Tensor,
    x: &Tensor,
    scheme: &Scheme,
    steps: usize,
) -> Result<super::QLinear> {
    use super::{qparams, quantize};
    let s = &scheme.weights;
    let dev = w.device();
    let (out, inp) = w.dims2()?;
    let gs = s.group_size(inp);
    let ng = inp / gs;
    let n = x.dim(0)?;
    let wf = w.to_dtype(DType::F32)?;
    // [ng, n, gs]: the sample inputs of each group
    let xg = x
        .to_dtype(DType::F32)?
        .to_device(dev)?
        .reshape((n, ng, gs))?
        .transpose(0, 1)?
        .contiguous()?;
    let alphas: Vec<f32> = (0..steps.max(1))
        .map(|k| 1.0 - 0.5 * k as f32 / steps.max(1) as f32)
        .collect();
    let mut errs = vec![];
    for &a in &alphas {
        let shrink = Tensor::full(a, (out, ng), dev)?;
        let d = (&wf - fake_quantize(&wf, s, Some(&shrink))?)?;
        // [ng, gs, out]
        let dg = d.reshape((out, ng, gs))?.permute((1, 2, 0))?.contiguous()?;
        // Σ_t (x_t,g · Δw_r,g)² → [ng, out]
        errs.push(xg.matmul(&dg)?.sqr()?.sum(1)?.t()?.contiguous()?);
    }
    // [steps, out, ng] → the first α with the least error, per (row, group)
    let best: Vec<u32> = Tensor::stack(&errs, 0)?
        .argmin(0)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1()?;
    let (wv, _, _) = to_f32_matrix(w)?;
    let mut ql = super::QLinear::new(*s, out, inp, vec![0.0; out * ng], vec![0.0; out * ng], None);
    ql.q.par_chunks_mut(inp)
        .zip(ql.scale.par_chunks_mut(ng))
        .zip(ql.zp.par_chunks_mut(ng))
        .enumerate()
        .for_each(|(r, ((qrow, sc), zr))| {
            for g in 0..ng {
                let row = &wv[r * inp + g * gs..r * inp + (g + 1) * gs];
                let (mn, mx) = row
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let a = alphas[best[r * ng + g] as usize];
                (sc[g], zr[g]) = qparams(a * mn, a * mx, s);
                for (j, &v) in row.iter().enumerate() {
                    qrow[g * gs + j] = quantize(v, sc[g], zr[g], s);
                }
            }
        });
    Ok(ql)
}
