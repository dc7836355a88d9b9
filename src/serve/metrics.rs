//! What a serving run measured, as the competition defines speed: T = generation time ÷
//! generated tokens over the whole workload (loading excluded), beside what explains it —
//! batch sizes over time, prefill vs decode time, KV blocks in use, preemptions — and the
//! output lengths (a variant that rambles is slower per task even at equal T).

use std::path::Path;

use serde::Serialize;

use super::scheduler::{Finish, Sequence, Step};
use super::workload::Request;
use crate::error::Result;
use crate::record::{Results, Variant};

/// One request's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RequestResult {
    pub id: String,
    pub kind: String,
    pub prompt_len: usize,
    pub output: Vec<u32>,
    pub output_len: usize,
    /// `None` only if the run stopped before the request ended
    pub finish: Option<Finish>,
    /// the refusal, when the request could not be served
    pub error: Option<String>,
    pub preemptions: usize,
    pub first_step: Option<usize>,
    pub last_step: Option<usize>,
}

impl RequestResult {
    /// The outcome of `r` from its final sequence state (errors kept as text, so a result
    /// file says why a request produced nothing).
    pub fn of(r: &Request, s: &Sequence) -> Self {
        let error = match &s.finish {
            Some(Finish::Error(e)) => Some(e.clone()),
            _ => None,
        };
        Self {
            id: r.id.clone(),
            kind: r.kind.clone(),
            prompt_len: s.prompt_len,
            output: s.output().to_vec(),
            output_len: s.output().len(),
            finish: s.finish.clone(),
            error,
            preemptions: s.preemptions,
            first_step: s.first_step,
            last_step: s.last_step,
        }
    }
}

/// One step: the running-batch size over time and what it cost.
#[derive(Clone, Debug, Serialize)]
pub struct StepStats {
    pub index: usize,
    /// sequences computed in the step (the batch)
    pub seqs: usize,
    pub decode_seqs: usize,
    pub prefill_seqs: usize,
    pub decode_tokens: usize,
    /// prompt chunks and recomputation after preemption
    pub prefill_tokens: usize,
    /// running after scheduling, waiting after the step
    pub running: usize,
    pub waiting: usize,
    pub kv_blocks_used: usize,
    pub preempted: usize,
    /// rows whose logits were computed (sequences that chose a next token)
    pub sampled: usize,
    /// KV entries (tokens × layers' worth) attention read: each decoding token reads its whole
    /// context; each 64-query tile of a prompt chunk reads the context up to the chunk's end
    pub kv_tokens_read: usize,
    /// (query, key) pairs attention scored: causal, so a chunk's query i sees start + i + 1 keys
    pub attn_pairs: usize,
    pub secs: f64,
}

impl StepStats {
    /// A step's row; `running` and `blocks` are taken right after scheduling, when the step's
    /// batch and KV are at their largest.
    pub fn of(step: &Step, running: usize, waiting: usize, blocks: usize, secs: f64) -> Self {
        let decode_seqs = step.chunks.iter().filter(|c| c.decode).count();
        Self {
            index: step.index,
            seqs: step.chunks.len(),
            decode_seqs,
            prefill_seqs: step.chunks.len() - decode_seqs,
            decode_tokens: step.decode_tokens(),
            prefill_tokens: step.prefill_tokens(),
            running,
            waiting,
            kv_blocks_used: blocks,
            preempted: step.preempted.len(),
            sampled: step.chunks.iter().filter(|c| c.sample).count(),
            kv_tokens_read: step
                .chunks
                .iter()
                .map(|c| c.end * c.len().div_ceil(64))
                .sum(),
            attn_pairs: step
                .chunks
                .iter()
                .map(|c| c.len() * c.start + c.len() * (c.len() + 1) / 2)
                .sum(),
            secs,
        }
    }
}

/// The run's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub requests: usize,
    pub errors: usize,
    pub steps: usize,
    /// wall time from the first step to the last (loading and warm-up excluded)
    pub generation_secs: f64,
    pub generated_tokens: usize,
    /// T: generation time ÷ generated tokens (the competition's figure); 0 if none generated
    pub secs_per_token: f64,
    pub tokens_per_sec: f64,
    /// time of steps that computed any prefill (mixed steps count here) and of pure-decode steps
    pub prefill_secs: f64,
    pub decode_secs: f64,
    pub prefill_share: f64,
    pub prompt_tokens: usize,
    /// prefill tokens computed, recomputation included
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    pub preemptions: usize,
    pub mean_batch: f64,
    pub max_batch: usize,
    pub kv_blocks: usize,
    pub peak_kv_blocks: usize,
    pub output_len_mean: f64,
    pub output_len_std: f64,
    pub output_len_p50: f64,
    pub output_len_p90: f64,
    pub output_len_max: usize,
}

/// Everything a run measured: per request, per step, totals.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub requests: Vec<RequestResult>,
    pub steps: Vec<StepStats>,
    pub totals: Totals,
}

fn quantile(sorted: &[usize], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * (pos - lo as f64)
}

