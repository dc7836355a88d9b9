//! The run-time activation quantization of W8A8 and FP8 checkpoints (`model::ActQuant`) on the
//! CPU, row by row in plain arithmetic: the same values bit for bit as the model's candle
//! expression (a dozen elementwise passes over the activations, each a fresh tensor), an order
//! of magnitude faster. Evaluation installs it on a loaded model's Linears
//! ([`install_cpu_act_quant`]); the model computes exactly what it did.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use crate::model::{ActQuant, Exaone4, LinearKernel};

/// 2^e exactly, for an integer e of a normal f32.
fn pow2(e: f32) -> f32 {
    f32::from_bits(((e as i32 + 127) as u32) << 23)
}

/// One value quantized and dequantized as `ActQuant::fake_quant` does, given its row's scale.
fn fake(q: ActQuant, x: f32, scale: f32) -> f32 {
    let v = x / scale;
    let r = match q {
        ActQuant::Int8PerToken => v.round_ties_even().clamp(-128.0, 127.0),
        ActQuant::Fp8PerToken => {
            // e4m3: 3 mantissa bits, binades from 2^-6 (below it the subnormal step 2^-9),
            // saturating at 448; to nearest, ties to even
            let a = v.abs().clamp(0.0, 448.0);
            let e = if a > 0.0 {
                a.log2().floor().clamp(-6.0, 8.0)
            } else {
                -6.0
            };
            // log2's rounding near a power of two: put `a` in its binade [2^e, 2^(e+1))
            let e = if a >= pow2(e + 1.0) {
                e + 1.0
            } else if a < pow2(e) && e > -6.0 {
                e - 1.0
            } else {
                e
            };
            let step = pow2(e) * 0.125;
            let m = (a / step).round_ties_even() * step;
            if v > 0.0 {
                m
            } else if v < 0.0 {
                -m
            } else {
                0.0
            }
        }
    };
    r * scale
}

/// The per-row scale: absmax / 127 (int8) or / 448 (fp8), as candle computes `t / f64` (a
/// multiplication by the reciprocal), floored at 1e-10.
fn row_scale(q: ActQuant, row: &[f32]) -> f32 {
    let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = match q {
        ActQuant::Int8PerToken => (1.0f64 / 127.0) as f32,
        ActQuant::Fp8PerToken => (1.0f64 / 448.0) as f32,
    };
    (absmax * inv).clamp(1e-10, f32::MAX)
}

/// `x` [rows, in] quantized and dequantized per row, in place of `ActQuant::fake_quant`.
pub fn fake_quant_rows(q: ActQuant, x: &Tensor) -> Result<Tensor> {
    let (rows, inp) = x.dims2()?;
    let mut v = x
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    v.par_chunks_mut(inp.max(1)).for_each(|row| {
        let s = row_scale(q, row);
        row.iter_mut().for_each(|x| *x = fake(q, *x, s));
    });
    Tensor::from_vec(v, (rows, inp), x.device())?.to_dtype(x.dtype())
}

/// A Linear with run-time activation quantization, computed by [`fake_quant_rows`].
#[derive(Debug)]
struct CpuActQuantLinear {
    q: ActQuant,
    weight: Tensor,
}

impl LinearKernel for CpuActQuantLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        fake_quant_rows(self.q, x)?.matmul(&self.weight.t()?)
    }
}

/// Puts the CPU activation quantization on every Linear of `model` that quantizes its
/// activations and has no kernel yet (CPU, f32 only); returns how many.
pub fn install_cpu_act_quant(model: &mut Exaone4) -> Result<usize> {
    if !model.device().is_cpu() || model.dtype() != DType::F32 {
        return Ok(0);
    }
    let mut n = 0;
    for layer in model.layers.iter_mut() {
        for (_, lin) in layer.linears_mut() {
            if let (Some(q), None) = (lin.act_quant, &lin.kernel) {
                let weight = lin.weight.clone();
                lin.kernel = Some(std::sync::Arc::new(CpuActQuantLinear { q, weight }));
                n += 1;
            }
        }
    }
    Ok(n)
}
