//! A projection of serving speed on the evaluation's GPU (an NVIDIA L4) from datasheet figures:
//! a roofline per serving step, summed over a workload's steps, turned into the competition's
//! SpeedNorm. Nothing is fitted to leaderboard scores; [`compare_with_public`] only sets the
//! projection beside them. Per step (vLLM's continuous batching, see `crate::serve::scheduler`):
//!
//! ```text
//! bytes = Linear weights (read once per step) + lm_head (bf16) + KV read and written
//!       + activations (tokens × Σ (in + out)·2 B, + 2·in B where activations are quantized)
//!       + elementwise traffic per token
//! flops = Σ_linear 2·in·out·tokens at the Linear's rate + 2·vocab·hidden per sequence (logits)
//!       + 4·layers·q_heads·head_dim per (query, key) pair of attention (bf16)
//! time  = max(bytes ÷ (bandwidth·eff_bw), Σ_rate flops ÷ (rate·eff_tc)) + step overhead
//! T     = Σ time ÷ generated tokens;   SpeedNorm = (T_base − T_variant) ÷ T_base  (target.md)
//! ```
//!
//! ([`Roofline::PerKernel`] is the alternative bound: that max per kernel class, summed.) The
//! steps come from the crate's scheduler ([`StepTrace::schedule`]) or from a serving run's
//! measured steps ([`StepTrace::from_run`]); the efficiencies are assumed or carried from rates
//! measured on another GPU ([`Efficiencies::carried`]). Not modelled: the KV pool's size per
//! variant (give each variant its own trace for that), L2 hits, sliding windows, the L4's power
//! throttling, and kernel-specific losses (e.g. Marlin's dequantization at large batch).
//!
//! Parts: `gpu` (datasheets, efficiencies), `cost` (a variant per step), `trace` (the steps),
//! `public` (the comparison with target.md's results); here the roofline and the projection.

mod cost;
mod gpu;
mod public;
mod trace;

use serde::Serialize;

pub use cost::{parse_scheme_word, scheme_kind, LinearCost, VariantCost};
pub use gpu::{DeviceRates, Efficiencies, GpuSpec, Rate, L4_EFF_BW, L4_EFF_TC, STEP_OVERHEAD_S};
pub use public::{
    compare_with_public, kendall_tau_b, ComparedRow, PublicComparison, LEVEL, PUBLIC_RESULTS,
};
pub use trace::{StepLoad, StepTrace};

use crate::error::{Error, Result};

/// How a step's kernels share the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Roofline {
    /// `max(all bytes ÷ bandwidth, all FLOPs ÷ rates)` for the whole step: perfect overlap
    WholeStep,
    /// that max per kernel class (Linears, lm_head, attention), summed: kernels in sequence
    PerKernel,
}

/// One step's projected time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepTime {
    pub secs: f64,
    /// of `secs`, the part where moving bytes took longer than the arithmetic
    pub memory_bound_secs: f64,
    pub bytes: f64,
}

/// The time of one step of `v` on `gpu` (formulas in the module doc).
pub fn step_time(gpu: &GpuSpec, v: &VariantCost, load: &StepLoad, roofline: Roofline) -> StepTime {
    let tokens = load.tokens() as f64;
    let bw = gpu.bandwidth();
    let bf16 = gpu.rate(Rate::Bf16);
    // (bytes, compute secs) per kernel class: Linears, lm_head, attention
    let mut classes = [(0.0, 0.0); 3];
    if load.tokens() > 0 {
        classes[0].0 = tokens * v.elementwise_bytes_per_token;
        for l in &v.linears {
            classes[0].0 += l.weight_bytes + tokens * l.act_bytes_per_token();
            classes[0].1 += tokens * l.flops_per_token() / gpu.rate(l.rate);
        }
    }
    if load.seqs > 0 {
        let (h, seqs) = (&v.lm_head, load.seqs as f64);
        let bytes = h.weight_bytes + seqs * h.act_bytes_per_token();
        classes[1] = (bytes, seqs * h.flops_per_token() / bf16);
    }
    let kv = (load.kv_tokens_read as f64 + tokens) * v.kv_bytes_per_token;
    classes[2] = (kv, load.attn_pairs as f64 * v.attn_flops_per_pair / bf16);
    let bytes: f64 = classes.iter().map(|c| c.0).sum();
    let (secs, memory_bound_secs) = match roofline {
        Roofline::WholeStep => {
            let (m, c) = (bytes / bw, classes.iter().map(|c| c.1).sum::<f64>());
            (m.max(c), if m >= c { m } else { 0.0 })
        }
        Roofline::PerKernel => classes.iter().fold((0.0, 0.0), |(s, mb), c| {
            let m = c.0 / bw;
            (s + m.max(c.1), mb + if m >= c.1 { m } else { 0.0 })
        }),
    };
    StepTime {
        secs: secs + gpu.step_overhead_s,
        memory_bound_secs,
        bytes,
    }
}

