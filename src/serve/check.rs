//! The serving engine against the model's own forward, on the GPU: a ragged workload runs
//! through the scheduler on the CUDA executor (prompt chunks split across steps, decoding
//! tokens of many sequences packed, graphs replayed), and the logits of every sampled position
//! are compared with the candle forward in f32 over the same tokens — beside the plain candle
//! forward in bf16, whose own error sets the tolerance (`runtime::Check::passes`).

use candle_core::{DType, Device, Tensor};

use super::cuda::CudaExecutor;
use super::runner::Runner;
use super::scheduler::SchedulerConfig;
use super::workload::Workload;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::runtime::check::{argmax_rows, RelErr};
use crate::runtime::serving::KvBudget;
use crate::runtime::Check;

fn argmax(v: &[f32]) -> usize {
    argmax_rows(v, v.len().max(1))[0]
}

/// Logits [positions, vocab] of `ids` on the plain forward of `model`.
fn reference_logits(model: &crate::Exaone4, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
    let dev = model.device().clone();
    let mut cache = model.new_cache(1, ids.len(), vec![0])?;
    let x = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &dev)?;
    let h = model.forward_hidden(&x, Some(&mut cache))?.squeeze(0)?;
    Ok(model.logits(&h)?.to_vec2::<f32>()?)
}

/// `(seq, position, logits [vocab])` of every sampled position, in the order computed.
type Kept = Vec<(usize, usize, Vec<f32>)>;

/// The kept logits of `workload` run on a fresh serving engine under `config`.
fn kept_logits(
    ckpt: &Checkpoint,
    ordinal: usize,
    workload: &Workload,
    config: &SchedulerConfig,
) -> Result<(super::metrics::RunReport, Kept)> {
    let (mut exec, config) =
        CudaExecutor::load(ckpt, ordinal, config, KvBudget::Blocks(config.num_blocks))?;
    exec.keep_logits = true;
    let mut runner = Runner::new(exec, config, ckpt.config.vocab_size);
    runner.check_invariants = true;
    let report = runner.run(workload)?;
    let kept = std::mem::take(&mut runner.executor.logits);
    Ok((report, kept))
}

/// The serving engine with the 8-bit products' input quantized by its producer (the residual's
/// RMSNorm, the gated product's epilogue: `runtime::quantized::set_handoff(true)`, the default)
/// against the same engine with every product quantizing its own input: the logits of every
/// sampled position must be the same bits. `kernel_err` counts the values that differ (0
/// passes). Meaningful for W8A8 checkpoints, whose products are the ones handed quantized rows.
pub fn handoff(
    dir: &std::path::Path,
    ordinal: usize,
    workload: &Workload,
    config: &SchedulerConfig,
    what: &str,
) -> Result<Check> {
    let ckpt = Checkpoint::open(dir)?;
    let on = kept_logits(&ckpt, ordinal, workload, config)?.1;
    crate::runtime::quantized::set_handoff(false);
    let off = kept_logits(&ckpt, ordinal, workload, config);
    crate::runtime::quantized::set_handoff(true);
    let off = off?.1;
    if on.len() != off.len() || on.iter().zip(&off).any(|(a, b)| (a.0, a.1) != (b.0, b.1)) {
        return Err(Error::Invalid(format!(
            "{what}: the runs with and without the hand-off sampled different positions"
        )));
    }
    let differ = on
        .iter()
        .zip(&off)
        .map(|(a, b)| match a.2.len() == b.2.len() {
            true => {
                a.2.iter()
                    .zip(&b.2)
                    .filter(|(u, v)| u.to_bits() != v.to_bits())
                    .count()
            }
            false => a.2.len().max(b.2.len()),
        })
        .sum::<usize>();
    Ok(Check {
        what: format!(
            "{what}: logits differing from each product quantizing its own input ({} sampled positions; 0 passes)",
            on.len()
        ),
        kernel_err: differ as f64,
        bf16_err: 0.0,
        top1: 1.0,
    })
}

/// Runs `workload` on the serving engine under each of `configs` (block size, token budget,
/// sequences; with the check's name) and compares every sampled position's logits with the f32
/// forward, the f32 and bf16 reference models loaded once for all.
pub fn logits(
    dir: &std::path::Path,
    ordinal: usize,
    workload: &Workload,
    configs: &[(SchedulerConfig, &str)],
) -> Result<Vec<Check>> {
    let ckpt = Checkpoint::open(dir)?;
    let mut runs = vec![];
    for (config, what) in configs {
        let (report, kept) = kept_logits(&ckpt, ordinal, workload, config)?;
        runs.push((*what, report, kept));
    }
    let device = Device::new_cuda(ordinal)?;
    let f32_model = ckpt.load_model(DType::F32, &device)?;
    let bf16_model = ckpt.load_model(DType::BF16, &device)?;
    let mut checks = vec![];
    for (what, report, kept) in runs {
        let (mut ours, mut bf16) = (RelErr::default(), RelErr::default());
        let (mut agree, mut n) = (0usize, 0usize);
        for (i, (req, res)) in workload.requests.iter().zip(&report.requests).enumerate() {
            if let Some(e) = &res.error {
                return Err(Error::Invalid(format!("request {}: {e}", req.id)));
            }
            let mut ids = req.prompt_ids.clone();
            ids.extend(&res.output);
            ids.pop(); // the last pick is never fed back
            let reference = reference_logits(&f32_model, &ids)?;
            let plain = reference_logits(&bf16_model, &ids)?;
            for (_, pos, l) in kept.iter().filter(|(s, _, _)| *s == i) {
                let (r, p) = (&reference[*pos], &plain[*pos]);
                ours.add(l, r);
                bf16.add(p, r);
                agree += (argmax(l) == argmax(r)) as usize;
                n += 1;
            }
        }
        if n == 0 {
            return Err(Error::Invalid("serving check: no sampled positions".into()));
        }
        checks.push(Check {
            what: format!("{what} ({n} sampled positions)"),
            kernel_err: ours.value(),
            bf16_err: bf16.value(),
            top1: agree as f64 / n as f64,
        });
    }
    Ok(checks)
}
