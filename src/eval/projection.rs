//! A projection of serving speed on the evaluation's GPU (an NVIDIA L4) from datasheet figures:
//! a roofline per serving step, summed over a workload's steps, turned into the competition's
//! SpeedNorm. Nothing is fitted to leaderboard scores; [`compare_with_public`] only sets the
//! projection beside them. Per step (vLLM's continuous batching, see `crate::serve::scheduler`):
//!
//! ```text
//! bytes = Linear weights (read once per step) + lm_head (bf16) + KV read and written
//!       + activations (tokens × Σ (in + out)·2 B, + 2·in B where activations are quantized)
//!       + elementwise traffic per token
//! flops = Σ_linear 2·in·out·tokens at the Linear's rate + 2·vocab·hidden per sequence (logits)
//!       + 4·layers·q_heads·head_dim per (query, key) pair of attention (bf16)
//! time  = max(bytes ÷ (bandwidth·eff_bw), Σ_rate flops ÷ (rate·eff_tc)) + step overhead
//! T     = Σ time ÷ generated tokens;   SpeedNorm = (T_base − T_variant) ÷ T_base  (target.md)
//! ```
//!
//! ([`Roofline::PerKernel`] is the alternative bound.) Not modelled: the KV pool's size per
//! variant (give each variant its own trace for that), L2 hits, sliding windows, and
//! kernel-specific losses (e.g. Marlin's dequantization at large batch).

use candle_core::DType;
use serde::Serialize;

use crate::checkpoint::scheme::{NumType, Scheme, Strategy};
use crate::error::{Error, Result};
use crate::model::Exaone4Config;
use crate::serve::{Chunk, KvSpec, Request, Scheduler, SchedulerConfig, Step, Workload};

/// Which tensor-core rate a GEMM runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Rate {
    Bf16,
    Int8,
    Fp8,
}

/// Assumed fraction of peak memory bandwidth a streaming kernel reaches on the L4: 0.8, what
/// device-to-device copies typically reach on GDDR6 cards. An assumption, not a measurement:
/// replace it with a measured one ([`GpuSpec::eff_bw`]).
pub const L4_EFF_BW: f64 = 0.8;
/// Assumed fraction of dense tensor-core peak a GEMM reaches on the L4: 0.5. The datasheet's
/// peaks are at boost clock; at its 72 W cap the L4 throttles under sustained GEMMs
/// (target.md), so achieved rates sit well below peak. An assumption: replace it when measured.
pub const L4_EFF_TC: f64 = 0.5;
/// Fixed cost per serving step: 200 µs for a CUDA-graph replay and the sampler's launches,
/// vLLM's CPU-side scheduling assumed overlapped with the GPU; it matters at batch 1 only.
pub const STEP_OVERHEAD_S: f64 = 2e-4;

/// A GPU's physical figures (datasheet, dense — no structured sparsity) and the efficiencies a
/// real kernel reaches on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuSpec {
    pub name: String,
    /// peak memory bandwidth, bytes/s
    pub mem_bw: f64,
    /// dense bf16 tensor throughput, FLOP/s
    pub bf16_flops: f64,
    /// dense int8 tensor throughput, OP/s (None: no int8 tensor cores; int8 GEMMs run at bf16)
    pub int8_ops: Option<f64>,
    /// dense fp8 tensor throughput, FLOP/s (None: no fp8 tensor cores; FP8 GEMMs dequantize to
    /// bf16, as vLLM's weight-only fp8 fallback does)
    pub fp8_flops: Option<f64>,
    /// fraction of `mem_bw` a streaming kernel reaches. To carry a measurement from another
    /// GPU: measured ÷ that GPU's datasheet peak, e.g. copy bandwidth on the H200 ÷ 4.8 TB/s
    pub eff_bw: f64,
    /// fraction of the tensor rates a GEMM reaches; e.g. a bf16 GEMM measured on the H200 ÷
    /// its dense 989.5 TFLOPS (1,979 "with sparsity" on the datasheet)
    pub eff_tc: f64,
    /// fixed time per serving step, seconds
    pub step_overhead_s: f64,
}

