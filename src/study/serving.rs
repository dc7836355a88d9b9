//! The serving benchmark's harness: the evaluation's workload (every request handed to the
//! engine at once) run through the scheduler as vLLM runs it, on the CUDA serving engine (or
//! the CPU reference executor), at several concurrency limits, each timed after an untimed
//! warm-up run (which also captures the decode graphs, as vLLM does at start-up), with the
//! roofline of every step; then batch-1 decoding on the same path. Figures go to `Results` as
//! `serve_<workload>_c<concurrency>_<metric>` rows of a variant (its scheme).

use std::path::Path;

use clap::Args;
use serde_json::json;

use crate::error::{Error, Result};
use crate::record::{Results, Variant};
use crate::serve::workload::{long_context_qa, multi_turn_chat, multiple_choice};
use crate::serve::{
    GenOptions, Roofline, RunReport, Runner, SchedulerConfig, Sources, StepExecutor, Workload,
    DEFAULT_BLOCK_SIZE,
};

/// Flags of the serving benchmark.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// the workload's shape (mc: Korean multiple choice, 150–600-token prompts; long: 2k–8k
    /// context QA; chat: multi-turn) or a JSONL file of requests
    #[arg(long, default_value = "mc")]
    pub workload: String,
    /// requests in the workload
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: u64,
    /// new tokens per request (stop ids off: every request generates exactly this many)
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
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
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
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
    use crate::eval::generated::{score, GenMcOptions};
    use crate::model::chat_template::ChatTemplate;
    if a.gen_mc == 0 {
        return Ok(());
    }
    let items = korean_mc_items(a.gen_mc)?;
    let (tok, _) = crate::data::tokenizer_for_model(dir)?;
    let source =
        if dir.join("tokenizer_config.json").exists() || dir.join("chat_template.jinja").exists() {
            dir.to_path_buf()
        } else {
            crate::data::default_model_dir()
        };
    let template = ChatTemplate::from_dir(&source)?;
    let mut stop = crate::model::generate::GenerationConfig::try_from_dir(&source)?.eos_ids;
    stop.extend(tok.token_id("[|endofturn|]"));
    let opts = GenMcOptions {
        max_new_tokens: a.gen_mc_tokens,
        stop_ids: stop,
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
        res.write_jsonl(&d.join(format!("gen_mc-{}.jsonl", v.name)))?;
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

/// Batch-1 decoding on the same path: one request of the workload's first prompt, the median
/// decode step in ms (spread: max − min over steps).
pub fn batch1<E: StepExecutor>(
    r: &mut Results,
    variant: &Variant,
    runner: &mut Runner<E>,
    w: &Workload,
    tokens: usize,
) -> Result<()> {
    let mut req = w.requests[0].clone();
    req.max_new_tokens = tokens;
    req.stop_ids.clear();
    let one = Workload::new(vec![req]);
    runner.run(&one)?;
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
    let (med, spread) = median_spread(steps);
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

/// The CPU reference run (the f32 executor, one sequence after another): the scheduler's
/// figures on a small model, no roofline.
pub fn run_cpu(
    r: &mut Results,
    label: &str,
    dir: &Path,
    a: &ServeArgs,
    w: &Workload,
) -> Result<()> {
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
        w.requests
            .iter()
            .map(|q| (q.prompt_ids.len() + q.max_new_tokens).div_ceil(pool.block_size))
            .sum::<usize>()
            .max(a.max_model_len.div_ceil(pool.block_size))
    });
    let vocab = model.config.vocab_size;
    let mut runner = Runner::new(
        crate::serve::CpuExecutor::new(&model),
        scheduler(a, 1, blocks),
        vocab,
    );
    for &c in &a.concurrency {
        runner.config = scheduler(a, c, blocks);
        let tag = format!("{}_c{c}", tag_of(a));
        measure(r, &variant, &tag, &mut runner, w, a.repeats as usize, None)?;
    }
    runner.config = scheduler(a, 1, blocks);
    if a.b1_tokens > 0 {
        batch1(r, &variant, &mut runner, w, a.b1_tokens)?;
    }
    runner.config = scheduler(a, a.concurrency.iter().copied().max().unwrap_or(1), blocks);
    gen_mc(r, &variant, &mut runner, dir, a)
}

