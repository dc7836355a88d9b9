//! The base model measured alone — perplexity and bits per byte, KL (zero, a self-check), task
//! accuracy, time per token, the legacy answers: the row every other study compares against.
//!
//!   cargo run --release --bin baseline [-- --model DIR --device cuda]

use anyhow::Result;
use clap::Parser;
use exaone_compress::record::Variant;
use exaone_compress::study::{Study, StudyArgs};

/// The base model measured alone: perplexity, KL (a self-check), task accuracy, time per token → reports/baseline/.
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
        "baseline",
        exaone_compress::study::parse_args::<Args>().study,
    )?;
    let base = s.base.share();
    s.measure(&Variant::original(), &base)?;
    s.finish("Baseline", vec![], &[])?;
    Ok(())
}
