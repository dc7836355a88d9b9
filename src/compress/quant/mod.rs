//! The quantizer core every scheme shares: min-max scales and zero points, rounding, and the
//! quantized-linear result that RTN, GPTQ and AWQ all produce and the compressed-tensors writer
//! packs. Arithmetic follows compressed-tensors 0.13.0 (see shared/spec/compressed-tensors.md).

pub mod apply;
pub mod awq;
pub mod gptq;
pub mod rtn;
pub mod scheme;

use candle_core::{DType, Device, Result, Tensor};
pub use scheme::{ActOrder, ActivationScheme, NumType, Scheme, Strategy, WeightScheme};

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
        let ng = self.n_groups();
        let mut w = vec![0f32; self.out * self.inp];
        for r in 0..self.out {
            for c in 0..self.inp {
                let g = r * ng + self.group_of(c);
                w[r * self.inp + c] =
                    dequantize(self.q[r * self.inp + c], self.scale[g], self.zp[g]);
            }
        }
        w
    }

    pub fn dequantized_tensor(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.dequantized(), (self.out, self.inp), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
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
    let mut mins = vec![f32::MAX; out * ng];
    let mut maxs = vec![f32::MIN; out * ng];
    for r in 0..out {
        for c in 0..inp {
            let g = match (g_idx, s.strategy) {
                (Some(gi), _) => gi[c] as usize,
                (None, Strategy::Channel) => 0,
                (None, Strategy::Group(gs)) => c / gs,
            };
            let x = w[r * inp + c];
            let k = r * ng + g;
            mins[k] = mins[k].min(x);
            maxs[k] = maxs[k].max(x);
        }
    }
    let mut scale = vec![0f32; out * ng];
    let mut zp = vec![0f32; out * ng];
    for k in 0..out * ng {
        let (sc, z) = qparams(mins[k], maxs[k], s);
        scale[k] = sc;
        zp[k] = z;
    }
    (scale, zp)
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
