//! The runner: drives a workload through the scheduler, one step at a time, on a
//! [`StepExecutor`]. The executor owns the numerics (and where KV bytes live); the runner owns
//! the policy and the clock, so a CUDA executor plugs in without touching either.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Tensor, D};

use super::metrics::{RequestResult, RunReport, StepStats};
use super::scheduler::{Scheduler, SchedulerConfig, Step};
use super::workload::Workload;
use crate::error::{Error, Result};
use crate::model::{Exaone4, KvCache};

/// One sequence's part of a step, as an executor sees it: compute `tokens` at positions
/// `start..start + tokens.len()` after the `start` tokens already in its KV.
#[derive(Clone, Copy, Debug)]
pub struct SeqInput<'a> {
    /// the scheduler's index of the sequence: stable for its life, reused by `release`
    pub seq: usize,
    pub tokens: &'a [u32],
    pub start: usize,
    /// choose a next token from the last position's logits
    pub sample: bool,
    /// its KV blocks in token order (block size from the scheduler's config); a paged executor
    /// writes token `p` to block `block_table[p / block_size]`, slot `p % block_size`
    pub block_table: &'a [u32],
    /// the most tokens it will ever hold, for executors that size a contiguous cache
    pub max_kv_tokens: usize,
}

/// Executes scheduled steps. Implementations: [`CpuExecutor`] (the f32 reference on the candle
/// model); a CUDA executor with paged attention later.
pub trait StepExecutor {
    /// Computes one step and returns, per input in order, the greedy next id where `sample`
    /// is set (`None` elsewhere). Must return only when the step's work is done (the runner's
    /// clock relies on it): read the ids back, or synchronise.
    fn execute(&mut self, inputs: &[SeqInput]) -> Result<Vec<Option<u32>>>;
    /// Forgets a sequence's KV: it finished, or was preempted and will be recomputed from 0.
    fn release(&mut self, seq: usize);
}

/// The reference executor: each sequence keeps its own contiguous [`KvCache`] sized to its
/// needs and runs the model's own forward (so sliding-window layers, RoPE and masks are exactly
/// the plain path's), one sequence after another. Correct, not fast: this is what a faster
/// executor is compared with.
pub struct CpuExecutor<'m> {
    model: &'m Exaone4,
    caches: HashMap<usize, KvCache>,
    /// keep the logits of every sampled position (for numerical comparisons)
    pub keep_logits: bool,
    /// `(seq, position, logits [vocab])` in the order computed, when `keep_logits`
    pub logits: Vec<(usize, usize, Tensor)>,
}

impl<'m> CpuExecutor<'m> {
    /// An executor borrowing `model` (its dtype and device are the executor's).
    pub fn new(model: &'m Exaone4) -> Self {
        Self {
            model,
            caches: HashMap::new(),
            keep_logits: false,
            logits: vec![],
        }
    }
    /// Sequences holding a cache now (finished and preempted ones must not).
    pub fn live(&self) -> usize {
        self.caches.len()
    }
}

impl StepExecutor for CpuExecutor<'_> {
    fn execute(&mut self, inputs: &[SeqInput]) -> Result<Vec<Option<u32>>> {
        let dev = self.model.device().clone();
        let mut out = Vec::with_capacity(inputs.len());
        for x in inputs {
            if x.tokens.is_empty() {
                return Err(Error::Invalid(format!(
                    "sequence {}: a step with no tokens",
                    x.seq
                )));
            }
            if x.start == 0 {
                let c = self.model.new_cache(1, x.max_kv_tokens, vec![0])?;
                self.caches.insert(x.seq, c);
            }
            let cache = self.caches.get_mut(&x.seq).ok_or_else(|| {
                Error::Invalid(format!(
                    "sequence {} continues at token {} but has no KV cache",
                    x.seq, x.start
                ))
            })?;
            if cache.len != x.start {
                return Err(Error::Invalid(format!(
                    "sequence {}: its KV holds {} tokens, the step starts at {}",
                    x.seq, cache.len, x.start
                )));
            }
            let t = x.tokens.len();
            let ids = Tensor::from_vec(x.tokens.to_vec(), (1, t), &dev)?;
            let h = self.model.forward_hidden(&ids, Some(cache))?;
            if !x.sample {
                out.push(None);
                continue;
            }
            let logits = self.model.logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?)?; // [1, vocab]
            let id = logits
                .argmax(D::Minus1)?
                .to_dtype(DType::U32)?
                .to_vec1::<u32>()?[0];
            if self.keep_logits {
                self.logits
                    .push((x.seq, x.start + t - 1, logits.squeeze(0)?));
            }
            out.push(Some(id));
        }
        Ok(out)
    }

    fn release(&mut self, seq: usize) {
        self.caches.remove(&seq);
    }
}

