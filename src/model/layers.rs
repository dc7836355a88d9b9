//! The pieces of an EXAONE 4 decoder layer. Each has a fused inference path and a
//! differentiable path (candle's fused kernels have no backward); `Mode` picks one.

use candle_core::{DType, Device, Module, Result, Tensor, D};

use super::config::Exaone4Config;
pub use super::kernels::{Kernels, LinearKernel, QuantizedRows};

/// Inference uses candle's fused kernels; training needs ops with a backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Inference,
    Differentiable,
}

/// How activations entering a Linear are quantized at run time, emulating the serving kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActQuant {
    /// int8, symmetric, one scale per token (absmax/127), as vLLM's dynamic W8A8
    Int8PerToken,
    /// float8 e4m3, one scale per token (absmax/448)
    Fp8PerToken,
}

/// Round half to even, elementwise (candle's `round` sends halves away from zero; CUDA's
/// `__float2int_rn`, which vLLM's quantization kernels use, and torch round to even).
pub fn round_ties_even(x: &Tensor) -> Result<Tensor> {
    let r = x.round()?;
    let frac = (x - x.floor()?)?;
    let tie = frac.eq(&frac.ones_like()?.affine(0.5, 0.0)?)?;
    // at a tie, the even neighbour is 2·round(x/2)
    let even = ((x * 0.5)?.round()? * 2.0)?;
    tie.where_cond(&even, &r)
}

/// Rounds f32 values to the nearest float8 e4m3 value (ties to even, saturating at ±448) by
/// arithmetic, on any device. (candle 0.11's CUDA cast to F8E4M3 asks for a kernel name that
/// does not exist, so the cast cannot be used there.)
pub fn round_fp8_e4m3(x: &Tensor) -> Result<Tensor> {
    let a = x.abs()?.clamp(0f32, 448f32)?;
    // the binade: 2^e ≤ a < 2^(e+1), e ≥ −6 (below that, the subnormal spacing 2^−9)
    let ln2 = std::f64::consts::LN_2;
    let e = (a.log()? / ln2)?.floor()?.clamp(-6f32, 8f32)?;
    // exp of an integer multiple of ln 2 is within an ulp of the power of two: snap it
    let pow2 = |e: &Tensor| -> Result<Tensor> {
        (e * ln2)?
            .exp()?
            .to_dtype(DType::BF16)?
            .to_dtype(DType::F32)
    };
    let p = pow2(&e)?;
    // log's rounding can put a exactly at a power of two one binade low, or just below it high
    let up = a.ge(&(&p * 2.0)?)?.to_dtype(DType::F32)?;
    let down = a
        .lt(&p)?
        .to_dtype(DType::F32)?
        .mul(&e.gt(-6f64)?.to_dtype(DType::F32)?)?;
    let e = ((e + up)? - down)?;
    let step = (pow2(&e)? * 0.125)?;
    let q = (round_ties_even(&(a / &step)?)? * step)?;
    q.mul(&x.sign()?)
}

impl ActQuant {
    /// Quantize-dequantize `x` [.., in] per row (token).
    pub fn fake_quant(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let absmax = xf.abs()?.max_keepdim(D::Minus1)?;
        match self {
            ActQuant::Int8PerToken => {
                // vLLM's scaled_int8_quant: scale = absmax / 127, q = round(x / scale) clamped
                let scale = (absmax / 127.0)?.clamp(1e-10f32, f32::MAX)?;
                let q = round_ties_even(&xf.broadcast_div(&scale)?)?.clamp(-128f32, 127f32)?;
                q.broadcast_mul(&scale)?.to_dtype(dt)
            }
            ActQuant::Fp8PerToken => {
                let scale = (absmax / 448.0)?.clamp(1e-10f32, f32::MAX)?;
                let q = round_fp8_e4m3(&xf.broadcast_div(&scale)?)?;
                q.broadcast_mul(&scale)?.to_dtype(dt)
            }
        }
    }
}

