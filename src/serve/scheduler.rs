//! The scheduler of vLLM's v1 engine, reduced to what sets its speed: which sequences run in a
//! step and how many of their tokens are computed.
//!
//! Policy (vLLM v1 `Scheduler.schedule`, chunked prefill always on):
//! - a sequence is `num_computed` tokens into its known tokens (prompt, then outputs); a step
//!   computes some of the rest: a whole or partial prompt (prefill chunk) or the one token last
//!   sampled (decode). When a chunk reaches the end of the known tokens, a new token is sampled.
//! - running sequences first, in admission order, each given all its remaining tokens up to
//!   the step's token budget (`max_num_batched_tokens`); a decoding sequence needs one token,
//!   and since at most the newest-admitted sequence is still mid-prefill, decodes come first;
//! - if the pool cannot hold a running sequence's new tokens, the newest running sequence is
//!   preempted by recompute (blocks freed, progress reset, put back at the head of the waiting
//!   queue; its outputs are kept and recomputed as prompt) until it fits or the sequence itself
//!   was the one preempted;
//! - then, only if nothing was preempted this step, waiting sequences in arrival order (FCFS:
//!   the head blocks the rest), while a slot (`max_num_seqs`), budget and blocks remain;
//! - a finished sequence frees its slot and blocks at once, so the next step refills them
//!   (continuous batching).
//!
//! Differences from vLLM: no prefix caching, no priorities, no speculative or structured
//! decoding, no `long_prefill_token_threshold`; a request whose prompt plus `max_new_tokens`
//! cannot fit the whole pool is refused up front (vLLM instead refuses at start-up a
//! `max_model_len` the pool cannot hold), so no request can preempt itself forever.

use std::collections::VecDeque;

use serde::Serialize;

use super::blocks::{BlockPool, DEFAULT_BLOCK_SIZE};
use super::workload::Request;
use crate::error::{Error, Result};

/// The engine's limits, named as vLLM's engine arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// most sequences running at once
    pub max_num_seqs: usize,
    /// most tokens computed in one step, prefill and decode together
    pub max_num_batched_tokens: usize,
    /// tokens per KV block
    pub block_size: usize,
    /// blocks in the KV pool
    pub num_blocks: usize,
    /// the context: prompt plus output never exceed it
    pub max_model_len: usize,
}

impl SchedulerConfig {
    /// vLLM 0.14's defaults for the offline `LLM` on a GPU under 70 GiB: 256 sequences, 8192
    /// batched tokens, 16-token blocks.
    pub fn vllm_defaults(num_blocks: usize, max_model_len: usize) -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            block_size: DEFAULT_BLOCK_SIZE,
            num_blocks,
            max_model_len,
        }
    }

    /// Every limit must be positive; the error names the field.
    pub fn check(&self) -> Result<()> {
        for (name, v) in [
            ("max_num_seqs", self.max_num_seqs),
            ("max_num_batched_tokens", self.max_num_batched_tokens),
            ("block_size", self.block_size),
            ("num_blocks", self.num_blocks),
            ("max_model_len", self.max_model_len),
        ] {
            if v == 0 {
                return Err(Error::Invalid(format!("scheduler: {name} 0: must be > 0")));
            }
        }
        Ok(())
    }
}

/// Why a sequence ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Finish {
    /// it emitted a stop id (the id is the last output token)
    Stop,
    /// it reached `max_new_tokens` (capped by the context)
    Length,
    /// refused before running: the reason, naming the request
    Error(String),
}

/// One request as the scheduler tracks it.
#[derive(Clone, Debug)]
pub struct Sequence {
    pub id: String,
    /// prompt, then the tokens generated so far
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// `max_new_tokens` capped so prompt + output stay within the context
    pub max_new_tokens: usize,
    pub stop_ids: Vec<u32>,
    /// tokens whose KV is in the cache
    pub num_computed: usize,
    pub finish: Option<Finish>,
    pub preemptions: usize,
    /// the step that admitted it first and the step that finished it
    pub first_step: Option<usize>,
    pub last_step: Option<usize>,
}

impl Sequence {
    /// The generated tokens (kept across preemption: they are recomputed, not regenerated).
    pub fn output(&self) -> &[u32] {
        &self.tokens[self.prompt_len.min(self.tokens.len())..]
    }
    /// The most tokens it will ever hold in the KV cache (the last sampled token is never fed).
    pub fn max_kv_tokens(&self) -> usize {
        (self.prompt_len + self.max_new_tokens)
            .saturating_sub(1)
            .max(1)
    }
}