/// The workload's tag in metric names (`mc`, `long`, `chat`, or `file`).
pub fn tag_of(a: &ServeArgs) -> &str {
    match a.workload.as_str() {
        w @ ("mc" | "long" | "chat") => w,
        _ => "file",
    }
}

/// Context of the profiled decode steps: a multiple-choice request halfway through its answer.
#[cfg(feature = "cuda")]
const PROFILE_CONTEXT: usize = 512;

/// The CUDA runs: the device's measured copy bandwidth and GEMM rates (the rooflines' inputs).
#[cfg(feature = "cuda")]
pub struct CudaRun {
    pub ordinal: usize,
    pub bandwidth: f64,
    pub bf16_flops: f64,
    pub int8_ops: f64,
}

#[cfg(feature = "cuda")]
impl CudaRun {
    /// Measures the copy bandwidth and the bf16 / int8 GEMM rates on the 1.2B's widest Linear
    /// shape (gate/up: 8192 × 2048) at 4096 rows.
    pub fn measure_device(device: &candle_core::Device) -> Result<Self> {
        let candle_core::Device::Cuda(d) = device else {
            return Err(Error::Invalid("CudaRun: not a CUDA device".into()));
        };
        let bandwidth = crate::study::bench::kernels::copy_bandwidth(device)? * 1e9;
        let (m, n, k) = (4096usize, 8192usize, 2048usize);
        let (bf16_ms, int8_ms, _) = crate::runtime::quantized::gemm_timings(d, m, n, k)?;
        let flops = 2.0 * (m * n * k) as f64;
        Ok(Self {
            ordinal: 0,
            bandwidth,
            bf16_flops: flops / (bf16_ms * 1e-3),
            int8_ops: flops / (int8_ms * 1e-3),
        })
    }

    /// The engine's logits against the f32 forward on a ragged workload: 12 requests of the
    /// shipped shapes, prompt chunks split across steps by a small token budget, decoding
    /// tokens packed (some steps replayed from graphs). Recorded as a check row; an error if
    /// it fails.
    pub fn check(&self, r: &mut Results, dir: &Path, w: &Workload) -> Result<()> {
        let mut reqs: Vec<_> = w.requests.iter().take(12).cloned().collect();
        for (i, q) in reqs.iter_mut().enumerate() {
            q.max_new_tokens = 6 + 3 * i;
            q.prompt_ids.truncate(40 + 37 * i);
        }
        let small = Workload::new(reqs);
        let cfg = SchedulerConfig {
            max_num_seqs: 8,
            max_num_batched_tokens: 256,
            block_size: DEFAULT_BLOCK_SIZE,
            num_blocks: 512,
            max_model_len: 1024,
        };
        let c = crate::serve::check::logits(dir, self.ordinal, &small, &cfg, "serving engine")?;
        let v = Variant::new("checks", "check", json!({}));
        r.add(
            &v,
            &format!("kernel_rel_err: {}", c.what),
            c.kernel_err,
            None,
            "",
        );
        r.add(
            &v,
            &format!("bf16_rel_err: {}", c.what),
            c.bf16_err,
            None,
            "",
        );
        r.add(&v, &format!("top1: {}", c.what), c.top1, None, "");
        eprintln!(
            "check {}: engine {:.2e} vs bf16 forward {:.2e} (top-1 {:.3}) — {}",
            c.what,
            c.kernel_err,
            c.bf16_err,
            c.top1,
            if c.passes() { "pass" } else { "FAIL" }
        );
        if !c.passes() {
            return Err(Error::Invalid(format!("serving check failed: {c:?}")));
        }
        Ok(())
    }

