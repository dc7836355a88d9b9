//! Serving a workload the way vLLM's engine does: requests, a scheduler with continuous
//! batching over a paged KV cache, and the runner that executes its steps.
//!
//! - `workload`: requests (JSONL) and seeded generators of the evaluation's shapes;
//! - `blocks`: the paged KV pool (sized from a memory budget) and per-sequence block tables;
//! - `scheduler`: vLLM v1's policy (token budget, chunked prefill, FCFS, preemption);
//! - `runner`: the loop, the `StepExecutor` hook and the CPU reference executor;
//! - `cuda` (CUDA builds): the executor on the runtime's serving engine (paged KV, packed steps);
//! - `metrics`: per-request, per-step and total figures, and their rows in `Results`;
//! - `roofline`: the least time a step could take on the device (bytes ÷ bandwidth, FLOPs ÷ rate).

pub mod blocks;
#[cfg(feature = "cuda")]
pub mod check;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod metrics;
pub mod roofline;
pub mod runner;
pub mod scheduler;
pub mod workload;

pub use blocks::{BlockPool, KvSpec, DEFAULT_BLOCK_SIZE};
pub use metrics::{RequestResult, RunReport, StepStats, Totals};
pub use roofline::Roofline;
pub use runner::{CpuExecutor, Runner, SeqInput, StepExecutor};
pub use scheduler::{Chunk, Finish, Scheduler, SchedulerConfig, Sequence, Step};
pub use workload::{GenOptions, Request, Sources, Turn, Workload};
