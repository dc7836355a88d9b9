//! Numerical checks of the runtime's kernels against the reference path (candle ops in f32 on
//! the dequantized weights). Each check reports the kernel's relative error next to the error of
//! the plain bf16 reference path, so the tolerance is the bf16 noise floor itself: a kernel passes
//! when its error is at most twice that of computing the reference in bf16.

use candle_core::{DType, Device, Result, Tensor};

use super::engine::DecodeEngine;
pub use super::Check;
use crate::checkpoint::Checkpoint;
use crate::model::layers::{attend, Mode};
use crate::Exaone4;

/// ‖a − b‖ / ‖b‖ over all elements, with a running sum so several steps can be pooled.
#[derive(Default)]
pub(crate) struct RelErr {
    diff: f64,
    norm: f64,
}

impl RelErr {
    pub(crate) fn add(&mut self, a: &[f32], reference: &[f32]) {
        for (x, y) in a.iter().zip(reference) {
            self.diff += ((x - y) as f64).powi(2);
            self.norm += (*y as f64).powi(2);
        }
    }
    pub(crate) fn value(&self) -> f64 {
        (self.diff / self.norm.max(1e-30)).sqrt()
    }
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

pub(crate) fn argmax_rows(v: &[f32], width: usize) -> Vec<usize> {
    v.chunks(width)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                )
                .0
        })
        .collect()
}

fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

/// Flash attention vs `attend` with an explicit causal mask, on random inputs: no cache, a
/// chunk after cached keys, one decoding query; head sizes 64 and 128; GQA 4:1.
pub fn attention(device: &Device) -> Result<Vec<Check>> {
    let mut out = vec![];
    for (t, l, d) in [(130, 130, 64), (37, 300, 64), (1, 77, 64), (100, 100, 128)] {
        let (b, h, kvh) = (2, 8, 2);
        let q = Tensor::randn(0f32, 1.0, (b, h, t, d), device)?;
        let k = Tensor::randn(0f32, 1.0, (b, kvh, l, d), device)?;
        let v = Tensor::randn(0f32, 1.0, (b, kvh, l, d), device)?;
        let (qb, kb, vb) = (
            q.to_dtype(DType::BF16)?,
            k.to_dtype(DType::BF16)?,
            v.to_dtype(DType::BF16)?,
        );
        let off = l - t;
        let m: Vec<f32> = (0..b * t * l)
            .map(|i| {
                if (i % l) <= (i / l) % t + off {
                    0.0
                } else {
                    -1e30
                }
            })
            .collect();
        let mask = Tensor::from_vec(m, (b, 1, t, l), device)?;
        // the f32 reference sees the same bf16-rounded inputs
        let up = |x: &Tensor| x.to_dtype(DType::F32);
        let reference = flat(&attend(
            &up(&qb)?,
            &up(&kb)?,
            &up(&vb)?,
            Some(&mask),
            Mode::Inference,
        )?)?;
        let bf = flat(&attend(&qb, &kb, &vb, Some(&mask), Mode::Inference)?)?;
        let kern = super::fused_attention(&qb, &kb, &vb)?
            .ok_or_else(|| candle_core::Error::Msg("fused attention unavailable".into()))?;
        let kern = flat(&kern)?;
        let (mut ek, mut eb) = (RelErr::default(), RelErr::default());
        ek.add(&kern, &reference);
        eb.add(&bf, &reference);
        out.push(Check {
            what: format!("flash attention t={t} L={l} d={d}"),
            kernel_err: ek.value(),
            bf16_err: eb.value(),
            top1: 1.0,
        });
    }
    Ok(out)
}

/// The fused log-softmax (`runtime::log_softmax_f32`) vs candle's in f32 on the same values,
/// beside candle's in bf16 (the floor): bf16 rows of the 1.2B's vocabulary (staged in shared
/// memory where the GPU has room), of a width that is a multiple of 8, and of an odd width and
/// f32 rows (the plain kernel); logits of spread ~8 as a model's are.
pub fn log_softmax(device: &Device) -> Result<Vec<Check>> {
    let mut out = vec![];
    for (rows, v, dtype) in [
        (5, 102_400, DType::BF16),
        (7, 1_000, DType::BF16),
        (4, 1_003, DType::BF16),
        (3, 2_048, DType::F32),
    ] {
        let x = (Tensor::randn(0f32, 8.0, (rows, v), device)?.to_dtype(dtype))?;
        let reference =
            candle_nn::ops::log_softmax(&x.to_dtype(DType::F32)?, candle_core::D::Minus1)?;
        let floor = candle_nn::ops::log_softmax(&x.to_dtype(DType::BF16)?, candle_core::D::Minus1)?;
        let kern = flat(&super::log_softmax_f32(&x)?)?;
        let (reference, floor) = (flat(&reference)?, flat(&floor)?);
        let (mut ek, mut eb) = (RelErr::default(), RelErr::default());
        ek.add(&kern, &reference);
        eb.add(&floor, &reference);
        out.push(Check {
            what: format!("log-softmax {rows} x {v} {dtype:?}"),
            kernel_err: ek.value(),
            bf16_err: eb.value(),
            top1: agreement(&argmax_rows(&kern, v), &argmax_rows(&reference, v)),
        });
    }
    Ok(out)
}

