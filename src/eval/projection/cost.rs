//! What a variant costs per serving step: its Linears as stored, the lm_head, KV, attention and
//! elementwise traffic, from the model's config and the decoder Linears' scheme.

use candle_core::DType;
use serde::Serialize;

use super::{invalid, Rate};
use crate::checkpoint::scheme::{NumType, Scheme, Strategy};
use crate::error::Result;
use crate::model::Exaone4Config;
use crate::serve::KvSpec;

/// One Linear as a serving step pays for it. EXAONE's projections are counted fused, as vLLM
/// runs them: `qkv_proj`, `o_proj`, `gate_up_proj`, `down_proj` per layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinearCost {
    pub name: String,
    /// the decoder layer, None for the lm_head
    pub layer: Option<usize>,
    pub in_features: usize,
    pub out_features: usize,
    /// stored bytes read per step: quantized weights with their scales and zero points
    pub weight_bytes: f64,
    pub rate: Rate,
    /// activations quantized per token at run time (one more pass over the input)
    pub act_quant: bool,
}

impl LinearCost {
    /// The cost of an `inp → out` Linear of layer `l` stored under scheme `s` (None: bf16).
    /// Bytes: bf16 2 B per weight; integer or fp8 weights `bits/8` B per weight, plus a bf16
    /// scale per row and group (per row for channel strategy) and, when asymmetric, a `bits`-bit zero point per scale
    /// (compressed-tensors packs int4 zero points). Rate: int8 for int8 weights with int8
    /// activations (W8A8), fp8 for fp8 weights with fp8 activations, bf16 otherwise (W4A16
    /// dequantizes to bf16 in registers).
    pub fn new(name: &str, l: Option<usize>, inp: usize, out: usize, s: Option<&Scheme>) -> Self {
        let weights = (inp * out) as f64;
        let (weight_bytes, rate, act_quant) = match s {
            None => (2.0 * weights, Rate::Bf16, false),
            Some(s) => {
                let w = &s.weights;
                let groups = match w.strategy {
                    Strategy::Channel => 1,
                    Strategy::Group(g) => inp.div_ceil(g.max(1)),
                };
                let scales = (out * groups) as f64;
                let bits = w.num_bits as f64 / 8.0;
                let zp = if w.symmetric { 0.0 } else { scales * bits };
                let bytes = weights * bits + 2.0 * scales + zp;
                let rate = match (w.ty, w.num_bits, s.input_activations) {
                    (NumType::Int, 8, Some(a)) if a.ty == NumType::Int => Rate::Int8,
                    (NumType::Float, _, Some(a)) if a.ty == NumType::Float => Rate::Fp8,
                    _ => Rate::Bf16,
                };
                (bytes, rate, s.input_activations.is_some())
            }
        };
        Self {
            name: name.to_string(),
            layer: l,
            in_features: inp,
            out_features: out,
            weight_bytes,
            rate,
            act_quant,
        }
    }

    /// FLOPs per token: `2·in·out`.
    pub fn flops_per_token(&self) -> f64 {
        2.0 * (self.in_features * self.out_features) as f64
    }

    /// Activation bytes per token: input read and output written in bf16, and for quantized
    /// activations a quantization pass (read bf16, write int8/fp8, GEMM reads 1 B instead of 2):
    /// `2·in` more.
    pub fn act_bytes_per_token(&self) -> f64 {
        let quant = self.act_quant as usize * 2 * self.in_features;
        (2 * (self.in_features + self.out_features) + quant) as f64
    }
}

/// What one variant costs per step: its Linears, the lm_head, KV, attention and elementwise work.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VariantCost {
    pub name: String,
    /// the decoder Linears' scheme (None: bf16); lm_head and embedding stay bf16
    #[serde(skip)]
    pub scheme: Option<Scheme>,
    pub linears: Vec<LinearCost>,
    /// `vocab × hidden`, bf16, read every step (tied to the embedding in EXAONE-4.0-1.2B)
    pub lm_head: LinearCost,
    /// `2·layers·kv_heads·head_dim·2 B` (bf16 KV cache: the evaluation sets no kv_cache_scheme)
    pub kv_bytes_per_token: f64,
    /// `4·layers·q_heads·head_dim`: QKᵀ and PV for one (query, key) pair over all layers
    pub attn_flops_per_pair: f64,
    /// bytes per token outside the GEMMs, per layer `(3·I + 8·H + 2·(q_heads + kv_heads)·d)·2`
    /// (SiLU·mul reads 2I writes I; two residual-add RMSNorms read and write 2H each; QK-norm
    /// and RoPE read and write q and k) plus the embedding row `2·H`
    pub elementwise_bytes_per_token: f64,
}

