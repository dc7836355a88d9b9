//! Layer drop: which layers to remove (by index, uniformly, first/last, by Block Influence, by
//! the measured KL of removing each), and the removal itself with the config surgery loaders
//! demand (`num_hidden_layers` and `layer_types` together, layers renumbered).

use candle_core::{Result, Tensor, D};

use crate::compress::distill::kl_rows;
use crate::model::Exaone4;

/// How to choose the layers to drop.
#[derive(Clone, Debug, PartialEq)]
pub enum DropRule {
    Explicit(Vec<usize>),
    /// `n` layers spread evenly (n = 1 of 30 drops layer 15, as the reference pipeline did)
    Uniform(usize),
    First(usize),
    Last(usize),
    /// the `n` layers of lowest Block Influence (ShortGPT) on calibration text
    BlockInfluence(usize),
    /// the `n` layers whose removal alone costs the least KL to the full model
    MeasuredKl(usize),
}

/// Evenly spaced indices: round((k+1)·L/(n+1)) for k < n.
pub fn uniform(layers: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|k| (((k + 1) * layers) as f64 / (n + 1) as f64).round() as usize)
        .map(|i| i.min(layers - 1))
        .collect()
}

/// `scores` where every layer's is finite; else an error naming the layers whose score is not
/// (a model whose weights hold NaN or inf computes NaN scores, and ranking them would pick
/// layers at random).
fn finite_scores(scores: Vec<f64>, what: &str) -> Result<Vec<f64>> {
    let bad: Vec<usize> = (0..scores.len())
        .filter(|&i| !scores[i].is_finite())
        .collect();
    if bad.is_empty() {
        return Ok(scores);
    }
    Err(candle_core::Error::Msg(format!(
        "{what}: the scores of layer(s) {bad:?} are not finite, so the layers cannot be ranked: the model computes NaN or inf (its weights or config are broken; `exaone-compress package --model DIR --check` names what)"
    )))
}

/// The indices of the `n` smallest scores, sorted.
pub fn lowest(scores: &[f64], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut out: Vec<usize> = idx.into_iter().take(n).collect();
    out.sort();
    out
}

/// BI_i = 1 − mean over tokens of cos(h_in, h_out) of layer i, on `ids` [b, t].
pub fn block_influence(model: &Exaone4, ids: &Tensor) -> Result<Vec<f64>> {
    let hs = model.layer_inputs(ids)?;
    let mut bi = vec![];
    for w in hs.windows(2) {
        let (a, b) = (
            w[0].to_dtype(candle_core::DType::F32)?,
            w[1].to_dtype(candle_core::DType::F32)?,
        );
        let dot = (&a * &b)?.sum(D::Minus1)?;
        let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
        let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
        let cos = (dot / (na * nb)?.clamp(1e-12, f64::MAX)?)?;
        bi.push(1.0 - cos.mean_all()?.to_scalar::<f32>()? as f64);
    }
    Ok(bi)
}

/// KL(full ‖ full without layer i) on `sequences`, for every i.
pub fn drop_one_kl(model: &Exaone4, sequences: &[Vec<u32>], batch: usize) -> Result<Vec<f64>> {
    let n = model.layers.len();
    let mut out = Vec::with_capacity(n);
    // a forward of the model per layer: minutes on a CPU for the 1.2B
    let bar = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "drop-one KL [{elapsed_precise}] {wide_bar} layer {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    for i in 0..n {
        let kept: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        let student = model.with_layers(&kept)?;
        out.push(mean_kl(model, &student, sequences, batch)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Mean over every position of KL(teacher ‖ student) on `sequences` (each the same length).
fn mean_kl(
    teacher: &Exaone4,
    student: &Exaone4,
    sequences: &[Vec<u32>],
    batch: usize,
) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for group in sequences.chunks(batch.max(1)) {
        let t = group[0].len();
        let flat: Vec<u32> = group.iter().flat_map(|s| s.iter().copied()).collect();
        let x = Tensor::from_vec(flat, (group.len(), t), teacher.device())?;
        let p = teacher.forward(&x, None)?.reshape((group.len() * t, ()))?;
        let q = student.forward(&x, None)?.reshape((group.len() * t, ()))?;
        let (kl, _) = kl_rows(&p, &q)?;
        // one running sum in position order, as `eval::divergence` takes its mean
        for v in &kl {
            sum += *v as f64;
        }
        n += kl.len();
    }
    // rounding can leave a tiny negative mean; NaN (a broken model) must stay NaN, which
    // f64::max would turn into 0, the best score
    let mean = sum / n.max(1) as f64;
    Ok(if mean < 0.0 { 0.0 } else { mean })
}

/// Resolves a rule to layer indices (sorted, unique), checking them.
pub fn choose(model: &Exaone4, rule: &DropRule, calib: Option<&[Vec<u32>]>) -> Result<Vec<usize>> {
    let n = model.layers.len();
    let need = |k: usize| -> Result<()> {
        if k >= n {
            return Err(candle_core::Error::Msg(format!(
                "cannot drop {k} of {n} layers: at least one must remain"
            )));
        }
        Ok(())
    };
    let calib_ids = || -> Result<&[Vec<u32>]> {
        calib
            .filter(|c| !c.is_empty())
            .ok_or_else(|| candle_core::Error::Msg("this drop rule needs calibration text".into()))
    };
    let mut idx = match rule {
        DropRule::Explicit(v) => {
            if let Some(bad) = v.iter().find(|&&i| i >= n) {
                return Err(candle_core::Error::Msg(format!(
                    "layer {bad} does not exist: the model's {n} layers are numbered 0 to {}",
                    n - 1
                )));
            }
            v.clone()
        }
        DropRule::Uniform(k) => {
            need(*k)?;
            uniform(n, *k)
        }
        DropRule::First(k) => {
            need(*k)?;
            (0..*k).collect()
        }
        DropRule::Last(k) => {
            need(*k)?;
            (n - k..n).collect()
        }
        DropRule::BlockInfluence(k) => {
            need(*k)?;
            let c = calib_ids()?;
            let t = c[0].len();
            let flat: Vec<u32> = c.iter().flat_map(|s| s.iter().copied()).collect();
            let ids = Tensor::from_vec(flat, (c.len(), t), model.device())?;
            lowest(
                &finite_scores(block_influence(model, &ids)?, "Block Influence")?,
                *k,
            )
        }
        DropRule::MeasuredKl(k) => {
            need(*k)?;
            let kl = drop_one_kl(model, calib_ids()?, 8)?;
            lowest(&finite_scores(kl, "drop-one KL")?, *k)
        }
    };
    idx.sort();
    idx.dedup();
    if idx.len() >= n {
        return Err(candle_core::Error::Msg(format!(
            "cannot drop all {n} layers: at least one must remain"
        )));
    }
    Ok(idx)
}