fn ids(b: usize, t: usize, vocab: usize, seed: usize) -> Vec<Vec<u32>> {
    (0..b)
        .map(|r| {
            (0..t)
                .map(|i| (4 + ((r * t + i + seed) * 7919) % (vocab - 4)) as u32)
                .collect()
        })
        .collect()
}

fn to_tensor(rows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (b, t), device)
}

/// The decode engine (prefill + 6 greedy steps, `b` sequences: 1 takes the single-row path with
/// its fused GEMVs, more the general one) vs the candle model on the same tokens, and graph
/// replay vs eager launches (which must pick identical tokens).
pub fn engine(
    dir: &std::path::Path,
    device: &Device,
    label: &str,
    b: usize,
) -> Result<(Check, bool)> {
    let ckpt = Checkpoint::open(dir).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let ordinal = match device {
        Device::Cuda(_) => 0,
        _ => candle_core::bail!("engine check needs CUDA"),
    };
    let (t, steps) = (24, 6);
    let vocab = ckpt.config.vocab_size;
    let prompt = ids(b, t, vocab, 1);
    let f32m = super::load_checkpoint(&ckpt, DType::F32, device)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let bf16m = super::load_checkpoint(&ckpt, DType::BF16, device)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut eng = DecodeEngine::load(&ckpt, ordinal, b, t + steps + 2)?;
    let (mut cf, mut cb) = (
        f32m.new_cache(b, t + steps + 2, vec![0; b])?,
        bf16m.new_cache(b, t + steps + 2, vec![0; b])?,
    );
    let (mut ek, mut eb) = (RelErr::default(), RelErr::default());
    let (mut picks_k, mut picks_r) = (vec![], vec![]);
    let mut x = to_tensor(&prompt, device)?;
    let mut next = eng.prefill(&prompt)?;
    let mut eager = vec![next.clone()];
    for s in 0..=steps {
        if s > 0 {
            next = eng.step(false)?;
            eager.push(next.clone());
        }
        let last = |m: &Exaone4, c: &mut crate::model::KvCache, x: &Tensor| -> Result<Vec<f32>> {
            let lg = m.forward(x, Some(c))?;
            let t = lg.dim(1)?;
            flat(&lg.narrow(1, t - 1, 1)?)
        };
        let rf = last(&f32m, &mut cf, &x)?;
        let rb = last(&bf16m, &mut cb, &x)?;
        let k = eng.last_logits()?;
        ek.add(&k, &rf);
        eb.add(&rb, &rf);
        picks_k.extend(argmax_rows(&k, vocab));
        picks_r.extend(argmax_rows(&rf, vocab));
        // both continue from the engine's picks
        x = Tensor::from_vec(next.clone(), (b, 1), device)?;
    }
    // the same run replayed as a CUDA graph must pick the same tokens
    let mut graphed = vec![eng.prefill(&prompt)?];
    for _ in 0..steps {
        graphed.push(eng.step(true)?);
    }
    Ok((
        Check {
            what: format!("decode engine ({label}, batch {b}) logits, prefill + {steps} steps"),
            kernel_err: ek.value(),
            bf16_err: eb.value(),
            top1: agreement(&picks_k, &picks_r),
        },
        graphed == eager,
    ))
}

/// The candle forward with the runtime's kernels installed (flash attention, the fused q/k/v
/// heads, SiLU · mul) vs the f32 reference, beside the same bf16 model on candle's ops alone
/// (the floor); logits of 2 × 16 and 2 × 640 tokens, every sequence at the same positions (as a
/// prefill runs).
pub fn forward(dir: &std::path::Path, device: &Device) -> Result<Check> {
    let ckpt = Checkpoint::open(dir).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let err = |e: crate::Error| candle_core::Error::Msg(e.to_string());
    let f32m = ckpt.load_model(DType::F32, device).map_err(err)?;
    let plain = ckpt.load_model(DType::BF16, device).map_err(err)?;
    let fused = super::load_checkpoint(&ckpt, DType::BF16, device).map_err(err)?;
    let vocab = ckpt.config.vocab_size;
    logits_check(
        "candle forward with the runtime's kernels (bf16) logits".into(),
        [&f32m, &plain, &fused],
        &[16, 640],
        (vocab, 5),
        device,
    )
}

