//! The studies' speed term (SpeedNorm): what a variant would do to the evaluation's time per
//! generated token, not to batch-1 weight bytes. The evaluation serves EXAONE-4.0-1.2B with vLLM
//! on one NVIDIA L4, every prompt handed to the engine at once (`../shared/spec/target.md`), and
//! there a step's time is set by batched GEMMs, KV traffic and prefill as much as by weight bytes.
//!
//! So the variant's shape — its share of the base's decoder layers and the scheme its Linears
//! are stored in (read from its method, [`scheme_word_of`]) — is carried onto EXAONE-4.0-1.2B's
//! config and projected with [`crate::eval::projection`] on the L4's datasheet, over the steps
//! the crate's scheduler plans for the evaluation's multiple-choice shape ([`WORKLOAD_REQUESTS`]
//! prompts of 150–600 tokens at once, [`WORKLOAD_NEW_TOKENS`] new tokens each, vLLM's default
//! limits: 256 sequences, 8,192 tokens a step). Every variant shares that trace (the L4's KV pool
//! holds the whole workload, so no variant's pool changes its steps). The base may be a stand-in
//! (the default 8.6 M model): its quality columns measure the recipe, this column the recipe's
//! effect on the model that is served. Rows per variant:
//!
//! | metric | what |
//! |---|---|
//! | `l4_layers` | decoder layers of the projected 1.2B (base's share, rounded) |
//! | `l4_secs_per_token` | projected T on the L4 |
//! | `l4_speed_norm` | `(T_base − T) ÷ T_base` (target.md) |
//!
//! and on the base's rows the projection's parameters: `l4_steps`, `l4_requests`,
//! `l4_new_tokens` (the workload),
//! `l4_eff_bandwidth`, `l4_eff_bf16`, `l4_eff_int8` (fractions of the L4's peaks) and
//! `l4_eff_measured` (1: carried from rates measured on this run's GPU, 0: assumed).
//!
//! No L4 is measured, so the efficiencies are a model's input, and they move the ranking (int8
//! tensor cores help compute-bound prefill steps, int4 weights only the bytes). The sensitivity
//! rows say how much: the projection again at every set of [`SENSITIVITY_BANDWIDTH`] ×
//! [`SENSITIVITY_GEMM`] (bf16/fp8) × [`SENSITIVITY_GEMM`] (int8) and at the set used, per variant
//!
//! | metric | what |
//! |---|---|
//! | `l4_speed_norm_lo`, `l4_speed_norm_hi` | the least and most SpeedNorm over those sets |
//! | `l4_best_share` | share of the sets where its point Score (½·PerfNorm + ½·SpeedNorm) is the best |
//!
//! and on the base's rows `l4_sens_sets` (how many sets) and the grid's ends,
//! `l4_sens_bandwidth_lo`/`_hi` and `l4_sens_gemm_lo`/`_hi`.

use serde_json::json;

use crate::error::Result;
use crate::eval::projection::{
    project_variant, Efficiencies, GpuSpec, Projection, Roofline, StepTrace, VariantCost,
};
use crate::model::Exaone4Config;
use crate::record::{Results, Variant};
use crate::serve::workload::multiple_choice;
use crate::serve::{GenOptions, SchedulerConfig, Sources, DEFAULT_BLOCK_SIZE};

/// Prompts of the projected workload, all handed to the engine at once.
pub const WORKLOAD_REQUESTS: usize = 256;
/// New tokens per prompt (stop ids off: every request generates exactly this many).
pub const WORKLOAD_NEW_TOKENS: usize = 256;
/// The workload's seed (prompt lengths drawn from the shipped text).
const WORKLOAD_SEED: u64 = 0;
/// As `study::serving::l4`: a step's kernels in sequence, each at the slower of bytes and FLOPs.
const ROOFLINE: Roofline = Roofline::PerKernel;