/// `bf16 | w4a16 | w8a8 | fp8` → the crate's scheme (None for bf16). W4A16 is the organisers'
/// sample's: int4, groups of 128, symmetric; W8A8 int8 per channel with dynamic per-token int8
/// activations; FP8 e4m3 per channel with dynamic per-token fp8 activations.
pub fn parse_scheme_word(word: &str) -> Result<Option<Scheme>> {
    match word.to_ascii_lowercase().as_str() {
        "bf16" => Ok(None),
        "w4a16" => Ok(Some(Scheme::w4a16(128, true))),
        "w8a8" => Ok(Some(Scheme::w8a8_int8())),
        "fp8" => Ok(Some(Scheme::fp8_dynamic())),
        _ => Err(invalid(format!("scheme {word:?}: not bf16|w4a16|w8a8|fp8"))),
    }
}

/// The scheme word of [`parse_scheme_word`] a scheme falls under, "other" for the rest.
pub fn scheme_kind(scheme: Option<&Scheme>) -> &'static str {
    let Some(s) = scheme else { return "bf16" };
    match (s.weights.ty, s.weights.num_bits, s.input_activations) {
        (NumType::Int, 4, None) => "w4a16",
        (NumType::Int, 8, Some(a)) if a.ty == NumType::Int => "w8a8",
        (NumType::Float, 8, Some(a)) if a.ty == NumType::Float => "fp8",
        _ => "other",
    }
}

impl VariantCost {
    /// The cost model of `cfg` with every decoder Linear under `scheme` (None: bf16).
    pub fn new(name: &str, cfg: &Exaone4Config, scheme: Option<Scheme>) -> Result<Self> {
        if let Some(s) = &scheme {
            let at = |m| invalid(format!("variant `{name}`: scheme {}: {m}", s.name()));
            s.check().map_err(at)?;
        }
        let (h, d, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (q, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let mut linears = vec![];
        for l in 0..cfg.num_hidden_layers {
            for (n, inp, out) in [
                ("qkv_proj", h, (q + 2 * kv) * d),
                ("o_proj", q * d, h),
                ("gate_up_proj", h, 2 * i),
                ("down_proj", i, h),
            ] {
                let name = format!("layers.{l}.{n}");
                linears.push(LinearCost::new(&name, Some(l), inp, out, scheme.as_ref()));
            }
        }
        let layers = cfg.num_hidden_layers as f64;
        let per_layer = (3 * i + 8 * h + 2 * (q + kv) * d) as f64 * 2.0;
        Ok(Self {
            name: name.to_string(),
            scheme,
            linears,
            lm_head: LinearCost::new("lm_head", None, h, cfg.vocab_size, None),
            kv_bytes_per_token: KvSpec::from_config(cfg, DType::BF16, 16).bytes_per_token() as f64,
            attn_flops_per_pair: 4.0 * layers * (q * d) as f64,
            elementwise_bytes_per_token: layers * per_layer + 2.0 * h as f64,
        })
    }

    /// [`new`](Self::new) with the scheme named by a word (`bf16|w4a16|w8a8|fp8`).
    pub fn from_word(name: &str, cfg: &Exaone4Config, word: &str) -> Result<Self> {
        Self::new(name, cfg, parse_scheme_word(word)?)
    }

    /// The same variant with the Linears of `layers` kept in bf16 (e.g. "W4A16 with some layers
    /// kept bf16"). A layer index outside the model is an error.
    pub fn keep_bf16(mut self, layers: &[usize]) -> Result<Self> {
        let n = self.linears.len() / 4;
        if let Some(l) = layers.iter().find(|&&l| l >= n) {
            let v = &self.name;
            return Err(invalid(format!(
                "`{v}`: no layer {l} to keep bf16 ({n} layers)"
            )));
        }
        for x in &mut self.linears {
            if x.layer.is_some_and(|l| layers.contains(&l)) {
                *x = LinearCost::new(&x.name, x.layer, x.in_features, x.out_features, None);
            }
        }
        Ok(self)
    }

    /// [`scheme_kind`] of the decoder Linears' scheme.
    pub fn kind(&self) -> &'static str {
        scheme_kind(self.scheme.as_ref())
    }

    /// Bytes read per step for weights: Linears and lm_head.
    pub fn weight_bytes(&self) -> f64 {
        self.linears.iter().map(|l| l.weight_bytes).sum::<f64>() + self.lm_head.weight_bytes
    }

    /// FLOPs of one generated token at `context` tokens of context: `2·params` over the Linears
    /// and lm_head plus attention over `context` keys.
    pub fn flops_per_token(&self, context: usize) -> f64 {
        let lin: f64 = self.linears.iter().map(LinearCost::flops_per_token).sum();
        lin + self.lm_head.flops_per_token() + self.attn_flops_per_pair * context as f64
    }
}
