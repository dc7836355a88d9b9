//! The CUDA executor: the scheduler's steps on the runtime's serving engine (a packed forward
//! per step over a paged KV pool whose blocks are the scheduler's own block ids).

use super::runner::{SeqInput, StepExecutor};
use super::scheduler::SchedulerConfig;
use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::runtime::serving::{KvBudget, ServingEngine, ServingLimits, StepSeq};

pub struct CudaExecutor {
    pub engine: ServingEngine,
    /// keep the logits of every sampled position (for numerical comparisons)
    pub keep_logits: bool,
    /// `(seq, position, logits [vocab])` in the order computed, when `keep_logits`
    pub logits: Vec<(usize, usize, Vec<f32>)>,
}

impl CudaExecutor {
    /// Loads `ckpt` on CUDA device `ordinal` for a scheduler with `config`'s limits (its
    /// `num_blocks` is ignored: the pool is sized from `kv`) and returns the executor with the
    /// config the scheduler must use (its `num_blocks` set to the pool's).
    pub fn load(
        ckpt: &Checkpoint,
        ordinal: usize,
        config: &SchedulerConfig,
        kv: KvBudget,
    ) -> Result<(Self, SchedulerConfig)> {
        let limits = ServingLimits {
            max_rows: config.max_num_batched_tokens,
            max_seqs: config.max_num_seqs,
            max_model_len: config.max_model_len,
            block_size: config.block_size,
            kv,
        };
        let engine = ServingEngine::load(ckpt, ordinal, limits)?;
        let config = SchedulerConfig {
            num_blocks: engine.num_blocks(),
            ..config.clone()
        };
        Ok((
            Self {
                engine,
                keep_logits: false,
                logits: vec![],
            },
            config,
        ))
    }
}

impl StepExecutor for CudaExecutor {
    fn execute(&mut self, inputs: &[SeqInput]) -> Result<Vec<Option<u32>>> {
        let seqs: Vec<StepSeq> = inputs
            .iter()
            .map(|x| StepSeq {
                tokens: x.tokens,
                start: x.start,
                sample: x.sample,
                block_table: x.block_table,
            })
            .collect();
        let picks = self.engine.step(&seqs)?;
        if self.keep_logits {
            let sampled: Vec<&SeqInput> = inputs.iter().filter(|x| x.sample).collect();
            let all = self.engine.last_logits(sampled.len())?;
            let v = all.len() / sampled.len().max(1);
            for (x, row) in sampled.iter().zip(all.chunks(v.max(1))) {
                self.logits
                    .push((x.seq, x.start + x.tokens.len() - 1, row.to_vec()));
            }
        }
        Ok(picks)
    }

    /// Nothing to free: a sequence's KV lives in the scheduler's blocks, which the next owner
    /// overwrites before reading.
    fn release(&mut self, _seq: usize) {}
}
