//! GPTQ: quantize a Linear column by column, each column's rounding error pushed onto the
//! columns not yet quantized through the inverse Hessian of the layer's inputs.
//! Follows llm-compressor's algorithm (see docs/algorithms.md) with one fix: a failed
//! Cholesky raises the damping and retries, and says so, instead of silently falling back to RTN.
//!
//! Where the work runs: the Hessian factorisation and the lazy block updates (almost all of the
//! flops) are f64 matmuls on the weight's device; only the 128-column blocks' sequential inner
//! loop runs on the CPU, rows in parallel (rows are independent given the Hessian). Linears that
//! share an input (q/k/v, gate/up) share one Hessian, so they are quantized as one stacked matrix.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use super::ActOrder;
use super::{dequantize, observe, quantize, QLinear, Scheme};

#[derive(Clone, Debug)]
pub struct GptqConfig {
    /// fraction of mean(diag H) added to the diagonal
    pub damp: f64,
    pub block: usize,
    /// how many times the damping is multiplied by 10 before giving up
    pub max_damp_retries: usize,
}

impl Default for GptqConfig {
    fn default() -> Self {
        Self {
            damp: 0.01,
            block: 128,
            max_damp_retries: 4,
        }
    }
}

/// Running `H = (2/n) Σ x xᵀ` over the inputs of one Linear (f32, on the inputs' device).
pub struct Hessian {
    pub h: Option<Tensor>,
    pub n: usize,
}

impl Default for Hessian {
    fn default() -> Self {
        Self::new()
    }
}

impl Hessian {
    pub fn new() -> Self {
        Self { h: None, n: 0 }
    }

    /// Adds inputs `x` [.., in]. NaN or infinite activations are refused: they would poison H.
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        let inp = x.dim(candle_core::D::Minus1)?;
        let x = x.reshape(((), inp))?.to_dtype(DType::F32)?;
        let rows = x.dim(0)?;
        let xtx = x.t()?.matmul(&x)?;
        let s = xtx.sum_all()?.to_scalar::<f32>()?;
        if !s.is_finite() {
            candle_core::bail!("calibration activations contain NaN or infinity (Hessian sum {s}); check the calibration data and the model");
        }
        // H_new = H·n/(n+rows) + 2/(n+rows)·xᵀx, so H stays (2/n)Σxxᵀ
        let total = self.n + rows;
        self.h = Some(match &self.h {
            None => (xtx * (2.0 / total as f64))?,
            Some(h) => ((h * (self.n as f64 / total as f64))? + (xtx * (2.0 / total as f64))?)?,
        });
        self.n = total;
        Ok(())
    }
}

/// The outcome of one GPTQ call, for the log.
#[derive(Clone, Debug)]
pub struct GptqReport {
    pub damp_used: f64,
    pub retries: usize,
    pub dead_columns: usize,
    /// seconds spent: preparing (copies, observing scales), factorising H, the blocks' column
    /// loops (CPU), the lazy updates (device)
    pub secs: [f64; 4],
}

/// Below this width the factorisation runs on the CPU (the recursion's leaves).
const LEAF: usize = 128;

/// Lower Cholesky factor of a symmetric positive-definite `a` [n×n] (row-major, f64), or None.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            for k in 0..j {
                s -= ri[k] * rj[k];
            }
            l[i * n + j] = s / d;
        }
    }
    Some(l)
}

/// L⁻¹ of a lower-triangular `l` [n×n] by forward substitution.
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut li = vec![0f64; n * n];
    for c in 0..n {
        for i in c..n {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                s -= l[i * n + k] * li[k * n + c];
            }
            li[i * n + c] = s / l[i * n + i];
        }
    }
    li
}

/// The inverse of the lower Cholesky factor of SPD `a` [n, n] (f64, any device), or None when a
/// pivot is not positive. Recursive on halves: leaves on the CPU, the rest matmuls on `a`'s
/// device. With A = [[A11, ·], [A21, A22]]: L21 = A21·L11⁻ᵀ, L22 = chol(A22 − L21·L21ᵀ), and
/// L⁻¹ = [[L11⁻¹, 0], [−L22⁻¹·L21·L11⁻¹, L22⁻¹]].
fn cholesky_lower_inverse(a: &Tensor) -> Result<Option<Tensor>> {
    let n = a.dim(0)?;
    let dev = a.device();
    if n <= LEAF {
        let v: Vec<f64> = a.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
        return match cholesky(&v, n) {
            Some(l) => Ok(Some(Tensor::from_vec(lower_inverse(&l, n), (n, n), dev)?)),
            None => Ok(None),
        };
    }
    let h = (n / 2).div_ceil(LEAF) * LEAF;
    let a11 = a.narrow(0, 0, h)?.narrow(1, 0, h)?.contiguous()?;
    let a21 = a.narrow(0, h, n - h)?.narrow(1, 0, h)?.contiguous()?;
    let a22 = a.narrow(0, h, n - h)?.narrow(1, h, n - h)?.contiguous()?;
    let Some(i11) = cholesky_lower_inverse(&a11)? else {
        return Ok(None);
    };
    let l21 = a21.matmul(&i11.t()?)?;
    let s = (a22 - l21.matmul(&l21.t()?)?)?;
    let Some(i22) = cholesky_lower_inverse(&s)? else {
        return Ok(None);
    };
    let i21 = i22.matmul(&l21.matmul(&i11)?)?.neg()?;
    let top = Tensor::cat(&[&i11, &Tensor::zeros((h, n - h), DType::F64, dev)?], 1)?;
    let bottom = Tensor::cat(&[&i21, &i22], 1)?;
    Tensor::cat(&[&top, &bottom], 0).map(Some)
}