impl GpuSpec {
    /// NVIDIA L4 (Ada, sm_89), from NVIDIA's L4 Tensor Core GPU datasheet: 24 GB GDDR6 at
    /// 300 GB/s; BF16 242 TFLOPS, INT8 485 TOPS, FP8 485 TFLOPS *with sparsity*, so dense
    /// 121 TFLOPS bf16, 242.5 TOPS int8, 242.5 TFLOPS fp8. Efficiencies [`L4_EFF_BW`],
    /// [`L4_EFF_TC`], overhead [`STEP_OVERHEAD_S`].
    pub fn l4() -> Self {
        Self {
            name: "NVIDIA L4".into(),
            mem_bw: 300e9,
            bf16_flops: 121e12,
            int8_ops: Some(242.5e12),
            fp8_flops: Some(242.5e12),
            eff_bw: L4_EFF_BW,
            eff_tc: L4_EFF_TC,
            step_overhead_s: STEP_OVERHEAD_S,
        }
    }

    /// Every figure positive and finite, efficiencies in (0, 1], overhead ≥ 0.
    pub fn check(&self) -> Result<()> {
        let mut peaks = vec![self.mem_bw, self.bf16_flops];
        peaks.extend(self.int8_ops.iter().chain(&self.fp8_flops));
        let pos = peaks.iter().all(|x| x.is_finite() && *x > 0.0);
        let eff = |e: f64| e > 0.0 && e <= 1.0;
        let eff = eff(self.eff_bw) && eff(self.eff_tc);
        let o = self.step_overhead_s;
        if pos && eff && o.is_finite() && o >= 0.0 {
            return Ok(());
        }
        Err(invalid(format!(
            "GPU {self:?}: bandwidth and rates must be finite and > 0, efficiencies in (0, 1], the step overhead >= 0"
        )))
    }

    /// Achieved throughput (peak × `eff_tc`) of a GEMM asking for `r`: the bf16 rate where the
    /// GPU lacks int8 or fp8 tensor cores.
    pub fn rate(&self, r: Rate) -> f64 {
        let peak = match r {
            Rate::Int8 => self.int8_ops,
            Rate::Fp8 => self.fp8_flops,
            Rate::Bf16 => None,
        };
        peak.unwrap_or(self.bf16_flops) * self.eff_tc
    }

    /// Achieved bandwidth, bytes/s.
    pub fn bandwidth(&self) -> f64 {
        self.mem_bw * self.eff_bw
    }
}

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

/// What one serving step computes (plain data: build it from a [`Step`] or by hand).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StepLoad {
    pub decode_rows: usize,
    /// prompt chunks and recomputation
    pub prefill_tokens: usize,
    /// sequences in the step; each gets one row of logits (its last position, as vLLM computes)
    pub seqs: usize,
    /// KV tokens attention reads: Σ over the step's chunks of the chunk's end position
    pub kv_tokens_read: u64,
    /// (query, key) pairs attention computes: Σ over chunks `start..end` of Σ_p (p + 1)
    pub attn_pairs: u64,
}

impl std::ops::Add for StepLoad {
    type Output = StepLoad;
    fn add(self, o: StepLoad) -> StepLoad {
        StepLoad {
            decode_rows: self.decode_rows + o.decode_rows,
            prefill_tokens: self.prefill_tokens + o.prefill_tokens,
            seqs: self.seqs + o.seqs,
            kv_tokens_read: self.kv_tokens_read + o.kv_tokens_read,
            attn_pairs: self.attn_pairs + o.attn_pairs,
        }
    }
}

impl StepLoad {
    /// One sequence computing positions `start..end` (causal): a decode row when `decode`.
    pub fn chunk(start: usize, end: usize, decode: bool) -> Self {
        let (s, e) = (start as u64, end.max(start) as u64);
        let len = end.saturating_sub(start);
        Self {
            decode_rows: if decode { len } else { 0 },
            prefill_tokens: if decode { 0 } else { len },
            seqs: 1,
            kv_tokens_read: e,
            attn_pairs: (e * (e + 1) - s * (s + 1)) / 2,
        }
    }

    /// `rows` sequences each decoding one token with `context` tokens in the cache after it.
    pub fn decode(rows: usize, context: usize) -> Self {
        let one = Self::chunk(context.max(1) - 1, context.max(1), true);
        (0..rows).fold(Self::default(), |a, _| a + one)
    }

    /// The step the scheduler planned, exactly (chunk positions are known).
    pub fn from_step(step: &Step) -> Self {
        step.chunks
            .iter()
            .map(|c| Self::chunk(c.start, c.end, c.decode))
            .fold(Self::default(), |a, b| a + b)
    }

    /// Tokens computed.
    pub fn tokens(&self) -> usize {
        self.decode_rows + self.prefill_tokens
    }
}

/// A workload as a sequence of steps, and the tokens it generated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepTrace {
    pub steps: Vec<StepLoad>,
    pub generated_tokens: usize,
}

