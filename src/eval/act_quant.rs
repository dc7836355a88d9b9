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

/// `v` rounded to the nearest integer, ties to even: `f32::round_ties_even` bit for bit (signed
/// zeros included), without its libm call (`rintf`: not inlined without SSE4.1, a sixth of a
/// W8A8 evaluation, and LLVM folds the add-and-subtract-2²³ trick back into it). x86-64's
/// `cvtss2si` converts in the FPU's default round-to-nearest-even mode; the callers' values are
/// small (|v| ≤ 448 · 2⁹), far inside i32.
#[inline(always)]
fn round_even(v: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if v.abs() < 1_073_741_824.0 {
        use std::arch::x86_64::{_mm_cvtss_si32, _mm_set_ss};
        // SAFETY: SSE is part of the x86-64 baseline; the conversion reads one lane
        let i = unsafe { _mm_cvtss_si32(_mm_set_ss(v)) };
        return (i as f32).copysign(v);
    }
    v.round_ties_even()
}

/// ⌊log2 a⌋ for a normal positive f32, read from its exponent bits (subnormals and zero give
/// −127 or less, which the caller's clamp to e4m3's binades lifts).
#[inline(always)]
fn binade(a: f32) -> f32 {
    (((a.to_bits() >> 23) & 0xff) as i32 - 127) as f32
}

/// One value quantized and dequantized as `ActQuant::fake_quant` does, given its row's scale.
#[inline(always)]
fn fake(q: ActQuant, x: f32, scale: f32) -> f32 {
    let v = x / scale;
    let r = match q {
        ActQuant::Int8PerToken => round_even(v).clamp(-128.0, 127.0),
        ActQuant::Fp8PerToken => {
            // e4m3: 3 mantissa bits, binades from 2^-6 (below it the subnormal step 2^-9),
            // saturating at 448; to nearest, ties to even
            let a = v.abs().clamp(0.0, 448.0);
            let e = binade(a).clamp(-6.0, 8.0);
            let step = pow2(e) * 0.125;
            let m = round_even(a / step) * step;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_even_is_round_ties_even_bit_for_bit() {
        // a million f32 bit patterns spread over every sign, binade and mantissa, plus the ties
        let ties = (-300..300).map(|i| i as f32 + 0.5);
        let spread = (0..u32::MAX).step_by(4099).map(f32::from_bits);
        for x in spread.chain(ties).filter(|x| !x.is_nan()) {
            let (got, want) = (round_even(x), x.round_ties_even());
            assert_eq!(got.to_bits(), want.to_bits(), "{x:e}: {got} vs {want}");
        }
    }

    #[test]
    fn binade_is_floor_log2_on_normals() {
        for x in [
            1.0f32,
            1.5,
            2.0,
            0.75,
            447.9,
            448.0,
            2f32.powi(-6),
            3e-2,
            1e-30,
        ] {
            assert_eq!(binade(x), x.log2().floor(), "{x}");
        }
    }
}
