//! The serving benchmark's harness: the evaluation's workload (every request handed to the
//! engine at once) run through the scheduler as vLLM runs it, on the CUDA serving engine (or
//! the CPU reference executor), at several concurrency limits, each timed after an untimed
//! warm-up run (which also captures the decode graphs, as vLLM does at start-up), with the
//! roofline of every step; then batch-1 decoding on the same path. Figures go to `Results` as
//! `serve_<workload>_c<concurrency>_<metric>` rows of a variant (its scheme). Every timed run's
//! measured steps feed the L4 projection (`l4`: `l4_<tag>_*` rows), with efficiencies carried
//! from this device's measured rates on CUDA and assumed on the CPU.

mod l4;

#[cfg(feature = "cuda")]
mod cuda;

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use crate::error::{Error, Result, ResultExt};
use crate::eval::projection::{Efficiencies, StepTrace};
use crate::record::{Results, Variant};
use crate::serve::workload::{long_context_qa, multi_turn_chat, multiple_choice};
use crate::serve::{
    GenOptions, Roofline, RunReport, Runner, SchedulerConfig, Sources, StepExecutor, Workload,
    DEFAULT_BLOCK_SIZE,
};

#[cfg(feature = "cuda")]
pub use cuda::CudaRun;
pub use l4::{project_l4, VariantRun, L4_SCHEMES, L4_VARIANT};

/// Flags of the serving benchmark.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// the workload's shape (mc: Korean multiple choice, 150–600-token prompts; long: 2k–8k
    /// context QA; chat: multi-turn) or a JSONL file of requests
    #[arg(long, default_value = "mc")]
    pub workload: String,
    /// requests in the workload
    #[arg(long, default_value_t = 256, value_parser = crate::study::at_least_one::<u64>)]
    pub requests: u64,
    /// new tokens per request (stop ids off: every request generates exactly this many)
    #[arg(long, default_value_t = 256, value_parser = crate::study::at_least_one::<u64>)]
    pub new_tokens: u64,
    /// concurrency limits (max_num_seqs) to run, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    pub concurrency: Vec<usize>,
    /// max_num_batched_tokens: tokens per step, prefill and decode together
    #[arg(long, default_value_t = 8192)]
    pub max_num_batched_tokens: usize,
    /// the context (prompt + output) the engine admits
    #[arg(long, default_value_t = 8192 + 512)]
    pub max_model_len: usize,
    /// KV pool: the share of device memory the engine may use (vLLM's gpu_memory_utilization)
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// KV pool: exactly this many blocks (overrides the memory share)
    #[arg(long)]
    pub kv_blocks: Option<usize>,
    /// timed runs per point (median and max − min reported)
    #[arg(long, default_value_t = 3, value_parser = crate::study::at_least_one::<u64>)]
    pub repeats: u64,
    /// new tokens of the batch-1 decode measurement (0: skip it)
    #[arg(long, default_value_t = 256)]
    pub b1_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// items of a generation-scored multiple-choice pass per variant (the shipped Korean items:
    /// KMMLU criminal law, then NSMC sentiment; 0: skip)
    #[arg(long, default_value_t = 0)]
    pub gen_mc: usize,
    /// the answers' token cap in that pass
    #[arg(long, default_value_t = 16)]
    pub gen_mc_tokens: usize,
    /// write each variant's answers as JSONL into this folder (`gen_mc-<variant>.jsonl`)
    #[arg(long)]
    pub gen_mc_samples: Option<std::path::PathBuf>,
}

/// The shipped Korean multiple-choice items, KMMLU criminal law (200) then NSMC sentiment
/// (1,000): the first `n`.
pub fn korean_mc_items(n: usize) -> Result<Vec<crate::eval::McItem>> {
    let dir = crate::data::data_dir().join("benchmarks");
    let io = |p: &Path, e: std::io::Error| Error::io(p, e);
    let k = dir.join("kmmlu_criminal_law_test.json");
    let mut items = crate::eval::generated::load_kmmlu_questions(&k, "kmmlu_criminal_law")?;
    let s = dir.join("nsmc_sentiment_mc.jsonl");
    items.extend(crate::eval::tasks::load_bigbench(&s).map_err(|e| io(&s, e))?);
    if n > items.len() {
        return Err(Error::Invalid(format!(
            "--gen-mc {n}: {} Korean items are shipped",
            items.len()
        )));
    }
    items.truncate(n);
    Ok(items)
}