/// Reverses the order of rows and columns of a square matrix.
fn reverse_both(a: &Tensor) -> Result<Tensor> {
    let n = a.dim(0)?;
    let rev = Tensor::from_vec((0..n as u32).rev().collect::<Vec<_>>(), n, a.device())?;
    a.index_select(&rev, 0)?.index_select(&rev, 1)
}

/// Upper Cholesky factor U of H⁻¹ (Uᵀ·U = H⁻¹) with damping, raising the damping until it works.
/// No explicit inverse: with J the reversal, J·H·J = L·Lᵀ gives U = J·L⁻¹·J.
fn hinv_upper(h: &Tensor, mean_diag: f64, cfg: &GptqConfig) -> Result<(Tensor, f64, usize)> {
    let n = h.dim(0)?;
    let eye = Tensor::eye(n, DType::F64, h.device())?;
    let hr = reverse_both(h)?;
    let mut damp = cfg.damp;
    for retry in 0..=cfg.max_damp_retries {
        let hd = (&hr + (&eye * (damp * mean_diag))?)?;
        if let Some(li) = cholesky_lower_inverse(&hd)? {
            return Ok((reverse_both(&li)?, damp, retry));
        }
        // from zero, multiplying does nothing: start at the usual 1%
        damp = if damp > 0.0 { damp * 10.0 } else { 0.01 };
    }
    candle_core::bail!("GPTQ: the Hessian is not positive definite even with damping {damp:.1e} × mean(diag H); the calibration data is too small or degenerate")
}

/// GPTQ of weight `w` [out, in] given its input Hessian `h` [in, in].
pub fn gptq(
    w: &Tensor,
    h: &Tensor,
    scheme: &Scheme,
    cfg: &GptqConfig,
) -> Result<(QLinear, GptqReport)> {
    let (mut qs, rep) = gptq_shared(&[w], h, scheme, cfg)?;
    Ok((qs.remove(0), rep))
}

