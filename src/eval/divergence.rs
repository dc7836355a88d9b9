//! How far a compressed model's next-token distribution is from the base's: KL(base ‖ model)
//! per token (mean, 99th percentile) and top-1 agreement, streamed batch by batch so no logits
//! are kept ([`divergence_per_token`] keeps the per-token KL values, sequence by sequence).

use candle_core::{Result, Tensor};
use indicatif::ProgressBar;

pub use crate::compress::distill::kl_rows;
use crate::model::Exaone4;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Divergence {
    pub tokens: usize,
    pub kl_mean: f64,
    /// standard error of the mean KL over sequences
    pub kl_stderr: f64,
    pub kl_p99: f64,
    /// fraction of positions where both models' argmax agree
    pub top1: f64,
}

/// KL of `model` from `base` over `sequences` (each the same length), `batch` at a time.
pub fn divergence(
    base: &Exaone4,
    model: &Exaone4,
    sequences: &[Vec<u32>],
    batch: usize,
    bar: Option<&ProgressBar>,
) -> Result<Divergence> {
    Ok(divergence_per_token(base, model, sequences, batch, bar)?.0)
}

/// [`divergence`] (the same figures, bit for bit) and every position's KL(base ‖ model) in nats,
/// one vector per sequence in the order given.
pub fn divergence_per_token(
    base: &Exaone4,
    model: &Exaone4,
    sequences: &[Vec<u32>],
    batch: usize,
    bar: Option<&ProgressBar>,
) -> Result<(Divergence, Vec<Vec<f32>>)> {
    divergence_against(&|g| base_logits_of(base, g), model, sequences, batch, bar)
}

/// The base's logits of one group of sequences, [rows, vocab] on the base's device.
fn base_logits_of(base: &Exaone4, group: &[Vec<u32>]) -> Result<Tensor> {
    let t = group[0].len();
    let flat: Vec<u32> = group.iter().flat_map(|s| s.iter().copied()).collect();
    let x = Tensor::from_vec(flat, (group.len(), t), base.device())?;
    base.forward(&x, None)?.reshape((group.len() * t, ()))
}

/// The base's logits of `sequences`, `batch` at a time, as [`divergence_per_token`] computes
/// them: keep them to measure many models against one base without running it again
/// ([`divergence_from_logits`] gives the same figures bit for bit).
pub fn base_logits(base: &Exaone4, sequences: &[Vec<u32>], batch: usize) -> Result<Vec<Tensor>> {
    sequences
        .chunks(batch.max(1))
        .map(|g| base_logits_of(base, g))
        .collect()
}

/// [`divergence_per_token`] against base logits computed before ([`base_logits`], same
/// `sequences` and `batch`).
pub fn divergence_from_logits(
    base: &[Tensor],
    model: &Exaone4,
    sequences: &[Vec<u32>],
    batch: usize,
    bar: Option<&ProgressBar>,
) -> Result<(Divergence, Vec<Vec<f32>>)> {
    let groups = sequences.len().div_ceil(batch.max(1));
    if base.len() != groups {
        candle_core::bail!(
            "divergence: {} groups of base logits for {groups} groups of sequences",
            base.len()
        );
    }
    let at = |g: &[Vec<u32>]| {
        let k = sequences
            .chunks(batch.max(1))
            .position(|x| std::ptr::eq(x, g));
        Ok(base[k.unwrap_or(0)].clone())
    };
    divergence_against(&at, model, sequences, batch, bar)
}

fn divergence_against(
    base_logits: &dyn Fn(&[Vec<u32>]) -> Result<Tensor>,
    model: &Exaone4,
    sequences: &[Vec<u32>],
    batch: usize,
    bar: Option<&ProgressBar>,
) -> Result<(Divergence, Vec<Vec<f32>>)> {
    let mut kls: Vec<f32> = vec![];
    let mut agree = 0usize;
    let mut seq_means = vec![];
    let mut per_sequence: Vec<Vec<f32>> = vec![];
    if let Some(b) = bar {
        b.set_length(sequences.len() as u64);
    }
    for group in sequences.chunks(batch.max(1)) {
        let t = group[0].len();
        let flat: Vec<u32> = group.iter().flat_map(|s| s.iter().copied()).collect();
        let p = base_logits(group)?;
        let x_model = Tensor::from_vec(flat, (group.len(), t), model.device())?;
        let q = model
            .forward(&x_model, None)?
            .reshape((group.len() * t, ()))?
            .to_device(p.device())?;
        let (kl, same) = kl_rows(&p, &q)?;
        for s in kl.chunks(t) {
            seq_means.push(s.iter().map(|&v| v as f64).sum::<f64>() / t as f64);
            per_sequence.push(s.to_vec());
        }
        agree += same.iter().filter(|&&x| x).count();
        kls.extend(kl);
        if let Some(b) = bar {
            b.inc(group.len() as u64);
        }
    }
    let n = kls.len();
    if n == 0 {
        candle_core::bail!("divergence: no sequences");
    }
    // a model with NaN or inf logits (broken weights) has no KL: said, and NaN, never 0
    // (`f64::max(NaN, 0.0)` is 0.0, which read as "identical to the base")
    let bad = kls.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        eprintln!(
            "warning: KL is not finite at {bad} of {n} positions (the model's logits hold NaN or inf: \
             `exaone-compress package --check` finds weights that do); KL and top-1 are reported as NaN"
        );
        let nan = f64::NAN;
        let d = Divergence {
            tokens: n,
            kl_mean: nan,
            kl_stderr: nan,
            kl_p99: nan,
            top1: nan,
        };
        return Ok((d, per_sequence));
    }
    let mean = kls.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let m = seq_means.len() as f64;
    let var = seq_means.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (m - 1.0).max(1.0);
    let mut sorted = kls.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p99 = sorted[((n as f64 * 0.99) as usize).min(n - 1)] as f64;
    let d = Divergence {
        tokens: n,
        kl_mean: mean.max(0.0),
        kl_stderr: (var / m).sqrt(),
        kl_p99: p99.max(0.0),
        top1: agree as f64 / n as f64,
    };
    Ok((d, per_sequence))
}