/// The logits of `kernel` and of `floor` against `reference`'s on two sequences of each length
/// in `lengths` (token ids from `ids` with `seed`, below `vocab`), pooled into one [`Check`].
fn logits_check(
    what: String,
    [reference, floor, kernel]: [&Exaone4; 3],
    lengths: &[usize],
    (vocab, seed): (usize, usize),
    device: &Device,
) -> Result<Check> {
    let (mut ek, mut eb) = (RelErr::default(), RelErr::default());
    let (mut picks_k, mut picks_r) = (vec![], vec![]);
    for &t in lengths {
        let x = to_tensor(&ids(2, t, vocab, seed), device)?;
        let rf = flat(&reference.forward(&x, None)?)?;
        let rb = flat(&floor.forward(&x, None)?)?;
        let k = flat(&kernel.forward(&x, None)?)?;
        ek.add(&k, &rf);
        eb.add(&rb, &rf);
        picks_k.extend(argmax_rows(&k, vocab));
        picks_r.extend(argmax_rows(&rf, vocab));
    }
    Ok(Check {
        what,
        kernel_err: ek.value(),
        bf16_err: eb.value(),
        top1: agreement(&picks_k, &picks_r),
    })
}

/// The candle forward with the quantized Linear kernels attached vs the same model emulating
/// them on dequantized weights (f32 reference: the emulation in f32), logits of 2 × 16 tokens
/// (below `quantized::FP8_LT_MIN_ROWS`: fp8 on our tiles), 2 × 64 (fp8 on cuBLASLt where the GPU
/// runs it) and 2 × 640 (beyond `quantized::CUBLAS_INT8_MIN_ROWS`: int8 through cuBLAS, or on
/// Hopper our warpgroup-MMA tiles, as `quantized::q8_path` picks).
pub fn linear_kernels(dir: &std::path::Path, device: &Device, label: &str) -> Result<Check> {
    let ckpt = Checkpoint::open(dir).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let load = |dt| {
        super::load_checkpoint(&ckpt, dt, device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    };
    let (f32m, bf16m, mut km) = (load(DType::F32)?, load(DType::BF16)?, load(DType::BF16)?);
    let n = super::quantized::attach(&mut km, &ckpt)?;
    if n.int4 + n.int8 + n.fp8 == 0 {
        candle_core::bail!("{}: no Linear stored as W4A16 or W8A8", dir.display());
    }
    let what = format!(
        "{label} Linear kernels ({} int4, {} int8, {} fp8) logits",
        n.int4, n.int8, n.fp8
    );
    let vocab = ckpt.config.vocab_size;
    logits_check(
        what,
        [&f32m, &bf16m, &km],
        &[16, 64, 640],
        (vocab, 3),
        device,
    )
}

/// The candle forward of an 8-bit checkpoint with the quantized rows handed from producer to
/// product (`quantized::set_handoff(true)`, the default) against the same model with every
/// product quantizing its own input: logits of 2 × 16, 2 × 64 and 2 × 640 tokens (each 8-bit
/// path) must be the same bits. `kernel_err` counts the logits that differ (0 passes).
pub fn quant_handoff(dir: &std::path::Path, device: &Device, label: &str) -> Result<Check> {
    let ckpt = Checkpoint::open(dir).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut m = super::load_checkpoint(&ckpt, DType::BF16, device)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let n = super::quantized::attach(&mut m, &ckpt)?;
    if n.int8 + n.fp8 == 0 {
        candle_core::bail!("{}: no Linear stored as W8A8", dir.display());
    }
    let vocab = ckpt.config.vocab_size;
    let mut differ = 0;
    for t in [16, 64, 640] {
        let x = to_tensor(&ids(2, t, vocab, 7), device)?;
        let logits = |on| {
            super::quantized::set_handoff(on);
            let l = m.forward(&x, None).and_then(|l| flat(&l));
            super::quantized::set_handoff(true);
            l
        };
        let (a, b) = (logits(true)?, logits(false)?);
        differ += a
            .iter()
            .zip(&b)
            .filter(|(u, v)| u.to_bits() != v.to_bits())
            .count();
    }
    Ok(Check {
        what: format!(
            "{label} quantized rows handed from producer to product: logits differing from each product quantizing its own input (0 passes)"
        ),
        kernel_err: differ as f64,
        bf16_err: 0.0,
        top1: 1.0,
    })
}
