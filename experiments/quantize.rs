//! Quantization methods side by side on one model: RTN vs GPTQ vs AWQ (W4A16 g128, and AWQ
//! without clipping as llm-compressor runs it) vs W8A8 (min-max and GPTQ) vs FP8, by test
//! perplexity, KL to the base, task accuracy and the size of each compressed-tensors checkpoint.
//!
//!   cargo run --release --bin quantize [-- --model DIR --device cuda]

use anyhow::Result;
use clap::Parser;
use exaone_compress::compress::quant::apply::{quantize_awq, quantize_gptq, quantize_rtn};
use exaone_compress::compress::quant::{awq::AwqConfig, gptq::GptqConfig, Scheme};
use exaone_compress::record::Variant;
use exaone_compress::study::{Study, StudyArgs};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    study: StudyArgs,
}

fn main() -> Result<()> {
    let mut s = Study::load(
        "quantize",
        exaone_compress::study::parse_args::<Args>().study,
    )?;
    let base = s.base.share();
    let calib = s.calib.clone();
    let mut log = vec![];
    let (w4, w8) = (Scheme::w4a16(128, true), Scheme::w8a8_int8());
    let p =
        |scheme: &Scheme| json!({"scheme": scheme.name(), "calib": [calib.len(), calib[0].len()]});
    let none = |_: &str| false;
    s.measure(&Variant::original(), &base)?;
    let q = quantize_rtn(&base, &w4, &none)?;
    s.measure_quantized(&Variant::new("RTN W4A16", "rtn", p(&w4)), &q)?;
    let q = quantize_gptq(&base, &w4, &calib, &GptqConfig::default(), &none, &mut log)?;
    s.measure_quantized(&Variant::new("GPTQ W4A16", "gptq", p(&w4)), &q)?;
    let no_clip = AwqConfig {
        clip_steps: 0,
        ..Default::default()
    };
    let q = quantize_awq(&base, &w4, &calib, &no_clip, &none, &mut log)?;
    s.measure_quantized(
        &Variant::new("AWQ W4A16 (no clip)", "awq, scales only", p(&w4)),
        &q,
    )?;
    let q = quantize_awq(&base, &w4, &calib, &AwqConfig::default(), &none, &mut log)?;
    s.measure_quantized(&Variant::new("AWQ W4A16", "awq + clip search", p(&w4)), &q)?;
    let q = quantize_rtn(&base, &w8, &none)?;
    s.measure_quantized(&Variant::new("W8A8 (min-max)", "rtn", p(&w8)), &q)?;
    let q = quantize_gptq(&base, &w8, &calib, &GptqConfig::default(), &none, &mut log)?;
    s.measure_quantized(&Variant::new("W8A8 GPTQ", "gptq", p(&w8)), &q)?;
    let f8 = Scheme::fp8_dynamic();
    let q = quantize_rtn(&base, &f8, &none)?;
    s.measure_quantized(&Variant::new("FP8 dynamic", "rtn", p(&f8)), &q)?;
    let notes = vec![format!(
        "Calibration: {} × {} tokens of the training split; KL on {} × 256 validation tokens.",
        s.args.calib_samples, s.args.calib_len, s.args.kl_sequences
    )];
    s.finish("Quantization methods side by side", notes, &log)?;
    Ok(())
}