impl StepTrace {
    /// Steps and generated tokens (> 0: T divides by it).
    pub fn new(steps: Vec<StepLoad>, generated_tokens: usize) -> Result<Self> {
        if generated_tokens == 0 {
            return Err(invalid(
                "step trace: 0 tokens generated, so T is undefined".into(),
            ));
        }
        Ok(Self {
            steps,
            generated_tokens,
        })
    }

    /// The steps the crate's vLLM scheduler ([`Scheduler`]: continuous batching, chunked prefill
    /// under the token budget, paged KV with preemption) plans for `workload` under `config`,
    /// exactly, with every request generating its `max_new_tokens` (capped by the context): no
    /// model runs, each sampled token is one outside the request's stop ids. Refused requests
    /// generate nothing. To replay a serving run with the lengths its model produced, set each
    /// request's `max_new_tokens` to its `RequestResult::output_len` (a run's `StepStats` lack
    /// the chunk positions that KV reads and attention pairs need).
    pub fn schedule(workload: &Workload, config: SchedulerConfig, vocab: usize) -> Result<Self> {
        let mut sched = Scheduler::new(config)?;
        for r in &workload.requests {
            sched.add(r, vocab);
        }
        let mut steps = vec![];
        while sched.has_unfinished() {
            let step = sched.schedule();
            if step.chunks.is_empty() {
                return Err(invalid(format!("step {}: nothing scheduled", step.index)));
            }
            let sample = |c: &Chunk| {
                let stop = &sched.seq(c.seq).stop_ids;
                c.sample
                    .then(|| (0..).find(|t| !stop.contains(t)))
                    .flatten()
            };
            let sampled: Vec<Option<u32>> = step.chunks.iter().map(sample).collect();
            sched.update(&step, &sampled)?;
            steps.push(StepLoad::from_step(&step));
        }
        let generated = sched.seqs().iter().map(|s| s.output().len()).sum();
        Self::new(steps, generated)
    }

    /// [`schedule`](Self::schedule) of `requests` identical requests: `prompt_len` prompt
    /// tokens, `output_len` outputs each, all queued at once.
    pub fn uniform(
        requests: usize,
        prompt_len: usize,
        output_len: usize,
        config: SchedulerConfig,
    ) -> Result<Self> {
        let r = |i| Request::from_ids(format!("r{i}"), vec![1; prompt_len], output_len);
        let w = Workload::new((0..requests).map(r).collect());
        Self::schedule(&w, config, 2)
    }
}

/// How a step's kernels share the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Roofline {
    /// `max(all bytes ÷ bandwidth, all FLOPs ÷ rates)` for the whole step: perfect overlap
    WholeStep,
    /// that max per kernel class (Linears, lm_head, attention), summed: kernels in sequence
    PerKernel,
}

/// One step's projected time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepTime {
    pub secs: f64,
    /// of `secs`, the part where moving bytes took longer than the arithmetic
    pub memory_bound_secs: f64,
    pub bytes: f64,
}

/// The time of one step of `v` on `gpu` (formulas in the module doc).
pub fn step_time(gpu: &GpuSpec, v: &VariantCost, load: &StepLoad, roofline: Roofline) -> StepTime {
    let tokens = load.tokens() as f64;
    let bw = gpu.bandwidth();
    let bf16 = gpu.rate(Rate::Bf16);
    // (bytes, compute secs) per kernel class: Linears, lm_head, attention
    let mut classes = [(0.0, 0.0); 3];
    if load.tokens() > 0 {
        classes[0].0 = tokens * v.elementwise_bytes_per_token;
        for l in &v.linears {
            classes[0].0 += l.weight_bytes + tokens * l.act_bytes_per_token();
            classes[0].1 += tokens * l.flops_per_token() / gpu.rate(l.rate);
        }
    }
    if load.seqs > 0 {
        let (h, seqs) = (&v.lm_head, load.seqs as f64);
        let bytes = h.weight_bytes + seqs * h.act_bytes_per_token();
        classes[1] = (bytes, seqs * h.flops_per_token() / bf16);
    }
    let kv = (load.kv_tokens_read as f64 + tokens) * v.kv_bytes_per_token;
    classes[2] = (kv, load.attn_pairs as f64 * v.attn_flops_per_pair / bf16);
    let bytes: f64 = classes.iter().map(|c| c.0).sum();
    let (secs, memory_bound_secs) = match roofline {
        Roofline::WholeStep => {
            let (m, c) = (bytes / bw, classes.iter().map(|c| c.1).sum::<f64>());
            (m.max(c), if m >= c { m } else { 0.0 })
        }
        Roofline::PerKernel => classes.iter().fold((0.0, 0.0), |(s, mb), c| {
            let m = c.0 / bw;
            (s + m.max(c.1), mb + if m >= c.1 { m } else { 0.0 })
        }),
    };
    StepTime {
        secs: secs + gpu.step_overhead_s,
        memory_bound_secs,
        bytes,
    }
}