/// A generation-scored multiple-choice pass (`eval::generated`) of `a.gen_mc` items, all at
/// once on `runner`: accuracy, answers without a choice, wall time and T as `genmc_*` rows.
/// The prompts use the model's chat template (the default model's where the directory has
/// none: shape-only checkpoints).
pub fn gen_mc<E: StepExecutor>(
    r: &mut Results,
    v: &Variant,
    runner: &mut Runner<E>,
    dir: &Path,
    a: &ServeArgs,
) -> Result<()> {
    use crate::eval::generated::{score, template_and_stops, GenMcOptions};
    if a.gen_mc == 0 {
        return Ok(());
    }
    let items = korean_mc_items(a.gen_mc)?;
    let (tok, _) = crate::data::tokenizer_for_model(dir)?;
    let (template, stop_ids) = template_and_stops(dir, &tok)?;
    let opts = GenMcOptions {
        max_new_tokens: a.gen_mc_tokens,
        stop_ids,
    };
    let res = score(runner, &items, &template, &tok, &opts)?;
    let t = &res.run.totals;
    r.add(v, "genmc_items", items.len() as f64, None, "items");
    r.add(v, "genmc_accuracy", res.accuracy, None, "");
    r.add(v, "genmc_no_answer", res.no_answer as f64, None, "items");
    r.add(v, "genmc_secs", t.generation_secs, None, "s");
    r.add(v, "genmc_secs_per_token", t.secs_per_token, None, "s");
    r.add(
        v,
        "genmc_output_len_mean",
        t.output_len_mean,
        Some(t.output_len_std),
        "tokens",
    );
    if let Some(d) = &a.gen_mc_samples {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        res.write_jsonl(&samples_file(d, &v.name))?;
    }
    eprintln!(
        "{}: {} generation-scored items in {:.1} s, accuracy {:.3}, {} without an answer",
        v.name,
        items.len(),
        t.generation_secs,
        res.accuracy,
        res.no_answer
    );
    Ok(())
}

/// Where `--gen-mc-samples DIR` puts variant `label`'s answers.
fn samples_file(dir: &Path, label: &str) -> std::path::PathBuf {
    dir.join(format!("gen_mc-{label}.jsonl"))
}

/// Whether the answers of variants `labels` may go where `--gen-mc-samples` says, checked before
/// any work: it needs `--gen-mc`, names a folder, and a variant's earlier file is replaced only
/// with `overwrite`.
pub fn check_samples_out(a: &ServeArgs, labels: &[&str], overwrite: bool) -> Result<()> {
    let Some(d) = &a.gen_mc_samples else {
        return Ok(());
    };
    if a.gen_mc == 0 {
        return Err(Error::Flag(
            "--gen-mc-samples: there are no answers to write without --gen-mc N (items per variant)"
                .into(),
        ));
    }
    if d.exists() && !d.is_dir() {
        return Err(Error::Flag(format!(
            "--gen-mc-samples {}: is a file, not a folder",
            d.display()
        )));
    }
    for l in labels {
        let f = samples_file(d, l);
        if f.exists() && !overwrite {
            return Err(Error::Flag(format!(
                "--gen-mc-samples: {} already exists; pass --overwrite to replace it",
                f.display()
            )));
        }
    }
    Ok(())
}

/// The workload the flags name, from the shipped text and the default model's tokenizer.
pub fn workload(a: &ServeArgs) -> Result<Workload> {
    let (tok, _) = crate::data::tokenizer_for_model(&crate::data::default_model_dir())?;
    let path = Path::new(&a.workload);
    if a.workload.ends_with(".jsonl") {
        return Workload::from_jsonl(path, Some(&tok));
    }
    let src = Sources::shipped("test")?;
    let opts = GenOptions {
        n: a.requests as usize,
        seed: a.seed,
        max_new_tokens: a.new_tokens as usize,
        stop_ids: vec![],
    };
    match a.workload.as_str() {
        "mc" => multiple_choice(&src, &tok, &opts),
        "long" => long_context_qa(&src, &tok, &opts),
        "chat" => multi_turn_chat(&src, &tok, &opts),
        w => Err(Error::Invalid(format!(
            "--workload {w}: mc, long, chat or a .jsonl file"
        ))),
    }
}

/// The scheduler's limits for `concurrency` sequences over a pool of `num_blocks`.
pub fn scheduler(a: &ServeArgs, concurrency: usize, num_blocks: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: concurrency,
        max_num_batched_tokens: a.max_num_batched_tokens,
        block_size: DEFAULT_BLOCK_SIZE,
        num_blocks,
        max_model_len: a.max_model_len,
    }
}

