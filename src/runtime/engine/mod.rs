//! A greedy decoder for EXAONE 4 on CUDA that runs each step from pre-allocated buffers:
//! embed → per layer [QKV GEMV, QK-norm + RoPE + cache write, attention, O GEMV + norm + residual,
//! gate/up GEMV, SiLU·mul, down GEMV + norm + residual] → final norm → lm_head → argmax (on
//! W4A16 weights the gate/up product may be gated in the tensor-core GEMM's epilogue:
//! `int4::PackedInt4::forward_gated`).
//! Positions live on the device, so a step can be captured once as a CUDA graph and replayed
//! (launch overhead, not bandwidth, bounds a 1.2B model's batch-1 decode otherwise).
//! Weights come straight from the checkpoint: bf16, or W4A16 packed int4 read by the GEMV.
//!
//! The pieces: `load` (weights, tables, caches, buffers), `single` (the batch-1 step: six
//! launches per layer, norms and the SiLU gate folded into the GEMVs), `batched` (any number of
//! rows: prefill chunks and batched decoding), `graph` (a greedy step, eager, profiled or
//! captured and replayed as a CUDA graph).

use std::sync::Arc;

use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::cudarc::driver::{CudaGraph, CudaSlice, CudaStream};
use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::launch::{cuda_err, Dev};
use crate::model::Exaone4Config;

mod batched;
mod graph;
mod load;
pub(crate) mod marks;
mod single;
pub(crate) mod weights;

use load::Buffers;
use marks::Marks;
use weights::ModelWeights;

fn ck(e: crate::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// What an engine computes with, for reports.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// `bf16`, `w4a16` or `w8a8` (quantized kinds joined by `+` where a checkpoint mixes them)
    pub weights: String,
    /// bytes of weights read per decoding step (all Linears and lm_head; one embedding row)
    pub weight_bytes_per_step: u64,
}

pub struct DecodeEngine {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    blas: Arc<CudaBlas>,
    cfg: Exaone4Config,
    w: ModelWeights,
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
    prof: Marks,
    pub info: EngineInfo,
}

impl DecodeEngine {
    /// `buf` as the kernels take it (the engine's buffers live as long as it does).
    fn d<'a, T>(&'a self, buf: &'a CudaSlice<T>) -> Dev<'a, T> {
        Dev::new(buf, &self.stream)
    }

    /// While profiling, marks the end of the work launched since the previous mark.
    fn mark(&self, label: &'static str) -> Result<()> {
        self.prof.mark(&self.stream, label)
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
