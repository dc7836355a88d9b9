//! The roofline of a serving step: the least time the device could take for what the step
//! computes, max(bytes it must read ÷ copy bandwidth, FLOPs ÷ GEMM rate), both measured on the
//! device at hand. Bytes: every weight once (and the lm_head for the sampled rows' logits) plus
//! the KV entries attention reads; FLOPs: 2 per weight per token, the lm_head per sampled row,
//! and attention's 4 · heads · head_dim per (query, key) pair per layer. A step's measured time
//! over its roofline says how far the engine is from what the hardware allows.

use serde::Serialize;

use super::metrics::StepStats;
use crate::model::Exaone4Config;

/// What a variant's steps cost, from its config and its bytes of weights.
#[derive(Clone, Debug, Serialize)]
pub struct Roofline {
    /// bytes of weights read once per step (Linears as stored, the lm_head in bf16)
    pub weight_bytes: f64,
    /// bytes of K and V per token over all layers
    pub kv_bytes_per_token: f64,
    /// parameters of the decoder's Linears (FLOPs = 2 per parameter per token)
    pub linear_params: f64,
    /// parameters of the lm_head (applied to sampled rows only)
    pub head_params: f64,
    /// FLOPs per (query, key) pair over all layers
    pub attn_flops_per_pair: f64,
    /// measured device copy bandwidth, bytes/s
    pub bandwidth: f64,
    /// measured dense GEMM rate at the variant's precision, FLOP/s
    pub flops_rate: f64,
}

impl Roofline {
    pub fn new(cfg: &Exaone4Config, weight_bytes: f64, bandwidth: f64, flops_rate: f64) -> Self {
        let (h, hd) = (cfg.hidden_size as f64, cfg.head_dim as f64);
        let (hq, hkv) = (
            cfg.num_attention_heads as f64,
            cfg.num_key_value_heads as f64,
        );
        let layers = cfg.num_hidden_layers as f64;
        let inter = cfg.intermediate_size as f64;
        let per_layer = h * (hq + 2.0 * hkv) * hd + hq * hd * h + 3.0 * h * inter;
        Self {
            weight_bytes,
            kv_bytes_per_token: 2.0 * layers * hkv * hd * 2.0,
            linear_params: layers * per_layer,
            head_params: cfg.vocab_size as f64 * h,
            attn_flops_per_pair: 4.0 * hq * hd * layers,
            bandwidth,
            flops_rate,
        }
    }

    /// Bytes a step must read and FLOPs it must do.
    pub fn work(&self, s: &StepStats) -> (f64, f64) {
        let tokens = (s.decode_tokens + s.prefill_tokens) as f64;
        let bytes = self.weight_bytes + s.kv_tokens_read as f64 * self.kv_bytes_per_token;
        let pairs = s.attn_pairs as f64;
        let flops = 2.0 * self.linear_params * tokens
            + 2.0 * self.head_params * s.sampled as f64
            + self.attn_flops_per_pair * pairs;
        (bytes, flops)
    }

    /// The least time the step could take, in seconds.
    pub fn secs(&self, s: &StepStats) -> f64 {
        let (bytes, flops) = self.work(s);
        (bytes / self.bandwidth).max(flops / self.flops_rate)
    }

    /// Measured time over roofline per step, and their mean weighted by time (the share of the
    /// run's time spent away from the roofline).
    pub fn ratios(&self, steps: &[StepStats]) -> (Vec<f64>, f64) {
        let r: Vec<f64> = steps.iter().map(|s| s.secs / self.secs(s)).collect();
        let (t, best): (f64, f64) = steps
            .iter()
            .fold((0.0, 0.0), |(t, b), s| (t + s.secs, b + self.secs(s)));
        (r, if best > 0.0 { t / best } else { f64::NAN })
    }
}