/// The rows of `x` [.., in] as a Linear's kernel takes them (the product of the leading
/// dimensions) and the shape [.., `features`] of its output.
fn rows_of(x: &Tensor, features: usize) -> (usize, Vec<usize>) {
    let mut dims = x.dims().to_vec();
    let rows = dims[..dims.len().saturating_sub(1)]
        .iter()
        .product::<usize>();
    if let Some(last) = dims.last_mut() {
        *last = features;
    }
    (rows, dims)
}

/// A bias-free Linear, `y = x Wᵀ`, with `weight` [out, in] as in the checkpoint.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub act_quant: Option<ActQuant>,
    /// when set, the forward runs this instead of `act_quant` + `x Wᵀ`
    pub kernel: Option<std::sync::Arc<dyn LinearKernel>>,
}

impl Linear {
    pub fn new(weight: Tensor) -> Self {
        Self {
            weight,
            act_quant: None,
            kernel: None,
        }
    }
    pub fn out_features(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }
    pub fn in_features(&self) -> usize {
        self.weight.dim(1).unwrap_or(0)
    }

    /// The format in which this Linear's kernel would take its input quantized by the input's
    /// producer ([`LinearKernel::input_quant`]); None without a kernel.
    pub fn input_quant(&self) -> Option<ActQuant> {
        self.kernel.as_ref().and_then(|k| k.input_quant())
    }

    /// The forward of an input `x` whose rows its producer quantized (`xq`), which the kernel
    /// uses where it runs this Linear; otherwise the plain forward.
    pub fn forward_quantized(&self, x: &Tensor, xq: Option<&QuantizedRows>) -> Result<Tensor> {
        let (Some(k), Some(xq)) = (&self.kernel, xq) else {
            return self.forward(x);
        };
        let (rows, out) = rows_of(x, self.weight.dim(0)?);
        let (y, _) = k.forward_fused(&x.reshape((rows, ()))?, Some(xq), None)?;
        y.reshape(out)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (rows, inner) = (
            dims[..dims.len() - 1].iter().product::<usize>(),
            dims[dims.len() - 1],
        );
        let x2 = x.reshape((rows, inner))?;
        let y = match (&self.kernel, self.act_quant) {
            (Some(k), _) => k.forward(&x2)?,
            (None, Some(q)) => q.fake_quant(&x2)?.matmul(&self.weight.t()?)?,
            (None, None) => x2.matmul(&self.weight.t()?)?,
        };
        let mut out = dims;
        *out.last_mut().expect("rank >= 1") = self.weight.dim(0)?;
        y.reshape(out)
    }
}

/// RMSNorm over the last dimension: f32 statistics, `x · rsqrt(mean(x²) + eps) · weight`.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match mode {
            Mode::Inference => {
                candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32)
            }
            Mode::Differentiable => super::grad_ops::rms_norm(x, &self.weight, self.eps as f32),
        }
    }
}

/// RoPE tables (NeoX halves), optionally llama3-scaled, grown on demand.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
    cos: Tensor,
    sin: Tensor,
    dtype: DType,
    device: Device,
}

/// Inverse frequencies exactly as transformers computes them (f32), llama3 scaling included.
pub fn inv_freq(cfg: &Exaone4Config) -> Vec<f32> {
    let dim = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    let mut inv: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0f32 / base.powf((2 * i) as f32 / dim as f32))
        .collect();
    if let Some(s) = &cfg.rope_scaling {
        let factor = s.factor as f32;
        let (lo, hi) = (s.low_freq_factor as f32, s.high_freq_factor as f32);
        let old = s.original_max_position_embeddings as f32;
        let (low_wl, high_wl) = (old / lo, old / hi);
        for f in inv.iter_mut() {
            let wl = 2.0 * std::f32::consts::PI / *f;
            let scaled = if wl > low_wl { *f / factor } else { *f };
            // NaN-free here: wl is finite and positive
            let medium = wl >= high_wl && wl <= low_wl;
            *f = if medium {
                let s = (old / wl - lo) / (hi - lo);
                (1.0 - s) * scaled / factor + s * scaled
            } else {
                scaled
            };
        }
    }
    inv
}

