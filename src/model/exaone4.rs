//! EXAONE 4 for causal LM: embeddings → post-norm decoder layers → final norm → lm_head.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Result, Tensor};

use super::config::Exaone4Config;
use super::kernels::{Kernels, LinearKernel, QkvShape, QuantizedRows};
use super::kv_cache::{CacheShape, KvCache};
use super::layers::{
    apply_rope, attend, ActQuant, Attention, Linear, Mlp, Mode, Positions, RmsNorm, Rope,
};

/// The seven Linears of a decoder layer, by their name inside the layer, in checkpoint order.
pub const LINEAR_NAMES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// One decoder layer: attention and MLP, each followed (not preceded) by its RMSNorm.
#[derive(Clone, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub post_attention_layernorm: RmsNorm,
    pub post_feedforward_layernorm: RmsNorm,
}

/// What every layer of one forward shares: RoPE tables, masks, the cache.
pub struct Context<'a> {
    pub cos: Tensor,
    pub sin: Tensor,
    /// additive f32 masks [b, 1, t, keys] for full and sliding layers (None: nothing masked)
    pub mask_full: Option<Tensor>,
    pub mask_sliding: Option<Tensor>,
    /// first key position attended by sliding layers (keys before it are outside every window)
    pub sliding_from: usize,
    pub cache: Option<&'a KvCache>,
    pub mode: Mode,
    /// full-attention layers use `attention`'s causal attention (no mask is built)
    pub fused: bool,
    /// the model's installed kernels (inference mode only)
    pub kernels: Option<Arc<dyn Kernels>>,
    /// the kernels whose causal attention runs where `fused`: in training, its differentiable
    /// form (`Kernels::causal_attention_grad`)
    pub attention: Option<Arc<dyn Kernels>>,
}

/// Sees the input of each Linear during a forward: `(name inside the layer, input)`. q/k/v
/// share one input (reported as `self_attn.q_proj`), as do gate/up (`mlp.gate_proj`).
pub type LinearHook<'a> = &'a mut dyn FnMut(&str, &Tensor) -> Result<()>;

impl DecoderLayer {
    pub fn forward(&self, i: usize, h: &Tensor, ctx: &Context) -> Result<Tensor> {
        self.forward_hooked(i, h, ctx, None)
    }

    /// q/k/v products → attention's inputs ([`Kernels::qkv_heads`]) where the installed kernels
    /// do it: at inference, with every sequence at the same positions (RoPE tables [t, d/2]).
    fn qkv_heads(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        ctx: &Context,
        (b, t): (usize, usize),
    ) -> Result<Option<[Tensor; 3]>> {
        let kern = match (ctx.mode, ctx.kernels.as_deref()) {
            (Mode::Inference, Some(kern)) if ctx.cos.rank() == 2 => kern,
            _ => return Ok(None),
        };
        let a = &self.self_attn;
        // [b·t, n] as it is (a reshape would copy a column range of the stacked product)
        let rows = |x: &Tensor| match x.rank() {
            2 => Ok(x.clone()),
            _ => x.reshape((b * t, ())),
        };
        let shape = QkvShape {
            batch: b,
            t,
            heads_q: a.num_heads,
            heads_kv: a.num_kv_heads,
            head_dim: a.head_dim,
        };
        let norms = (&a.q_norm.weight, &a.k_norm.weight, a.q_norm.eps);
        let rope = a.use_rope.then_some((&ctx.cos, &ctx.sin));
        kern.qkv_heads([&rows(q)?, &rows(k)?, &rows(v)?], norms, rope, shape)
    }

    pub fn forward_hooked(
        &self,
        i: usize,
        h: &Tensor,
        ctx: &Context,
        hook: Option<LinearHook>,
    ) -> Result<Tensor> {
        Ok(self.forward_fused(i, h, None, None, ctx, hook)?.0)
    }

    /// The format in which this layer's q/k/v kernel would take its input quantized by the
    /// previous layer ([`LinearKernel::input_quant`]).
    pub fn input_quant(&self) -> Option<ActQuant> {
        self.self_attn
            .fused_qkv
            .as_ref()
            .and_then(|k| k.input_quant())
    }