/// Fractions of the L4's peak bandwidth the sensitivity rows span.
pub const SENSITIVITY_BANDWIDTH: [f64; 3] = [0.6, 0.75, 0.9];
/// Fractions of the L4's peak tensor throughput the sensitivity rows span, for bf16/fp8 and for
/// int8 GEMMs independently: around the assumed 0.5 and what an H200 carries (0.6–0.8).
pub const SENSITIVITY_GEMM: [f64; 3] = [0.35, 0.55, 0.8];

/// The scheme word (`bf16|w4a16|w8a8|fp8`) of a variant's method as the studies write it: the
/// last scheme named ([`crate::checkpoint::Scheme::name`]: `W4A16-g128-sym`, `W8A8-int8`,
/// `FP8-dynamic`; W4A16 at any group or symmetry), bf16 when none is.
pub fn scheme_word_of(method: &str) -> &'static str {
    let m = method.to_ascii_uppercase();
    let at = |needle: &str| m.rfind(needle);
    [
        ("w4a16", at("W4A16")),
        ("w8a8", at("W8A8")),
        ("fp8", at("FP8")),
    ]
    .into_iter()
    .filter_map(|(w, i)| i.map(|i| (i, w)))
    .max()
    .map_or("bf16", |(_, w)| w)
}

/// The evaluation's workload planned on the L4, and the projection of a variant on it.
pub struct L4Speed {
    gpu: GpuSpec,
    trace: StepTrace,
    target: Exaone4Config,
    base: Projection,
    pub efficiencies: Efficiencies,
}

impl L4Speed {
    /// Plans the workload (the shipped test text, the default model's tokenizer) and projects
    /// the bf16 1.2B on it. Errors: the shipped text or tokenizer unreadable, an invalid
    /// efficiency.
    pub fn new(efficiencies: Efficiencies) -> Result<Self> {
        let (tok, _) = crate::data::tokenizer_for_model(&crate::data::default_model_dir())?;
        let opts = GenOptions {
            n: WORKLOAD_REQUESTS,
            seed: WORKLOAD_SEED,
            max_new_tokens: WORKLOAD_NEW_TOKENS,
            stop_ids: vec![],
        };
        let w = multiple_choice(&Sources::shipped("test")?, &tok, &opts)?;
        let target = Exaone4Config::exaone_4_0_1_2b();
        let max_len = w
            .requests
            .iter()
            .map(|r| r.prompt_ids.len() + r.max_new_tokens)
            .max()
            .unwrap_or(1);
        let blocks = w.kv_blocks(DEFAULT_BLOCK_SIZE).max(1);
        let cfg = SchedulerConfig::vllm_defaults(blocks, max_len);
        let trace = StepTrace::schedule(&w, cfg, target.vocab_size)?;
        let gpu = GpuSpec::l4().with_efficiencies(&efficiencies);
        let bf16 = VariantCost::from_word("bf16", &target, "bf16")?;
        let base = project_variant(&gpu, &bf16, &trace, ROOFLINE)?;
        Ok(Self {
            gpu,
            trace,
            target,
            base,
            efficiencies,
        })
    }

    /// The projected 1.2B's layer count for a variant with `layers` of the base's `base_layers`.
    pub fn layers(&self, layers: usize, base_layers: usize) -> usize {
        let n = self.target.num_hidden_layers;
        let share = layers as f64 / base_layers.max(1) as f64;
        ((n as f64 * share).round() as usize).clamp(1, n)
    }

    /// The 1.2B with `layers` decoder layers and its Linears under `scheme` (a word of
    /// [`scheme_word_of`]), projected; its SpeedNorm against the bf16 1.2B.
    pub fn project(&self, name: &str, layers: usize, scheme: &str) -> Result<Projection> {
        self.project_on(&self.gpu, &self.base, name, layers, scheme)
    }

    /// As [`project`](Self::project) on `gpu`, against `base` (the bf16 1.2B projected there).
    fn project_on(
        &self,
        gpu: &GpuSpec,
        base: &Projection,
        name: &str,
        layers: usize,
        scheme: &str,
    ) -> Result<Projection> {
        let kept: Vec<usize> = (0..layers.min(self.target.num_hidden_layers)).collect();
        let cfg = self.target.with_layers(&kept);
        let cost = VariantCost::from_word(name, &cfg, scheme)?;
        let mut p = project_variant(gpu, &cost, &self.trace, ROOFLINE)?;
        p.speed_norm = p.speed_norm_against(base);
        Ok(p)
    }

