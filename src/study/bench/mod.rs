//! The runtime benchmark harness (`experiments/bench_runtime`): what a checkpoint costs to run,
//! as rows of [`Results`]. Every figure is [`timing::timed`] (warm-up, repeats, median and
//! [max − min]) and, on CUDA, paired with the peak device memory of its phase
//! ([`memory::MemPeak`]):
//! - [`prefill`]: forward + log-softmax tokens/s at batch × length points (candle forward);
//! - [`decode`]: greedy decode ms per step on the candle forward, and on the decode engine
//!   (eager launches and CUDA-graph replay; CUDA builds);
//! - [`kernels`]: device copy bandwidth, and where a prefill's time goes (layers, lm_head,
//!   attention kernel, the largest GEMM in bf16 and int8; CUDA builds);
//! - [`checks`]: every runtime kernel against the f32 reference, recorded beside the timings;
//! - [`gemm`]: the W8A8 GEMM sweep (ours int8 / fp8, cuBLAS int8 + epilogue, cuBLAS bf16 over
//!   the 1.2B's Linear shapes and M = 1 … 16384), after its own numerical checks;
//! - [`record_hf`]: HF transformers' figures for the same points (scripts/hf_bench.py).

pub mod checks;
pub mod decode;
#[cfg(feature = "cuda")]
mod fused_quant_checks;
pub mod gemm;
#[cfg(feature = "cuda")]
mod gemm_checks;
pub mod gemm_w4;
mod gemm_w4_pairs;
pub mod kernels;
pub mod memory;
pub mod prefill;
pub mod timing;

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::json;

pub use memory::MemPeak;
pub use timing::{sync_ms, timed, Timing};

use crate::model::generate::synthetic_ids;
use crate::model::Exaone4;
use crate::record::{Results, Variant};
use crate::{Error, Result};

// What is timed and how often (flatten into an experiment's clap `Args`). A plain comment:
// clap would show a doc comment as the binary's description.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// prefill points, BATCHxLENGTH
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1x512,1x2048,8x512,8x2048",
        value_parser = valid_point
    )]
    pub prefill: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,16", value_parser = crate::study::at_least_one::<usize>)]
    pub decode_batches: Vec<usize>,
    /// prompt tokens before decoding
    #[arg(long, default_value_t = 128, value_parser = crate::study::at_least_one::<usize>)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64, value_parser = crate::study::at_least_one::<usize>)]
    pub new_tokens: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5, value_parser = crate::study::at_least_one::<usize>)]
    pub repeats: usize,
}

/// A `BATCHxLENGTH` prefill point, both at least one, checked when the flag is read.
fn valid_point(s: &str) -> std::result::Result<String, String> {
    if parse_point(s).is_some_and(|(b, t)| b >= 1 && t >= 1) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: a prefill point is BATCHxLENGTH, both at least 1 (e.g. 8x2048)"
        ))
    }
}

/// The settings and the device's memory sampler; the benchmarks are its methods.
pub struct Bench {
    pub args: BenchArgs,
    pub mem: Option<MemPeak>,
}

impl Bench {
    /// Starts the memory sampler on `device` (CUDA only).
    pub fn new(args: BenchArgs, device: &Device) -> Self {
        let mem = MemPeak::start(device);
        Self { args, mem }
    }

    /// [`timed`] with this benchmark's warm-up and repeats.
    pub fn timed(&self, f: impl FnMut() -> Result<f64>) -> Result<Timing> {
        timed(self.args.warmup, self.args.repeats, f)
    }

    /// Records the peak memory since the last call as `metric`, where it is sampled.
    fn record_peak(&self, r: &mut Results, v: &Variant, metric: &str) {
        if let Some(m) = &self.mem {
            r.add(v, metric, m.take(), None, "GiB");
        }
    }

    /// Prefill points and (with `decode`) decode batches on the candle forward, each phase
    /// followed by its peak memory.
    pub fn candle(
        &self,
        r: &mut Results,
        variant: &str,
        model: &Exaone4,
        decode: bool,
    ) -> Result<()> {
        crate::runtime::trim_freed_memory(model.device())?;
        if let Some(m) = &self.mem {
            m.take();
        }
        self.prefill(r, variant, model)?;
        if decode {
            self.candle_decode(r, variant, model)?;
        }
        Ok(())
    }
}

/// A `BATCHxLENGTH` point (the flag's parser checked it; (1, 512) for text that bypassed it).
pub fn point(p: &str) -> (usize, usize) {
    parse_point(p).unwrap_or((1, 512))
}

fn parse_point(p: &str) -> Option<(usize, usize)> {
    p.split_once('x')
        .and_then(|(b, t)| Some((b.parse().ok()?, t.parse().ok()?)))
}

/// `b` rows of `t` synthetic prompt ids ([`synthetic_ids`], one sequence across the rows).
pub fn ids(b: usize, t: usize, vocab: usize, dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec(synthetic_ids(vocab, b * t, 0), (b, t), dev)
}

/// Seconds to load `dir` onto `device` (to a synchronised device), three times, no warm-up:
/// recorded as `load_s` of `variant` (median and spread).
pub fn record_load_time(
    r: &mut Results,
    variant: &Variant,
    dir: &Path,
    dtype: candle_core::DType,
    device: &Device,
) -> Result<()> {
    let t = timed(0, 3, || {
        let t0 = std::time::Instant::now();
        let m = crate::runtime::load_model(dir, dtype, device)?;
        device.synchronize()?;
        drop(m);
        Ok(t0.elapsed().as_secs_f64())
    })?;
    r.add(variant, "load_s", t.median, Some(t.max - t.min), "s");
    Ok(())
}

/// The device's measured copy bandwidth ([`kernels::copy_bandwidth`]), recorded as
/// `copy_gb_s` of variant `device`.
pub fn record_copy_bandwidth(r: &mut Results, device: &Device) -> Result<()> {
    let bw = kernels::copy_bandwidth(device)?;
    let v = Variant::new("device", "copy", json!({}));
    r.add(&v, "copy_gb_s", bw, None, "GB/s");
    Ok(())
}

/// Adds HF transformers' figures from `scripts/hf_bench.py`'s JSON (`{"transformers": version,
/// "metrics": {name: {median, spread, unit}}}`) as variant `hf`.
pub fn record_hf(r: &mut Results, v: &serde_json::Value) {
    for (k, x) in v["metrics"].as_object().into_iter().flatten() {
        let method = format!("transformers {}", v["transformers"].as_str().unwrap_or(""));
        let (m, s, u) = (
            x["median"].as_f64().unwrap_or(f64::NAN),
            x["spread"].as_f64(),
            x["unit"].as_str().unwrap_or(""),
        );
        r.add(&Variant::new("hf", method, json!({})), k, m, s, u);
    }
}

/// HF transformers' figures as scripts/hf_bench.py and scripts/hf_serve.py write them: read
/// before any measurement, so a wrong path costs nothing.
pub fn read_hf(path: &Path) -> Result<serde_json::Value> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&s).map_err(|e| Error::json(path, e))?;
    if !v["metrics"].is_object() {
        return Err(Error::Invalid(format!(
            "{}: no `metrics` object (not written by scripts/hf_bench.py or hf_serve.py?)",
            path.display()
        )));
    }
    Ok(v)
}
