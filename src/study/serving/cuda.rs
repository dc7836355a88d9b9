//! The serving benchmark on CUDA: the device's measured copy bandwidth and GEMM rates (the
//! rooflines' inputs, and the L4 projection's efficiencies), the engine's check, and one
//! variant's runs.

use std::path::Path;

use serde_json::json;

use super::{
    batch1, gen_mc, keep_trace, measure, scheduler, tag_of, variant, workload, ServeArgs,
    VariantRun,
};
use crate::error::{Error, Result};
use crate::eval::projection::{DeviceRates, Efficiencies};
use crate::record::{Results, Variant};
use crate::serve::{Roofline, Runner, SchedulerConfig, Workload, DEFAULT_BLOCK_SIZE};

/// Context of the profiled decode steps: a multiple-choice request halfway through its answer.
const PROFILE_CONTEXT: usize = 512;

/// The CUDA runs: the device's measured copy bandwidth and GEMM rates (the rooflines' inputs).
pub struct CudaRun {
    pub ordinal: usize,
    pub bandwidth: f64,
    pub bf16_flops: f64,
    pub int8_ops: f64,
}

impl CudaRun {
    /// Measures the copy bandwidth and the bf16 / int8 GEMM rates on the 1.2B's widest Linear
    /// shape (gate/up: 8192 × 2048) at 4096 rows.
    pub fn measure_device(device: &candle_core::Device) -> Result<Self> {
        let candle_core::Device::Cuda(d) = device else {
            return Err(Error::Invalid("CudaRun: not a CUDA device".into()));
        };
        let bandwidth = crate::study::bench::kernels::copy_bandwidth(device)? * 1e9;
        let (m, n, k) = (4096usize, 8192usize, 2048usize);
        let (bf16_ms, int8_ms, _) = crate::runtime::quantized::gemm_timings(d, m, n, k)?;
        let flops = 2.0 * (m * n * k) as f64;
        Ok(Self {
            ordinal: 0,
            bandwidth,
            bf16_flops: flops / (bf16_ms * 1e-3),
            int8_ops: flops / (int8_ms * 1e-3),
        })
    }

    /// The measured rates as [`DeviceRates`] of the device `r` names (its GPU as
    /// `nvidia-smi` gives it, else its device), recorded as `device_*` rows of
    /// [`super::L4_VARIANT`], and the efficiencies they carry to the L4
    /// ([`Efficiencies::carried`]).
    pub fn efficiencies(&self, r: &mut Results) -> Efficiencies {
        let name = if r.env.gpu.is_empty() {
            r.device.clone()
        } else {
            r.env.gpu.clone()
        };
        let m = DeviceRates {
            name,
            copy_bandwidth: self.bandwidth,
            bf16_flops: self.bf16_flops,
            int8_ops: Some(self.int8_ops),
        };
        let v = Variant::new(
            super::L4_VARIANT,
            "l4 projection",
            json!({ "device": m.name }),
        );
        r.add(&v, "device_copy_bandwidth", m.copy_bandwidth, None, "B/s");
        r.add(&v, "device_bf16_gemm_flops", m.bf16_flops, None, "FLOP/s");
        r.add(&v, "device_int8_gemm_ops", self.int8_ops, None, "OP/s");
        Efficiencies::carried(&m)
    }

    /// The engine's logits on checkpoint `label` against the f32 forward on a ragged workload:
    /// 12 requests of the shipped shapes, decoding tokens packed (some steps replayed from
    /// graphs), run twice: with a small token budget (prompt chunks split across steps) and with
    /// one whose first step packs over [`crate::runtime::quantized::CUBLAS_INT8_MIN_ROWS`] prompt
    /// tokens (the prefill chunks' own GEMM paths); for W8A8 checkpoints, each run again with
    /// every product quantizing its own input, which must give the same logits bit for bit
    /// (`serve::check::handoff`). Recorded as check rows; an error if one fails.
    pub fn check(&self, r: &mut Results, label: &str, dir: &Path, w: &Workload) -> Result<()> {
        let mut reqs: Vec<_> = w.requests.iter().take(12).cloned().collect();
        for (i, q) in reqs.iter_mut().enumerate() {
            q.max_new_tokens = 6 + 3 * i;
            q.prompt_ids.truncate(40 + 37 * i);
        }
        let small = Workload::new(reqs);
        let cfg = |budget| SchedulerConfig {
            max_num_seqs: 8,
            max_num_batched_tokens: budget,
            block_size: DEFAULT_BLOCK_SIZE,
            num_blocks: 512,
            max_model_len: 1024,
        };
        let (a, b) = (
            format!("serving engine {label}"),
            format!("serving engine {label}, 2048-token steps"),
        );
        let configs = [(cfg(256), a.as_str()), (cfg(2048), b.as_str())];
        let mut checks = crate::serve::check::logits(dir, self.ordinal, &small, &configs)?;
        // 8-bit activations: the quantized rows handed from producer to product give the same
        // bits as each product quantizing its own input (both budgets: decode steps on our
        // tiles, prompt chunks on cuBLAS int8 / cuBLASLt fp8, whose gate quantizes down's input)
        let ckpt = crate::checkpoint::Checkpoint::open(dir)?;
        let eight_bit = ckpt
            .quant_info()?
            .and_then(|q| q.scheme)
            .is_some_and(|s| s.input_activations.is_some());
        if eight_bit {
            for (config, what) in &configs {
                let what = format!("{what}, hand-off");
                let c = crate::serve::check::handoff(dir, self.ordinal, &small, config, &what)?;
                checks.push(c);
            }
        }
        for c in checks {
            let v = Variant::new("checks", "check", json!({}));
            r.add(
                &v,
                &format!("kernel_rel_err: {}", c.what),
                c.kernel_err,
                None,
                "",
            );
            r.add(
                &v,
                &format!("bf16_rel_err: {}", c.what),
                c.bf16_err,
                None,
                "",
            );
            r.add(&v, &format!("top1: {}", c.what), c.top1, None, "");
            eprintln!(
                "check {}: engine {:.2e} vs bf16 forward {:.2e} (top-1 {:.3}) — {}",
                c.what,
                c.kernel_err,
                c.bf16_err,
                c.top1,
                if c.passes() { "pass" } else { "FAIL" }
            );
            if !c.passes() {
                return Err(Error::Invalid(format!("serving check failed: {c:?}")));
            }
        }
        Ok(())
    }