impl Rope {
    pub fn new(cfg: &Exaone4Config, dtype: DType, device: &Device) -> Result<Self> {
        let inv_freq = inv_freq(cfg);
        let empty = Tensor::zeros((0, cfg.head_dim / 2), dtype, device)?;
        Ok(Self {
            inv_freq,
            cos: empty.clone(),
            sin: empty,
            dtype,
            device: device.clone(),
        })
    }

    /// Make sure the tables cover positions `0..len`.
    pub fn ensure(&mut self, len: usize) -> Result<()> {
        let have = self.cos.dim(0)?;
        if have >= len {
            return Ok(());
        }
        let n = len.max(256).next_power_of_two();
        let half = self.inv_freq.len();
        let mut freqs = Vec::with_capacity(n * half);
        for p in 0..n {
            // f32 product, as transformers computes position · inv_freq in float32
            freqs.extend(self.inv_freq.iter().map(|f| p as f32 * f));
        }
        let freqs = Tensor::from_vec(freqs, (n, half), &Device::Cpu)?;
        self.cos = freqs.cos()?.to_dtype(self.dtype)?.to_device(&self.device)?;
        self.sin = freqs.sin()?.to_dtype(self.dtype)?.to_device(&self.device)?;
        Ok(())
    }

    /// cos/sin for the given positions: `[t, half]` when every row starts at `start`,
    /// `[b, t, half]` for per-row positions.
    pub fn tables(&self, positions: &Positions) -> Result<(Tensor, Tensor)> {
        match positions {
            Positions::Uniform { start, len } => Ok((
                self.cos.narrow(0, *start, *len)?,
                self.sin.narrow(0, *start, *len)?,
            )),
            Positions::PerRow { ids, b, t } => {
                let c = self.cos.index_select(ids, 0)?.reshape((*b, *t, ()))?;
                let s = self.sin.index_select(ids, 0)?.reshape((*b, *t, ()))?;
                Ok((c, s))
            }
        }
    }
}

/// Position ids of the tokens in one forward.
#[derive(Clone, Debug)]
pub enum Positions {
    Uniform {
        start: usize,
        len: usize,
    },
    /// flattened [b*t] u32 position ids (left-padded batches)
    PerRow {
        ids: Tensor,
        b: usize,
        t: usize,
    },
}

/// Applies RoPE to `x` [b, h, t, d] with tables [t, d/2] or [b, t, d/2].
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Inference => {
            candle_nn::rotary_emb::rope(&x.contiguous()?, &cos.contiguous()?, &sin.contiguous()?)
        }
        Mode::Differentiable => {
            let d = x.dim(D::Minus1)?;
            let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
            let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
            // [t, d] → [1, 1, t, d]; [b, t, d] → [b, 1, t, d]
            let (cos, sin) = if cos.rank() == 2 {
                (
                    cos.unsqueeze(0)?.unsqueeze(0)?,
                    sin.unsqueeze(0)?.unsqueeze(0)?,
                )
            } else {
                (cos.unsqueeze(1)?, sin.unsqueeze(1)?)
            };
            let x1 = x.narrow(D::Minus1, 0, d / 2)?;
            let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
            let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?
        }
    }
}

/// Multi-head attention with GQA and per-head QK RMSNorm.
#[derive(Clone, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub use_rope: bool,
    pub window: Option<usize>,
    /// q, k and v in one kernel on their stored weights, stacked along the output (e.g. one
    /// int8 GEMM with one activation quantization): [rows, hidden] → [rows, q | k | v]
    pub fused_qkv: Option<std::sync::Arc<dyn LinearKernel>>,
}

/// The most f32 attention scores [`attend`] materialises at once (256 MiB): longer inputs are
/// attended in blocks of query rows, each row's softmax being its own, so the result is the same
/// (to the rounding of the matrix products). Inputs below it run in one block, as before.
const MAX_SCORES: usize = 1 << 26;

/// Softmax(q kᵀ / √d + mask) v for q [b, h, t, d], k/v [b, kvh, L, d], mask [b, 1, t, L] (f32,
/// additive). Query heads `g·j .. g·j+g-1` share KV head j; folding the group into the query
/// rows avoids materialising repeated K/V. Long inputs go in blocks of query rows, so memory
/// grows with t·L only through the mask, not through h·t·L scores.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    mode: Mode,
) -> Result<Tensor> {
    attend_in_blocks(q, k, v, mask, mode, MAX_SCORES)
}

