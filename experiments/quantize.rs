//! Quantization methods side by side on one model: RTN vs GPTQ vs AWQ (W4A16 g128, and AWQ
//! without clipping as llm-compressor runs it) vs W8A8 (min-max and GPTQ) vs FP8, by test
//! perplexity, KL to the base, task accuracy and the size of each compressed-tensors checkpoint.
//! Every variant is made by its recipe (`exaone-compress apply` rebuilds it bit for bit).
//!
//!   cargo run --release --bin quantize [-- --model DIR --device cuda]

use anyhow::Result;
use clap::Parser;
use exaone_compress::compress::quant::{awq::AwqConfig, gptq::GptqConfig};
use exaone_compress::compress::recipe::{
    ActOrderName, Calibration, QuantizeStep, Quantizer, SchemeName, Step,
};
use exaone_compress::record::Variant;
use exaone_compress::study::{Study, StudyArgs};

/// Quantization methods side by side: RTN, GPTQ, AWQ (W4A16), W8A8 and FP8, by quality and size → reports/quantize/.
#[derive(Parser)]
#[command(long_about = None)]
struct Args {
    #[command(flatten)]
    study: StudyArgs,
}

fn main() -> std::process::ExitCode {
    exaone_compress::error::exit(run())
}

fn run() -> Result<()> {
    let mut s = Study::load(
        "quantize",
        exaone_compress::study::parse_args::<Args>().study,
    )?;
    let base = s.base.share();
    let (seed, samples, len) = (s.args.seed, s.args.calib_samples, s.args.calib_len);
    let calib = || Calibration::new(None, samples, len, false, seed);
    let quant = |scheme: SchemeName, quantizer: Quantizer| {
        let group = scheme.grouped().then_some(128);
        let ignore = vec![];
        vec![Step::Quantize(QuantizeStep {
            scheme,
            group,
            ignore,
            quantizer,
        })]
    };
    let gptq = || Quantizer::gptq(&GptqConfig::default(), ActOrderName::None, calib());
    let no_clip = AwqConfig {
        clip_steps: 0,
        ..Default::default()
    };
    let (w4, w8) = (SchemeName::W4a16, SchemeName::W8a8);
    s.measure(&Variant::original(), &base)?;
    for (name, steps) in [
        ("RTN W4A16", quant(w4, Quantizer::Rtn {})),
        ("GPTQ W4A16", quant(w4, gptq())),
        (
            "AWQ W4A16 (no clip)",
            quant(w4, Quantizer::awq(&no_clip, calib())),
        ),
        (
            "AWQ W4A16",
            quant(w4, Quantizer::awq(&AwqConfig::default(), calib())),
        ),
        ("W8A8 (min-max)", quant(w8, Quantizer::Rtn {})),
        ("W8A8 GPTQ", quant(w8, gptq())),
        ("FP8 dynamic", quant(SchemeName::Fp8, Quantizer::Rtn {})),
    ] {
        s.measure_recipe(name, steps)?;
    }
    let notes = vec![format!(
        "Calibration: {samples} × {len} tokens of the training split; KL on {} × 256 validation tokens.",
        s.args.kl_sequences
    )];
    s.finish("Quantization methods side by side", notes, &[])?;
    Ok(())
}
