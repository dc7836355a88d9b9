//! The quantizer core every scheme shares: min-max scales and zero points, rounding, and the
//! quantized-linear result that RTN, GPTQ and AWQ all produce and the compressed-tensors writer
//! packs. Arithmetic follows compressed-tensors 0.13.0 (see docs/compressed-tensors.md).

pub mod apply;
pub mod awq;
pub mod gptq;
pub mod rtn;

pub use crate::checkpoint::qlinear::{dequantize, round_bf16, round_fp8, QLinear};
pub use crate::checkpoint::scheme::{
    ActOrder, ActivationScheme, NumType, Scheme, Strategy, WeightScheme,
};
use crate::model::layers::round_ties_even;
use candle_core::{DType, Device, Result, Tensor};

/// Scale and zero point of one group from its min and max (the range always includes 0).
pub fn qparams(min: f32, max: f32, s: &WeightScheme) -> (f32, f32) {
    let (qmin, qmax) = s.qrange();
    let (min, max) = (min.min(0.0), max.max(0.0));
    let eps = f32::EPSILON;
    if s.symmetric || s.ty == NumType::Float {
        let absmax = min.abs().max(max.abs());
        let scale = round_bf16((absmax / ((qmax - qmin) / 2.0)).max(eps));
        (scale, 0.0)
    } else {
        let scale = round_bf16(((max - min) / (qmax - qmin)).max(eps));
        let zp = (qmin - min / scale).clamp(qmin, qmax).round_ties_even();
        (scale, zp)
    }
}

/// Quantizes one value to the grid (an integer, or an fp8 value for float schemes).
#[inline]
pub fn quantize(x: f32, scale: f32, zp: f32, s: &WeightScheme) -> f32 {
    let (qmin, qmax) = s.qrange();
    match s.ty {
        NumType::Int => (x / scale + zp).clamp(qmin, qmax).round_ties_even(),
        NumType::Float => round_fp8(x / scale),
    }
}

/// Min-max scales/zero points for every (row, group) of `w` [out, inp] (f32, row-major).
/// `g_idx` maps columns to groups when act-order "group" reorders them.
pub fn observe(
    w: &[f32],
    out: usize,
    inp: usize,
    s: &WeightScheme,
    g_idx: Option<&[u32]>,
) -> (Vec<f32>, Vec<f32>) {
    let ng = match s.strategy {
        Strategy::Channel => 1,
        Strategy::Group(g) => inp.div_ceil(g),
    };
    use rayon::prelude::*;
    let mut scale = vec![0f32; out * ng];
    let mut zp = vec![0f32; out * ng];
    scale
        .par_chunks_mut(ng)
        .zip(zp.par_chunks_mut(ng))
        .enumerate()
        .for_each(|(r, (sc, z))| {
            let mut mins = vec![f32::MAX; ng];
            let mut maxs = vec![f32::MIN; ng];
            for c in 0..inp {
                let g = match (g_idx, s.strategy) {
                    (Some(gi), _) => gi[c] as usize,
                    (None, Strategy::Channel) => 0,
                    (None, Strategy::Group(gs)) => c / gs,
                };
                let x = w[r * inp + c];
                mins[g] = mins[g].min(x);
                maxs[g] = maxs[g].max(x);
            }
            for g in 0..ng {
                (sc[g], z[g]) = qparams(mins[g], maxs[g], s);
            }
        });
    (scale, zp)
}

/// Rounds an f32 tensor to bf16 values.
fn round_bf16_t(x: &Tensor) -> Result<Tensor> {
    x.to_dtype(DType::BF16)?.to_dtype(DType::F32)
}

