//! A quantized Linear as stored: grid values, scales, zero points and the group of every input
//! column, with the arithmetic that turns them back into weights exactly as compressed-tensors
//! does (`(q − zp) · scale` in bf16). The quantizers produce it; the format packs it.

use candle_core::{DType, Device, Result, Tensor};

use super::scheme::{Strategy, WeightScheme};

/// Rounds to bf16 and back: scales are stored in the model dtype, so quantization must use the
/// value that will be stored.
pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// Rounds to the nearest float8 e4m3 value (saturating at ±448).
pub fn round_fp8(x: f32) -> f32 {
    float8_e4m3(x.clamp(-448.0, 448.0))
}

fn float8_e4m3(x: f32) -> f32 {
    // the float8 crate (candle's F8E4M3) rounds to nearest even, as torch does
    float8::F8E4M3::from_f32(x).to_f32()
}

/// `(q − zp) · scale`, rounded to bf16 as compressed-tensors computes it in the model dtype.
#[inline]
pub fn dequantize(q: f32, scale: f32, zp: f32) -> f32 {
    round_bf16((q - zp) * scale)
}

/// A quantized Linear: its grid values, scales and zero points, as every method produces them.
#[derive(Clone, Debug)]
pub struct QLinear {
    pub scheme: WeightScheme,
    pub out: usize,
    pub inp: usize,
    /// [out, inp], integers (or fp8 values) stored as f32
    pub q: Vec<f32>,
    /// [out, n_groups]
    pub scale: Vec<f32>,
    /// [out, n_groups] integers (zeros when symmetric)
    pub zp: Vec<f32>,
    /// the group of each input column (act-order "group" only)
    pub g_idx: Option<Vec<u32>>,
}

impl QLinear {
    /// A quantized Linear with its scales and zero points, grid values still to be filled.
    pub fn new(
        scheme: WeightScheme,
        out: usize,
        inp: usize,
        scale: Vec<f32>,
        zp: Vec<f32>,
        g_idx: Option<Vec<u32>>,
    ) -> Self {
        Self {
            scheme,
            out,
            inp,
            q: vec![0.0; out * inp],
            scale,
            zp,
            g_idx,
        }
    }

    pub fn n_groups(&self) -> usize {
        match self.scheme.strategy {
            Strategy::Channel => 1,
            Strategy::Group(g) => self.inp.div_ceil(g),
        }
    }

    /// The group of input column `c`.
    #[inline]
    pub fn group_of(&self, c: usize) -> usize {
        match (&self.g_idx, self.scheme.strategy) {
            (Some(g), _) => g[c] as usize,
            (None, Strategy::Channel) => 0,
            (None, Strategy::Group(g)) => c / g,
        }
    }

    /// Splits a stacked quantization (Linears quantized together) back into Linears of
    /// `rows` output rows each.
    pub fn split_rows(self, rows: &[usize]) -> Vec<QLinear> {
        let ng = self.n_groups();
        let mut r0 = 0;
        rows.iter()
            .map(|&n| {
                let part = QLinear {
                    scheme: self.scheme,
                    out: n,
                    inp: self.inp,
                    q: self.q[r0 * self.inp..(r0 + n) * self.inp].to_vec(),
                    scale: self.scale[r0 * ng..(r0 + n) * ng].to_vec(),
                    zp: self.zp[r0 * ng..(r0 + n) * ng].to_vec(),
                    g_idx: self.g_idx.clone(),
                };
                r0 += n;
                part
            })
            .collect()
    }

    /// The dequantized weight [out, inp] as f32 values (bf16-exact).
    pub fn dequantized(&self) -> Vec<f32> {
        use rayon::prelude::*;
        let ng = self.n_groups();
        let mut w = vec![0f32; self.out * self.inp];
        w.par_chunks_mut(self.inp).enumerate().for_each(|(r, row)| {
            for (c, x) in row.iter_mut().enumerate() {
                let g = r * ng + self.group_of(c);
                *x = dequantize(self.q[r * self.inp + c], self.scale[g], self.zp[g]);
            }
        });
        w
    }

    pub fn dequantized_tensor(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.dequantized(), (self.out, self.inp), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }
}