    /// One checkpoint: the workload at every concurrency limit, batch-1 decoding, and (where
    /// `long` > 0) a long-context workload of that many requests.
    pub fn variant(
        &self,
        r: &mut Results,
        label: &str,
        dir: &Path,
        a: &ServeArgs,
        w: &Workload,
        long: u64,
    ) -> Result<()> {
        use crate::runtime::serving::KvBudget;
        use crate::serve::cuda::CudaExecutor;
        // the previous variant's engine was dropped: give its memory back before sizing a pool
        crate::runtime::trim_freed_memory(&candle_core::Device::new_cuda(self.ordinal)?)?;
        let ckpt = crate::checkpoint::Checkpoint::open(dir)?;
        let maxc = a.concurrency.iter().copied().max().unwrap_or(256).max(1);
        let kv = match a.kv_blocks {
            Some(n) => KvBudget::Blocks(n),
            None => KvBudget::Fraction(a.gpu_memory_utilization),
        };
        let (exec, cfg) = CudaExecutor::load(&ckpt, self.ordinal, &scheduler(a, maxc, 0), kv)?;
        let info = exec.engine.info.clone();
        let rate = if info.weights.contains("w8a8") {
            self.int8_ops
        } else {
            self.bf16_flops
        };
        let roof = Roofline::new(
            &ckpt.config,
            info.weight_bytes_per_step as f64,
            self.bandwidth,
            rate,
        );
        let v = variant(label, &info.weights, &a.concurrency);
        let blocks = cfg.num_blocks;
        r.add(&v, "serve_kv_blocks", blocks as f64, None, "blocks");
        r.add(
            &v,
            "weight_bytes_per_step",
            info.weight_bytes_per_step as f64,
            None,
            "B",
        );
        let mut runner = Runner::new(exec, cfg, ckpt.config.vocab_size);
        let reps = a.repeats as usize;
        for &c in &a.concurrency {
            runner.config = scheduler(a, c, blocks);
            let tag = format!("{}_c{c}", tag_of(a));
            let rep = measure(r, &v, &tag, &mut runner, w, reps, Some(&roof))?;
            eprintln!(
                "{label} c={c}: {:.0} tokens/s, T = {:.3e} s/token, {} steps, mean batch {:.1}",
                rep.totals.tokens_per_sec,
                rep.totals.secs_per_token,
                rep.totals.steps,
                rep.totals.mean_batch
            );
        }
        if a.b1_tokens > 0 {
            runner.config = scheduler(a, 1, blocks);
            batch1(r, &v, &mut runner, w, a.b1_tokens)?;
        }
        for b in [1, maxc] {
            let ctx = PROFILE_CONTEXT;
            let parts = runner.executor.engine.profile_decode(b, ctx)?;
            let total: f64 = parts.iter().map(|p| p.1).sum();
            for (what, ms, _) in &parts {
                r.add(&v, &format!("serve_profile_b{b}: {what}"), *ms, None, "ms");
            }
            r.add(&v, &format!("serve_profile_b{b}: total"), total, None, "ms");
        }
        runner.config = scheduler(a, maxc, blocks);
        gen_mc(r, &v, &mut runner, dir, a)?;
        if long > 0 {
            let la = ServeArgs {
                workload: "long".into(),
                requests: long,
                new_tokens: 64,
                ..a.clone()
            };
            let lw = workload(&la)?;
            runner.config = scheduler(a, maxc, blocks);
            let rep = measure(
                r,
                &v,
                &format!("long_c{maxc}"),
                &mut runner,
                &lw,
                1,
                Some(&roof),
            )?;
            eprintln!(
                "{label} long context: {} requests, {} errors, {} preemptions, peak {} of {} blocks",
                rep.totals.requests,
                rep.totals.errors,
                rep.totals.preemptions,
                rep.totals.peak_kv_blocks,
                rep.totals.kv_blocks
            );
        }
        eprintln!(
            "{label}: {} graph steps, {} eager steps",
            runner.executor.engine.graph_steps, runner.executor.engine.eager_steps
        );
        Ok(())
    }
}