/// One variant's projected speed on a workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Projection {
    pub name: String,
    /// `bf16|w4a16|w8a8|fp8|other`
    pub kind: String,
    pub weight_bytes: f64,
    /// Σ step time
    pub secs: f64,
    /// T: `secs ÷ generated tokens`
    pub secs_per_token: f64,
    pub tokens_per_sec: f64,
    /// `(T_base − T) ÷ T_base`; 0 for the base
    pub speed_norm: f64,
    /// share of `secs` in which memory traffic, not arithmetic, set the time
    pub memory_bound_share: f64,
}

impl Projection {
    /// SpeedNorm against `base`: `(T_base − T) ÷ T_base` (target.md's speed term).
    pub fn speed_norm_against(&self, base: &Projection) -> f64 {
        (base.secs_per_token - self.secs_per_token) / base.secs_per_token
    }
}

/// One variant's projected time on one trace (its SpeedNorm left at 0: set it with
/// [`Projection::speed_norm_against`] the base's). What a study's speed column needs: a
/// variant's cost and a workload's steps. Errors: an invalid GPU or an empty trace.
pub fn project_variant(
    gpu: &GpuSpec,
    v: &VariantCost,
    trace: &StepTrace,
    roofline: Roofline,
) -> Result<Projection> {
    gpu.check()?;
    if trace.steps.is_empty() || trace.generated_tokens == 0 {
        return Err(invalid(format!(
            "projection of `{}`: no steps or no generated token",
            v.name
        )));
    }
    let times = trace.steps.iter().map(|s| step_time(gpu, v, s, roofline));
    let (secs, mb) = times.fold((0.0, 0.0), |a, t| (a.0 + t.secs, a.1 + t.memory_bound_secs));
    let t = secs / trace.generated_tokens as f64;
    Ok(Projection {
        name: v.name.clone(),
        kind: v.kind().to_string(),
        weight_bytes: v.weight_bytes(),
        secs,
        secs_per_token: t,
        tokens_per_sec: 1.0 / t,
        speed_norm: 0.0,
        memory_bound_share: if secs > 0.0 { mb / secs } else { 0.0 },
    })
}

/// Projects each variant on its own trace (a serving run's, say); the first is the base
/// (SpeedNorm 0), every other SpeedNorm relative to it. Errors: none given, an invalid GPU or
/// an empty trace.
pub fn project_each(
    gpu: &GpuSpec,
    runs: &[(&VariantCost, &StepTrace)],
    roofline: Roofline,
) -> Result<Vec<Projection>> {
    let Some(&(base, bt)) = runs.first() else {
        return Err(invalid("projection: no variant".into()));
    };
    let b = project_variant(gpu, base, bt, roofline)?;
    let mut out = vec![b.clone()];
    for &(v, t) in &runs[1..] {
        let mut p = project_variant(gpu, v, t, roofline)?;
        p.speed_norm = p.speed_norm_against(&b);
        out.push(p);
    }
    Ok(out)
}

/// Projects `base` and each of `variants` on one workload; the base comes first (SpeedNorm 0),
/// every other SpeedNorm relative to it. Errors: an invalid GPU or an empty trace.
pub fn project(
    gpu: &GpuSpec,
    base: &VariantCost,
    variants: &[VariantCost],
    trace: &StepTrace,
    roofline: Roofline,
) -> Result<Vec<Projection>> {
    let runs: Vec<_> = std::iter::once(base)
        .chain(variants)
        .map(|v| (v, trace))
        .collect();
    project_each(gpu, &runs, roofline)
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}