/// GPTQ of several Linears that share one input (and so one Hessian `h`), e.g. q/k/v: their
/// rows are independent given H, so they run as one stacked matrix.
pub fn gptq_shared(
    ws: &[&Tensor],
    h: &Tensor,
    scheme: &Scheme,
    cfg: &GptqConfig,
) -> Result<(Vec<QLinear>, GptqReport)> {
    let s = &scheme.weights;
    let dev = ws[0].device().clone();
    let mut secs = [0f64; 4];
    let mut t = std::time::Instant::now();
    let mut lap = |i: usize, t: &mut std::time::Instant| {
        secs[i] += t.elapsed().as_secs_f64();
        *t = std::time::Instant::now();
    };
    let rows: Vec<usize> = ws.iter().map(|w| w.dim(0)).collect::<Result<_>>()?;
    let w = Tensor::cat(ws, 0)?.to_dtype(DType::F64)?;
    let (out, inp) = w.dims2()?;
    let h = h.to_dtype(DType::F64)?.to_device(&dev)?;
    let diag: Vec<f64> = h
        .flatten_all()?
        .index_select(
            &Tensor::from_vec(
                (0..inp as u32)
                    .map(|i| i * inp as u32 + i)
                    .collect::<Vec<_>>(),
                inp,
                &dev,
            )?,
            0,
        )?
        .to_vec1()?;
    // dead inputs: no signal, so the weight column cannot matter; zero it, keep H invertible
    let dead: Vec<f64> = diag.iter().map(|&d| (d == 0.0) as u8 as f64).collect();
    let n_dead = dead.iter().filter(|&&d| d > 0.0).count();
    let (w, h) = if n_dead > 0 {
        let d = Tensor::from_vec(dead.clone(), (1, inp), &dev)?;
        let alive = (1.0 - &d)?;
        let eye = Tensor::eye(inp, DType::F64, &dev)?;
        (w.broadcast_mul(&alive)?, (h + eye.broadcast_mul(&d)?)?)
    } else {
        (w, h)
    };
    let diag: Vec<f64> = diag.iter().zip(&dead).map(|(a, b)| a + b).collect();
    // act-order: visit columns by decreasing H diagonal
    let perm: Vec<usize> = if s.actorder.is_some() {
        let mut p: Vec<usize> = (0..inp).collect();
        p.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
        p
    } else {
        (0..inp).collect()
    };
    let gs = s.group_size(inp);
    // groups: original columns (static) or permuted order (group, saved as g_idx)
    let g_idx: Option<Vec<u32>> = match s.actorder {
        Some(ActOrder::Group) => {
            let mut g = vec![0u32; inp];
            for (j, &c) in perm.iter().enumerate() {
                g[c] = (j / gs) as u32;
            }
            Some(g)
        }
        _ => None,
    };
    let w32: Vec<f32> = w
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    let (scale, zp) = observe(&w32, out, inp, s, g_idx.as_deref());
    let mut ql = QLinear::new(*s, out, inp, scale, zp, g_idx);
    let perm_t = Tensor::from_vec(perm.iter().map(|&p| p as u32).collect(), inp, &dev)?;
    let hp = h.index_select(&perm_t, 0)?.index_select(&perm_t, 1)?;
    let mean_diag = diag.iter().sum::<f64>() / inp as f64;
    lap(0, &mut t);
    let (u, damp_used, retries) = hinv_upper(&hp, mean_diag, cfg)?;
    // the diagonal blocks, for the CPU loops: one download
    let u_cpu: Vec<f64> = u.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
    lap(1, &mut t);
    // the columns not yet quantized, in visiting order, updated block by block on the device
    let mut rest = w.index_select(&perm_t, 1)?;
    let ng = ql.n_groups();
    let group_of: Vec<usize> = perm.iter().map(|&c| ql.group_of(c)).collect();
    let mut b0 = 0;
    while b0 < inp {
        let bw = cfg.block.min(inp - b0);
        let b1 = b0 + bw;
        // contiguous on the device first: a view would download the whole matrix
        let mut blk: Vec<f64> = rest
            .narrow(1, 0, bw)?
            .contiguous()?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        let ub: Vec<f64> = (0..bw)
            .flat_map(|j| {
                u_cpu[(b0 + j) * inp + b0..(b0 + j) * inp + b1]
                    .iter()
                    .copied()
            })
            .collect();
        lap(3, &mut t);
        let mut err = vec![0f64; out * bw];
        let (scales, zps) = (&ql.scale, &ql.zp);
        let mut qcols = vec![0f32; out * bw];
        blk.par_chunks_mut(bw)
            .zip(err.par_chunks_mut(bw))
            .zip(qcols.par_chunks_mut(bw))
            .enumerate()
            .for_each(|(r, ((row, er), qr))| {
                for j in 0..bw {
                    let g = r * ng + group_of[b0 + j];
                    let x = row[j];
                    let q = quantize(x as f32, scales[g], zps[g], s);
                    qr[j] = q;
                    let e = (x - dequantize(q, scales[g], zps[g]) as f64) / ub[j * bw + j];
                    er[j] = e;
                    // within the block: W[:, j+1..] -= e · U[j, j+1..]
                    for k in j + 1..bw {
                        row[k] -= e * ub[j * bw + k];
                    }
                }
            });
        ql.q.par_chunks_mut(inp)
            .zip(qcols.par_chunks(bw))
            .for_each(|(qrow, qc)| {
                for j in 0..bw {
                    qrow[perm[b0 + j]] = qc[j];
                }
            });
        lap(2, &mut t);
        // the block's errors onto every later column: W[:, b1..] -= E · U[b0..b1, b1..]
        rest = if b1 < inp {
            let e = Tensor::from_vec(err, (out, bw), &dev)?;
            let ur = u.narrow(0, b0, bw)?.narrow(1, b1, inp - b1)?.contiguous()?;
            (rest.narrow(1, bw, inp - b1)? - e.matmul(&ur)?)?
        } else {
            rest
        };
        b0 = b1;
    }
    lap(3, &mut t);
    Ok((
        ql.split_rows(&rows),
        GptqReport {
            damp_used,
            retries,
            dead_columns: n_dead,
            secs,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// U from the blocked factorisation is upper triangular with Uᵀ·U·H = I, at a width that
    /// exercises uneven recursion (300 = 256 + 44 leaves).
    #[test]
    fn blocked_factorisation_inverts_the_hessian() {
        let n = 300;
        let a = Tensor::randn(0f64, 1.0, (n, n), &Device::Cpu).unwrap();
        let h = (a.t().unwrap().matmul(&a).unwrap()
            + (Tensor::eye(n, DType::F64, &Device::Cpu).unwrap() * 1.0).unwrap())
        .unwrap();
        let cfg = GptqConfig {
            damp: 0.0,
            ..Default::default()
        };
        let (u, damp, retries) = hinv_upper(&h, 1.0, &cfg).unwrap();
        assert_eq!((damp, retries), (0.0, 0));
        let uv: Vec<Vec<f64>> = u.to_vec2().unwrap();
        for (i, row) in uv.iter().enumerate() {
            for &x in &row[..i] {
                assert_eq!(x, 0.0, "U must be upper triangular");
            }
            assert!(row[i] > 0.0);
        }
        let id = u.t().unwrap().matmul(&u).unwrap().matmul(&h).unwrap();
        let e = (id - Tensor::eye(n, DType::F64, &Device::Cpu).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(e < 1e-9, "max |UᵀUH − I| = {e}");
    }
}