impl RunReport {
    /// Totals from the per-request and per-step rows, so the figures can never disagree with
    /// the series they summarise. Refused requests count in `errors`, not in output lengths.
    pub fn new(
        requests: Vec<RequestResult>,
        steps: Vec<StepStats>,
        generation_secs: f64,
        preemptions: usize,
        kv_blocks: usize,
        peak_kv_blocks: usize,
    ) -> Self {
        let served: Vec<&RequestResult> = requests.iter().filter(|r| r.error.is_none()).collect();
        let mut lens: Vec<usize> = served.iter().map(|r| r.output_len).collect();
        lens.sort_unstable();
        let generated: usize = lens.iter().sum();
        let n = lens.len().max(1) as f64;
        let mean = generated as f64 / n;
        let var = lens.iter().map(|&l| (l as f64 - mean).powi(2)).sum::<f64>() / n;
        let prefill_secs: f64 = steps
            .iter()
            .filter(|s| s.prefill_tokens > 0)
            .map(|s| s.secs)
            .sum();
        let decode_secs: f64 = steps
            .iter()
            .filter(|s| s.prefill_tokens == 0)
            .map(|s| s.secs)
            .sum();
        let step_secs = prefill_secs + decode_secs;
        let per = |x: f64, d: f64| if d > 0.0 { x / d } else { 0.0 };
        let totals = Totals {
            requests: requests.len(),
            errors: requests.len() - served.len(),
            steps: steps.len(),
            generation_secs,
            generated_tokens: generated,
            secs_per_token: per(generation_secs, generated as f64),
            tokens_per_sec: per(generated as f64, generation_secs),
            prefill_secs,
            decode_secs,
            prefill_share: per(prefill_secs, step_secs),
            prompt_tokens: served.iter().map(|r| r.prompt_len).sum(),
            prefill_tokens: steps.iter().map(|s| s.prefill_tokens).sum(),
            decode_tokens: steps.iter().map(|s| s.decode_tokens).sum(),
            preemptions,
            mean_batch: per(
                steps.iter().map(|s| s.seqs).sum::<usize>() as f64,
                steps.len() as f64,
            ),
            max_batch: steps.iter().map(|s| s.seqs).max().unwrap_or(0),
            kv_blocks,
            peak_kv_blocks,
            output_len_mean: mean,
            output_len_std: var.sqrt(),
            output_len_p50: quantile(&lens, 0.5),
            output_len_p90: quantile(&lens, 0.9),
            output_len_max: lens.last().copied().unwrap_or(0),
        };
        Self {
            requests,
            steps,
            totals,
        }
    }

    /// The report as JSON (requests, steps, totals), written atomically: the per-step series a
    /// chart of batch size or KV use over time is drawn from.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let s = serde_json::to_string_pretty(self).expect("a report serializes");
        crate::fs::write_atomic(path, s.as_bytes())
    }

    /// Records the totals as rows of `results` for `variant`, named `serve_<metric>`, or
    /// `serve_<workload>_<metric>` when `workload` names one (e.g. `mc`), so several workloads
    /// share a table. The output length carries its standard deviation as spread.
    pub fn record(&self, results: &mut Results, variant: &Variant, workload: &str) {
        let prefix = match workload {
            "" => "serve_".to_string(),
            w => format!("serve_{w}_"),
        };
        let t = &self.totals;
        let rows: [(&str, f64, Option<f64>, &str); 20] = [
            ("secs_per_token", t.secs_per_token, None, "s"),
            ("tokens_per_sec", t.tokens_per_sec, None, "tokens/s"),
            ("generation_secs", t.generation_secs, None, "s"),
            (
                "generated_tokens",
                t.generated_tokens as f64,
                None,
                "tokens",
            ),
            ("requests", t.requests as f64, None, ""),
            ("errors", t.errors as f64, None, ""),
            ("steps", t.steps as f64, None, ""),
            ("prefill_share", t.prefill_share, None, ""),
            ("prefill_secs", t.prefill_secs, None, "s"),
            ("decode_secs", t.decode_secs, None, "s"),
            ("prefill_tokens", t.prefill_tokens as f64, None, "tokens"),
            ("decode_tokens", t.decode_tokens as f64, None, "tokens"),
            ("preemptions", t.preemptions as f64, None, ""),
            ("mean_batch", t.mean_batch, None, "seqs"),
            ("max_batch", t.max_batch as f64, None, "seqs"),
            ("peak_kv_blocks", t.peak_kv_blocks as f64, None, "blocks"),
            ("kv_blocks", t.kv_blocks as f64, None, "blocks"),
            (
                "output_len_mean",
                t.output_len_mean,
                Some(t.output_len_std),
                "tokens",
            ),
            ("output_len_p90", t.output_len_p90, None, "tokens"),
            ("output_len_max", t.output_len_max as f64, None, "tokens"),
        ];
        for (name, value, spread, unit) in rows {
            results.add(variant, &format!("{prefix}{name}"), value, spread, unit);
        }
    }
}