/// One sequence's share of a step: compute tokens `start..end` (positions too); `sample` when
/// that reaches the end of its known tokens, so a next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Chunk {
    pub seq: usize,
    pub start: usize,
    pub end: usize,
    pub sample: bool,
    /// one token feeding the last sampled one (else: a prefill or recompute chunk)
    pub decode: bool,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// What one step computes, and who was preempted to make room for it (their KV is gone).
#[derive(Clone, Debug, Default)]
pub struct Step {
    pub index: usize,
    pub chunks: Vec<Chunk>,
    pub preempted: Vec<usize>,
}

impl Step {
    /// Tokens computed in the step: what the budget bounds.
    pub fn tokens(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }
    /// One per decoding sequence.
    pub fn decode_tokens(&self) -> usize {
        self.chunks
            .iter()
            .filter(|c| c.decode)
            .map(Chunk::len)
            .sum()
    }
    /// Prompt chunks and recomputation.
    pub fn prefill_tokens(&self) -> usize {
        self.tokens() - self.decode_tokens()
    }
}

/// The waiting queue, the running set and the block pool.
#[derive(Clone, Debug)]
pub struct Scheduler {
    pub config: SchedulerConfig,
    pool: BlockPool,
    seqs: Vec<Sequence>,
    waiting: VecDeque<usize>,
    running: Vec<usize>,
    steps: usize,
    preemptions: usize,
}

