//! Serving-regime speed as the competition measures it: the whole workload (default: 256 Korean
//! multiple-choice prompts, 256 new tokens each, stop ids off) handed to the engine at once and
//! run with continuous batching over a paged KV pool, T = generation time ÷ generated tokens;
//! at several concurrency limits, per variant (bf16, W4A16, W8A8), with every step's time over
//! its roofline, batch-1 decoding on the same path, a long-context run (64 requests, 2k–8k
//! prompts) and HF transformers' batched `generate` on the same requests (scripts/hf_serve.py);
//! then every run's measured steps projected on an NVIDIA L4 (bf16, W4A16, W8A8, and FP8 on the
//! bf16 run's steps), efficiencies carried from this device's measured copy and GEMM rates.
//! On CUDA it first checks the engine's logits against the f32 forward (serve::check).
//!
//!   serve_bench --model DIR [--w4a16 DIR] [--w8a8 DIR] [--fp8 DIR] --device cuda [--hf-json hf.json]
//!   serve_bench --write-workload FILE      (the requests as JSONL, for the HF script)

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use exaone_compress::record::Results;
use exaone_compress::study::serving::{self, ServeArgs};
use exaone_compress::{default_model, runtime, study::bench};

/// Serving-regime speed as the evaluation measures it: the whole workload at once, continuous batching, time per generated token.
#[derive(Parser)]
#[command(long_about = None)]
struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    /// a W4A16 (pack-quantized) checkpoint of the same model
    #[arg(long)]
    w4a16: Option<PathBuf>,
    /// a W8A8 int8 checkpoint of the same model
    #[arg(long)]
    w8a8: Option<PathBuf>,
    /// an FP8 (e4m3, dynamic per-token activations) checkpoint of the same model: native on
    /// sm_89+, dequantized to bf16 elsewhere
    #[arg(long)]
    fp8: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = exaone_compress::device::device_word)]
    device: String,
    #[arg(long, default_value = "reports/serve_bench")]
    out: PathBuf,
    /// replace the report already at --out (another experiment's, or one outside reports/), the
    /// file at --write-workload, or the answers' files in --gen-mc-samples
    #[arg(long)]
    overwrite: bool,
    /// HF transformers' figures on the same requests (scripts/hf_serve.py)
    #[arg(long)]
    hf_json: Option<PathBuf>,
    /// requests of the long-context run on the base model (0: skip)
    #[arg(long, default_value_t = 64)]
    long_requests: u64,
    /// write the workload's requests as JSONL to this file and stop
    #[arg(long)]
    write_workload: Option<PathBuf>,
    /// redraw the report from `--out`'s results.parquet (with `--command`) and stop
    #[arg(long)]
    report_only: bool,
    /// the model's name in the report (default: its path)
    #[arg(long)]
    model_name: Option<String>,
    /// the device's name for the report (e.g. from nvidia-smi)
    #[arg(long, default_value = "")]
    device_name: String,
    /// the command line to print in the report (default: this process's)
    #[arg(long)]
    command: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> std::process::ExitCode {
    exaone_compress::error::exit(run())
}

fn run() -> Result<()> {
    let a = exaone_compress::study::parse_args::<Args>();
    let command = a
        .command
        .clone()
        .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    if a.report_only {
        let r = Results::load(&a.out.join("results.parquet"))?;
        exaone_compress::report::serve::write(&r, &a.out, &command)?;
        println!("{}", a.out.join("README.md").display());
        return Ok(());
    }
    let w = serving::workload(&a.serve)?;
    if let Some(p) = &a.write_workload {
        w.write_jsonl(p, a.overwrite)?;
        eprintln!("{} requests → {}", w.len(), p.display());
        return Ok(());
    }
    exaone_compress::study::check_report_out(&a.out, "serve_bench", a.overwrite)?;
    let hf = a.hf_json.as_deref().map(bench::read_hf).transpose()?;
    let dir = a.model.clone().map_or_else(default_model, Ok)?;
    let variants: Vec<(&str, PathBuf)> = [
        ("bf16", Some(dir.clone())),
        ("w4a16", a.w4a16.clone()),
        ("w8a8", a.w8a8.clone()),
        ("fp8", a.fp8.clone()),
    ]
    .into_iter()
    .filter_map(|(l, d)| d.map(|d| (l, d)))
    .collect();
    let labels: Vec<&str> = variants.iter().map(|v| v.0).collect();
    serving::check_samples_out(&a.serve, &labels, a.overwrite)?;
    let device = runtime::open_device(&a.device)?;
    let name = Some(a.device_name.clone()).filter(|n| !n.is_empty());
    let model = a.model_name.clone().unwrap_or(dir.display().to_string());
    let mut r = Results::new("serve_bench", &name.unwrap_or(a.device.clone()), &model);
    serving::run_all(&mut r, &a.serve, &w, &device, &variants, a.long_requests)?;
    if let Some(hf) = &hf {
        bench::record_hf(&mut r, hf);
    }
    r.save(&a.out)?;
    exaone_compress::report::serve::write(&r, &a.out, &command)?;
    println!("{}", a.out.join("README.md").display());
    Ok(())
}