    /// [`DecoderLayer::forward_hooked`] where the installed kernels may hand quantized rows
    /// from producer to consumer ([`QuantizedRows`]): `hq`, the input's rows as the previous
    /// layer quantized them; the output's rows quantized as `next` (the next layer's
    /// [`DecoderLayer::input_quant`]) where the residual's kernel can. The same values as
    /// without: the producers quantize exactly as the consumers would.
    pub fn forward_fused(
        &self,
        i: usize,
        h: &Tensor,
        hq: Option<&QuantizedRows>,
        next: Option<ActQuant>,
        ctx: &Context,
        mut hook: Option<LinearHook>,
    ) -> Result<(Tensor, Option<QuantizedRows>)> {
        let hooked = hook.is_some();
        let mut see = |n: &str, x: &Tensor| -> Result<()> {
            match hook.as_mut() {
                Some(f) => f(n, x),
                None => Ok(()),
            }
        };
        see("self_attn.q_proj", h)?;
        let a = &self.self_attn;
        let (b, t, _) = h.dims3()?;
        let (nq, nkv) = (a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim);
        let (q, k, v) = match &a.fused_qkv {
            Some(kern) => {
                let (y, _) = kern.forward_fused(&h.reshape((b * t, ()))?, hq, None)?;
                (
                    y.narrow(1, 0, nq)?,
                    y.narrow(1, nq, nkv)?,
                    y.narrow(1, nq + nkv, nkv)?,
                )
            }
            None => (
                a.q_proj.forward(h)?,
                a.k_proj.forward(h)?,
                a.v_proj.forward(h)?,
            ),
        };
        let [q, k, v] = match self.qkv_heads(&q, &k, &v, ctx, (b, t))? {
            Some(heads) => heads,
            None => {
                let q = q.reshape((b, t, a.num_heads, a.head_dim))?;
                let k = k.reshape((b, t, a.num_kv_heads, a.head_dim))?;
                let v = v.reshape((b, t, a.num_kv_heads, a.head_dim))?;
                let q = a.q_norm.forward(&q, ctx.mode)?.transpose(1, 2)?;
                let k = a.k_norm.forward(&k, ctx.mode)?.transpose(1, 2)?;
                let v = v.transpose(1, 2)?;
                if a.use_rope {
                    [
                        apply_rope(&q, &ctx.cos, &ctx.sin, ctx.mode)?,
                        apply_rope(&k, &ctx.cos, &ctx.sin, ctx.mode)?,
                        v,
                    ]
                } else {
                    [q, k, v]
                }
            }
        };
        let (from, mask) = match a.window {
            Some(_) => (ctx.sliding_from, ctx.mask_sliding.as_ref()),
            None => (0, ctx.mask_full.as_ref()),
        };
        let (k, v) = match ctx.cache {
            Some(c) => c.append(i, &k, &v, from)?,
            None => (
                k.narrow(2, from, t - from)?.contiguous()?,
                v.narrow(2, from, t - from)?.contiguous()?,
            ),
        };
        let o = if ctx.fused && a.window.is_none() {
            ctx.attention
                .as_ref()
                .map(|kern| match ctx.mode {
                    Mode::Inference => kern.causal_attention(&q, &k, &v),
                    Mode::Differentiable => kern.causal_attention_grad(&q, &k, &v),
                })
                .transpose()?
                .flatten()
                .ok_or_else(|| {
                    candle_core::Error::Msg("fused attention chosen but unavailable".into())
                })?
        } else {
            attend(&q, &k, &v, mask, ctx.mode)?
        };
        see("self_attn.o_proj", &o)?;
        let o = a.o_proj.forward(&o)?;
        let gate_up_quant = match &self.mlp.fused_gate_up {
            Some(k) => k.input_quant(),
            None => None,
        };
        let (h, hq) = add_norm(h, &o, &self.post_attention_layernorm, gate_up_quant, ctx)?;
        see("mlp.gate_proj", &h)?;
        let kernels = ctx.kernels.as_deref();
        let m = if hooked {
            let (act, aq) = self
                .mlp
                .activation_fused(&h, hq.as_ref(), ctx.mode, kernels)?;
            see("mlp.down_proj", &act)?;
            self.mlp.down_proj.forward_quantized(&act, aq.as_ref())?
        } else {
            self.mlp.forward_fused(&h, hq.as_ref(), ctx.mode, kernels)?
        };
        add_norm(&h, &m, &self.post_feedforward_layernorm, next, ctx)
    }
}

