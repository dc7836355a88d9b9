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
use exaone_compress::compress::quant::apply::{quantize_awq, quantize_gptq, quantize_rtn};
use exaone_compress::compress::quant::{awq::AwqConfig, gptq::GptqConfig, Scheme};
use exaone_compress::record::Variant;
use exaone_compress::study::{Study, StudyArgs};
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
    let a = exaone_compress::study::parse_args::<Args>();
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
    let kd = DistillConfig::heal(
        vec![ParamGroup::Norms],
        a.distill_steps,
        s.args.calib_len,
        s.args.seed + 7,
    );
    let train = s.train.clone();
    let heal = |student: &mut Exaone4| -> Result<()> {
        distill(&base, student, &train, &kd_val, &kd)?;
        Ok(())
    };
    let kl_probe = &s.suite.kl_sequences[..4.min(s.suite.kl_sequences.len())];
    let layer_kl = drop_one_kl(&base, kl_probe, 4)?;
    s.record_per_layer("drop_one_kl", &layer_kl, "nats");
    let rule = DropRule::Explicit(lowest(&layer_kl, a.drop_layers));
    let drop = choose(&base, &rule, None)?;
    let kept: Vec<usize> = (0..base.layers.len())
        .filter(|i| !drop.contains(i))
        .collect();
    let prune = |m: &Exaone4| m.with_layers(&kept);

    let pr = json!({"drop": drop, "rule": "lowest drop-one KL"});
    let gp = json!({"scheme": w4.name(), "calib": [s.args.calib_samples, s.args.calib_len], "damp": 0.01, "block": 128});
    let dp = json!({"groups": ["norms"], "steps": a.distill_steps, "loss": "KL(teacher||student)", "T": 1.0});

    let v = |n: &str, m: &str, p: serde_json::Value| Variant::new(n, m, p);
    let d = format!("drop{drop:?}");
    s.measure(&Variant::original(), &base)?;
    let mut distilled = base.share();
    heal(&mut distilled)?;
    s.measure(&v("distilled", "kd[norms]", dp.clone()), &distilled)?;
    let pruned = prune(&base)?;
    s.measure(&v("pruned", &d, pr.clone()), &pruned)?;
    let q = gptq(&base, &mut log)?;
    s.measure_quantized(&v("quantized", "gptq W4A16", gp.clone()), &q)?;
    let mut dp_model = prune(&base)?;
    heal(&mut dp_model)?;
    let (m, p) = (
        format!("{d} → kd[norms]"),
        json!({"prune": pr, "distill": dp}),
    );
    s.measure(&v("distilled+pruned", &m, p), &dp_model)?;
    let pq = gptq(&pruned, &mut log)?;
    let (m, p) = (
        format!("{d} → gptq W4A16"),
        json!({"prune": pr, "quant": gp}),
    );
    s.measure_quantized(&v("pruned+quantized", &m, p), &pq)?;
    // the same GPTQ result as "quantized" (deterministic), healed
    let mut dq = q.share();
    heal(&mut dq.model)?;
    let p = json!({"quant": gp, "distill": dp});
    s.measure_quantized(&v("distilled+quantized", "gptq W4A16 → kd[norms]", p), &dq)?;
    let mut all = gptq(&dp_model, &mut log)?;
    heal(&mut all.model)?;
    let m = format!("{d} → kd[norms] → gptq W4A16 → kd[norms]");
    let p = json!({"prune": pr, "quant": gp, "distill": dp});
    s.measure_quantized(&v("all three", &m, p), &all)?;
    // what won in the competition, and the W4A16 methods side by side
    let none = |_: &str| false;
    let q = quantize_rtn(&base, &w8, &none)?;
    s.measure_quantized(
        &v(
            "W8A8 (min-max)",
            "rtn W8A8-int8",
            json!({"scheme": w8.name()}),
        ),
        &q,
    )?;
    let q = quantize_rtn(&pruned, &w8, &none)?;
    let (m, p) = (
        format!("{d} → rtn W8A8-int8"),
        json!({"prune": pr, "scheme": w8.name()}),
    );
    s.measure_quantized(&v("pruned+W8A8", &m, p), &q)?;
    let q = quantize_rtn(&base, &w4, &none)?;
    s.measure_quantized(
        &v("RTN W4A16", "rtn W4A16", json!({"scheme": w4.name()})),
        &q,
    )?;
    let q = quantize_awq(&base, &w4, &calib, &AwqConfig::default(), &none, &mut log)?;
    let p = json!({"scheme": w4.name(), "grid": 20});
    s.measure_quantized(&v("AWQ W4A16", "awq(up→down, v→o GQA) W4A16", p), &q)?;
    let f8 = Scheme::fp8_dynamic();
    let q = quantize_rtn(&base, &f8, &none)?;
    s.measure_quantized(
        &v("FP8 dynamic", "rtn FP8", json!({"scheme": f8.name()})),
        &q,
    )?;

    let notes = vec![
        format!("Dropped layer(s) {drop:?}: the lowest KL to the full model when removed alone (chart below)."),
        format!(
            "Calibration: {} × {} tokens of the training split; distillation: {} steps of {} × {} tokens, lr {:.0e} (warm-up {} steps), KL(teacher‖student) at T = {}, training {:?} only.",
            s.args.calib_samples, s.args.calib_len, kd.train.steps, kd.batch, kd.seq_len,
            kd.train.lr, kd.train.warmup_steps, kd.temperature, kd.groups
        ),
    ];
    s.finish("Eight cases, done right", notes, &log)?;
    Ok(())
}
