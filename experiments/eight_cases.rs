//! The reference pipeline's 8-case study done right — original, distilled, pruned, quantized
//! and their combinations — plus the schemes that actually won (W8A8, and W8A8 after pruning),
//! each measured by perplexity, KL to the base, task accuracy, size, time per token.
//!
//!   cargo run --release --bin eight_cases                       # default model, CPU, minutes
//!   cargo run --release --features cuda --bin eight_cases -- --model /path/to/EXAONE-4.0-1.2B --device cuda

use anyhow::Result;
use clap::Parser;
use exaone_compress::compress::distill::{distill, DistillConfig, ParamGroup};
use exaone_compress::compress::prune::{choose, drop_one_kl, lowest, DropRule};
use exaone_compress::compress::quant::apply::{
    quantize_awq, quantize_gptq, quantize_rtn, QuantizedModel,
};
use exaone_compress::compress::quant::{awq::AwqConfig, gptq::GptqConfig, Scheme};
use exaone_compress::study::{Study, StudyArgs};
use exaone_compress::train::TrainConfig;
use exaone_compress::Exaone4;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    study: StudyArgs,
    #[arg(long, default_value_t = 1)]
    drop_layers: usize,
    #[arg(long, default_value_t = 40)]
    distill_steps: usize,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let mut s = Study::load("eight_cases", a.study.clone())?;
    let base = s.base.share();
    let mut log: Vec<String> = vec![];

    // what each step does, shared by the combinations
    let w4 = Scheme::w4a16(128, true);
    let w8 = Scheme::w8a8_int8();
    let calib = s.calib.clone();
    let gptq = |m: &Exaone4, log: &mut Vec<String>| {
        quantize_gptq(m, &w4, &calib, &GptqConfig::default(), &|_| false, log)
    };
    let kd_val: Vec<_> = calib
        .iter()
        .take(2)
        .map(|x| candle_core::Tensor::from_vec(x.clone(), (1, x.len()), base.device()))
        .collect::<candle_core::Result<_>>()?;
    let kd = DistillConfig {
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
        seq_len: s.args.calib_len,
        seed: s.args.seed + 7,
    };
    let train = s.train.clone();
    let heal = |student: &mut Exaone4| -> Result<()> {
        distill(&base, student, &train, &kd_val, &kd)?;
        Ok(())
    };
    let kl_probe = &s.suite.kl_sequences[..4.min(s.suite.kl_sequences.len())];
    let layer_kl = drop_one_kl(&base, kl_probe, 4)?;
    for (i, k) in layer_kl.iter().enumerate() {
        let metric = format!("drop_one_kl_layer_{i}");
        s.results
            .add("original", "none", &json!({}), &metric, *k, None, "nats");
    }
    let drop = choose(
        &base,
        &DropRule::Explicit(lowest(&layer_kl, a.drop_layers)),
        None,
    )?;
    let kept: Vec<usize> = (0..base.layers.len())
        .filter(|i| !drop.contains(i))
        .collect();
    let prune = |m: &Exaone4| m.with_layers(&kept);

    let pr = json!({"drop": drop, "rule": "lowest drop-one KL"});
    let gp = json!({"scheme": w4.name(), "calib": [s.args.calib_samples, s.args.calib_len], "damp": 0.01, "block": 128});
    let dp = json!({"groups": ["norms"], "steps": a.distill_steps, "loss": "KL(teacher||student)", "T": 1.0});

    s.measure("original", "none", json!({}), &base, None)?;
    let mut distilled = base.share();
    heal(&mut distilled)?;
    s.measure("distilled", "kd[norms]", dp.clone(), &distilled, None)?;
    let pruned = prune(&base)?;
    s.measure(
        "pruned",
        &format!("drop{drop:?}"),
        pr.clone(),
        &pruned,
        None,
    )?;
    let q = gptq(&base, &mut log)?;
    s.measure("quantized", "gptq W4A16", gp.clone(), &q.model, Some(&q))?;
    let mut dp_model = prune(&base)?;
    heal(&mut dp_model)?;
    s.measure(
        "distilled+pruned",
        &format!("drop{drop:?} → kd[norms]"),
        json!({"prune": pr, "distill": dp}),
        &dp_model,
        None,
    )?;
    let pq = gptq(&pruned, &mut log)?;
    s.measure(
        "pruned+quantized",
        &format!("drop{drop:?} → gptq W4A16"),
        json!({"prune": pr, "quant": gp}),
        &pq.model,
        Some(&pq),
    )?;
    // the same GPTQ result as "quantized" (deterministic), healed
    let mut dq = QuantizedModel {
        model: q.model.share(),
        linears: q.linears.clone(),
        scheme: q.scheme,
        ignore: q.ignore.clone(),
    };
    heal(&mut dq.model)?;
    s.measure(
        "distilled+quantized",
        "gptq W4A16 → kd[norms]",
        json!({"quant": gp, "distill": dp}),
        &dq.model,
        Some(&dq),
    )?;
    let mut all = gptq(&dp_model, &mut log)?;
    heal(&mut all.model)?;
    s.measure(
        "all three",
        &format!("drop{drop:?} → kd[norms] → gptq W4A16 → kd[norms]"),
        json!({"prune": pr, "quant": gp, "distill": dp}),
        &all.model,
        Some(&all),
    )?;
    // what won in the competition, and the W4A16 methods side by side
    let q = quantize_rtn(&base, &w8, &|_| false)?;
    let w8p = json!({"scheme": w8.name()});
    s.measure(
        "W8A8 (min-max)",
        "rtn W8A8-int8",
        w8p.clone(),
        &q.model,
        Some(&q),
    )?;
    let q = quantize_rtn(&pruned, &w8, &|_| false)?;
    s.measure(
        "pruned+W8A8",
        &format!("drop{drop:?} → rtn W8A8-int8"),
        json!({"prune": pr, "scheme": w8.name()}),
        &q.model,
        Some(&q),
    )?;
    let q = quantize_rtn(&base, &w4, &|_| false)?;
    let w4p = json!({"scheme": w4.name()});
    s.measure("RTN W4A16", "rtn W4A16", w4p, &q.model, Some(&q))?;
    let q = quantize_awq(
        &base,
        &w4,
        &calib,
        &AwqConfig::default(),
        &|_| false,
        &mut log,
    )?;
    s.measure(
        "AWQ W4A16",
        "awq(up→down, v→o GQA) W4A16",
        json!({"scheme": w4.name(), "grid": 20}),
        &q.model,
        Some(&q),
    )?;
    let f8 = Scheme::fp8_dynamic();
    let q = quantize_rtn(&base, &f8, &|_| false)?;
    s.measure(
        "FP8 dynamic",
        "rtn FP8",
        json!({"scheme": f8.name()}),
        &q.model,
        Some(&q),
    )?;

    let notes = vec![
        format!("Dropped layer(s) {drop:?}: the lowest KL to the full model when removed alone (chart below)."),
        format!(
            "Calibration: {} × {} tokens of the training split; distillation: {} steps of {} × {} tokens, lr {:.0e} (warm-up {} steps), KL(teacher‖student) at T = {}, training {:?} only.",
            s.args.calib_samples, s.args.calib_len, kd.train.steps, kd.batch, kd.seq_len,
            kd.train.lr, kd.train.warmup_steps, kd.temperature, kd.groups
        ),
    ];
    s.finish("Eight cases, done right", notes, &log)
}