/// The dequantized min-max quantization of integer scheme `s` applied to `w` [out, in] on its
/// own device: the tensor mirror of `observe` → `quantize` → `dequantize` (bit-exact with them,
/// tested), for searches that try many candidates (AWQ's scales and clipping). `shrink` [out,
/// n_groups] (or None for 1) multiplies each group's min and max first, as clipping does.
pub fn fake_quantize(w: &Tensor, s: &WeightScheme, shrink: Option<&Tensor>) -> Result<Tensor> {
    if s.ty != NumType::Int {
        candle_core::bail!("fake_quantize: integer schemes only");
    }
    if let Err(e) = s.check() {
        candle_core::bail!("fake_quantize: {e}");
    }
    let (out, inp) = w.dims2()?;
    let gs = s.group_size(inp);
    if inp % gs != 0 {
        candle_core::bail!(
            "fake_quantize: {inp} input columns are not a multiple of the group size {gs}"
        );
    }
    let ng = inp / gs;
    let dev = w.device();
    let scalar = |v: f32| Tensor::new(&[v], dev);
    let wg = w.to_dtype(DType::F32)?.reshape((out, ng, gs))?;
    let (mut mn, mut mx) = (wg.min_keepdim(2)?, wg.max_keepdim(2)?);
    if let Some(a) = shrink {
        let a = a.reshape((out, ng, 1))?;
        mn = (mn * &a)?;
        mx = (mx * &a)?;
    }
    let zero = mn.zeros_like()?;
    let (mn, mx) = (mn.minimum(&zero)?, mx.maximum(&zero)?);
    let (qmin, qmax) = s.qrange();
    let eps = mn.ones_like()?.affine(f32::EPSILON as f64, 0.0)?;
    let (scale, zp) = if s.symmetric {
        let absmax = mn.abs()?.maximum(&mx)?;
        let scale = round_bf16_t(
            &absmax
                .broadcast_div(&scalar((qmax - qmin) / 2.0)?)?
                .maximum(&eps)?,
        )?;
        (scale, zero)
    } else {
        let scale = round_bf16_t(
            &(mx - &mn)?
                .broadcast_div(&scalar(qmax - qmin)?)?
                .maximum(&eps)?,
        )?;
        let zp = (mn.broadcast_div(&scale)?.neg()? + qmin as f64)?;
        (scale.clone(), round_ties_even(&zp.clamp(qmin, qmax)?)?)
    };
    let q = round_ties_even(&(wg.broadcast_div(&scale)?.broadcast_add(&zp)?).clamp(qmin, qmax)?)?;
    round_bf16_t(&q.broadcast_sub(&zp)?.broadcast_mul(&scale)?)?.reshape((out, inp))
}

/// Fails on the first NaN or infinite value of a row-major matrix with `cols` columns, naming
/// its position: quantizing it would silently turn it into 0 or an infinite scale.
pub fn check_finite(w: &[f32], cols: usize, method: &str) -> Result<()> {
    if let Some(k) = w.iter().position(|x| !x.is_finite()) {
        candle_core::bail!(
            "{method}: the weight holds {} at [{}, {}]; NaN or infinite weights cannot be quantized (check the checkpoint)",
            w[k],
            k / cols.max(1),
            k % cols.max(1)
        );
    }
    Ok(())
}

/// Reads a weight tensor into a row-major f32 vector with its shape.
pub fn to_f32_matrix(w: &Tensor) -> Result<(Vec<f32>, usize, usize)> {
    let (out, inp) = w.dims2()?;
    let v = w
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((v, out, inp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor mirror equals the scalar core value for value, on bf16 weights (which make
    /// exact .5 ties common), symmetric and asymmetric, with and without group shrinking.
    #[test]
    fn fake_quantize_equals_the_scalar_core() {
        let (out, inp, gs) = (24, 256, 64);
        let w = Tensor::randn(0f32, 0.05, (out, inp), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let ng = inp / gs;
        let alpha: Vec<f32> = (0..out * ng).map(|k| 1.0 - 0.05 * (k % 7) as f32).collect();
        for symmetric in [true, false] {
            let s = Scheme::w4a16(gs, symmetric).weights;
            for shrink in [false, true] {
                let mut want = vec![0f32; out * inp];
                for r in 0..out {
                    for g in 0..ng {
                        let row = &wv[r * inp + g * gs..r * inp + (g + 1) * gs];
                        let a = if shrink { alpha[r * ng + g] } else { 1.0 };
                        let mn = row.iter().fold(f32::MAX, |m, &x| m.min(x));
                        let mx = row.iter().fold(f32::MIN, |m, &x| m.max(x));
                        let (sc, zp) = qparams(a * mn, a * mx, &s);
                        for (j, &x) in row.iter().enumerate() {
                            want[r * inp + g * gs + j] =
                                dequantize(quantize(x, sc, zp, &s), sc, zp);
                        }
                    }
                }
                let a = Tensor::from_vec(alpha.clone(), (out, ng), &Device::Cpu).unwrap();
                let got: Vec<f32> = fake_quantize(&w, &s, shrink.then_some(&a))
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                assert_eq!(diff, 0, "symmetric {symmetric} shrink {shrink}");
            }
        }
    }
}