impl Scheduler {
    /// An empty scheduler with every block free; a zero limit is refused, naming it.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        config.check()?;
        let pool = BlockPool::new(config.num_blocks, config.block_size)?;
        Ok(Self {
            config,
            pool,
            seqs: vec![],
            waiting: VecDeque::new(),
            running: vec![],
            steps: 0,
            preemptions: 0,
        })
    }

    /// Queues a request; returns its sequence index. A request the model or the pool can never
    /// serve is finished at once with `Finish::Error` naming it — the others still run.
    pub fn add(&mut self, r: &Request, vocab_size: usize) -> usize {
        let idx = self.seqs.len();
        let ctx = self.config.max_model_len;
        let max_new = r.max_new_tokens.min(ctx.saturating_sub(r.prompt_ids.len()));
        let mut s = Sequence {
            id: r.id.clone(),
            tokens: r.prompt_ids.clone(),
            prompt_len: r.prompt_ids.len(),
            max_new_tokens: max_new,
            stop_ids: r.stop_ids.clone(),
            num_computed: 0,
            finish: None,
            preemptions: 0,
            first_step: None,
            last_step: None,
        };
        let blocks = self.pool.blocks_for(s.max_kv_tokens());
        let refusal = if let Err(e) = r.check(vocab_size) {
            Some(e.to_string())
        } else if r.prompt_ids.len() > ctx {
            Some(format!(
                "request `{}`: prompt of {} tokens exceeds the context (max_model_len {ctx})",
                r.id,
                r.prompt_ids.len()
            ))
        } else if blocks > self.pool.num_blocks() {
            Some(format!(
                "request `{}`: needs {blocks} KV blocks ({} prompt + up to {max_new} new tokens) but the whole pool has {} of {} tokens",
                r.id,
                s.prompt_len,
                self.pool.num_blocks(),
                self.pool.block_size()
            ))
        } else {
            None
        };
        if let Some(msg) = refusal {
            s.finish = Some(Finish::Error(msg));
        } else if max_new == 0 {
            s.finish = Some(Finish::Length);
        } else {
            self.waiting.push_back(idx);
        }
        self.seqs.push(s);
        idx
    }

    /// Whether the run must go on (refused requests are finished at once).
    pub fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }
    pub fn seq(&self, i: usize) -> &Sequence {
        &self.seqs[i]
    }
    /// Every sequence, in the workload's order (index = request index).
    pub fn seqs(&self) -> &[Sequence] {
        &self.seqs
    }
    /// Running sequences in admission order: the order they are scheduled and, reversed,
    /// preempted.
    pub fn running(&self) -> &[usize] {
        &self.running
    }
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }
    /// Preemptions so far: recomputed work a run must report.
    pub fn preemptions(&self) -> usize {
        self.preemptions
    }
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The token ids a chunk computes.
    pub fn chunk_tokens(&self, c: &Chunk) -> &[u32] {
        &self.seqs[c.seq].tokens[c.start..c.end]
    }
    /// The KV blocks of a sequence, in token order.
    pub fn block_table(&self, seq: usize) -> &[u32] {
        self.pool.table(seq)
    }

    fn chunk(&self, seq: usize, n: usize) -> Chunk {
        let s = &self.seqs[seq];
        let (start, end) = (s.num_computed, s.num_computed + n);
        Chunk {
            seq,
            start,
            end,
            sample: end == s.tokens.len(),
            decode: n == 1 && start + 1 == s.tokens.len() && s.tokens.len() > s.prompt_len,
        }
    }

    fn preempt(&mut self, victim: usize) {
        self.pool.free(victim);
        let s = &mut self.seqs[victim];
        s.num_computed = 0;
        s.preemptions += 1;
        self.preemptions += 1;
        self.waiting.push_front(victim);
    }

    /// Chooses the next step (see the module note for the policy).
    pub fn schedule(&mut self) -> Step {
        let mut step = Step {
            index: self.steps,
            ..Step::default()
        };
        self.steps += 1;
        let mut budget = self.config.max_num_batched_tokens;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let s = self.running[i];
            let remaining = self.seqs[s].tokens.len() - self.seqs[s].num_computed;
            let n = remaining.min(budget);
            let want = self.seqs[s].num_computed + n;
            let mut scheduled = false;
            loop {
                if self.pool.allocate(s, want).is_ok() {
                    scheduled = true;
                    break;
                }
                let victim = self.running.pop().expect("s itself is running");
                self.preempt(victim);
                step.preempted.push(victim);
                if victim == s {
                    break;
                }
            }
            if !scheduled {
                break;
            }
            step.chunks.push(self.chunk(s, n));
            budget -= n;
            i += 1;
        }
        if step.preempted.is_empty() {
            while let Some(&s) = self.waiting.front() {
                if self.running.len() >= self.config.max_num_seqs || budget == 0 {
                    break;
                }
                let n = (self.seqs[s].tokens.len() - self.seqs[s].num_computed).min(budget);
                if self.pool.allocate(s, n).is_err() {
                    break;
                }
                self.waiting.pop_front();
                self.running.push(s);
                self.seqs[s].first_step.get_or_insert(step.index);
                step.chunks.push(self.chunk(s, n));
                budget -= n;
            }
        }
        step
    }

    /// Applies a computed step: progress, the sampled tokens (one per chunk with `sample`, in
    /// chunk order), stop and length rules. Returns the sequences that finished (their blocks
    /// are already free; an executor drops their KV).
    pub fn update(&mut self, step: &Step, sampled: &[Option<u32>]) -> Result<Vec<usize>> {
        if sampled.len() != step.chunks.len() {
            return Err(Error::Invalid(format!(
                "step {}: {} results for {} scheduled sequences",
                step.index,
                sampled.len(),
                step.chunks.len()
            )));
        }
        let mut finished = vec![];
        for (c, tok) in step.chunks.iter().zip(sampled) {
            let s = &mut self.seqs[c.seq];
            if s.num_computed != c.start {
                return Err(Error::Invalid(format!(
                    "step {}: request `{}` was at token {} but the step computed from {}",
                    step.index, s.id, s.num_computed, c.start
                )));
            }
            s.num_computed = c.end;
            if !c.sample {
                continue;
            }
            let t = tok.ok_or_else(|| {
                Error::Invalid(format!(
                    "step {}: no token sampled for request `{}` whose prefill completed",
                    step.index, s.id
                ))
            })?;
            s.tokens.push(t);
            let out = s.tokens.len() - s.prompt_len;
            let finish = if s.stop_ids.contains(&t) {
                Some(Finish::Stop)
            } else if out >= s.max_new_tokens {
                Some(Finish::Length)
            } else {
                None
            };
            if let Some(f) = finish {
                s.finish = Some(f);
                s.last_step = Some(step.index);
                finished.push(c.seq);
            }
        }
        for &f in &finished {
            self.pool.free(f);
        }
        self.running.retain(|s| !finished.contains(s));
        Ok(finished)
    }

    /// Proves the state consistent: the pool's bookkeeping, no more than `max_num_seqs`
    /// running, exactly the running sequences hold blocks, each enough for its computed tokens.
    pub fn check(&self) -> Result<()> {
        self.pool.check()?;
        if self.running.len() > self.config.max_num_seqs {
            return Err(Error::Invalid(format!(
                "{} sequences running, max_num_seqs {}",
                self.running.len(),
                self.config.max_num_seqs
            )));
        }
        let mut running = self.running.clone();
        running.sort_unstable();
        let holders = self.pool.holders();
        if running != holders {
            return Err(Error::Invalid(format!(
                "running sequences {running:?} differ from block holders {holders:?}"
            )));
        }
        for &r in &self.running {
            let s = &self.seqs[r];
            if self.pool.table(r).len() * self.config.block_size < s.num_computed {
                return Err(Error::Invalid(format!(
                    "request `{}` has {} tokens computed but {} blocks",
                    s.id,
                    s.num_computed,
                    self.pool.table(r).len()
                )));
            }
        }
        Ok(())
    }
}
