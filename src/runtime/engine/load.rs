//! Loading the decode engine: the model's weights (`weights`: bf16, or W4A16 packed int4 read
//! by the GEMVs), KV caches and the step buffers, all allocated once.

use std::sync::Arc;

use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::cudarc::driver::CudaSlice;
use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::weights::{zeros, ModelWeights, Scratch};
use super::DecodeEngine;
use crate::checkpoint::Checkpoint;
use crate::runtime::launch::attention::allow_attn_rows;
use crate::runtime::launch::cuda_err;
use crate::runtime::launch::gemv::allow_single_row;

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
    /// what the Linears need beyond their inputs and outputs
    pub(super) scratch: Scratch,
}

impl DecodeEngine {
    /// Loads `ckpt` for `batch` sequences of up to `capacity` tokens on CUDA device `ordinal`.
    pub fn load(ckpt: &Checkpoint, ordinal: usize, batch: usize, capacity: usize) -> Result<Self> {
        let cfg = ckpt.config.clone();
        if (0..cfg.num_hidden_layers).any(|i| cfg.layer_window(i).is_some()) {
            candle_core::bail!(
                "the decode engine runs full-attention models; this one has sliding-window layers (the serving engine runs them)"
            );
        }
        let dev = CudaDevice::new_with_stream(ordinal)?;
        // one stream, raw addresses: no cross-stream event bookkeeping (it would also break capture)
        // SAFETY: every buffer of the engine is created after this call, on this device's one
        // stream, and used only on it (launches, copies, cuBLAS bound to it), so no use needs
        // ordering against another stream.
        unsafe { dev.disable_event_tracking() };
        let s = dev.cuda_stream();
        let blas = Arc::new(CudaBlas::new(s.clone()).map_err(cuda_err)?);
        let w = ModelWeights::load(ckpt, &s, capacity, false)?;
        let (hd, h, inter) = (cfg.head_dim, cfg.hidden_size, cfg.intermediate_size);
        let (nq, nkv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let cache = batch * cfg.num_key_value_heads * capacity * hd;
        let kc = (0..cfg.num_hidden_layers)
            .map(|_| zeros(&s, cache))
            .collect::<Result<Vec<_>>>()?;
        let vc = (0..cfg.num_hidden_layers)
            .map(|_| zeros(&s, cache))
            .collect::<Result<Vec<_>>>()?;
        let max_rows = batch.max(256);
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
            scratch: w.scratch(&s, max_rows)?,
        };
        allow_attn_rows(&dev, hd, capacity)?;
        // the single-row GEMVs' widest input: hidden (qkv, gate/up) or intermediate (down)
        allow_single_row(&dev, h.max(inter))?;
        s.synchronize().map_err(cuda_err)?;
        Ok(Self {
            info: w.info.clone(),
            dev,
            stream: s,
            blas,
            cfg,
            w,
            kc,
            vc,
            buf,
            batch,
            capacity,
            max_rows,
            len: 0,
            graph: None,
            prof: Default::default(),
        })
    }
}