/// The post-norm residual h + norm(x), in one kernel where the installed kernels do it (with
/// its rows quantized as `quant` for the next Linear, where they can), else candle's ops.
fn add_norm(
    h: &Tensor,
    x: &Tensor,
    norm: &RmsNorm,
    quant: Option<ActQuant>,
    ctx: &Context,
) -> Result<(Tensor, Option<QuantizedRows>)> {
    if let (Mode::Inference, Some(k)) = (ctx.mode, ctx.kernels.as_deref()) {
        if let Some(r) = k.add_rms_norm(h, x, norm, quant)? {
            return Ok(r);
        }
    }
    Ok(((h + norm.forward(x, ctx.mode)?)?, None))
}

/// The whole model. Weights are plain tensors, so compression code can read and replace them
/// and training can swap in `Var`s.
pub struct Exaone4 {
    pub config: Exaone4Config,
    pub embed_tokens: Tensor,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when tied to the embedding
    pub lm_head: Option<Tensor>,
    pub mode: Mode,
    /// faster implementations of pieces of the forward, installed by a runtime
    pub kernels: Option<Arc<dyn Kernels>>,
    /// the lm_head product's kernel where one is installed (distillation's, for a head it does
    /// not train: no weight gradient), as a `Linear`'s `kernel`
    pub head_kernel: Option<Arc<dyn LinearKernel>>,
    rope: Mutex<Rope>,
    dtype: DType,
    device: Device,
}

/// The additive mask of a key a query does not see. Every row of a mask keeps at least one key
/// (a padding query sees itself), so a row's maximum is finite and exp(−∞ − max) is exactly the
/// 0 that −1e30 gave, without libm's slow underflow path (errno set per masked score: 3% of a
/// study's CPU time).
const MASKED: f32 = f32::NEG_INFINITY;

