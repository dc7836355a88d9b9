//! The hooks through which faster code plugs into the forward. The model defines them and
//! never calls faster code itself: a runtime (the CUDA kernels in `runtime/`) implements
//! [`Kernels`] and installs it on a model (`Exaone4::kernels`), and each hook may decline
//! (`None`), in which case the model computes the piece with candle's ops.

use candle_core::{DType, Device, Result, Tensor};

use super::layers::{ActQuant, RmsNorm};

/// Fused implementations of pieces of the inference forward (and, where a hook says so, of
/// the training forward: those carry their backward).
pub trait Kernels: Send + Sync + std::fmt::Debug {
    /// Whether [`Kernels::causal_attention`] runs for this device, dtype and head size. The
    /// forward asks before building masks: where it runs, unpadded attention needs none.
    fn causal_attention_available(&self, device: &Device, dtype: DType, head_dim: usize) -> bool;

    /// softmax(q kᵀ / √d) v with a causal mask aligned to the last query (query i of t sees
    /// keys j ≤ i + L − t), for q [b, h, t, d] and k/v [b, kvh, L, d]; GQA when kvh < h.
    /// Returns [b, t, h·d], or None where it does not run.
    fn causal_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>>;

    /// Whether [`Kernels::causal_attention_grad`] runs for this device and dtype (training asks
    /// this instead of [`Kernels::causal_attention_available`]). Default: no.
    fn causal_attention_grad_available(&self, _device: &Device, _dtype: DType) -> bool {
        false
    }

    /// [`Kernels::causal_attention`] carrying its backward (q, k and v receive gradients), for
    /// training (`Mode::Differentiable`), or None. Default: None (candle's ops).
    fn causal_attention_grad(
        &self,
        _q: &Tensor,
        _k: &Tensor,
        _v: &Tensor,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Attention's inputs from the q/k/v products `q` [b·t, hq·d], `k` and `v` [b·t, hkv·d]
    /// (views with row strides allowed, as column ranges of one stacked product): q and k
    /// RMS-normalised per head (`norms`: q's weight, k's weight, eps), rotated with `rope`'s
    /// tables ([t, d/2], row i for token i of every sequence) where given, as q [b, hq, t, d]
    /// and k, v [b, hkv, t, d] — or None. Default: None (candle's ops).
    fn qkv_heads(
        &self,
        _qkv: [&Tensor; 3],
        _norms: (&Tensor, &Tensor, f64),
        _rope: Option<(&Tensor, &Tensor)>,
        _shape: QkvShape,
    ) -> Result<Option<[Tensor; 3]>> {
        Ok(None)
    }

    /// silu(g) · u elementwise, or None.
    fn silu_mul(&self, g: &Tensor, u: &Tensor) -> Result<Option<Tensor>>;

    /// [`Kernels::silu_mul`] carrying its backward (g and u receive gradients), for training
    /// (`Mode::Differentiable`), or None. Default: None (candle's ops).
    fn silu_mul_grad(&self, _g: &Tensor, _u: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// The post-norm residual `h + norm(x)` (bf16 add of the rounded norm, as the model's own
    /// ops compute it) in one kernel, or None. With `quant`, the result's rows may also come
    /// back quantized per token in that format, for the Linear that reads them next
    /// ([`LinearKernel::input_quant`]). Default: None (candle's ops).
    fn add_rms_norm(
        &self,
        _h: &Tensor,
        _x: &Tensor,
        _norm: &RmsNorm,
        _quant: Option<ActQuant>,
    ) -> Result<Option<(Tensor, Option<QuantizedRows>)>> {
        Ok(None)
    }

    /// log-softmax over the last dimension, as f32, or None.
    fn log_softmax(&self, x: &Tensor) -> Result<Option<Tensor>>;
}

/// The shape [`Kernels::qkv_heads`] works on: `batch` sequences of `t` tokens, `heads_q` query
/// and `heads_kv` key/value heads of `head_dim` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QkvShape {
    pub batch: usize,
    pub t: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
}

/// A Linear computed by a dedicated kernel on its stored (compressed) weights, e.g. int8
/// tensor cores for W8A8. The Linear's `weight` stays the dequantized reference that
/// compression and evaluation code read.
pub trait LinearKernel: Send + Sync + std::fmt::Debug {
    /// x [rows, in] → [rows, out]
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// The per-token format this kernel quantizes its input to, so that the kernel producing
    /// the input may quantize it on the way out instead ([`QuantizedRows`]). Default: None.
    fn input_quant(&self) -> Option<ActQuant> {
        None
    }

    /// [`LinearKernel::forward`] of rows `x` whose per-token quantization their producer made
    /// (`xq`: used where it is in this kernel's format, which then skips its own quantizer),
    /// returning with the output its rows quantized as `out_quant` where the kernel can (a
    /// gated product's, for down's input). Default: the plain forward.
    fn forward_fused(
        &self,
        x: &Tensor,
        _xq: Option<&QuantizedRows>,
        _out_quant: Option<ActQuant>,
    ) -> Result<(Tensor, Option<QuantizedRows>)> {
        Ok((self.forward(x)?, None))
    }

    /// A gated product's output (silu(gate) · up of rows `x`, `xq` as in
    /// [`LinearKernel::forward_fused`]) as its rows quantized in `out_quant` alone, without the
    /// bf16 rows, for a caller in which nothing else reads them (down's kernel takes the rows
    /// through [`LinearKernel::forward_rows`]). None where this kernel cannot, before any work.
    /// Default: None.
    fn gated_rows(
        &self,
        _x: &Tensor,
        _xq: Option<&QuantizedRows>,
        _out_quant: ActQuant,
    ) -> Result<Option<QuantizedRows>> {
        Ok(None)
    }

    /// [`LinearKernel::forward`] of an input given only as its rows quantized by their producer.
    /// A kernel whose [`LinearKernel::input_quant`] is `Some(format)` takes rows of that format.
    /// Default: an error.
    fn forward_rows(&self, xq: &QuantizedRows) -> Result<Tensor> {
        candle_core::bail!(
            "this Linear's kernel takes no input given only as {:?} rows",
            xq.format
        )
    }
}

/// A Linear's input rows quantized per token by the kernel that produced them (the RMSNorm of
/// the post-norm residual, a gated product's epilogue), exactly as the Linear's own kernel would
/// quantize them: `bytes` [rows, in] (U8: int8, or e4m3 bits) and `scales` [rows] (F32). The
/// model only carries it from the producer's hook to the consumer's kernel, beside the bf16
/// rows it was made from.
#[derive(Clone, Debug)]
pub struct QuantizedRows {
    pub format: ActQuant,
    pub bytes: Tensor,
    pub scales: Tensor,
}
