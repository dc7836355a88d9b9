//! The serving engine: runs the steps of a continuous-batching scheduler (the `serve` layer's)
//! on CUDA the way vLLM's engine does. Every step is one packed forward over all its tokens —
//! prompt chunks and single decoding tokens of many sequences, each at its own position, with
//! no padding compute — over a paged KV pool of fixed-size blocks (`[blocks, kv_heads,
//! block_size, head_dim]` per layer) addressed through each sequence's block table. Attention
//! runs as a flash tile over the pool for prompt chunks and as a split over keys for single
//! tokens; Linears as their storage wants (bf16, W4A16, W8A8: `engine::weights`); only the
//! sampled rows reach the final norm, lm_head and the on-device argmax. A step of decoding
//! tokens only is padded to a bucket of rows and replayed as a CUDA graph.
//!
//! `mod.rs` loads (weights, the pool sized from a memory fraction, buffers); `step` builds a
//! step's metadata, runs the forward and keeps the graphs.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::cudarc::driver::{result as cu, CudaGraph, CudaSlice, CudaStream};
use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::engine::marks::Marks;
use super::engine::weights::{zeros, ModelWeights, Scratch};
use super::engine::EngineInfo;
use super::launch::attention::paged_decode_part_len;
use super::launch::{cuda_err, Dev};
use crate::checkpoint::Checkpoint;
use crate::model::Exaone4Config;

mod step;

/// How much memory the KV pool takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KvBudget {
    /// this many blocks
    Blocks(usize),
    /// as vLLM's `gpu_memory_utilization`: the pool takes what is left of this fraction of the
    /// device's memory once the weights and the step buffers are allocated
    Fraction(f64),
}

/// The engine's limits, named as vLLM's engine arguments.
#[derive(Clone, Copy, Debug)]
pub struct ServingLimits {
    /// tokens computed in one step at most (`max_num_batched_tokens`)
    pub max_rows: usize,
    /// sequences in one step at most (`max_num_seqs`)
    pub max_seqs: usize,
    /// prompt plus output of one sequence at most
    pub max_model_len: usize,
    pub block_size: usize,
    pub kv: KvBudget,
}

/// One sequence's part of a step: compute `tokens` at positions `start..start + tokens.len()`
/// after the `start` tokens already in its KV blocks (`block_table`, in token order), and pick
/// a next token from the last one's logits where `sample` is set.
#[derive(Clone, Copy, Debug)]
pub struct StepSeq<'a> {
    pub tokens: &'a [u32],
    pub start: usize,
    pub sample: bool,
    pub block_table: &'a [u32],
}

/// Step buffers for up to `max_rows` tokens and `max_seqs` sequences.
struct Buffers {
    ids: CudaSlice<u32>,
    /// the step's integer metadata, one section each (see `step::Meta`)
    meta: CudaSlice<i32>,
    h: CudaSlice<bf16>,
    qkv: CudaSlice<bf16>,
    q: CudaSlice<bf16>,
    att: CudaSlice<bf16>,
    o: CudaSlice<bf16>,
    gu: CudaSlice<bf16>,
    act: CudaSlice<bf16>,
    last: CudaSlice<bf16>,
    logits: CudaSlice<bf16>,
    next: CudaSlice<u32>,
    /// the split decode attention's partial results
    part: CudaSlice<f32>,
    scratch: Scratch,
}

pub struct ServingEngine {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    blas: Arc<CudaBlas>,
    cfg: Exaone4Config,
    w: ModelWeights,
    k_pool: Vec<CudaSlice<bf16>>,
    v_pool: Vec<CudaSlice<bf16>>,
    num_blocks: usize,
    limits: ServingLimits,
    buf: Buffers,
    layout: step::Layout,
    /// decode-only steps by (rows bucket, table stride): seen once (eager), then captured
    graphs: HashMap<(usize, usize), Option<CudaGraph>>,
    /// replay decode-only steps as CUDA graphs (on by default)
    pub use_graphs: bool,
    /// timing events of a profiled step
    prof: Marks,
    /// steps replayed from a graph, steps run eagerly
    pub graph_steps: usize,
    pub eager_steps: usize,
    pub info: EngineInfo,
}