impl Exaone4 {
    /// Builds the model from a source of named tensors (HF names and shapes): a checkpoint, or
    /// fresh initial weights for training.
    pub fn build<E: From<candle_core::Error>>(
        cfg: Exaone4Config,
        get: impl Fn(&str, &[usize]) -> std::result::Result<Tensor, E>,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, E> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nq, nkv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let embed_tokens = get("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let lin = |n: &str, o: usize, inp: usize| -> std::result::Result<Linear, E> {
                Ok(Linear::new(get(&format!("{p}.{n}.weight"), &[o, inp])?))
            };
            let norm = |n: &str, d: usize| -> std::result::Result<RmsNorm, E> {
                Ok(RmsNorm {
                    weight: get(&format!("{p}.{n}.weight"), &[d])?,
                    eps: cfg.rms_norm_eps,
                })
            };
            layers.push(DecoderLayer {
                self_attn: Attention {
                    q_proj: lin("self_attn.q_proj", nq, h)?,
                    k_proj: lin("self_attn.k_proj", nkv, h)?,
                    v_proj: lin("self_attn.v_proj", nkv, h)?,
                    o_proj: lin("self_attn.o_proj", h, nq)?,
                    q_norm: norm("self_attn.q_norm", hd)?,
                    k_norm: norm("self_attn.k_norm", hd)?,
                    num_heads: cfg.num_attention_heads,
                    num_kv_heads: cfg.num_key_value_heads,
                    head_dim: hd,
                    use_rope: cfg.layer_uses_rope(i),
                    window: cfg.layer_window(i),
                    fused_qkv: None,
                },
                mlp: Mlp {
                    gate_proj: lin("mlp.gate_proj", cfg.intermediate_size, h)?,
                    up_proj: lin("mlp.up_proj", cfg.intermediate_size, h)?,
                    down_proj: lin("mlp.down_proj", h, cfg.intermediate_size)?,
                    fused_gate_up: None,
                },
                post_attention_layernorm: norm("post_attention_layernorm", h)?,
                post_feedforward_layernorm: norm("post_feedforward_layernorm", h)?,
            });
        }
        let norm = RmsNorm {
            weight: get("model.norm.weight", &[h])?,
            eps: cfg.rms_norm_eps,
        };
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(get("lm_head.weight", &[cfg.vocab_size, h])?)
        };
        let rope = Rope::new(&cfg, dtype, device)?;
        Ok(Self {
            config: cfg,
            embed_tokens,
            layers,
            norm,
            lm_head,
            mode: Mode::Inference,
            kernels: None,
            head_kernel: None,
            rope: Mutex::new(rope),
            dtype,
            device: device.clone(),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every weight under its Hugging Face name, in checkpoint order. The one place that knows
    /// the names: the writer, quantizers and trainers all go through it.
    pub fn named_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut out: Vec<(String, &Tensor)> =
            vec![("model.embed_tokens.weight".into(), &self.embed_tokens)];
        for (i, l) in self.layers.iter().enumerate() {
            for (n, t) in l.named_tensors() {
                out.push((format!("model.layers.{i}.{n}"), t));
            }
        }
        out.push(("model.norm.weight".into(), &self.norm.weight));
        if let Some(w) = &self.lm_head {
            out.push(("lm_head.weight".into(), w));
        }
        out
    }

    /// Mutable access to every weight by name (training swaps in `Var`s, quantizers write back).
    pub fn named_tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out: Vec<(String, &mut Tensor)> =
            vec![("model.embed_tokens.weight".into(), &mut self.embed_tokens)];
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (n, t) in l.named_tensors_mut() {
                out.push((format!("model.layers.{i}.{n}"), t));
            }
        }
        out.push(("model.norm.weight".into(), &mut self.norm.weight));
        if let Some(w) = &mut self.lm_head {
            out.push(("lm_head.weight".into(), w));
        }
        out
    }

    /// A fresh KV cache for `batch` rows of up to `capacity` tokens.
    pub fn new_cache(&self, batch: usize, capacity: usize, pad: Vec<usize>) -> Result<KvCache> {
        let c = &self.config;
        let shape = CacheShape {
            layers: c.num_hidden_layers,
            batch,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            capacity,
        };
        KvCache::new(shape, pad, self.dtype, &self.device)
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, ()))
    }

    /// RoPE tables and masks for a forward of `t` new tokens per row after `start` cached ones.
    pub fn context<'a>(
        &self,
        b: usize,
        t: usize,
        start: usize,
        pad: &[usize],
        cache: Option<&'a KvCache>,
    ) -> Result<Context<'a>> {
        let end = start + t;
        let padded = pad.iter().any(|&p| p > 0);
        let positions = if padded {
            let ids: Vec<u32> = (0..b)
                .flat_map(|r| (start..end).map(move |i| i.saturating_sub(pad[r]) as u32))
                .collect();
            Positions::PerRow {
                ids: Tensor::from_vec(ids, b * t, &self.device)?,
                b,
                t,
            }
        } else {
            Positions::Uniform { start, len: t }
        };
        let (cos, sin) = {
            let mut rope = self.rope.lock().expect("rope lock");
            rope.ensure(end)?;
            rope.tables(&positions)?
        };
        let window = self.config.sliding_window.unwrap_or(usize::MAX);
        let sliding_from = if cache.is_some() {
            (start + 1).saturating_sub(window)
        } else {
            0
        };
        // unpadded causal attention needs no mask where the fused kernel runs
        let kernels = match self.mode {
            Mode::Inference => self.kernels.clone(),
            Mode::Differentiable => None,
        };
        let fused = !padded
            && self.kernels.as_ref().is_some_and(|k| match self.mode {
                Mode::Inference => {
                    k.causal_attention_available(&self.device, self.dtype, self.config.head_dim)
                }
                Mode::Differentiable => k.causal_attention_grad_available(&self.device, self.dtype),
            });
        let mask_full = if fused {
            None
        } else {
            self.mask(b, t, start, 0, pad, None)?
        };
        let mask_sliding = match self.config.sliding_window {
            Some(w) if self.layers.iter().any(|l| l.self_attn.window.is_some()) => {
                self.mask(b, t, start, sliding_from, pad, Some(w))?
            }
            _ => None,
        };
        Ok(Context {
            cos,
            sin,
            mask_full,
            mask_sliding,
            sliding_from,
            cache,
            mode: self.mode,
            fused,
            kernels,
            attention: if fused { self.kernels.clone() } else { None },
        })
    }

    /// Additive mask [b, 1, t, keys] for queries `start..start+t` over keys `from..start+t`.
    /// Query i sees key j iff j ≤ i, j is not padding, and i − j < window. A padding query sees
    /// itself only (its output is never used; this keeps its softmax finite).
    fn mask(
        &self,
        b: usize,
        t: usize,
        start: usize,
        from: usize,
        pad: &[usize],
        window: Option<usize>,
    ) -> Result<Option<Tensor>> {
        let end = start + t;
        let keys = end - from;
        let w = window.unwrap_or(usize::MAX);
        let mut any = false;
        let mut m = vec![0f32; b * t * keys];
        for r in 0..b {
            for qi in 0..t {
                let i = start + qi;
                for kj in 0..keys {
                    let j = from + kj;
                    let ok = if i < pad[r] {
                        j == i
                    } else {
                        j <= i && j >= pad[r] && i - j < w
                    };
                    if !ok {
                        m[(r * t + qi) * keys + kj] = MASKED;
                        any = true;
                    }
                }
            }
        }
        if !any {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(m, (b, 1, t, keys), &self.device)?))
    }

    /// Hidden states after the final norm, [b, t, hidden]. With a cache, appends to it.
    pub fn forward_hidden(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let (start, pad) = match cache.as_deref() {
            Some(c) => (c.len, c.pad.clone()),
            None => (0, vec![0; b]),
        };
        let mut h = self.embed(ids)?;
        {
            let ctx = self.context(b, t, start, &pad, cache.as_deref())?;
            let mut hq = None;
            for (i, layer) in self.layers.iter().enumerate() {
                let next = self.layers.get(i + 1).and_then(|l| l.input_quant());
                (h, hq) = layer.forward_fused(i, &h, hq.as_ref(), next, &ctx, None)?;
            }
        }
        if let Some(c) = cache {
            c.len += t;
        }
        self.norm.forward(&h, self.mode)
    }

    /// The input of every layer and the last layer's output (before the final norm), for
    /// layer statistics: `layers + 1` tensors [b, t, hidden].
    pub fn layer_inputs(&self, ids: &Tensor) -> Result<Vec<Tensor>> {
        let (b, t) = ids.dims2()?;
        let mut h = self.embed(ids)?;
        let ctx = self.context(b, t, 0, &vec![0; b], None)?;
        let mut out = vec![h.clone()];
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(i, &h, &ctx)?;
            out.push(h.clone());
        }
        Ok(out)
    }

    /// A copy of the model keeping only layers `kept` (in that order), with `num_hidden_layers`
    /// and `layer_types` edited together. Weights are shared, not copied.
    pub fn with_layers(&self, kept: &[usize]) -> Result<Self> {
        if kept.is_empty() || kept.iter().any(|&i| i >= self.layers.len()) {
            candle_core::bail!(
                "with_layers: {kept:?} is not a non-empty subset of 0..{}",
                self.layers.len()
            );
        }
        let cfg = self.config.with_layers(kept);
        let rope = Rope::new(&cfg, self.dtype, &self.device)?;
        Ok(Self {
            config: cfg,
            embed_tokens: self.embed_tokens.clone(),
            layers: kept.iter().map(|&i| self.layers[i].clone()).collect(),
            norm: self.norm.clone(),
            lm_head: self.lm_head.clone(),
            mode: self.mode,
            kernels: self.kernels.clone(),
            head_kernel: self.head_kernel.clone(),
            rope: Mutex::new(rope),
            dtype: self.dtype,
            device: self.device.clone(),
        })
    }

    /// A copy sharing every weight (cheap: tensors are reference-counted).
    pub fn share(&self) -> Self {
        self.with_layers(&(0..self.layers.len()).collect::<Vec<_>>())
            .expect("all layers exist")
    }

    /// The lm_head as a Linear (the embedding while tied), with its kernel if one is installed.
    fn head(&self) -> Linear {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        let mut head = Linear::new(w.clone());
        head.kernel = self.head_kernel.clone();
        head
    }

    /// lm_head on hidden states: f32 logits [.., vocab].
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.head().forward(hidden)?.to_dtype(DType::F32)
    }

    /// Log-probabilities of the next token at every position, f32 [b, t, vocab]: lm_head in the
    /// model's dtype, then one fused log-softmax where the runtime has it.
    pub fn log_probs(&self, hidden: &Tensor) -> Result<Tensor> {
        let logits = self.head().forward(hidden)?;
        if let Some(k) = self.kernels.as_deref() {
            if let Some(lp) = k.log_softmax(&logits)? {
                return Ok(lp);
            }
        }
        candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, candle_core::D::Minus1)
    }

    /// Logits of every position, f32 [b, t, vocab].
    pub fn forward(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let h = self.forward_hidden(ids, cache)?;
        self.logits(&h)
    }
}

