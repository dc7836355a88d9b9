//! What a workload asks of the GPU step by step: planned by the crate's scheduler, or read from
//! a serving run's measured steps.

use serde::Serialize;

use super::invalid;
use crate::error::Result;
use crate::serve::{
    Chunk, Request, RunReport, Scheduler, SchedulerConfig, Step, StepStats, Workload,
};

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

    /// A measured step of a serving run, as its [`StepStats`] recorded it. Exact for decode
    /// rows (each reads its whole context) and attention pairs; for prompt chunks the KV read is
    /// the run's tile count (each 64-query tile of a chunk reads the context up to the chunk's
    /// end, as a FlashAttention-style kernel does) where [`from_step`](Self::from_step) counts
    /// one read per chunk. `seqs` counts every chunk (vLLM computes a logits row for each).
    pub fn from_stats(s: &StepStats) -> Self {
        Self {
            decode_rows: s.decode_tokens,
            prefill_tokens: s.prefill_tokens,
            seqs: s.seqs,
            kv_tokens_read: s.kv_tokens_read as u64,
            attn_pairs: s.attn_pairs as u64,
        }
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

    /// The steps a serving run measured ([`StepLoad::from_stats`]) and the tokens it
    /// generated: one step per recorded step, in order. Errors: a run that generated nothing.
    pub fn from_run(run: &RunReport) -> Result<Self> {
        let steps = run.steps.iter().map(StepLoad::from_stats).collect();
        Self::new(steps, run.totals.generated_tokens)
    }

    /// Steps computing prefill tokens (prompt chunks or recomputation), and pure-decode steps.
    pub fn split(&self) -> (usize, usize) {
        let prefill = self.steps.iter().filter(|s| s.prefill_tokens > 0).count();
        (prefill, self.steps.len() - prefill)
    }

    /// The steps the crate's vLLM scheduler ([`Scheduler`]: continuous batching, chunked prefill
    /// under the token budget, paged KV with preemption) plans for `workload` under `config`,
    /// exactly, with every request generating its `max_new_tokens` (capped by the context): no
    /// model runs, each sampled token is one outside the request's stop ids. Refused requests
    /// generate nothing. A serving run's own steps: [`from_run`](Self::from_run).
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