fn median_spread(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1] - v[0])
}

/// Runs `w` once untimed and `repeats` times timed on `executor`; records the median run's
/// figures (and the spread of T) under `serve_<tag>_*`, with the roofline ratio where given.
pub fn measure<E: StepExecutor>(
    r: &mut Results,
    variant: &Variant,
    tag: &str,
    runner: &mut Runner<E>,
    w: &Workload,
    repeats: usize,
    roofline: Option<&Roofline>,
) -> Result<RunReport> {
    runner.run(w)?;
    let mut runs = (0..repeats.max(1))
        .map(|_| runner.run(w))
        .collect::<Result<Vec<_>>>()?;
    let (_, spread) = median_spread(runs.iter().map(|x| x.totals.secs_per_token).collect());
    runs.sort_by(|a, b| a.totals.secs_per_token.total_cmp(&b.totals.secs_per_token));
    let median = runs.swap_remove(runs.len() / 2);
    median.record(r, variant, tag);
    let m = |name: &str| format!("serve_{tag}_{name}");
    r.add(variant, &m("secs_per_token_spread"), spread, None, "s");
    // one timed run has no spread to show (a 0 would read as none measured)
    r.add(
        variant,
        &m("timed_runs"),
        repeats.max(1) as f64,
        None,
        "runs",
    );
    if let Some(rl) = roofline {
        let (ratios, weighted) = rl.ratios(&median.steps);
        let decode: Vec<f64> = median
            .steps
            .iter()
            .zip(&ratios)
            .filter(|(s, _)| s.prefill_tokens == 0)
            .map(|(_, x)| *x)
            .collect();
        r.add(variant, &m("roofline_ratio"), weighted, None, "×");
        if !decode.is_empty() {
            let mean = decode.iter().sum::<f64>() / decode.len() as f64;
            let (med, spread) = median_spread(decode.clone());
            r.add(variant, &m("decode_roofline_ratio_mean"), mean, None, "×");
            r.add(
                variant,
                &m("decode_roofline_ratio_median"),
                med,
                Some(spread),
                "×",
            );
        }
    }
    Ok(median)
}

/// Batch-1 decoding on the same path: one request of the workload's first prompt, run once
/// untimed and `repeats` times timed; the median over the runs of each run's median decode
/// step in ms (spread: max − min of those medians, as every other cell's is over its repeats).
pub fn batch1<E: StepExecutor>(
    r: &mut Results,
    variant: &Variant,
    runner: &mut Runner<E>,
    w: &Workload,
    tokens: usize,
    repeats: usize,
) -> Result<()> {
    let mut req = w.requests[0].clone();
    req.max_new_tokens = tokens;
    req.stop_ids.clear();
    let one = Workload::new(vec![req]);
    runner.run(&one)?;
    let mut medians = vec![];
    for _ in 0..repeats.max(1) {
        let rep = runner.run(&one)?;
        let steps: Vec<f64> = rep
            .steps
            .iter()
            .filter(|s| s.prefill_tokens == 0)
            .map(|s| s.secs * 1e3)
            .collect();
        if steps.is_empty() {
            return Ok(());
        }
        medians.push(median_spread(steps).0);
    }
    let (med, spread) = median_spread(medians);
    r.add(variant, "serve_b1_step_ms", med, Some(spread), "ms");
    Ok(())
}

/// The variant a serving run stands for: its label and the weights' scheme word.
pub fn variant(label: &str, scheme: &str, concurrency: &[usize]) -> Variant {
    Variant::new(
        label,
        "serve",
        json!({ "scheme": scheme, "concurrency": concurrency }),
    )
}

/// Keeps `rep`'s measured steps as the trace of `tag` (a run that generated nothing has none:
/// said on stderr).
fn keep_trace(traces: &mut Vec<(String, StepTrace)>, tag: &str, rep: &RunReport) {
    match StepTrace::from_run(rep) {
        Ok(t) => traces.push((tag.to_string(), t)),
        Err(e) => eprintln!("{tag}: no step trace for the L4 projection: {e}"),
    }
}