/// [`attend`] holding at most `max_scores` scores at once.
fn attend_in_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    mode: Mode,
    max_scores: usize,
) -> Result<Tensor> {
    let (b, h, t, _) = q.dims4()?;
    let l = k.dim(2)?;
    let rows = (max_scores / (b * h * l).max(1)).max(1);
    if t <= rows {
        return attend_block(q, k, v, mask, mode);
    }
    let mut outs = Vec::with_capacity(t.div_ceil(rows));
    for t0 in (0..t).step_by(rows) {
        let n = rows.min(t - t0);
        let m = mask.map(|m| m.narrow(2, t0, n)).transpose()?;
        outs.push(attend_block(&q.narrow(2, t0, n)?, k, v, m.as_ref(), mode)?);
    }
    Tensor::cat(&outs, 1)
}

/// [`attend`] on one block of query rows.
fn attend_block(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    mode: Mode,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (_, kvh, l, _) = k.dims4()?;
    let g = h / kvh;
    let scale = 1.0 / (d as f64).sqrt();
    let q = q.contiguous()?.reshape((b, kvh, g * t, d))?;
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let mut scores = scores.to_dtype(DType::F32)?;
    if let Some(m) = mask {
        scores = scores
            .reshape((b, kvh, g, t, l))?
            .broadcast_add(&m.contiguous()?.unsqueeze(2)?)?
            .reshape((b, kvh, g * t, l))?;
    }
    let probs = match mode {
        Mode::Inference => candle_nn::ops::softmax_last_dim(&scores)?,
        Mode::Differentiable => super::grad_ops::softmax_last_dim(&scores)?,
    };
    let out = probs.to_dtype(v.dtype())?.matmul(&v.contiguous()?)?; // [b, kvh, g*t, d]
    out.reshape((b, h, t, d))?
        .transpose(1, 2)?
        .reshape((b, t, h * d))
}

/// The SiLU-gated MLP.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    /// gate and up in one kernel that returns the gated activation silu(x Gᵀ) · (x Uᵀ)
    /// directly: [rows, hidden] → [rows, intermediate]
    pub fused_gate_up: Option<std::sync::Arc<dyn LinearKernel>>,
}

impl Mlp {
    /// silu(x Gᵀ) · (x Uᵀ), [.., hidden] → [.., intermediate]
    pub fn activation(
        &self,
        x: &Tensor,
        mode: Mode,
        kernels: Option<&dyn Kernels>,
    ) -> Result<Tensor> {
        Ok(self.activation_fused(x, None, mode, kernels)?.0)
    }

    /// [`Mlp::activation`] of rows `x` that their producer may have quantized (`xq`), returning
    /// the activation's rows quantized for down's kernel too where the gate/up kernel can.
    pub fn activation_fused(
        &self,
        x: &Tensor,
        xq: Option<&QuantizedRows>,
        mode: Mode,
        kernels: Option<&dyn Kernels>,
    ) -> Result<(Tensor, Option<QuantizedRows>)> {
        if let Some(k) = &self.fused_gate_up {
            let (rows, out) = rows_of(x, self.down_proj.in_features());
            let x2 = x.reshape((rows, ()))?;
            let (y, yq) = k.forward_fused(&x2, xq, self.down_proj.input_quant())?;
            return Ok((y.reshape(out)?, yq));
        }
        let (g, u) = (self.gate_proj.forward(x)?, self.up_proj.forward(x)?);
        if let Some(k) = kernels {
            let y = match mode {
                Mode::Inference => k.silu_mul(&g, &u)?,
                Mode::Differentiable => k.silu_mul_grad(&g, &u)?,
            };
            if let Some(y) = y {
                return Ok((y, None));
            }
        }
        Ok(((g.silu()? * u)?, None))
    }