    /// The efficiency sets of the sensitivity rows: the one used, then the grid.
    pub fn sensitivity_sets(&self) -> Vec<Efficiencies> {
        let mut sets = vec![self.efficiencies.clone()];
        for bandwidth in SENSITIVITY_BANDWIDTH {
            for bf16 in SENSITIVITY_GEMM {
                for int8 in SENSITIVITY_GEMM {
                    sets.push(Efficiencies {
                        bandwidth,
                        bf16,
                        int8: Some(int8),
                        source: "sensitivity grid".into(),
                    });
                }
            }
        }
        sets
    }

    /// The sensitivity rows (module doc) of `variants` — (name, projected layers, scheme word,
    /// PerfNorm where the variant has a perplexity) —, on `base_variant`'s rows their count.
    fn add_sensitivity(
        &self,
        r: &mut Results,
        base_variant: &str,
        variants: &[(String, usize, &'static str, Option<f64>)],
    ) -> Result<()> {
        let sets = self.sensitivity_sets();
        let mut speeds = vec![Vec::with_capacity(sets.len()); variants.len()];
        let mut best = vec![0usize; variants.len()];
        let bf16 = VariantCost::from_word("bf16", &self.target, "bf16")?;
        for e in &sets {
            let gpu = GpuSpec::l4().with_efficiencies(e);
            let base = project_variant(&gpu, &bf16, &self.trace, ROOFLINE)?;
            let mut top: Option<(usize, f64)> = None;
            for (i, (v, layers, word, perf)) in variants.iter().enumerate() {
                let s = self.project_on(&gpu, &base, v, *layers, word)?.speed_norm;
                speeds[i].push(s);
                if let Some(perf) = perf {
                    let score = 0.5 * perf + 0.5 * s;
                    if top.is_none_or(|(_, t)| score > t) {
                        top = Some((i, score));
                    }
                }
            }
            if let Some((i, _)) = top {
                best[i] += 1;
            }
        }
        for (i, (v, ..)) in variants.iter().enumerate() {
            let row = Variant::new(v.clone(), r.method_of(v), json!({}));
            let lo = speeds[i].iter().copied().fold(f64::INFINITY, f64::min);
            let hi = speeds[i].iter().copied().fold(f64::NEG_INFINITY, f64::max);
            r.add(&row, "l4_speed_norm_lo", lo, None, "");
            r.add(&row, "l4_speed_norm_hi", hi, None, "");
            let share = best[i] as f64 / sets.len() as f64;
            r.add(&row, "l4_best_share", share, None, "");
        }
        let row = Variant::new(base_variant, r.method_of(base_variant), json!({}));
        r.add(&row, "l4_sens_sets", sets.len() as f64, None, "");
        let span = |x: &[f64]| (x[0], x[x.len() - 1]);
        let (bw, gemm) = (span(&SENSITIVITY_BANDWIDTH), span(&SENSITIVITY_GEMM));
        r.add(&row, "l4_sens_bandwidth_lo", bw.0, None, "");
        r.add(&row, "l4_sens_bandwidth_hi", bw.1, None, "");
        r.add(&row, "l4_sens_gemm_lo", gemm.0, None, "");
        r.add(&row, "l4_sens_gemm_hi", gemm.1, None, "");
        Ok(())
    }

    /// Projects every variant with a `layers` row against `base_variant`'s layer count and
    /// records the rows of the module doc (replacing earlier ones), the projection's parameters
    /// on the base's rows. Nothing when the base has no `layers` row.
    pub fn add_rows(&self, r: &mut Results, base_variant: &str) -> Result<()> {
        let Some(base_layers) = r.get(base_variant, "layers") else {
            return Ok(());
        };
        r.rows
            .retain(|x| !L4_SPEED_METRICS.contains(&x.metric.as_str()));
        let base_ppl = r.get(base_variant, "test_ppl");
        let mut projected = vec![];
        for v in r.variants() {
            let Some(layers) = r.get(&v, "layers") else {
                continue;
            };
            let n = self.layers(layers as usize, base_layers as usize);
            let word = scheme_word_of(&r.method_of(&v));
            let p = self.project(&v, n, word)?;
            let row = Variant::new(v.clone(), r.method_of(&v), json!({}));
            r.add(&row, "l4_layers", n as f64, None, "");
            r.add(&row, "l4_secs_per_token", p.secs_per_token, None, "s");
            r.add(&row, "l4_speed_norm", p.speed_norm, None, "");
            let perf = base_ppl.zip(r.get(&v, "test_ppl")).map(|(b, p)| b / p);
            projected.push((v, n, word, perf));
        }
        self.add_sensitivity(r, base_variant, &projected)?;
        // the projection's parameters, on the base's rows (no extra variant in the tables)
        let row = Variant::new(base_variant, r.method_of(base_variant), json!({}));
        let e = &self.efficiencies;
        r.add(&row, "l4_steps", self.trace.steps.len() as f64, None, "");
        r.add(&row, "l4_requests", WORKLOAD_REQUESTS as f64, None, "");
        r.add(
            &row,
            "l4_new_tokens",
            WORKLOAD_NEW_TOKENS as f64,
            None,
            "tokens",
        );
        r.add(&row, "l4_eff_bandwidth", e.bandwidth, None, "");
        r.add(&row, "l4_eff_bf16", e.bf16, None, "");
        r.add(&row, "l4_eff_int8", e.int8.unwrap_or(e.bf16), None, "");
        let measured = !e.source.starts_with("assumed");
        r.add(
            &row,
            "l4_eff_measured",
            f64::from(u8::from(measured)),
            None,
            "bool",
        );
        Ok(())
    }
}

/// The efficiencies the projection runs at: on a CUDA device, carried from the copy bandwidth
/// and GEMM rates measured on it now ([`Efficiencies::carried`]; `gpu` names it, as
/// `nvidia-smi` does); elsewhere assumed.
pub fn efficiencies_on(device: &candle_core::Device, gpu: &str) -> Result<Efficiencies> {
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        let m = super::serving::CudaRun::measure_device(device)?;
        return Ok(Efficiencies::carried(
            &crate::eval::projection::DeviceRates {
                name: gpu.to_string(),
                copy_bandwidth: m.bandwidth,
                bf16_flops: m.bf16_flops,
                int8_ops: Some(m.int8_ops),
            },
        ));
    }
    let _ = (device, gpu);
    Ok(Efficiencies::assumed("no GPU in this run"))
}

/// The metrics [`L4Speed::add_rows`] writes (an earlier projection's are replaced).
pub const L4_SPEED_METRICS: [&str; 18] = [
    "l4_speed_norm_lo",
    "l4_speed_norm_hi",
    "l4_best_share",
    "l4_sens_sets",
    "l4_sens_bandwidth_lo",
    "l4_sens_bandwidth_hi",
    "l4_sens_gemm_lo",
    "l4_sens_gemm_hi",
    "l4_layers",
    "l4_secs_per_token",
    "l4_speed_norm",
    "l4_steps",
    "l4_requests",
    "l4_new_tokens",
    "l4_eff_bandwidth",
    "l4_eff_bf16",
    "l4_eff_int8",
    "l4_eff_measured",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_the_last_one_a_method_names() {
        assert_eq!(scheme_word_of("none"), "bf16");
        assert_eq!(scheme_word_of("drop[29] (drop:29)"), "bf16");
        assert_eq!(
            scheme_word_of("gptq W4A16-g128-sym → kd[norms] × 8 steps"),
            "w4a16"
        );
        assert_eq!(scheme_word_of("rtn W8A8-int8"), "w8a8");
        assert_eq!(scheme_word_of("rtn FP8-dynamic"), "fp8");
        assert_eq!(scheme_word_of("awq W4A16-ch-asym"), "w4a16");
        assert_eq!(
            scheme_word_of("rtn W8A8-int8 → rtn W4A16-g128-sym"),
            "w4a16"
        );
    }
}
