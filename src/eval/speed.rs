//! Speed as the competition measures it: time per generated token (decode, batch 1) with
//! warm-up and repeats, reported as median and spread; prefill throughput; model load time is
//! measured by the caller, separately.

use std::time::Instant;

use candle_core::{Result, Tensor};

use crate::model::generate::synthetic_ids;
use crate::model::Exaone4;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Timing {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub repeats: usize,
}

impl Timing {
    pub fn from(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        };
        Self {
            median,
            min: v[0],
            max: v[n - 1],
            repeats: n,
        }
    }
    /// (max − min) / median: the relative spread
    pub fn spread(&self) -> f64 {
        (self.max - self.min) / self.median
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Speed {
    /// seconds per generated token at batch 1 (the competition's T)
    pub decode_s_per_token: Timing,
    /// prompt tokens per second
    pub prefill_tokens_per_s: Timing,
}

fn sync(model: &Exaone4) -> Result<()> {
    model.device().synchronize()
}

/// Decodes `new_tokens` after a `prompt_len` prompt, `repeats` times after `warmup` runs.
pub fn measure(
    model: &Exaone4,
    prompt_len: usize,
    new_tokens: usize,
    warmup: usize,
    repeats: usize,
) -> Result<Speed> {
    if repeats == 0 || prompt_len == 0 || new_tokens == 0 {
        candle_core::bail!(
            "speed: repeats ({repeats}), prompt length ({prompt_len}) and new tokens ({new_tokens}) must each be at least 1"
        );
    }
    let dev = model.device().clone();
    let prompt = synthetic_ids(model.config.vocab_size, prompt_len, 0);
    let mut dec = vec![];
    let mut pre = vec![];
    for run in 0..warmup + repeats {
        let mut cache = model.new_cache(1, prompt_len + new_tokens + 1, vec![0])?;
        let x = Tensor::from_vec(prompt.clone(), (1, prompt_len), &dev)?;
        sync(model)?;
        let t0 = Instant::now();
        let h = model.forward_hidden(&x, Some(&mut cache))?;
        let mut next = model
            .logits(&h.narrow(1, prompt_len - 1, 1)?)?
            .argmax(candle_core::D::Minus1)?;
        sync(model)?;
        let t_pre = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for _ in 0..new_tokens {
            let id = next.flatten_all()?.to_vec1::<u32>()?[0];
            let x = Tensor::from_vec(vec![id], (1, 1), &dev)?;
            let h = model.forward_hidden(&x, Some(&mut cache))?;
            next = model.logits(&h)?.argmax(candle_core::D::Minus1)?;
        }
        let _ = next.flatten_all()?.to_vec1::<u32>()?;
        let t_dec = t1.elapsed().as_secs_f64();
        if run >= warmup {
            pre.push(prompt_len as f64 / t_pre);
            dec.push(t_dec / new_tokens as f64);
        }
    }
    Ok(Speed {
        decode_s_per_token: Timing::from(dec),
        prefill_tokens_per_s: Timing::from(pre),
    })
}

/// Seconds per decode step of one request (`prompt_len` synthetic ids, `new_tokens` new) on the
/// serving engine: the mean over each run's decode steps, `warmup` runs untimed. None when the
/// engine cannot load the checkpoint.
#[cfg(feature = "cuda")]
fn serving_decode(
    ckpt: &crate::Checkpoint,
    ordinal: usize,
    prompt_len: usize,
    new_tokens: usize,
    warmup: usize,
    repeats: usize,
) -> crate::Result<Option<Timing>> {
    use crate::runtime::serving::KvBudget;
    use crate::serve::cuda::CudaExecutor;
    use crate::serve::{Request, Runner, SchedulerConfig, Workload, DEFAULT_BLOCK_SIZE};
    let len = prompt_len + new_tokens + 1;
    let blocks = len.div_ceil(DEFAULT_BLOCK_SIZE) + 1;
    let cfg = SchedulerConfig::vllm_defaults(blocks, len);
    let Ok((exec, cfg)) = CudaExecutor::load(ckpt, ordinal, &cfg, KvBudget::Blocks(blocks)) else {
        return Ok(None);
    };
    let vocab = ckpt.config.vocab_size;
    let mut runner = Runner::new(exec, cfg, vocab);
    let prompt = synthetic_ids(vocab, prompt_len, 0);
    let w = Workload::new(vec![Request::from_ids("batch-1", prompt, new_tokens)]);
    let mut per_step = vec![];
    for run in 0..warmup + repeats.max(1) {
        let rep = runner.run(&w)?;
        let dec: Vec<f64> = rep
            .steps
            .iter()
            .filter(|x| x.prefill_tokens == 0)
            .map(|x| x.secs)
            .collect();
        if run >= warmup && !dec.is_empty() {
            per_step.push(dec.iter().sum::<f64>() / dec.len() as f64);
        }
    }
    Ok((!per_step.is_empty()).then(|| Timing::from(per_step)))
}

/// Speed as a written checkpoint would run, where the CUDA runtime can run it: the candle forward
/// with the compressed Linears on their kernels (W4A16 packed int4, W8A8 int8; prefill and the
/// fallback decode), and decode on the runtime's engines: the decode engine with CUDA-graph
/// replay where it runs the checkpoint (bf16, W4A16), else the serving engine's batch-1 steps
/// (W8A8, FP8). Returns the speed and whether an engine decoded; None off CUDA, where the caller
/// times the in-memory model.
pub fn measure_checkpoint(
    dir: &std::path::Path,
    device: &candle_core::Device,
    prompt_len: usize,
    new_tokens: usize,
    warmup: usize,
    repeats: usize,
) -> crate::Result<Option<(Speed, bool)>> {
    #[cfg(feature = "cuda")]
    if let candle_core::DeviceLocation::Cuda { gpu_id } = device.location() {
        use crate::error::ResultExt;
        use crate::runtime::engine::DecodeEngine;
        let ckpt = crate::Checkpoint::open(dir)?;
        let mut model = crate::runtime::load_checkpoint(&ckpt, candle_core::DType::BF16, device)?;
        crate::runtime::quantized::attach(&mut model, &ckpt)
            .context(|| "attaching the compressed kernels".to_string())?;
        let mut s = measure(&model, prompt_len, new_tokens, warmup, repeats)
            .context(|| "the model with its compressed kernels attached".to_string())?;
        drop(model);
        let engine = DecodeEngine::load(&ckpt, gpu_id, 1, prompt_len + new_tokens + 1);
        let Ok(mut e) = engine else {
            // W8A8, FP8: the serving engine's batch-1 steps (its int8 / fp8 GEMMs, graphs)
            let timed = serving_decode(&ckpt, gpu_id, prompt_len, new_tokens, warmup, repeats)
                .context(|| "the serving engine's batch-1 decode".to_string())?;
            return Ok(Some(match timed {
                Some(t) => {
                    s.decode_s_per_token = t;
                    (s, true)
                }
                None => (s, false),
            }));
        };
        let prompt = synthetic_ids(ckpt.config.vocab_size, prompt_len, 0);
        let mut dec = vec![];
        for run in 0..warmup + repeats.max(1) {
            e.prefill(std::slice::from_ref(&prompt))
                .context(|| "the decode engine's prefill".to_string())?;
            e.synchronize()?;
            let t0 = Instant::now();
            for _ in 0..new_tokens {
                e.step(true)
                    .context(|| "a decode engine step".to_string())?;
            }
            if run >= warmup {
                dec.push(t0.elapsed().as_secs_f64() / new_tokens.max(1) as f64);
            }
        }
        s.decode_s_per_token = Timing::from(dec);
        return Ok(Some((s, true)));
    }
    let _ = (dir, device, prompt_len, new_tokens, warmup, repeats);
    Ok(None)
}