/// Runs workloads as vLLM's engine does (see `scheduler` for the policy) and measures them as
/// the competition does: generation time excludes loading, T = time ÷ generated tokens.
pub struct Runner<E> {
    pub executor: E,
    pub config: SchedulerConfig,
    /// the model's vocabulary, to refuse requests with ids outside it
    pub vocab_size: usize,
    /// prove the scheduler's invariants after every step (cheap; on in tests)
    pub check_invariants: bool,
}

impl<E: StepExecutor> Runner<E> {
    /// A runner with invariant checks off (they cost a pass over the pool each step).
    pub fn new(executor: E, config: SchedulerConfig, vocab_size: usize) -> Self {
        Self {
            executor,
            config,
            vocab_size,
            check_invariants: false,
        }
    }

    /// Runs every request to completion. Requests that cannot be served get an error result;
    /// an executor failure or a broken invariant stops the run with that error.
    pub fn run(&mut self, workload: &Workload) -> Result<RunReport> {
        let mut sched = Scheduler::new(self.config.clone())?;
        for r in &workload.requests {
            sched.add(r, self.vocab_size);
        }
        let mut steps = vec![];
        let t0 = Instant::now();
        while sched.has_unfinished() {
            let ts = Instant::now();
            let step = sched.schedule();
            if step.chunks.is_empty() {
                return Err(Error::Invalid(format!(
                    "step {}: the scheduler found nothing to run with {} waiting and {} running (a bug)",
                    step.index,
                    sched.num_waiting(),
                    sched.running().len()
                )));
            }
            for &p in &step.preempted {
                self.executor.release(p);
            }
            let blocks_used = sched.pool().num_used();
            let running = sched.running().len();
            let sampled = {
                let inputs = inputs(&sched, &step);
                self.executor.execute(&inputs)?
            };
            for f in sched.update(&step, &sampled)? {
                self.executor.release(f);
            }
            if self.check_invariants {
                check_step(&sched, &step)?;
            }
            steps.push(StepStats::of(
                &step,
                running,
                sched.num_waiting(),
                blocks_used,
                ts.elapsed().as_secs_f64(),
            ));
        }
        let generation_secs = t0.elapsed().as_secs_f64();
        let requests = workload
            .requests
            .iter()
            .zip(sched.seqs())
            .map(|(r, s)| RequestResult::of(r, s))
            .collect();
        Ok(RunReport::new(
            requests,
            steps,
            generation_secs,
            sched.preemptions(),
            sched.pool().num_blocks(),
            sched.pool().peak_used(),
        ))
    }
}

/// What an executor needs for each chunk of a scheduled `step`: its tokens, positions, block
/// table and KV bound (for executors driven step by step outside [`Runner`], too).
pub fn inputs<'a>(sched: &'a Scheduler, step: &Step) -> Vec<SeqInput<'a>> {
    step.chunks
        .iter()
        .map(|c| SeqInput {
            seq: c.seq,
            tokens: sched.chunk_tokens(c),
            start: c.start,
            sample: c.sample,
            block_table: sched.block_table(c.seq),
            max_kv_tokens: sched.seq(c.seq).max_kv_tokens(),
        })
        .collect()
}

/// The invariants a step must keep: the token budget, the running limit, one chunk per
/// sequence, and the scheduler's own bookkeeping (blocks free xor owned once).
fn check_step(sched: &Scheduler, step: &Step) -> Result<()> {
    let cfg = &sched.config;
    if step.tokens() > cfg.max_num_batched_tokens {
        return Err(Error::Invalid(format!(
            "step {}: {} tokens over the budget of {}",
            step.index,
            step.tokens(),
            cfg.max_num_batched_tokens
        )));
    }
    if step.chunks.len() > cfg.max_num_seqs {
        return Err(Error::Invalid(format!(
            "step {}: {} sequences over max_num_seqs {}",
            step.index,
            step.chunks.len(),
            cfg.max_num_seqs
        )));
    }
    let mut seen: Vec<usize> = step.chunks.iter().map(|c| c.seq).collect();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != step.chunks.len() {
        return Err(Error::Invalid(format!(
            "step {}: a sequence was scheduled twice",
            step.index
        )));
    }
    sched.check()
}
