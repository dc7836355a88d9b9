//! GPTQ: quantize a Linear column by column, each column's rounding error pushed onto the
//! columns not yet quantized through the inverse Hessian of the layer's inputs.
//! Follows llm-compressor's algorithm (see shared/spec/algorithms.md) with one fix: a failed
//! Cholesky raises the damping and retries, and says so, instead of silently falling back to RTN.

use candle_core::{DType, Result, Tensor};

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
}

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

/// Inverse of L Lᵀ from its lower factor L.
fn cholesky_inverse(l: &[f64], n: usize) -> Vec<f64> {
    // L⁻¹ by forward substitution, then (L⁻¹)ᵀ L⁻¹
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
    let mut inv = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let mut s = 0.0;
            for k in j..n {
                s += li[k * n + i] * li[k * n + j];
            }
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    inv
}

/// Upper Cholesky factor of H⁻¹ with damping, raising the damping until it works.
fn hinv_upper(h: &[f64], n: usize, cfg: &GptqConfig) -> Result<(Vec<f64>, f64, usize)> {
    let mean_diag = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    let mut damp = cfg.damp;
    for retry in 0..=cfg.max_damp_retries {
        let mut hd = h.to_vec();
        for i in 0..n {
            hd[i * n + i] += damp * mean_diag;
        }
        if let Some(l) = cholesky(&hd, n) {
            let inv = cholesky_inverse(&l, n);
            if let Some(l2) = cholesky(&inv, n) {
                // upper factor U = L2ᵀ
                let mut u = vec![0f64; n * n];
                for i in 0..n {
                    for j in 0..=i {
                        u[j * n + i] = l2[i * n + j];
                    }
                }
                return Ok((u, damp, retry));
            }
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
    let s = &scheme.weights;
    let (out, inp) = w.dims2()?;
    let mut wv: Vec<f64> = w
        .to_dtype(DType::F64)?
        .to_device(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    let mut hv: Vec<f64> = h
        .to_dtype(DType::F64)?
        .to_device(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    // dead inputs: no signal, so the weight column cannot matter; zero it, keep H invertible
    let mut dead = 0;
    for d in 0..inp {
        if hv[d * inp + d] == 0.0 {
            hv[d * inp + d] = 1.0;
            for r in 0..out {
                wv[r * inp + d] = 0.0;
            }
            dead += 1;
        }
    }
    // act-order: visit columns by decreasing H diagonal
    let perm: Vec<usize> = if s.actorder.is_some() {
        let mut p: Vec<usize> = (0..inp).collect();
        p.sort_by(|&a, &b| hv[b * inp + b].total_cmp(&hv[a * inp + a]));
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
    let w32: Vec<f32> = wv.iter().map(|&x| x as f32).collect();
    let (scale, zp) = observe(&w32, out, inp, s, g_idx.as_deref());
    let mut ql = QLinear::new(*s, out, inp, scale, zp, g_idx);
    let ng = ql.n_groups();
    // permuted copies
    let mut wp = vec![0f64; out * inp];
    for r in 0..out {
        for (j, &c) in perm.iter().enumerate() {
            wp[r * inp + j] = wv[r * inp + c];
        }
    }
    let mut hp = vec![0f64; inp * inp];
    for (i, &a) in perm.iter().enumerate() {
        for (j, &b) in perm.iter().enumerate() {
            hp[i * inp + j] = hv[a * inp + b];
        }
    }
    let (u, damp_used, retries) = hinv_upper(&hp, inp, cfg)?;
    let mut err = vec![0f64; out * cfg.block];
    let mut b0 = 0;
    while b0 < inp {
        let b1 = (b0 + cfg.block).min(inp);
        for j in b0..b1 {
            let c = perm[j];
            let d = u[j * inp + j];
            for r in 0..out {
                let g = r * ng + ql.group_of(c);
                let x = wp[r * inp + j];
                let q = quantize(x as f32, ql.scale[g], ql.zp[g], s);
                ql.q[r * inp + c] = q;
                let e = (x - dequantize(q, ql.scale[g], ql.zp[g]) as f64) / d;
                err[r * cfg.block + (j - b0)] = e;
                // within the block: W[:, j+1..b1] -= e · U[j, j+1..b1]
                let row = &mut wp[r * inp..(r + 1) * inp];
                let urow = &u[j * inp..(j + 1) * inp];
                for k in j + 1..b1 {
                    row[k] -= e * urow[k];
                }
            }
        }
        // the block's errors onto every later column: W[:, b1..] -= E · U[b0..b1, b1..]
        for r in 0..out {
            let row = &mut wp[r * inp..(r + 1) * inp];
            for j in b0..b1 {
                let e = err[r * cfg.block + (j - b0)];
                if e == 0.0 {
                    continue;
                }
                let urow = &u[j * inp..(j + 1) * inp];
                for k in b1..inp {
                    row[k] -= e * urow[k];
                }
            }
        }
        b0 = b1;
    }
    Ok((
        ql,
        GptqReport {
            damp_used,
            retries,
            dead_columns: dead,
        },
    ))
}
