//! Loading the decode engine: weights straight from the checkpoint (bf16, or W4A16 packed int4
//! read by the GEMVs), RoPE tables, KV caches and the step buffers, all allocated once.

use std::sync::Arc;

use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda::CudaDevice;
use candle_core::{DType, Device, Result};
use half::bf16;

use super::{ck, DecodeEngine, EngineInfo};
use crate::checkpoint::Checkpoint;
use crate::model::exaone4::LINEAR_NAMES;
use crate::model::layers::inv_freq;
use crate::runtime::launch::attention::allow_attn_rows;
use crate::runtime::launch::cuda_err;
use crate::runtime::launch::gemv::allow_single_row;
use crate::runtime::quantized::PackedInt4;

/// One (possibly stacked) Linear's weights.
pub(super) enum Weights {
    Dense(CudaSlice<bf16>),
    Int4(PackedInt4),
}

pub(super) struct Lin {
    pub(super) w: Weights,
    pub(super) n: usize,
    pub(super) k: usize,
}

pub(super) struct Layer {
    pub(super) qkv: Lin,
    pub(super) o: Lin,
    pub(super) gate_up: Lin,
    pub(super) down: Lin,
    pub(super) q_norm: CudaSlice<bf16>,
    pub(super) k_norm: CudaSlice<bf16>,
    pub(super) post_attn: CudaSlice<bf16>,
    pub(super) post_ff: CudaSlice<bf16>,
    pub(super) use_rope: bool,
}

/// Device buffers for up to `rows` tokens at once.
pub(super) struct Buffers {
    pub(super) ids: CudaSlice<u32>,
    pub(super) pos: CudaSlice<i32>,
    pub(super) pad: CudaSlice<i32>,
    pub(super) h: CudaSlice<bf16>,
    /// the second residual buffer of the single-row path (its GEMVs read one and write the other)
    pub(super) h2: CudaSlice<bf16>,
    pub(super) qkv: CudaSlice<bf16>,
    pub(super) q: CudaSlice<bf16>,
    pub(super) att: CudaSlice<bf16>,
    pub(super) o: CudaSlice<bf16>,
    pub(super) gu: CudaSlice<bf16>,
    pub(super) act: CudaSlice<bf16>,
    pub(super) last: CudaSlice<bf16>,
    pub(super) logits: CudaSlice<bf16>,
    pub(super) next: CudaSlice<u32>,
    /// a dequantized int4 weight, for many-row products
    pub(super) wtmp: Option<CudaSlice<bf16>>,
}

fn upload<T: DeviceRepr>(s: &Arc<CudaStream>, v: &[T]) -> Result<CudaSlice<T>> {
    s.clone_htod(v).map_err(cuda_err)
}

fn zeros<T: DeviceRepr + ValidAsZeroBits>(s: &Arc<CudaStream>, n: usize) -> Result<CudaSlice<T>> {
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
        // SAFETY: every buffer of the engine is created after this call, on this device's one
        // stream, and used only on it (launches, copies, cuBLAS bound to it), so no use needs
        // ordering against another stream.
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
        allow_attn_rows(&dev, hd, capacity)?;
        // the single-row GEMVs' widest input: hidden (qkv, gate/up) or intermediate (down)
        allow_single_row(&dev, h.max(inter))?;
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
}