impl DecoderLayer {
    pub fn named_tensors(&self) -> Vec<(&'static str, &Tensor)> {
        let a = &self.self_attn;
        vec![
            ("self_attn.q_proj.weight", &a.q_proj.weight),
            ("self_attn.k_proj.weight", &a.k_proj.weight),
            ("self_attn.v_proj.weight", &a.v_proj.weight),
            ("self_attn.o_proj.weight", &a.o_proj.weight),
            ("self_attn.q_norm.weight", &a.q_norm.weight),
            ("self_attn.k_norm.weight", &a.k_norm.weight),
            ("mlp.gate_proj.weight", &self.mlp.gate_proj.weight),
            ("mlp.up_proj.weight", &self.mlp.up_proj.weight),
            ("mlp.down_proj.weight", &self.mlp.down_proj.weight),
            (
                "post_attention_layernorm.weight",
                &self.post_attention_layernorm.weight,
            ),
            (
                "post_feedforward_layernorm.weight",
                &self.post_feedforward_layernorm.weight,
            ),
        ]
    }

    pub fn named_tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        let a = &mut self.self_attn;
        vec![
            ("self_attn.q_proj.weight", &mut a.q_proj.weight),
            ("self_attn.k_proj.weight", &mut a.k_proj.weight),
            ("self_attn.v_proj.weight", &mut a.v_proj.weight),
            ("self_attn.o_proj.weight", &mut a.o_proj.weight),
            ("self_attn.q_norm.weight", &mut a.q_norm.weight),
            ("self_attn.k_norm.weight", &mut a.k_norm.weight),
            ("mlp.gate_proj.weight", &mut self.mlp.gate_proj.weight),
            ("mlp.up_proj.weight", &mut self.mlp.up_proj.weight),
            ("mlp.down_proj.weight", &mut self.mlp.down_proj.weight),
            (
                "post_attention_layernorm.weight",
                &mut self.post_attention_layernorm.weight,
            ),
            (
                "post_feedforward_layernorm.weight",
                &mut self.post_feedforward_layernorm.weight,
            ),
        ]
    }

    /// The seven Linears by their name inside the layer.
    pub fn linears(&self) -> Vec<(&'static str, &Linear)> {
        let a = &self.self_attn;
        vec![
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.o_proj", &a.o_proj),
            ("mlp.gate_proj", &self.mlp.gate_proj),
            ("mlp.up_proj", &self.mlp.up_proj),
            ("mlp.down_proj", &self.mlp.down_proj),
        ]
    }

    /// The seven Linears by their name inside the layer, mutable.
    pub fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        let a = &mut self.self_attn;
        vec![
            ("self_attn.q_proj", &mut a.q_proj),
            ("self_attn.k_proj", &mut a.k_proj),
            ("self_attn.v_proj", &mut a.v_proj),
            ("self_attn.o_proj", &mut a.o_proj),
            ("mlp.gate_proj", &mut self.mlp.gate_proj),
            ("mlp.up_proj", &mut self.mlp.up_proj),
            ("mlp.down_proj", &mut self.mlp.down_proj),
        ]
    }
}