    /// down(silu(x Gᵀ) · (x Uᵀ)) of rows `x` that their producer may have quantized (`xq`).
    /// Where the gated kernel can hand its output's rows to down's kernel quantized alone
    /// ([`LinearKernel::gated_rows`]), the activation's bf16 rows are never written: callers
    /// that read the activation (calibration hooks) use [`Mlp::activation_fused`].
    pub fn forward_fused(
        &self,
        x: &Tensor,
        xq: Option<&QuantizedRows>,
        mode: Mode,
        kernels: Option<&dyn Kernels>,
    ) -> Result<Tensor> {
        let down = &self.down_proj;
        if let (Some(g), Some(d), Some(fmt)) =
            (&self.fused_gate_up, &down.kernel, down.input_quant())
        {
            let (rows, out) = rows_of(x, down.out_features());
            if let Some(aq) = g.gated_rows(&x.reshape((rows, ()))?, xq, fmt)? {
                return d.forward_rows(&aq)?.reshape(out);
            }
        }
        let (act, aq) = self.activation_fused(x, xq, mode, kernels)?;
        down.forward_quantized(&act, aq.as_ref())
    }

    pub fn forward(&self, x: &Tensor, mode: Mode, kernels: Option<&dyn Kernels>) -> Result<Tensor> {
        self.forward_fused(x, None, mode, kernels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention in blocks of query rows equals attention in one block, masked or not (to the
    /// rounding of the matrix products, whose blocking depends on the row count).
    #[test]
    fn attention_in_blocks_equals_one_block() {
        let dev = Device::Cpu;
        let (b, h, kvh, t, d) = (2, 4, 2, 13, 8);
        let q = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, kvh, t, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, kvh, t, d), &dev).unwrap();
        let causal: Vec<f32> = (0..b * t * t)
            .map(|i| if i % t > (i / t) % t { -1e30 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(causal, (b, 1, t, t), &dev).unwrap();
        for m in [None, Some(&mask)] {
            let one = attend(&q, &k, &v, m, Mode::Inference).unwrap();
            // 5 rows of b·h·t scores at a time: blocks of 5, 5 and 3 query rows
            let blocks = attend_in_blocks(&q, &k, &v, m, Mode::Inference, 5 * b * h * t).unwrap();
            assert_eq!(one.dims(), blocks.dims());
            let diff = (one - blocks).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        }
    }

    /// Every e4m3 value, the midpoints between neighbours (ties), points just either side of
    /// them, zero, subnormals and values beyond ±448: the arithmetic rounding equals the float8
    /// crate's (round to nearest even, as torch), after saturation.
    #[test]
    fn arithmetic_fp8_rounding_equals_the_cast() {
        let mut grid: Vec<f32> = (0u8..=0x7e)
            .map(|b| float8::F8E4M3::from_bits(b).to_f32())
            .collect();
        grid.sort_by(f32::total_cmp);
        let mut xs = vec![0.0f32, 1e-6, 500.0, 448.0, 460.0, 1e-3];
        for w in grid.windows(2) {
            let m = 0.5 * (w[0] + w[1]);
            xs.extend([w[0], m, m * (1.0 + 1e-6), m * (1.0 - 1e-6), w[1]]);
        }
        let xs: Vec<f32> = xs.iter().flat_map(|&x| [x, -x]).collect();
        let want: Vec<f32> = xs
            .iter()
            .map(|&x| float8::F8E4M3::from_f32(x.clamp(-448.0, 448.0)).to_f32())
            .collect();
        let got: Vec<f32> = round_fp8_e4m3(&Tensor::new(xs.as_slice(), &Device::Cpu).unwrap())
            .unwrap()
            .to_vec1()
            .unwrap();
        for ((x, w), g) in xs.iter().zip(&want).zip(&got) {
            assert_eq!(w, g, "x = {x:e}");
        }
    }

    #[test]
    fn int8_rounding_sends_ties_to_even() {
        let x = Tensor::new(
            &[0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6],
            &Device::Cpu,
        )
        .unwrap();
        let r: Vec<f32> = round_ties_even(&x).unwrap().to_vec1().unwrap();
        assert_eq!(r, vec![0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 2.0, -3.0]);
    }
}