impl ServingEngine {
    /// Loads `ckpt` on CUDA device `ordinal` (bf16, W4A16 and W8A8 Linears natively; FP8 and other
    /// compressed formats dequantized to bf16) and sizes its KV
    /// pool; [`num_blocks`](Self::num_blocks) says how many blocks the scheduler may hand out.
    pub fn load(ckpt: &Checkpoint, ordinal: usize, limits: ServingLimits) -> Result<Self> {
        let cfg = ckpt.config.clone();
        let l = limits;
        if l.max_rows == 0 || l.max_seqs == 0 || l.max_model_len == 0 || l.block_size == 0 {
            candle_core::bail!("serving engine: every limit must be positive, got {l:?}");
        }
        if cfg.num_attention_heads / cfg.num_key_value_heads > 8 {
            candle_core::bail!("serving engine: at most 8 query heads per kv head");
        }
        let dev = CudaDevice::new_with_stream(ordinal)?;
        // SAFETY: as the decode engine's: every buffer is created after this call, on this
        // device's one stream, and used only on it, so no use needs cross-stream ordering.
        unsafe { dev.disable_event_tracking() };
        let s = dev.cuda_stream();
        let blas = Arc::new(CudaBlas::new(s.clone()).map_err(cuda_err)?);
        let w = ModelWeights::load(ckpt, &s, l.max_model_len, true)?;
        let layout = step::Layout::new(&l);
        let (hd, h, inter) = (cfg.head_dim, cfg.hidden_size, cfg.intermediate_size);
        let (nq, nkv, r) = (
            cfg.num_attention_heads * hd,
            cfg.num_key_value_heads * hd,
            l.max_rows,
        );
        let buf = Buffers {
            ids: zeros(&s, r)?,
            meta: zeros(&s, layout.len)?,
            h: zeros(&s, r * h)?,
            qkv: zeros(&s, r * (nq + 2 * nkv))?,
            q: zeros(&s, r * nq)?,
            att: zeros(&s, r * nq)?,
            o: zeros(&s, r * h)?,
            gu: zeros(&s, r * 2 * inter)?,
            act: zeros(&s, r * inter)?,
            last: zeros(&s, l.max_seqs * h)?,
            logits: zeros(&s, l.max_seqs * cfg.vocab_size)?,
            next: zeros(&s, l.max_seqs)?,
            part: zeros(
                &s,
                paged_decode_part_len(cfg.num_attention_heads, cfg.num_key_value_heads, hd),
            )?,
            scratch: w.scratch(&s, r)?,
        };
        s.synchronize().map_err(cuda_err)?;
        let block_elems = cfg.num_key_value_heads * l.block_size * hd;
        let block_bytes = 2 * cfg.num_hidden_layers * block_elems * 2;
        let num_blocks = match l.kv {
            KvBudget::Blocks(n) => n,
            KvBudget::Fraction(f) => {
                if !(f > 0.0 && f <= 1.0) {
                    candle_core::bail!("serving engine: memory fraction {f} (0 < f ≤ 1)");
                }
                let (free, total) = cu::mem_get_info().map_err(cuda_err)?;
                let keep = ((1.0 - f) * total as f64) as usize;
                free.saturating_sub(keep) / block_bytes
            }
        };
        let need = l.max_model_len.div_ceil(l.block_size);
        if num_blocks < need {
            candle_core::bail!(
                "serving engine: a KV pool of {num_blocks} blocks cannot hold one sequence of max_model_len {} ({need} blocks of {} tokens)",
                l.max_model_len,
                l.block_size
            );
        }
        let pool = |_| zeros::<bf16>(&s, num_blocks * block_elems);
        let k_pool = (0..cfg.num_hidden_layers)
            .map(pool)
            .collect::<Result<Vec<_>>>()?;
        let v_pool = (0..cfg.num_hidden_layers)
            .map(pool)
            .collect::<Result<Vec<_>>>()?;
        s.synchronize().map_err(cuda_err)?;
        Ok(Self {
            info: w.info.clone(),
            dev,
            stream: s,
            blas,
            cfg,
            w,
            k_pool,
            v_pool,
            num_blocks,
            limits: l,
            buf,
            layout,
            graphs: HashMap::new(),
            use_graphs: true,
            prof: Marks::default(),
            graph_steps: 0,
            eager_steps: 0,
        })
    }

    /// Blocks in the KV pool (the scheduler's `num_blocks`).
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn limits(&self) -> ServingLimits {
        self.limits
    }

    /// Bytes of KV one token takes over all layers.
    pub fn kv_bytes_per_token(&self) -> usize {
        let c = &self.cfg;
        2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2
    }

    /// `buf` as the kernels take it.
    fn d<'a, T>(&'a self, buf: &'a CudaSlice<T>) -> Dev<'a, T> {
        Dev::new(buf, &self.stream)
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_err)
    }
}
