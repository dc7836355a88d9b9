//! Any checkpoints side by side against a base — ours, llm-compressor's, candidates for a
//! submission: each loaded as it is (compressed-tensors dequantized, W8A8/FP8 activations
//! quantized at run time), measured by the same suite.
//!
//!   cargo run --release --bin compare -- --variant w8a8=/tmp/q-w8a8 --variant gptq=/tmp/q-gptq

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use exaone_compress::study::{Study, StudyArgs};

/// Any checkpoints side by side against a base, measured by the same suite (perplexity, KL, accuracy, size, time).
#[derive(Parser)]
#[command(long_about = None)]
struct Args {
    #[command(flatten)]
    study: StudyArgs,
    /// NAME=DIR, repeated: a checkpoint directory to measure against the base (--model)
    #[arg(long = "variant", required = true)]
    variants: Vec<String>,
}

fn main() -> std::process::ExitCode {
    exaone_compress::error::exit(run())
}

fn run() -> Result<()> {
    let a = exaone_compress::study::parse_args::<Args>();
    let variants: Vec<(String, PathBuf)> = a
        .variants
        .iter()
        .map(|v| {
            let (n, d) = v
                .split_once('=')
                .with_context(|| format!("--variant {v:?}: expected NAME=DIR"))?;
            Ok((n.to_string(), PathBuf::from(d)))
        })
        .collect::<Result<_>>()?;
    // every name and directory checked before the base is measured
    let mut seen = std::collections::BTreeSet::from(["original".to_string()]);
    for (name, dir) in &variants {
        if name.trim().is_empty() {
            anyhow::bail!(
                "--variant ={}: the variant needs a name (NAME=DIR)",
                dir.display()
            );
        }
        if !seen.insert(name.clone()) {
            anyhow::bail!(
                "--variant {name}=…: the name {name:?} is taken (\"original\" is the base, --model); give each variant its own name"
            );
        }
        exaone_compress::Checkpoint::open(dir)
            .with_context(|| format!("--variant {name}={}", dir.display()))?;
    }
    let mut s = Study::load("compare", a.study)?;
    for (name, dir) in &variants {
        s.refuse_input_inside(dir, &format!("--variant {name}="))?;
    }
    s.plan(1 + variants.len());
    let base_dir = s.dir.clone();
    s.measure_dir("original", &base_dir)?;
    for (name, dir) in &variants {
        s.measure_dir(name, dir)?;
    }
    s.finish("Checkpoints compared", vec![], &[])?;
    Ok(())
}
