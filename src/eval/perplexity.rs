//! Perplexity and bits per byte over a token stream, with a sliding window so long texts are
//! scored with context, and the spread over windows. [`perplexity_per_token`] also returns every
//! scored token's NLL, window by window, for paired comparisons (`eval::paired`).

use candle_core::{DType, Device, Result, Tensor};
use indicatif::ProgressBar;

use crate::data::TokenStream;
use crate::model::Exaone4;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Perplexity {
    pub tokens: usize,
    pub nll_sum: f64,
    /// exp(mean NLL per token)
    pub ppl: f64,
    /// NLL in bits per UTF-8 byte of text (comparable across tokenizers)
    pub bits_per_byte: f64,
    /// standard error of the mean NLL, from the spread of per-window means
    pub nll_stderr: f64,
}

/// Scores every token of `stream` (but the first) once. Windows of `window` tokens advance by
/// `stride`; each window scores only tokens not scored by the previous one, so every token sees
/// at least `window − stride` tokens of context. `batch` windows run at once.
pub fn perplexity(
    model: &Exaone4,
    stream: &TokenStream,
    window: usize,
    stride: usize,
    batch: usize,
    bar: Option<&ProgressBar>,
) -> Result<Perplexity> {
    Ok(perplexity_per_token(model, stream, window, stride, batch, bar)?.0)
}

/// [`perplexity`] (the same figures, bit for bit) and the NLL (nats) of every scored token,
/// grouped by the window that scored it, in stream order: two models scored on the same stream
/// with the same `window` and `stride` give NLLs of the same tokens at the same positions, the
/// windows being the natural clusters of neighbouring (correlated) tokens.
pub fn perplexity_per_token(
    model: &Exaone4,
    stream: &TokenStream,
    window: usize,
    stride: usize,
    batch: usize,
    bar: Option<&ProgressBar>,
) -> Result<(Perplexity, Vec<Vec<f32>>)> {
    let ids = &stream.ids;
    if ids.len() < 2 || stride == 0 || stride > window {
        candle_core::bail!("perplexity: need ≥ 2 tokens and 0 < stride ≤ window");
    }
    // (start, first scored position within the window)
    let mut spans = vec![];
    let mut start = 0;
    loop {
        let end = (start + window).min(ids.len());
        let first = if start == 0 { 1 } else { window - stride };
        spans.push((start, end, first));
        if end == ids.len() {
            break;
        }
        start += stride;
    }
    let dev = model.device().clone();
    let mut nll_sum = 0f64;
    let mut count = 0usize;
    let mut window_means = vec![];
    let mut nlls: Vec<Vec<f32>> = vec![];
    if let Some(b) = bar {
        b.set_length(spans.len() as u64);
    }
    for group in spans.chunks(batch) {
        // equal-length windows batch together; the last (short) one runs alone
        for same in group.chunk_by(|a, b| a.1 - a.0 == b.1 - b.0) {
            let len = same[0].1 - same[0].0;
            let flat: Vec<u32> = same
                .iter()
                .flat_map(|&(s, e, _)| ids[s..e].iter().copied())
                .collect();
            let x = Tensor::from_vec(flat, (same.len(), len), &dev)?;
            let logits = model.forward(&x, None)?; // [b, len, V] f32
            let lp = crate::runtime::cpu_pointwise::log_softmax_or_candle(&logits.narrow(
                1,
                0,
                len - 1,
            )?)?;
            let tgt = x
                .narrow(1, 1, len - 1)?
                .to_dtype(DType::U32)?
                .contiguous()?
                .unsqueeze(2)?;
            let picked = lp
                .gather(&tgt, 2)?
                .squeeze(2)?
                .to_device(&Device::Cpu)?
                .to_vec2::<f32>()?;
            for (row, &(_, _, first)) in picked.iter().zip(same) {
                // position p of `picked` predicts token p+1 of the window
                let scored = &row[first - 1..];
                let s: f64 = scored.iter().map(|&v| -(v as f64)).sum();
                nll_sum += s;
                count += scored.len();
                window_means.push(s / scored.len() as f64);
                // −v in f32 is exact, so (−v) as f64 is the −(v as f64) summed above
                nlls.push(scored.iter().map(|&v| -v).collect());
            }
            if let Some(b) = bar {
                b.inc(same.len() as u64);
            }
        }
    }
    let mean = nll_sum / count as f64;
    let n = window_means.len() as f64;
    let var = window_means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let p = Perplexity {
        tokens: count,
        nll_sum,
        ppl: mean.exp(),
        bits_per_byte: nll_sum / std::f64::consts::LN_2 / stream.bytes as f64,
        nll_stderr: (var / n).sqrt(),
    };
    Ok((p, nlls))
}

/// A unigram model of the training tokens (add-one smoothed) scored on `test`: the floor any
/// language model must beat by far.
pub fn unigram_perplexity(train: &[u32], test: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![1f64; vocab];
    for &t in train {
        counts[t as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let nll: f64 = test
        .iter()
        .map(|&t| -(counts[t as usize] / total).ln())
        .sum();
    (nll / test.len() as f64).exp()
}
