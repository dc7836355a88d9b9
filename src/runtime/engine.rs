//! A greedy decoder for EXAONE 4 on CUDA that runs each step from pre-allocated buffers:
//! embed → per layer [QKV GEMV, QK-norm + RoPE + cache write, attention, O GEMV + norm + residual,
//! gate/up GEMV, SiLU·mul, down GEMV + norm + residual] → final norm → lm_head → argmax.
//! Positions live on the device, so a step can be captured once as a CUDA graph and replayed
//! (launch overhead, not bandwidth, bounds a 1.2B model's batch-1 decode otherwise).
//! Weights come straight from the checkpoint: bf16, or W4A16 packed int4 read by the GEMV.

use std::sync::Arc;

use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::cudarc::driver::{sys, CudaEvent, CudaGraph, CudaSlice, CudaStream};
use candle_core::cuda::CudaDevice;
use candle_core::{DType, Device, Result};
use half::bf16;

use super::kernels::{addr, cuda_err, func, launch, Arg};
use super::quantized::{gemm_bf16, PackedInt4, GEMV_MAX_ROWS};
use crate::checkpoint::Checkpoint;
use crate::model::exaone4::LINEAR_NAMES;
use crate::model::layers::inv_freq;
use crate::model::Exaone4Config;

fn ck(e: crate::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// One (possibly stacked) Linear's weights.
enum Weights {
    Dense(CudaSlice<bf16>),
    Int4(PackedInt4),
}

struct Lin {
    w: Weights,
    n: usize,
    k: usize,
}

struct Layer {
    qkv: Lin,
    o: Lin,
    gate_up: Lin,
    down: Lin,
    q_norm: CudaSlice<bf16>,
    k_norm: CudaSlice<bf16>,
    post_attn: CudaSlice<bf16>,
    post_ff: CudaSlice<bf16>,
    use_rope: bool,
}

/// Device buffers for up to `rows` tokens at once.
struct Buffers {
    ids: CudaSlice<u32>,
    pos: CudaSlice<i32>,
    pad: CudaSlice<i32>,
    h: CudaSlice<bf16>,
    /// the second residual buffer of the single-row path (its GEMVs read one and write the other)
    h2: CudaSlice<bf16>,
    qkv: CudaSlice<bf16>,
    q: CudaSlice<bf16>,
    att: CudaSlice<bf16>,
    o: CudaSlice<bf16>,
    gu: CudaSlice<bf16>,
    act: CudaSlice<bf16>,
    last: CudaSlice<bf16>,
    logits: CudaSlice<bf16>,
    next: CudaSlice<u32>,
    /// a dequantized int4 weight, for many-row products
    wtmp: Option<CudaSlice<bf16>>,
}

/// What the engine computes with, for reports.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// `bf16` or `w4a16`
    pub weights: String,
    /// bytes of weights read per decoding step (all Linears and lm_head; one embedding row)
    pub weight_bytes_per_step: u64,
}