    /// One checkpoint: the workload at every concurrency limit, batch-1 decoding, and (where
    /// `long` > 0) a long-context workload of that many requests.
    pub fn variant(
        &self,
        r: &mut Results,
        label: &str,
        dir: &Path,
        a: &ServeArgs,
        w: &Workload,
        long: u64,
    ) -> Result<VariantRun> {
        use crate::runtime::serving::KvBudget;
        use crate::serve::cuda::CudaExecutor;
        // the previous variant's engine was dropped: give its memory back before sizing a pool
        crate::runtime::trim_freed_memory(&candle_core::Device::new_cuda(self.ordinal)?)?;
        let ckpt = crate::checkpoint::Checkpoint::open(dir)?;
        let maxc = a.concurrency.iter().copied().max().unwrap_or(256).max(1);
        let kv = match a.kv_blocks {
            Some(n) => KvBudget::Blocks(n),
            None => KvBudget::Fraction(a.gpu_memory_utilization),
        };
        let (exec, cfg) = CudaExecutor::load(&ckpt, self.ordinal, &scheduler(a, maxc, 0), kv)?;
        let info = exec.engine.info.clone();
        let rate = if info.weights.contains("w8a8") {
            self.int8_ops
        } else {
            self.bf16_flops
        };
        let roof = Roofline::new(
            &ckpt.config,
            info.weight_bytes_per_step as f64,
            self.bandwidth,
            rate,
        );
        let v = variant(label, &info.weights, &a.concurrency);
        let blocks = cfg.num_blocks;
        r.add(&v, "serve_kv_blocks", blocks as f64, None, "blocks");
        r.add(
            &v,
            "weight_bytes_per_step",
            info.weight_bytes_per_step as f64,
            None,
            "B",
        );
        let mut runner = Runner::new(exec, cfg, ckpt.config.vocab_size);
        let reps = a.repeats as usize;
        let mut traces = vec![];
        for &c in &a.concurrency {
            runner.config = scheduler(a, c, blocks);
            let tag = format!("{}_c{c}", tag_of(a));
            let rep = measure(r, &v, &tag, &mut runner, w, reps, Some(&roof))?;
            keep_trace(&mut traces, &tag, &rep);
            eprintln!(
                "{label} c={c}: {:.0} tokens/s, T = {:.3e} s/token, {} steps, mean batch {:.1}",
                rep.totals.tokens_per_sec,
                rep.totals.secs_per_token,
                rep.totals.steps,
                rep.totals.mean_batch
            );
        }
        if a.b1_tokens > 0 {
            runner.config = scheduler(a, 1, blocks);
            batch1(r, &v, &mut runner, w, a.b1_tokens, a.repeats as usize)?;
        }
        for b in [1, maxc] {
            let ctx = PROFILE_CONTEXT;
            let parts = runner.executor.engine.profile_decode(b, ctx)?;
            let total: f64 = parts.iter().map(|p| p.1).sum();
            for (what, ms, _) in &parts {
                r.add(&v, &format!("serve_profile_b{b}: {what}"), *ms, None, "ms");
            }
            r.add(&v, &format!("serve_profile_b{b}: total"), total, None, "ms");
        }
        runner.config = scheduler(a, maxc, blocks);
        gen_mc(r, &v, &mut runner, dir, a)?;
        if long > 0 {
            let la = ServeArgs {
                workload: "long".into(),
                requests: long,
                new_tokens: 64,
                ..a.clone()
            };
            let lw = workload(&la)?;
            runner.config = scheduler(a, maxc, blocks);
            let tag = format!("long_c{maxc}");
            let rep = measure(r, &v, &tag, &mut runner, &lw, 1, Some(&roof))?;
            keep_trace(&mut traces, &tag, &rep);
            eprintln!(
                "{label} long context: {} requests, {} errors, {} preemptions, peak {} of {} blocks",
                rep.totals.requests,
                rep.totals.errors,
                rep.totals.preemptions,
                rep.totals.peak_kv_blocks,
                rep.totals.kv_blocks
            );
        }
        eprintln!(
            "{label}: {} graph steps, {} eager steps",
            runner.executor.engine.graph_steps, runner.executor.engine.eager_steps
        );
        Ok(VariantRun {
            label: label.to_string(),
            config: ckpt.config.clone(),
            traces,
        })
    }
}
