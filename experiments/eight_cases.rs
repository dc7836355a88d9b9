//! The reference pipeline's 8-case study done right — original, distilled, pruned, quantized
//! and their combinations — plus the schemes that actually won (W8A8, and W8A8 after pruning),
//! each measured by perplexity, KL to the base, task accuracy, size, time per token.
//!
//!   cargo run --release --bin eight_cases                       # default model, CPU, minutes
//!   cargo run --release --features cuda --bin eight_cases -- --model /path/to/EXAONE-4.0-1.2B --device cuda

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use exaone_compress::compress::calibration::samples;
use exaone_compress::compress::distill::{distill, DistillConfig, ParamGroup};
use exaone_compress::compress::prune::{choose, drop_one_kl, DropRule};
use exaone_compress::compress::quant::apply::{
    quantize_awq, quantize_gptq, quantize_rtn, QuantizedModel,
};
use exaone_compress::compress::quant::{awq::AwqConfig, gptq::GptqConfig, Scheme};
use exaone_compress::data::default_splits;
use exaone_compress::device::{parse_device, parse_dtype};
use exaone_compress::eval::suite::{add_scores, SaveTo, Suite, LEGACY_PROMPTS};
use exaone_compress::eval::tasks::{load_bigbench, load_kmmlu};
use exaone_compress::model::Tokenizer;
use exaone_compress::record::Results;
use exaone_compress::report::study::{self, ReportOptions};
use exaone_compress::train::TrainConfig;
use exaone_compress::{default_model_dir, Exaone4};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "auto")]
    dtype: String,
    #[arg(long, default_value = "reports/eight_cases")]
    out: PathBuf,
    /// keep every variant's checkpoint here (default: measured in a temporary directory)
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    calib_samples: usize,
    #[arg(long, default_value_t = 256)]
    calib_len: usize,
    /// perplexity tokens (a prefix of the test split)
    #[arg(long, default_value_t = 8192)]
    eval_tokens: usize,
    #[arg(long, default_value_t = 16)]
    kl_sequences: usize,
    #[arg(long, default_value_t = 40)]
    mc_items: usize,
    #[arg(long, default_value_t = 3)]
    speed_repeats: usize,
    #[arg(long, default_value_t = 1)]
    drop_layers: usize,
    #[arg(long, default_value_t = 40)]
    distill_steps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// the checkpoint has random weights (a shape-only stand-in): the report flags every
    /// quality column as meaningless and recommends nothing
    #[arg(long)]
    random_weights: bool,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let device = parse_device(&a.device)?;
    let dtype = parse_dtype(&a.dtype, &device)?;
    let dir = a.model.clone().unwrap_or_else(default_model_dir);
    let base = Exaone4::from_dir(&dir, dtype, &device)
        .with_context(|| format!("loading {}", dir.display()))?;
    // a checkpoint without a tokenizer (e.g. random weights) is measured with the default
    // model's token ids: speed is real, quality is not
    let (tok, fell_back) = Tokenizer::for_model(&dir)?;
    let tok_dir = if fell_back {
        default_model_dir()
    } else {
        dir.clone()
    };
    let (train, val, mut test) = default_splits(&tok, tok.token_id("[|endofturn|]"))?;
    test.ids.truncate(a.eval_tokens);
    test.bytes = (test.bytes as f64 * a.eval_tokens as f64 / test.ids.len().max(1) as f64) as usize;
    let calib = samples(&train, a.calib_samples, a.calib_len, a.seed)?;
    let mut mc = load_kmmlu(
        &exaone_compress::data::data_dir().join("benchmarks/kmmlu_criminal_law_test.json"),
        "kmmlu_criminal_law",
    )?;
    mc.truncate(a.mc_items / 2);
    let mut bb = load_bigbench(
        &exaone_compress::data::data_dir().join("benchmarks/bigbench_mc_subset.jsonl"),
    )?;
    bb.truncate(a.mc_items - mc.len());
    mc.extend(bb);
    let mut suite = Suite::new(tok, test, samples(&val, a.kl_sequences, 256, a.seed + 1)?);
    suite.mc_items = mc;
    suite.speed_repeats = a.speed_repeats;
    suite.legacy_prompts = LEGACY_PROMPTS.map(String::from).to_vec();
    let ck_root = match &a.checkpoints {
        Some(p) => p.clone(),
        None => tempfile::tempdir()?.keep(),
    };
    let mut results = Results::new(
        "eight_cases",
        &format!("{} ({:?})", a.device, dtype),
        &dir.display().to_string(),
    );
    let mut log: Vec<String> = vec![];

    // what each step does, shared by the combinations
    let w4 = Scheme::w4a16(128, true);
    let w8 = Scheme::w8a8_int8();
    let gptq = |m: &Exaone4, log: &mut Vec<String>| {
        quantize_gptq(m, &w4, &calib, &GptqConfig::default(), &|_| false, log)
    };
    let kd_val: Vec<_> = calib
        .iter()
        .take(2)
        .map(|s| candle_core::Tensor::from_vec(s.clone(), (1, s.len()), &device))
        .collect::<candle_core::Result<_>>()?;
    let kd_cfg = DistillConfig {
        train: TrainConfig {
            steps: a.distill_steps,
            lr: 1e-3,
            warmup_steps: a.distill_steps / 10,
            weight_decay: 0.0,
            eval_every: 0,
            ..Default::default()
        },
        temperature: 1.0,
        groups: vec![ParamGroup::Norms],
        batch: 8,
        seq_len: a.calib_len,
        seed: a.seed + 7,
    };
    let heal = |student: &mut Exaone4| -> Result<()> {
        distill(&base, student, &train, &kd_val, &kd_cfg)?;
        Ok(())
    };
    let layer_kl = drop_one_kl(
        &base,
        &suite.kl_sequences[..4.min(suite.kl_sequences.len())],
        4,
    )?;
    for (i, k) in layer_kl.iter().enumerate() {
        results.add(
            "original",
            "none",
            &json!({}),
            &format!("drop_one_kl_layer_{i}"),
            *k,
            None,
            "nats",
        );
    }
    let drop = choose(
        &base,
        &DropRule::Explicit(exaone_compress::compress::prune::lowest(
            &layer_kl,
            a.drop_layers,
        )),
        None,
    )?;
    let kept: Vec<usize> = (0..base.layers.len())
        .filter(|i| !drop.contains(i))
        .collect();
    let prune = |m: &Exaone4| m.with_layers(&kept);

    // write, size and evaluate one variant
    let save = SaveTo {
        dir: &ck_root,
        side_files_from: Some(tok_dir.clone()),
        remove_after: a.checkpoints.is_none(),
    };
    let run = |name: &str,
               method: String,
               params: serde_json::Value,
               model: &Exaone4,
               q: Option<&QuantizedModel>,
               results: &mut Results|
     -> Result<()> {
        suite.measure(results, name, &method, &params, &base, model, q, &save)?;
        Ok(())
    };
    let pr = json!({"drop": drop, "rule": "lowest drop-one KL"});
    let gp = json!({"scheme": w4.name(), "calib": [a.calib_samples, a.calib_len], "damp": 0.01, "block": 128});
    let dp = json!({"groups": ["norms"], "steps": a.distill_steps, "loss": "KL(teacher||student)", "T": 1.0});

    run(
        "original",
        "none".into(),
        json!({}),
        &base,
        None,
        &mut results,
    )?;
    let mut distilled = base.share();
    heal(&mut distilled)?;
    run(
        "distilled",
        "kd[norms]".into(),
        dp.clone(),
        &distilled,
        None,
        &mut results,
    )?;
    let pruned = prune(&base)?;
    run(
        "pruned",
        format!("drop{drop:?}"),
        pr.clone(),
        &pruned,
        None,
        &mut results,
    )?;
    let q = gptq(&base, &mut log)?;
    run(
        "quantized",
        "gptq W4A16".into(),
        gp.clone(),
        &q.model,
        Some(&q),
        &mut results,
    )?;
    let mut dp_model = prune(&base)?;
    heal(&mut dp_model)?;
    run(
        "distilled+pruned",
        format!("drop{drop:?} → kd[norms]"),
        json!({"prune": pr, "distill": dp}),
        &dp_model,
        None,
        &mut results,
    )?;
    let pq = gptq(&pruned, &mut log)?;
    run(
        "pruned+quantized",
        format!("drop{drop:?} → gptq W4A16"),
        json!({"prune": pr, "quant": gp}),
        &pq.model,
        Some(&pq),
        &mut results,
    )?;
    // the same GPTQ result as "quantized" (deterministic), healed
    let mut dq = QuantizedModel {
        model: q.model.share(),
        linears: q.linears.clone(),
        scheme: q.scheme,
        ignore: q.ignore.clone(),
    };
    heal(&mut dq.model)?;
    run(
        "distilled+quantized",
        "gptq W4A16 → kd[norms]".into(),
        json!({"quant": gp, "distill": dp}),
        &dq.model,
        Some(&dq),
        &mut results,
    )?;
    let mut all = gptq(&dp_model, &mut log)?;
    heal(&mut all.model)?;
    run(
        "all three",
        format!("drop{drop:?} → kd[norms] → gptq W4A16 → kd[norms]"),
        json!({"prune": pr, "quant": gp, "distill": dp}),
        &all.model,
        Some(&all),
        &mut results,
    )?;
    // what won in the competition, and the W4A16 methods side by side
    let q = quantize_rtn(&base, &w8, &|_| false)?;
    run(
        "W8A8 (min-max)",
        "rtn W8A8-int8".into(),
        json!({"scheme": w8.name()}),
        &q.model,
        Some(&q),
        &mut results,
    )?;
    let q = quantize_rtn(&pruned, &w8, &|_| false)?;
    run(
        "pruned+W8A8",
        format!("drop{drop:?} → rtn W8A8-int8"),
        json!({"prune": pr, "scheme": w8.name()}),
        &q.model,
        Some(&q),
        &mut results,
    )?;
    let q = quantize_rtn(&base, &w4, &|_| false)?;
    run(
        "RTN W4A16",
        "rtn W4A16".into(),
        json!({"scheme": w4.name()}),
        &q.model,
        Some(&q),
        &mut results,
    )?;
    let q = quantize_awq(
        &base,
        &w4,
        &calib,
        &AwqConfig::default(),
        &|_| false,
        &mut log,
    )?;
    run(
        "AWQ W4A16",
        "awq(up→down, v→o GQA) W4A16".into(),
        json!({"scheme": w4.name(), "grid": 20}),
        &q.model,
        Some(&q),
        &mut results,
    )?;
    let f8 = Scheme::fp8_dynamic();
    let q = quantize_rtn(&base, &f8, &|_| false)?;
    run(
        "FP8 dynamic",
        "rtn FP8".into(),
        json!({"scheme": f8.name()}),
        &q.model,
        Some(&q),
        &mut results,
    )?;

    add_scores(&mut results, "original");
    results.save(&a.out)?;
    let opts = ReportOptions {
        title: "Eight cases, done right".into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        notes: vec![
            format!("Dropped layer(s) {drop:?}: the lowest KL to the full model when removed alone (chart below)."),
            format!(
                "Calibration: {} × {} tokens of the training split; distillation: {} steps of {} × {} tokens, lr {:.0e} (warm-up {} steps), KL(teacher‖student) at T = {}, training {:?} only.",
                a.calib_samples, a.calib_len, kd_cfg.train.steps, kd_cfg.batch, kd_cfg.seq_len,
                kd_cfg.train.lr, kd_cfg.train.warmup_steps, kd_cfg.temperature, kd_cfg.groups
            ),
        ]
        .into_iter()
        .chain(fell_back.then(|| "The checkpoint has no tokenizer: every text was tokenized with the default model's tokenizer (ids below 4096).".to_string()))
        .collect(),
        redact_timings: false,
        quality_meaningless: a.random_weights,
    };
    study::write(&a.out, &results, &opts)?;
    std::fs::write(a.out.join("log.txt"), log.join("\n") + "\n")?;
    println!("{}", study::markdown(&results, &opts));
    eprintln!("wrote {}", a.out.display());
    if a.checkpoints.is_none() {
        let _ = std::fs::remove_dir_all(&ck_root);
    }
    Ok(())
}