pub struct DecodeEngine {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    blas: Arc<CudaBlas>,
    cfg: Exaone4Config,
    embed: CudaSlice<bf16>,
    lm_head: Option<CudaSlice<bf16>>,
    norm: CudaSlice<bf16>,
    layers: Vec<Layer>,
    cos: CudaSlice<bf16>,
    sin: CudaSlice<bf16>,
    kc: Vec<CudaSlice<bf16>>,
    vc: Vec<CudaSlice<bf16>>,
    buf: Buffers,
    batch: usize,
    capacity: usize,
    max_rows: usize,
    /// tokens in the cache of every row
    pub len: usize,
    graph: Option<CudaGraph>,
    /// per-launch timing events while profiling a step
    prof: std::cell::RefCell<Option<Vec<(&'static str, CudaEvent)>>>,
    pub info: EngineInfo,
}

/// Shared memory of `attn_rows`: q, 8 warps' partial outputs, reduction scratch, the scores.
fn attn_smem(head_dim: usize, capacity: usize) -> usize {
    (head_dim + 8 * head_dim + 32 + capacity) * 4
}

fn upload<T: candle_core::cuda::cudarc::driver::DeviceRepr>(
    s: &Arc<CudaStream>,
    v: &[T],
) -> Result<CudaSlice<T>> {
    s.clone_htod(v).map_err(cuda_err)
}

fn zeros<
    T: candle_core::cuda::cudarc::driver::DeviceRepr
        + candle_core::cuda::cudarc::driver::ValidAsZeroBits,
>(
    s: &Arc<CudaStream>,
    n: usize,
) -> Result<CudaSlice<T>> {
    s.alloc_zeros::<T>(n.max(1)).map_err(cuda_err)
}

fn dense(ckpt: &Checkpoint, name: &str, shape: &[usize]) -> Result<Vec<bf16>> {
    ckpt.get(name, shape, DType::BF16, &Device::Cpu)
        .map_err(ck)?
        .flatten_all()?
        .to_vec1()
}

/// Loads Linears `names` of layer `i` stacked along their outputs.
fn linear(
    ckpt: &Checkpoint,
    s: &Arc<CudaStream>,
    i: usize,
    names: &[&str],
    outs: &[usize],
    k: usize,
) -> Result<Lin> {
    let prefixes: Vec<String> = names
        .iter()
        .map(|n| format!("model.layers.{i}.{n}"))
        .collect();
    if let Some(p) = PackedInt4::load(ckpt, &prefixes, s)? {
        return Ok(Lin {
            n: p.n,
            k: p.k,
            w: Weights::Int4(p),
        });
    }
    let mut w = vec![];
    for (p, &o) in prefixes.iter().zip(outs) {
        if ckpt.contains(&format!("{p}.weight_scale")) {
            candle_core::bail!(
                "{p}: the decode engine runs bf16 and W4A16 (pack-quantized) Linears; this one is stored in another compressed format"
            );
        }
        w.extend(dense(ckpt, &format!("{p}.weight"), &[o, k])?);
    }
    Ok(Lin {
        w: Weights::Dense(upload(s, &w)?),
        n: outs.iter().sum(),
        k,
    })
}

impl DecodeEngine {
    /// Loads `ckpt` for `batch` sequences of up to `capacity` tokens on CUDA device `ordinal`.
    pub fn load(ckpt: &Checkpoint, ordinal: usize, batch: usize, capacity: usize) -> Result<Self> {
        let cfg = ckpt.config.clone();
        if (0..cfg.num_hidden_layers).any(|i| cfg.layer_window(i).is_some()) {
            candle_core::bail!(
                "the decode engine runs full-attention models; this one has sliding-window layers"
            );
        }
        let (hd, h) = (cfg.head_dim, cfg.hidden_size);
        if !(hd == 64 || hd == 128)
            || h % 8 != 0
            || !cfg
                .num_attention_heads
                .is_multiple_of(cfg.num_key_value_heads)
        {
            candle_core::bail!("the decode engine needs head_dim 64 or 128 and hidden % 8 == 0");
        }
        let dev = CudaDevice::new_with_stream(ordinal)?;
        // one stream, raw addresses: no cross-stream event bookkeeping (it would also break capture)
        unsafe { dev.disable_event_tracking() };
        let s = dev.cuda_stream();
        let blas = Arc::new(CudaBlas::new(s.clone()).map_err(cuda_err)?);
        let (nq, nkv, inter) = (
            cfg.num_attention_heads * hd,
            cfg.num_key_value_heads * hd,
            cfg.intermediate_size,
        );
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let mut bytes: u64 = 0;
        let mut int4 = false;
        for i in 0..cfg.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{i}.{n}.weight");
            let l = Layer {
                qkv: linear(ckpt, &s, i, &LINEAR_NAMES[0..3], &[nq, nkv, nkv], h)?,
                o: linear(ckpt, &s, i, &LINEAR_NAMES[3..4], &[h], nq)?,
                gate_up: linear(ckpt, &s, i, &LINEAR_NAMES[4..6], &[inter, inter], h)?,
                down: linear(ckpt, &s, i, &LINEAR_NAMES[6..7], &[h], inter)?,
                q_norm: upload(&s, &dense(ckpt, &p("self_attn.q_norm"), &[hd])?)?,
                k_norm: upload(&s, &dense(ckpt, &p("self_attn.k_norm"), &[hd])?)?,
                post_attn: upload(&s, &dense(ckpt, &p("post_attention_layernorm"), &[h])?)?,
                post_ff: upload(&s, &dense(ckpt, &p("post_feedforward_layernorm"), &[h])?)?,
                use_rope: cfg.layer_uses_rope(i),
            };
            for lin in [&l.qkv, &l.o, &l.gate_up, &l.down] {
                bytes += match &lin.w {
                    Weights::Dense(_) => (lin.n * lin.k * 2) as u64,
                    Weights::Int4(p) => {
                        int4 = true;
                        let groups = (lin.n * lin.k / p.group) as u64;
                        (lin.n * lin.k / 2) as u64 + groups * 2 * (1 + p.zeros.is_some() as u64)
                    }
                };
            }
            layers.push(l);
        }
        let embed = upload(
            &s,
            &dense(ckpt, "model.embed_tokens.weight", &[cfg.vocab_size, h])?,
        )?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(upload(
                &s,
                &dense(ckpt, "lm_head.weight", &[cfg.vocab_size, h])?,
            )?)
        };
        bytes += (cfg.vocab_size * h * 2 + h * 2) as u64;
        let norm = upload(&s, &dense(ckpt, "model.norm.weight", &[h])?)?;
        let half = hd / 2;
        let freqs = inv_freq(&cfg);
        let (mut cos, mut sin) = (
            Vec::with_capacity(capacity * half),
            Vec::with_capacity(capacity * half),
        );
        for p in 0..capacity {
            for f in &freqs {
                // f32 product, as the candle path and transformers compute it
                let a = p as f32 * f;
                cos.push(bf16::from_f32(a.cos()));
                sin.push(bf16::from_f32(a.sin()));
            }
        }
        let cache = batch * cfg.num_key_value_heads * capacity * hd;
        let kc = (0..cfg.num_hidden_layers)
            .map(|_| zeros(&s, cache))
            .collect::<Result<Vec<_>>>()?;
        let vc = (0..cfg.num_hidden_layers)
            .map(|_| zeros(&s, cache))
            .collect::<Result<Vec<_>>>()?;
        let max_rows = batch.max(256);
        let widest = layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .filter(|l| matches!(l.w, Weights::Int4(_)))
            .map(|l| l.n * l.k)
            .max();
        let buf = Buffers {
            ids: zeros(&s, max_rows)?,
            pos: zeros(&s, max_rows)?,
            pad: zeros(&s, batch)?,
            h: zeros(&s, max_rows * h)?,
            h2: zeros(&s, h)?,
            qkv: zeros(&s, max_rows * (nq + 2 * nkv))?,
            q: zeros(&s, max_rows * nq)?,
            att: zeros(&s, max_rows * nq)?,
            o: zeros(&s, max_rows * h.max(inter))?,
            gu: zeros(&s, max_rows * 2 * inter)?,
            act: zeros(&s, max_rows * inter)?,
            last: zeros(&s, batch * h)?,
            logits: zeros(&s, batch * cfg.vocab_size)?,
            next: zeros(&s, batch)?,
            wtmp: widest.map(|n| zeros(&s, n)).transpose()?,
        };
        let (cos, sin) = (upload(&s, &cos)?, upload(&s, &sin)?);
        super::kernels::allow_smem(&func(&dev, "attn_rows")?, attn_smem(hd, capacity))?;
        let widest_in = (h.max(inter) + 32) * 4;
        super::kernels::allow_smem(&func(&dev, "gemv1x_bf16")?, widest_in)?;
        super::kernels::allow_smem(&func(&dev, "gemv1x_w4")?, widest_in)?;
        s.synchronize().map_err(cuda_err)?;
        Ok(Self {
            info: EngineInfo {
                weights: if int4 { "w4a16".into() } else { "bf16".into() },
                weight_bytes_per_step: bytes,
            },
            dev,
            stream: s,
            blas,
            cfg,
            embed,
            lm_head,
            norm,
            layers,
            cos,
            sin,
            kc,
            vc,
            buf,
            batch,
            capacity,
            max_rows,
            len: 0,
            graph: None,
            prof: std::cell::RefCell::new(None),
        })
    }

    fn a<T>(&self, b: &CudaSlice<T>) -> u64 {
        addr(b, &self.stream)
    }

    /// While profiling, marks the end of the work launched since the previous mark.
    fn mark(&self, label: &'static str) -> Result<()> {
        if let Some(p) = self.prof.borrow_mut().as_mut() {
            let e = self
                .stream
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(cuda_err)?;
            p.push((label, e));
        }
        Ok(())
    }

    fn run(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: usize,
        args: &[Arg],
    ) -> Result<()> {
        launch(
            &self.stream,
            &func(&self.dev, name)?,
            grid,
            block,
            smem,
            args,
        )
    }

    /// y [rows, n] = x [rows, k] · Wᵀ for a bf16 W [n, k], by address: a GEMV for a few rows,
    /// cuBLAS beyond.
    #[allow(clippy::too_many_arguments)]
    fn dense(&self, w: u64, n: usize, k: usize, x: u64, y: u64, rows: usize) -> Result<()> {
        use Arg::*;
        if rows > 4 {
            return gemm_bf16(&self.blas, x, w, y, rows, n, k);
        }
        let nb = if rows == 1 { 1 } else { 4 };
        self.run(
            if nb == 1 {
                "gemv_bf16_1"
            } else {
                "gemv_bf16_4"
            },
            (n.div_ceil(4) as u32, rows.div_ceil(nb) as u32, 1),
            128,
            0,
            &[P(w), P(x), P(y), I(n as i32), I(k as i32), I(rows as i32)],
        )
    }

    /// y [rows, n] = x [rows, k] · Wᵀ by address.
    fn linear(&self, lin: &Lin, x: u64, y: u64, rows: usize) -> Result<()> {
        match &lin.w {
            Weights::Dense(w) => self.dense(self.a(w), lin.n, lin.k, x, y, rows),
            Weights::Int4(p) if rows <= GEMV_MAX_ROWS => {
                p.gemv(&self.dev, &self.stream, x, y, rows)
            }
            Weights::Int4(p) => {
                let tmp = self.buf.wtmp.as_ref().expect("allocated for int4 models");
                p.dequantize_into(&self.dev, &self.stream, self.a(tmp))?;
                gemm_bf16(&self.blas, x, self.a(tmp), y, rows, lin.n, lin.k)
            }
        }
    }

    /// y = x · Wᵀ for one row, x built in shared memory by the GEMV's prologue (`mode`: 0 x = a;
    /// 1 x = c + rmsnorm(a)·b, also stored to d; 2 x = silu(a[..k])·a[k..]).
    #[allow(clippy::too_many_arguments)]
    fn linear1(&self, lin: &Lin, mode: i32, a: u64, b: u64, c: u64, d: u64, y: u64) -> Result<()> {
        use Arg::*;
        let eps = self.cfg.rms_norm_eps as f32;
        // 8 warps of two outputs each
        let grid = (lin.n.div_ceil(16) as u32, 1, 1);
        let smem = (lin.k + 32) * 4;
        match &lin.w {
            Weights::Dense(w) => self.run(
                "gemv1x_bf16",
                grid,
                256,
                smem,
                &[
                    P(self.a(w)),
                    I(mode),
                    P(a),
                    P(b),
                    P(c),
                    P(d),
                    F(eps),
                    P(y),
                    I(lin.n as i32),
                    I(lin.k as i32),
                ],
            ),
            Weights::Int4(p) => {
                let z = p.zeros.as_ref().map(|z| self.a(z)).unwrap_or(0);
                self.run(
                    "gemv1x_w4",
                    grid,
                    256,
                    smem,
                    &[
                        P(self.a(&p.packed)),
                        P(self.a(&p.scales)),
                        P(z),
                        I(mode),
                        P(a),
                        P(b),
                        P(c),
                        P(d),
                        F(eps),
                        P(y),
                        I(lin.n as i32),
                        I(lin.k as i32),
                        I((p.group / 8).trailing_zeros() as i32),
                    ],
                )
            }
        }
    }

    /// The forward of a single row (batch-1 decoding): six launches per layer, the norms and
    /// the SiLU gate folded into the GEMVs that consume them; the residual alternates between
    /// two buffers (h: after the attention block's residual, h2: after the MLP's).
    fn forward_one(&self) -> Result<()> {
        use Arg::*;
        let c = &self.cfg;
        let (h, hd, hq, hkv) = (
            c.hidden_size,
            c.head_dim,
            c.num_attention_heads,
            c.num_key_value_heads,
        );
        let eps = c.rms_norm_eps as f32;
        let b = &self.buf;
        let (ids, pos, pad, ha, hb) = (
            self.a(&b.ids),
            self.a(&b.pos),
            self.a(&b.pad),
            self.a(&b.h),
            self.a(&b.h2),
        );
        let (qkv, q, att, o, gu) = (
            self.a(&b.qkv),
            self.a(&b.q),
            self.a(&b.att),
            self.a(&b.o),
            self.a(&b.gu),
        );
        self.run(
            "embed_rows",
            (1, 1, 1),
            256,
            0,
            &[P(ids), P(self.a(&self.embed)), P(ha), I(h as i32)],
        )?;
        self.mark("embed")?;
        let heads = hq + 2 * hkv;
        let rope = format!("qk_norm_rope_store_{hd}");
        for (i, l) in self.layers.iter().enumerate() {
            match i {
                0 => self.linear1(&l.qkv, 0, ha, 0, 0, 0, qkv)?,
                _ => self.linear1(
                    &l.qkv,
                    1,
                    o,
                    self.a(&self.layers[i - 1].post_ff),
                    hb,
                    ha,
                    qkv,
                )?,
            }
            self.mark("qkv GEMV (+ norm + residual)")?;
            self.run(
                &rope,
                (1, heads.div_ceil(4) as u32, 1),
                128,
                0,
                &[
                    P(qkv),
                    P(self.a(&l.q_norm)),
                    P(self.a(&l.k_norm)),
                    P(self.a(&self.cos)),
                    P(self.a(&self.sin)),
                    P(pos),
                    P(pad),
                    P(q),
                    P(self.a(&self.kc[i])),
                    P(self.a(&self.vc[i])),
                    I(hq as i32),
                    I(hkv as i32),
                    I(1),
                    I(self.capacity as i32),
                    F(eps),
                    I(l.use_rope as i32),
                ],
            )?;
            self.mark("qk-norm + RoPE + cache write")?;
            self.run(
                "attn_rows",
                (1, hq as u32, 1),
                256,
                attn_smem(hd, self.capacity),
                &[
                    P(q),
                    P(self.a(&self.kc[i])),
                    P(self.a(&self.vc[i])),
                    P(pos),
                    P(pad),
                    P(att),
                    I(hq as i32),
                    I(hkv as i32),
                    I(hd as i32),
                    I(1),
                    I(self.capacity as i32),
                    F(1.0 / (hd as f32).sqrt()),
                ],
            )?;
            self.mark("attention")?;
            self.linear1(&l.o, 0, att, 0, 0, 0, o)?;
            self.mark("o GEMV")?;
            self.linear1(&l.gate_up, 1, o, self.a(&l.post_attn), ha, hb, gu)?;
            self.mark("gate/up GEMV (+ norm + residual)")?;
            self.linear1(&l.down, 2, gu, 0, 0, 0, o)?;
            self.mark("down GEMV (+ SiLU · up)")?;
        }
        let last_layer = self.layers.last().expect("at least one layer");
        self.run(
            "rmsnorm_rows",
            (1, 1, 1),
            256,
            0,
            &[
                P(o),
                P(self.a(&last_layer.post_ff)),
                P(hb),
                I(h as i32),
                F(eps),
                I(1),
                I(1),
                I(0),
            ],
        )?;
        let last = self.a(&b.last);
        self.run(
            "rmsnorm_rows",
            (1, 1, 1),
            256,
            0,
            &[
                P(hb),
                P(self.a(&self.norm)),
                P(last),
                I(h as i32),
                F(eps),
                I(0),
                I(1),
                I(0),
            ],
        )?;
        self.mark("last norm + residual, final norm")?;
        let head = self.a(self.lm_head.as_ref().unwrap_or(&self.embed));
        self.dense(head, c.vocab_size, h, last, self.a(&b.logits), 1)?;
        self.mark("lm_head GEMV")?;
        self.run(
            "argmax_rows",
            (1, 1, 1),
            1024,
            0,
            &[
                P(self.a(&b.logits)),
                P(self.a(&b.next)),
                I(c.vocab_size as i32),
            ],
        )?;
        self.mark("argmax")
    }

    /// One forward of `rows` = batch × `t` tokens whose ids and cache slots are already in
    /// `buf.ids` / `buf.pos` (row r = b·t + i); leaves the greedy pick of each sequence's last
    /// token in `buf.next`. Launches only: nothing here waits for the device.
    fn forward_rows(&self, rows: usize, t: usize) -> Result<()> {
        use Arg::*;
        if rows == 1 {
            return self.forward_one();
        }
        let c = &self.cfg;
        let (h, hd, hq, hkv, inter) = (
            c.hidden_size,
            c.head_dim,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.intermediate_size,
        );
        let eps = c.rms_norm_eps as f32;
        let b = &self.buf;
        let (ids, pos, pad, hb) = (self.a(&b.ids), self.a(&b.pos), self.a(&b.pad), self.a(&b.h));
        let (qkv, q, att, o, gu, act) = (
            self.a(&b.qkv),
            self.a(&b.q),
            self.a(&b.att),
            self.a(&b.o),
            self.a(&b.gu),
            self.a(&b.act),
        );
        let r = rows as u32;
        self.run(
            "embed_rows",
            (r, 1, 1),
            256,
            0,
            &[P(ids), P(self.a(&self.embed)), P(hb), I(h as i32)],
        )?;
        self.mark("embed")?;
        let heads = hq + 2 * hkv;
        let attn_smem = attn_smem(hd, self.capacity);
        let rope = format!("qk_norm_rope_store_{hd}");
        for (i, l) in self.layers.iter().enumerate() {
            self.linear(&l.qkv, hb, qkv, rows)?;
            self.mark("qkv GEMV")?;
            self.run(
                &rope,
                (r, heads.div_ceil(4) as u32, 1),
                128,
                0,
                &[
                    P(qkv),
                    P(self.a(&l.q_norm)),
                    P(self.a(&l.k_norm)),
                    P(self.a(&self.cos)),
                    P(self.a(&self.sin)),
                    P(pos),
                    P(pad),
                    P(q),
                    P(self.a(&self.kc[i])),
                    P(self.a(&self.vc[i])),
                    I(hq as i32),
                    I(hkv as i32),
                    I(t as i32),
                    I(self.capacity as i32),
                    F(eps),
                    I(l.use_rope as i32),
                ],
            )?;
            self.mark("qk-norm + RoPE + cache write")?;
            self.run(
                "attn_rows",
                (r, hq as u32, 1),
                256,
                attn_smem,
                &[
                    P(q),
                    P(self.a(&self.kc[i])),
                    P(self.a(&self.vc[i])),
                    P(pos),
                    P(pad),
                    P(att),
                    I(hq as i32),
                    I(hkv as i32),
                    I(hd as i32),
                    I(t as i32),
                    I(self.capacity as i32),
                    F(1.0 / (hd as f32).sqrt()),
                ],
            )?;
            self.mark("attention")?;
            self.linear(&l.o, att, o, rows)?;
            self.mark("o GEMV")?;
            self.run(
                "rmsnorm_rows",
                (r, 1, 1),
                256,
                0,
                &[
                    P(o),
                    P(self.a(&l.post_attn)),
                    P(hb),
                    I(h as i32),
                    F(eps),
                    I(1),
                    I(1),
                    I(0),
                ],
            )?;
            self.mark("norm + residual")?;
            self.linear(&l.gate_up, hb, gu, rows)?;
            self.mark("gate/up GEMV")?;
            self.run(
                "silu_mul_rows",
                (inter.div_ceil(256) as u32, r, 1),
                256,
                0,
                &[P(gu), P(act), I(inter as i32)],
            )?;
            self.mark("SiLU · up")?;
            self.linear(&l.down, act, o, rows)?;
            self.mark("down GEMV")?;
            self.run(
                "rmsnorm_rows",
                (r, 1, 1),
                256,
                0,
                &[
                    P(o),
                    P(self.a(&l.post_ff)),
                    P(hb),
                    I(h as i32),
                    F(eps),
                    I(1),
                    I(1),
                    I(0),
                ],
            )?;
            self.mark("norm + residual")?;
        }
        let last = self.a(&b.last);
        self.run(
            "rmsnorm_rows",
            (self.batch as u32, 1, 1),
            256,
            0,
            &[
                P(hb),
                P(self.a(&self.norm)),
                P(last),
                I(h as i32),
                F(eps),
                I(0),
                I(t as i32),
                I(t as i32 - 1),
            ],
        )?;
        self.mark("final norm")?;
        let head = self.a(self.lm_head.as_ref().unwrap_or(&self.embed));
        self.dense(head, c.vocab_size, h, last, self.a(&b.logits), self.batch)?;
        self.mark("lm_head GEMV")?;
        self.run(
            "argmax_rows",
            (self.batch as u32, 1, 1),
            1024,
            0,
            &[
                P(self.a(&b.logits)),
                P(self.a(&b.next)),
                I(c.vocab_size as i32),
            ],
        )?;
        self.mark("argmax")
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    fn check_room(&self, more: usize) -> Result<()> {
        if self.len + more > self.capacity {
            candle_core::bail!(
                "decode engine: {} + {more} tokens exceed the cache capacity {}",
                self.len,
                self.capacity
            );
        }
        Ok(())
    }

    fn read_next(&self) -> Result<Vec<u32>> {
        let mut v = vec![0u32; self.batch];
        self.stream
            .memcpy_dtoh(&self.buf.next, &mut v)
            .map_err(cuda_err)?;
        Ok(v)
    }

    /// Starts new sequences (one prompt per batch row, equal lengths) and returns each one's
    /// greedy next token. Long prompts go through in chunks of the engine's row budget.
    pub fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<u32>> {
        let p = prompts.first().map(|x| x.len()).unwrap_or(0);
        if prompts.len() != self.batch || p == 0 || prompts.iter().any(|x| x.len() != p) {
            candle_core::bail!(
                "decode engine: needs {} prompts of one non-zero length",
                self.batch
            );
        }
        // a captured step stays valid: it reads tokens and positions from device buffers
        self.len = 0;
        self.check_room(p)?;
        let chunk = (self.max_rows / self.batch).max(1);
        let mut done = 0;
        while done < p {
            let t = chunk.min(p - done);
            let ids: Vec<u32> = prompts
                .iter()
                .flat_map(|x| x[done..done + t].iter().copied())
                .collect();
            let pos: Vec<i32> = (0..self.batch)
                .flat_map(|_| (done..done + t).map(|i| i as i32))
                .collect();
            self.stream
                .memcpy_htod(&ids, &mut self.buf.ids)
                .map_err(cuda_err)?;
            self.stream
                .memcpy_htod(&pos, &mut self.buf.pos)
                .map_err(cuda_err)?;
            self.forward_rows(self.batch * t, t)?;
            done += t;
        }
        // decoding steps advance from the last slot written, one row per sequence
        let last = vec![(p - 1) as i32; self.batch];
        self.stream
            .memcpy_htod(&last, &mut self.buf.pos)
            .map_err(cuda_err)?;
        self.len = p;
        self.read_next()
    }

    /// The work of one greedy step: the last picks become the inputs, one slot on, forward.
    fn step_launches(&self) -> Result<()> {
        use Arg::*;
        let b = &self.buf;
        self.run(
            "advance",
            (1, 1, 1),
            self.batch.next_multiple_of(32) as u32,
            0,
            &[
                P(self.a(&b.next)),
                P(self.a(&b.ids)),
                P(self.a(&b.pos)),
                I(self.batch as i32),
            ],
        )?;
        self.mark("advance")?;
        self.forward_rows(self.batch, 1)
    }

    /// Runs one eager greedy step with a timing event after every piece of work and returns
    /// the device time per piece, summed over layers: (what, ms, launches), in step order.
    pub fn profile_step(&mut self) -> Result<Vec<(String, f64, usize)>> {
        if self.len == 0 {
            candle_core::bail!("decode engine: profile before prefill");
        }
        self.check_room(1)?;
        let start = self
            .stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda_err)?;
        *self.prof.borrow_mut() = Some(vec![("start", start)]);
        let launched = self.step_launches();
        let marks = self.prof.borrow_mut().take().unwrap_or_default();
        launched?;
        self.len += 1;
        self.synchronize()?;
        let mut out: Vec<(String, f64, usize)> = vec![];
        for w in marks.windows(2) {
            let ms = w[0].1.elapsed_ms(&w[1].1).map_err(cuda_err)? as f64;
            match out.iter_mut().find(|x| x.0 == w[1].0) {
                Some(x) => {
                    x.1 += ms;
                    x.2 += 1;
                }
                None => out.push((w[1].0.to_string(), ms, 1)),
            }
        }
        Ok(out)
    }

    /// One greedy step after [`prefill`](Self::prefill): feeds each sequence its last pick and
    /// returns the next. With `graph`, the step is captured as a CUDA graph the first time and
    /// replayed after.
    pub fn step(&mut self, graph: bool) -> Result<Vec<u32>> {
        if self.len == 0 {
            candle_core::bail!("decode engine: step before prefill");
        }
        self.check_room(1)?;
        if !graph {
            self.step_launches()?;
        } else {
            if self.graph.is_none() {
                self.stream
                    .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                    .map_err(cuda_err)?;
                let launched = self.step_launches();
                let g = self
                    .stream
                    .end_capture(sys::CUgraphInstantiate_flags(0))
                    .map_err(cuda_err);
                launched?;
                self.graph = Some(g?.ok_or_else(|| {
                    candle_core::Error::Msg("CUDA graph capture produced no graph".into())
                })?);
            }
            self.graph
                .as_ref()
                .expect("captured")
                .launch()
                .map_err(cuda_err)?;
        }
        self.len += 1;
        self.read_next()
    }

    /// Greedy continuation of `prompts` by `new_tokens` tokens (the picks, per sequence).
    pub fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        new_tokens: usize,
        graph: bool,
    ) -> Result<Vec<Vec<u32>>> {
        let mut out: Vec<Vec<u32>> = vec![vec![]; self.batch];
        if new_tokens == 0 {
            return Ok(out);
        }
        let mut next = self.prefill(prompts)?;
        for _ in 0..new_tokens {
            for (o, t) in out.iter_mut().zip(&next) {
                o.push(*t);
            }
            if out[0].len() == new_tokens {
                break;
            }
            next = self.step(graph)?;
        }
        Ok(out)
    }

    /// The logits behind the last picks, f32 [batch, vocab].
    pub fn last_logits(&self) -> Result<Vec<f32>> {
        let mut v = vec![bf16::ZERO; self.batch * self.cfg.vocab_size];
        self.stream
            .memcpy_dtoh(&self.buf.logits, &mut v)
            .map_err(cuda_err)?;
        Ok(v.into_iter().map(f32::from).collect())
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_err)
    }
}
