//! Quantization methods side by side on one model: RTN vs GPTQ vs AWQ (W4A16 g128, and AWQ
//! without clipping as llm-compressor runs it) vs W8A8 vs FP8, by test perplexity and KL to
//! the base, with the size of each compressed-tensors checkpoint.
//!
//!   cargo run --release --bin quantize [-- --model DIR --device cuda]

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use exaone_compress::compress::calibration::samples;
use exaone_compress::compress::quant::apply::{
    quantize_awq, quantize_gptq, quantize_rtn, QuantizedModel,
};
use exaone_compress::compress::quant::{awq::AwqConfig, gptq::GptqConfig, Scheme};
use exaone_compress::data::default_splits;
use exaone_compress::device::{parse_device, parse_dtype};
use exaone_compress::eval::suite::{add_scores, SaveTo, Suite};
use exaone_compress::model::Tokenizer;
use exaone_compress::record::Results;
use exaone_compress::report::study::{self, ReportOptions};
use exaone_compress::{default_model_dir, Exaone4};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "reports/quantize")]
    out: PathBuf,
    #[arg(long, default_value_t = 32)]
    calib_samples: usize,
    #[arg(long, default_value_t = 256)]
    calib_len: usize,
    #[arg(long, default_value_t = 8192)]
    eval_tokens: usize,
    #[arg(long, default_value_t = 32)]
    kl_sequences: usize,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let device = parse_device(&a.device)?;
    let dir = a.model.clone().unwrap_or_else(default_model_dir);
    let base = Exaone4::from_dir(&dir, parse_dtype("auto", &device)?, &device)?;
    let (tok, _) = Tokenizer::for_model(&dir)?;
    let (train, val, mut test) = default_splits(&tok, tok.token_id("[|endofturn|]"))?;
    test.ids.truncate(a.eval_tokens);
    let calib = samples(&train, a.calib_samples, a.calib_len, 0)?;
    let suite = Suite::new(tok, test, samples(&val, a.kl_sequences, 256, 1)?);
    let mut r = Results::new("quantize", &a.device, &dir.display().to_string());
    let tmp = tempfile::tempdir()?;
    let mut log = vec![];
    let w4 = Scheme::w4a16(128, true);
    let save = SaveTo {
        dir: tmp.path(),
        side_files_from: None,
        remove_after: true,
    };
    let params = json!({"calib": [a.calib_samples, a.calib_len]});
    let eval =
        |r: &mut Results, name: &str, method: &str, q: Option<&QuantizedModel>| -> Result<()> {
            let model = q.map(|q| &q.model).unwrap_or(&base);
            suite.measure(r, name, method, &params, &base, model, q, &save)?;
            Ok(())
        };
    eval(&mut r, "original", "none", None)?;
    eval(
        &mut r,
        "RTN W4A16",
        "rtn",
        Some(&quantize_rtn(&base, &w4, &|_| false)?),
    )?;
    eval(
        &mut r,
        "GPTQ W4A16",
        "gptq",
        Some(&quantize_gptq(
            &base,
            &w4,
            &calib,
            &GptqConfig::default(),
            &|_| false,
            &mut log,
        )?),
    )?;
    let no_clip = AwqConfig {
        clip_steps: 0,
        ..Default::default()
    };
    eval(
        &mut r,
        "AWQ W4A16 (no clip)",
        "awq, scales only",
        Some(&quantize_awq(
            &base,
            &w4,
            &calib,
            &no_clip,
            &|_| false,
            &mut log,
        )?),
    )?;
    eval(
        &mut r,
        "AWQ W4A16",
        "awq + clip search",
        Some(&quantize_awq(
            &base,
            &w4,
            &calib,
            &AwqConfig::default(),
            &|_| false,
            &mut log,
        )?),
    )?;
    eval(
        &mut r,
        "W8A8 (min-max)",
        "rtn",
        Some(&quantize_rtn(&base, &Scheme::w8a8_int8(), &|_| false)?),
    )?;
    eval(
        &mut r,
        "W8A8 GPTQ",
        "gptq",
        Some(&quantize_gptq(
            &base,
            &Scheme::w8a8_int8(),
            &calib,
            &GptqConfig::default(),
            &|_| false,
            &mut log,
        )?),
    )?;
    eval(
        &mut r,
        "FP8 dynamic",
        "rtn",
        Some(&quantize_rtn(&base, &Scheme::fp8_dynamic(), &|_| false)?),
    )?;
    add_scores(&mut r, "original");
    r.save(&a.out)?;
    let opts = ReportOptions {
        title: "Quantization methods side by side".into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        notes: vec![format!(
            "Calibration: {} × {} tokens of the training split; KL on {} × 256 validation tokens.",
            a.calib_samples, a.calib_len, a.kl_sequences
        )],
        redact_timings: false,
        quality_meaningless: false,
    };
    study::write(&a.out, &r, &opts)?;
    std::fs::write(a.out.join("log.txt"), log.join("\n") + "\n")?;
    println!("{}", study::markdown(&r, &opts));
    Ok(())
}