/// One variant's projected speed on a workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Projection {
    pub name: String,
    /// `bf16|w4a16|w8a8|fp8|other`
    pub kind: String,
    pub weight_bytes: f64,
    /// Σ step time
    pub secs: f64,
    /// T: `secs ÷ generated tokens`
    pub secs_per_token: f64,
    pub tokens_per_sec: f64,
    /// `(T_base − T) ÷ T_base`; 0 for the base
    pub speed_norm: f64,
    /// share of `secs` in which memory traffic, not arithmetic, set the time
    pub memory_bound_share: f64,
}

fn project_one(gpu: &GpuSpec, v: &VariantCost, t: &StepTrace, r: Roofline) -> Projection {
    let (gpu, trace, roofline) = (gpu, t, r);
    let times = trace.steps.iter().map(|s| step_time(gpu, v, s, roofline));
    let (secs, mb) = times.fold((0.0, 0.0), |a, t| (a.0 + t.secs, a.1 + t.memory_bound_secs));
    let t = secs / trace.generated_tokens as f64;
    Projection {
        name: v.name.clone(),
        kind: v.kind().to_string(),
        weight_bytes: v.weight_bytes(),
        secs,
        secs_per_token: t,
        tokens_per_sec: 1.0 / t,
        speed_norm: 0.0,
        memory_bound_share: if secs > 0.0 { mb / secs } else { 0.0 },
    }
}

/// Projects `base` and each of `variants` on one workload; the base comes first (SpeedNorm 0),
/// every other SpeedNorm relative to it. Errors: an invalid GPU or an empty trace.
pub fn project(
    gpu: &GpuSpec,
    base: &VariantCost,
    variants: &[VariantCost],
    trace: &StepTrace,
    roofline: Roofline,
) -> Result<Vec<Projection>> {
    gpu.check()?;
    if trace.steps.is_empty() || trace.generated_tokens == 0 {
        return Err(invalid("projection: no steps or no generated token".into()));
    }
    let b = project_one(gpu, base, trace, roofline);
    let mut out = vec![b.clone()];
    for v in variants {
        let mut p = project_one(gpu, v, trace, roofline);
        p.speed_norm = (b.secs_per_token - p.secs_per_token) / b.secs_per_token;
        out.push(p);
    }
    Ok(out)
}

/// target.md's reported Scores as `(kind, method, lo, hi)`, for the four schemes modelled here.
pub const PUBLIC_RESULTS: [(&str, &str, f64, f64); 4] = [
    ("bf16", "unchanged base", 0.5, 0.5),
    ("w8a8", "W8A8 int8 per channel, dynamic", 0.62, 0.633),
    ("w4a16", "GPTQ W4A16 (organisers' sample)", 0.57, 0.57),
    ("fp8", "FP8 (no speed-up on L4)", 0.49, 0.49),
];

/// Two scores closer than this are "level" in either ranking (identical submissions scored up to
/// ±0.1 apart on the server, so finer public differences mean little).
pub const LEVEL: f64 = 0.02;

/// One variant beside its public result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComparedRow {
    pub name: String,
    pub speed_norm: f64,
    /// the PerfNorm assumed for the projected score (1 unless given)
    pub perf_norm: f64,
    /// `0.5·perf_norm + 0.5·speed_norm`
    pub score: f64,
    pub public_lo: f64,
    pub public_hi: f64,
}

/// The projection set beside target.md's public results, for a report to print.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PublicComparison {
    pub rows: Vec<ComparedRow>,
    /// e.g. "w4a16 (0.612) > w8a8 (0.598) ≈ fp8 (0.590) > bf16 (0.500)"; public alike
    pub projected_order: String,
    pub public_order: String,
    /// pairs ordered alike, e.g. "w8a8 > bf16"
    pub agree: Vec<String>,
    /// pairs ordered differently, e.g. "fp8 vs bf16: projected fp8 > bf16, public fp8 ≈ bf16"
    pub disagree: Vec<String>,
    pub text: String,
}