/// The CPU reference run (the f32 executor, one sequence after another): the scheduler's
/// figures on a small model, no roofline; returns the measured step traces.
pub fn run_cpu(
    r: &mut Results,
    label: &str,
    dir: &Path,
    a: &ServeArgs,
    w: &Workload,
) -> Result<VariantRun> {
    let model =
        crate::checkpoint::load_model(dir, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let variant = variant(label, "f32 (CPU reference)", &a.concurrency);
    let pool = crate::serve::KvSpec::from_config(
        &model.config,
        candle_core::DType::F32,
        DEFAULT_BLOCK_SIZE,
    );
    let blocks = a.kv_blocks.unwrap_or_else(|| {
        // enough for every request at once: the CPU executor keeps its own caches anyway
        w.kv_blocks(pool.block_size)
            .max(a.max_model_len.div_ceil(pool.block_size))
    });
    let vocab = model.config.vocab_size;
    let mut runner = Runner::new(
        crate::serve::CpuExecutor::new(&model),
        scheduler(a, 1, blocks),
        vocab,
    );
    let mut traces = vec![];
    for &c in &a.concurrency {
        runner.config = scheduler(a, c, blocks);
        let tag = format!("{}_c{c}", tag_of(a));
        let rep = measure(r, &variant, &tag, &mut runner, w, a.repeats as usize, None)?;
        keep_trace(&mut traces, &tag, &rep);
    }
    runner.config = scheduler(a, 1, blocks);
    if a.b1_tokens > 0 {
        batch1(r, &variant, &mut runner, w, a.b1_tokens, a.repeats as usize)?;
    }
    runner.config = scheduler(a, a.concurrency.iter().copied().max().unwrap_or(1), blocks);
    gen_mc(r, &variant, &mut runner, dir, a)?;
    Ok(VariantRun {
        label: label.to_string(),
        config: model.config.clone(),
        traces,
    })
}

/// Every variant (`(label, checkpoint)`, the bf16 base first) on `device` — CUDA: the engine
/// check on the first, each variant's runs with rooflines, a long-context run of `long`
/// requests on the first (a variant after the first that fails is reported on stderr and left
/// out); CPU: [`run_cpu`] — then the L4 projection of their measured steps
/// ([`project_l4`]), whose failure is reported on stderr without losing the runs' rows.
pub fn run_all(
    r: &mut Results,
    a: &ServeArgs,
    w: &Workload,
    device: &candle_core::Device,
    variants: &[(&str, PathBuf)],
    long: u64,
) -> Result<()> {
    let (runs, eff) = if device.is_cuda() {
        cuda_runs(r, a, w, device, variants, long)?
    } else {
        let runs = variants
            .iter()
            .map(|(l, d)| run_cpu(r, l, d, a, w).context(|| format!("variant {l}")))
            .collect::<Result<Vec<_>>>()?;
        (runs, Efficiencies::assumed("a CPU run measures no GPU"))
    };
    if let Err(e) = project_l4(r, &runs, &eff) {
        eprintln!("L4 projection: {e}");
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn cuda_runs(
    r: &mut Results,
    a: &ServeArgs,
    w: &Workload,
    device: &candle_core::Device,
    variants: &[(&str, PathBuf)],
    long: u64,
) -> Result<(Vec<VariantRun>, Efficiencies)> {
    let run = CudaRun::measure_device(device)?;
    if variants.is_empty() {
        return Err(Error::Invalid("serve_bench: no variant to run".into()));
    }
    let eff = run.efficiencies(r);
    let mut runs = vec![];
    for (i, (label, d)) in variants.iter().enumerate() {
        let long = if i == 0 { long } else { 0 };
        // every variant's engine against its own f32 forward before it is timed
        let checked = run.check(r, label, d, w);
        match checked.and_then(|()| run.variant(r, label, d, a, w, long)) {
            Ok(v) => runs.push(v),
            // the base is what every other variant is measured against: without it, stop
            Err(e) if i == 0 => return Err(e).context(|| format!("variant {label}")),
            // a quantized variant that fails is reported and left out; the others still run
            Err(e) => {
                eprintln!("serve_bench: variant {label} failed, left out of the results: {e}")
            }
        }
    }
    Ok((runs, eff))
}

#[cfg(not(feature = "cuda"))]
fn cuda_runs(
    _: &mut Results,
    _: &ServeArgs,
    _: &Workload,
    _: &candle_core::Device,
    _: &[(&str, PathBuf)],
    _: u64,
) -> Result<(Vec<VariantRun>, Efficiencies)> {
    Err(Error::Invalid(
        "a CUDA device, but this binary was built without the cuda feature".into(),
    ))
}

/// The workload's tag in metric names (`mc`, `long`, `chat`, or `file`).
pub fn tag_of(a: &ServeArgs) -> &str {
    match a.workload.as_str() {
        w @ ("mc" | "long" | "chat") => w,
        _ => "file",
    }
}
