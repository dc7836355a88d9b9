//! Runtime of a checkpoint and its compressed variants, ours beside HF transformers (same call,
//! same GPU): load time; prefill (forward + log-softmax) tokens/s at batch × length points; greedy
//! decode ms per step at batch 1 and 16 on the candle forward and on the decode engine (eager
//! launches and CUDA-graph replay; bf16 and W4A16 packed int4); W8A8 prefill on int8 tensor
//! cores and FP8 prefill on fp8 tensor cores (sm_89+); peak device memory. Warm-up, repeats,
//! median and [max − min]. On CUDA it first checks every kernel numerically against the f32
//! reference (runtime::check) and fails if one is off. The harness is `study::bench`.
//!
//!   bench_runtime --model DIR [--w4a16 DIR] [--w8a8 DIR] [--fp8 DIR] --device cuda --hf-json hf.json
//!   bench_runtime --gemm-sweep [--w4-only|--w8a8-only] --device cuda --out DIR  (GEMM checks + sweeps)
//!   bench_runtime --gemm-sweep --checks-only --device cuda --out DIR  (the W8A8 checks alone)

use anyhow::Result;
use clap::Parser;
use exaone_compress::device::parse_dtype;
use exaone_compress::record::{Results, Variant};
use exaone_compress::study::bench::{self, Bench, BenchArgs};
use exaone_compress::{default_model, runtime};
use serde_json::json;
use std::path::PathBuf;

/// Runtime of a checkpoint and its compressed variants, ours beside HF transformers: load, prefill tokens/s, decode ms per step, peak memory.
#[derive(Parser)]
#[command(long_about = None)]
struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    /// a W4A16 (pack-quantized) compressed-tensors checkpoint of the same model
    #[arg(long)]
    w4a16: Option<PathBuf>,
    /// a W8A8 (int8, dynamic per-token activations) checkpoint of the same model
    #[arg(long)]
    w8a8: Option<PathBuf>,
    /// an FP8 (e4m3 weights, dynamic per-token fp8 activations) checkpoint of the same model
    #[arg(long)]
    fp8: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = exaone_compress::device::device_word)]
    device: String,
    #[arg(long, default_value = "auto", value_parser = exaone_compress::device::dtype_word)]
    dtype: String,
    #[arg(long, default_value = "reports/bench_runtime")]
    out: PathBuf,
    /// replace the report already at --out (another experiment's, or one outside reports/)
    #[arg(long)]
    overwrite: bool,
    // --prefill, --decode-batches, --prompt-len, --new-tokens, --warmup, --repeats
    #[command(flatten)]
    bench: BenchArgs,
    /// HF transformers' figures for the same points (scripts/hf_bench.py)
    #[arg(long)]
    hf_json: Option<PathBuf>,
    /// the device's name for the report (e.g. from nvidia-smi)
    #[arg(long, default_value = "")]
    device_name: String,
    /// the command line to print in the report (default: this process's)
    #[arg(long)]
    command: Option<String>,
    /// only the GEMM checks and sweeps, W8A8 then W4A16 (study::bench::gemm), rows to --out
    #[arg(long)]
    gemm_sweep: bool,
    /// with --gemm-sweep: the W4A16 routes alone
    #[arg(long, requires = "gemm_sweep")]
    w4_only: bool,
    /// with --gemm-sweep: the W8A8 numerical checks alone (GEMMs, quantizers, the RMSNorm with
    /// the quantizer fused in), no timings
    #[arg(long, requires = "gemm_sweep", conflicts_with = "w4_only")]
    checks_only: bool,
    /// with --gemm-sweep: the W8A8 checks and timings alone, no W4A16
    #[arg(long, requires = "gemm_sweep", conflicts_with_all = ["w4_only", "checks_only"])]
    w8a8_only: bool,
}

fn main() -> std::process::ExitCode {
    exaone_compress::error::exit(run())
}

fn run() -> Result<()> {
    let a = exaone_compress::study::parse_args::<Args>();
    exaone_compress::study::check_report_out(&a.out, "bench_runtime", a.overwrite)?;
    let hf = a.hf_json.as_deref().map(bench::read_hf).transpose()?;
    let device = runtime::open_device(&a.device)?;
    let dtype = parse_dtype(&a.dtype, &device)?;
    let dir = a.model.clone().map_or_else(default_model, Ok)?;
    let name = Some(&a.device_name)
        .filter(|n| !n.is_empty())
        .unwrap_or(&a.device);
    // the sweep multiplies random operands of the 1.2B's shapes: no model in it
    let model = match a.gemm_sweep {
        true => "none (random operands of the 1.2B's GEMM shapes)".to_string(),
        false => exaone_compress::study::model_label(&dir),
    };
    let mut r = Results::new("bench_runtime", &format!("{name} ({dtype:?})"), &model);
    if a.gemm_sweep {
        let part = bench::gemm::SweepPart::from_flags(a.w4_only, a.w8a8_only, a.checks_only);
        return Ok(bench::gemm::sweep(r, &device, &a.out, part)?);
    }
    let bench = Bench::new(a.bench.clone(), &device);
    let (w4a16, w8a8) = (a.w4a16.as_deref(), a.w8a8.as_deref());
    // every kernel against the f32 reference, before any timing (CUDA; none elsewhere)
    let checks = bench::checks::run(&mut r, &device, &dir, w4a16, w8a8, a.fp8.as_deref())?;

    // the base checkpoint on the candle forward: load, prefill, decode (+ where prefill goes)
    let candle = Variant::new("candle-bf16", "candle", json!({}));
    bench::record_load_time(&mut r, &candle, &dir, dtype, &device)?;
    {
        let model = runtime::load_model(&dir, dtype, &device)?;
        bench.candle(&mut r, "candle-bf16", &model, true)?;
        #[cfg(feature = "cuda")]
        if device.is_cuda() {
            if let Some(pt) = a.bench.prefill.last() {
                bench.prefill_breakdown(&mut r, "candle-bf16", &model, pt)?;
            }
        }
    }

    // the decode engine (bf16, W4A16 packed int4) and the compressed Linears on the candle
    // forward (W4A16; W8A8 on int8 and FP8 on fp8 tensor cores)
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        runtime::trim_freed_memory(&device)?;
        bench.engine(&mut r, "engine-bf16", &dir)?;
        if let Some(w4) = w4a16 {
            runtime::trim_freed_memory(&device)?;
            bench.engine(&mut r, "engine-w4a16", w4)?;
            bench.candle_compressed(&mut r, "candle-w4a16", w4, dtype, &device, false)?;
        }
        if let Some(w8) = w8a8 {
            bench.candle_compressed(&mut r, "candle-w8a8-int8", w8, dtype, &device, true)?;
        }
        if let Some(f8) = &a.fp8 {
            bench.candle_compressed(&mut r, "candle-fp8", f8, dtype, &device, true)?;
        }
    }

    bench::record_copy_bandwidth(&mut r, &device)?;
    bench::checks::record(&mut r, &checks);
    if let Some(hf) = &hf {
        bench::record_hf(&mut r, hf);
    }
    r.save(&a.out)?;
    let argv = || std::env::args().collect::<Vec<_>>().join(" ");
    let command = a.command.clone().unwrap_or_else(argv);
    exaone_compress::report::runtime::write(&r, &a.out, &command)?;
    let failed = bench::checks::failed(&checks);
    if !failed.is_empty() {
        anyhow::bail!("numerical checks failed: {failed:?}");
    }
    Ok(())
}