fn order(rows: &[ComparedRow], key: impl Fn(&ComparedRow) -> (f64, String)) -> String {
    let mut items: Vec<_> = rows.iter().map(|r| (&r.name, key(r))).collect();
    items.sort_by(|(a, x), (b, y)| y.0.total_cmp(&x.0).then_with(|| a.cmp(b)));
    let mut s = format!("{} ({})", items[0].0, items[0].1 .1);
    for w in items.windows(2) {
        let rel = ["≈", ">"][(w[0].1 .0 - w[1].1 .0 >= LEVEL) as usize];
        s += &format!(" {rel} {} ({})", w[1].0, w[1].1 .1);
    }
    s
}

fn relation(a: &str, b: &str, d: f64) -> String {
    match d {
        d if d.abs() < LEVEL => format!("{a} ≈ {b}"),
        d if d > 0.0 => format!("{a} > {b}"),
        _ => format!("{b} > {a}"),
    }
}

/// Compares the projected ranking with target.md's public results: each projected variant whose
/// kind has a public result gets a projected score `0.5·PerfNorm + 0.5·SpeedNorm`, PerfNorm
/// taken from `perf_norm` by variant name or kind (1.0, accuracy kept, when absent), and every
/// pair of such variants is checked for the same order (a difference under [`LEVEL`] is level).
/// Errors: fewer than two projected variants with a public result, or a non-finite PerfNorm.
pub fn compare_with_public(
    projections: &[Projection],
    perf_norm: &[(&str, f64)],
) -> Result<PublicComparison> {
    let mut rows = vec![];
    for p in projections {
        let Some(&(_, _, lo, hi)) = PUBLIC_RESULTS.iter().find(|r| r.0 == p.kind) else {
            continue;
        };
        let given = perf_norm.iter().find(|(k, _)| *k == p.name || *k == p.kind);
        let pn = given.map_or(1.0, |x| x.1);
        if !pn.is_finite() {
            return Err(invalid(format!(
                "PerfNorm {pn} of `{}`: not finite",
                p.name
            )));
        }
        rows.push(ComparedRow {
            name: p.name.clone(),
            speed_norm: p.speed_norm,
            perf_norm: pn,
            score: 0.5 * pn + 0.5 * p.speed_norm,
            public_lo: lo,
            public_hi: hi,
        });
    }
    if rows.len() < 2 {
        return Err(invalid(format!(
            "public comparison: {} projected variant(s) of a kind with a public result (bf16, w8a8, w4a16, fp8): at least 2 needed to rank",
            rows.len()
        )));
    }
    let mid = |r: &ComparedRow| 0.5 * (r.public_lo + r.public_hi);
    let (mut agree, mut disagree) = (vec![], vec![]);
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            let proj = relation(&a.name, &b.name, a.score - b.score);
            let publ = relation(&a.name, &b.name, mid(a) - mid(b));
            if proj == publ {
                agree.push(proj);
            } else {
                let (x, y) = (&a.name, &b.name);
                disagree.push(format!("{x} vs {y}: projected {proj}, public {publ}"));
            }
        }
    }
    let shown = |r: &ComparedRow| match r.public_lo == r.public_hi {
        true => format!("≈{:.2}", r.public_lo),
        false => format!("{}–{}", r.public_lo, r.public_hi),
    };
    let projected_order = order(&rows, |r| (r.score, format!("{:.3}", r.score)));
    let public_order = order(&rows, |r| (mid(r), shown(r)));
    let none = || "no pair".to_string();
    let mut text = format!(
        "The projection ranks them as {projected_order} (Score with PerfNorm {}); the public results rank them as {public_order}. It agrees on {}; disagrees on {}.",
        if perf_norm.is_empty() { "assumed 1" } else { "as given, else 1" },
        if agree.is_empty() { none() } else { agree.join("; ") },
        if disagree.is_empty() { none() } else { disagree.join("; ") },
    );
    // a public score s implies SpeedNorm >= 2s − 1 if PerfNorm <= 1 (accuracy at most kept)
    for r in &rows {
        let (n, s, min) = (&r.name, r.speed_norm, 2.0 * r.public_lo - 1.0);
        if s + 1e-9 < min {
            text += &format!(" Projected SpeedNorm of {n} ({s:.3}) is below the {min:.3} its public score implies if accuracy was at most kept.");
        }
    }
    Ok(PublicComparison {
        rows,
        projected_order,
        public_order,
        agree,
        disagree,
        text,
    })
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}
