//! The paged KV cache's bookkeeping, as vLLM keeps it: a pool of fixed-size blocks (16 tokens by
//! default) sized from a memory budget, and a block table per sequence. Only the accounting
//! lives here; where the blocks' bytes live is the executor's business, so the same manager
//! drives the CPU reference executor (which ignores block ids) and a paged CUDA executor (which
//! indexes its K/V arenas with them).
//!
//! Sliding-window layers are *not* exploited: every layer is charged for every token of a
//! sequence, as if all layers were full attention. vLLM's hybrid allocator gives sliding layers
//! their own block group capped at the window; EXAONE-4.0-1.2B has no sliding layer, so this
//! only over-reserves for hybrid checkpoints (conservative: never too few blocks).

use std::collections::HashMap;

use candle_core::DType;

use crate::error::{Error, Result};
use crate::model::Exaone4Config;

/// vLLM's default block size on CUDA, in tokens.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// What one token of KV costs, so a memory budget converts to a block count the same way vLLM
/// converts `gpu_memory_utilization` into `num_gpu_blocks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvSpec {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub dtype_bytes: usize,
    pub block_size: usize,
}

impl KvSpec {
    /// The KV shape of a model stored in `dtype`, every layer charged (see the module note).
    pub fn from_config(cfg: &Exaone4Config, dtype: DType, block_size: usize) -> Self {
        Self {
            layers: cfg.num_hidden_layers,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            dtype_bytes: dtype.size_in_bytes(),
            block_size,
        }
    }

    /// Bytes one token of context occupies over all layers (K and V).
    pub fn bytes_per_token(&self) -> usize {
        self.layers * 2 * self.kv_heads * self.head_dim * self.dtype_bytes
    }

    /// layers × 2 × kv_heads × head_dim × block_size × dtype bytes.
    pub fn bytes_per_block(&self) -> usize {
        self.bytes_per_token() * self.block_size
    }

    /// How many blocks fit in `fraction` of `available_bytes` (the memory left after weights
    /// and activations, as vLLM profiles it). Errors name the offending value.
    pub fn num_blocks(&self, available_bytes: u64, fraction: f64) -> Result<usize> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::Invalid(format!(
                "KV memory fraction {fraction}: must lie in (0, 1]"
            )));
        }
        if self.block_size == 0 || self.bytes_per_token() == 0 {
            return Err(Error::Invalid(format!(
                "KV spec {self:?}: block size and bytes per token must be > 0"
            )));
        }
        Ok(((available_bytes as f64 * fraction) / self.bytes_per_block() as f64).floor() as usize)
    }
}

/// The pool and the per-sequence block tables. A block is either free or owned by exactly one
/// sequence; `check` proves it.
#[derive(Clone, Debug)]
pub struct BlockPool {
    block_size: usize,
    /// free block ids; allocation pops from the end (most recently freed first)
    free: Vec<u32>,
    owner: Vec<Option<usize>>,
    tables: HashMap<usize, Vec<u32>>,
    peak_used: usize,
    allocations: usize,
}

impl BlockPool {
    /// A pool of `num_blocks` blocks of `block_size` tokens, all free.
    pub fn new(num_blocks: usize, block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(Error::Invalid("KV block size 0: must be > 0".into()));
        }
        if num_blocks > u32::MAX as usize {
            return Err(Error::Invalid(format!(
                "KV pool of {num_blocks} blocks: block ids must fit in u32"
            )));
        }
        Ok(Self {
            block_size,
            free: (0..num_blocks as u32).rev().collect(),
            owner: vec![None; num_blocks],
            tables: HashMap::new(),
            peak_used: 0,
            allocations: 0,
        })
    }

    /// Tokens per block: an executor maps a position to (block, slot) with it.
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn num_blocks(&self) -> usize {
        self.owner.len()
    }
    pub fn num_free(&self) -> usize {
        self.free.len()
    }
    /// Blocks held by sequences now: the KV-in-use series of a run.
    pub fn num_used(&self) -> usize {
        self.num_blocks() - self.num_free()
    }
    /// The most blocks ever in use at once: what the run actually needed of the pool.
    pub fn peak_used(&self) -> usize {
        self.peak_used
    }
    /// Blocks handed out over the pool's life (recomputed blocks counted again).
    pub fn allocations(&self) -> usize {
        self.allocations
    }
    /// Tokens the whole pool holds.
    pub fn capacity_tokens(&self) -> usize {
        self.num_blocks() * self.block_size
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// The blocks of `seq`, in token order (empty when it holds none).
    pub fn table(&self, seq: usize) -> &[u32] {
        self.tables.get(&seq).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Extra blocks `seq` needs to hold `tokens` tokens in total.
    pub fn extra_for(&self, seq: usize, tokens: usize) -> usize {
        self.blocks_for(tokens)
            .saturating_sub(self.table(seq).len())
    }

    /// Whether `seq` can grow to hold `tokens` tokens in total from the free blocks.
    pub fn can_allocate(&self, seq: usize, tokens: usize) -> bool {
        self.extra_for(seq, tokens) <= self.free.len()
    }

    /// Grows `seq`'s table to hold `tokens` tokens in total (a new sequence starts a table;
    /// appending to a decoding one adds a block only at a block boundary). All or nothing:
    /// on error no block moved.
    pub fn allocate(&mut self, seq: usize, tokens: usize) -> Result<()> {
        let extra = self.extra_for(seq, tokens);
        if extra > self.free.len() {
            return Err(Error::Invalid(format!(
                "sequence {seq}: {extra} more KV blocks needed for {tokens} tokens, {} free",
                self.free.len()
            )));
        }
        let table = self.tables.entry(seq).or_default();
        for _ in 0..extra {
            let b = self.free.pop().expect("counted above");
            if let Some(o) = self.owner[b as usize] {
                return Err(Error::Invalid(format!(
                    "KV block {b} handed to sequence {seq} is still owned by sequence {o}"
                )));
            }
            self.owner[b as usize] = Some(seq);
            table.push(b);
        }
        self.allocations += extra;
        self.peak_used = self.peak_used.max(self.owner.len() - self.free.len());
        Ok(())
    }

    /// Returns every block of `seq` to the pool (finished or preempted); returns how many.
    pub fn free(&mut self, seq: usize) -> usize {
        let Some(table) = self.tables.remove(&seq) else {
            return 0;
        };
        for &b in table.iter().rev() {
            self.owner[b as usize] = None;
            self.free.push(b);
        }
        table.len()
    }

    /// Sequences holding blocks now.
    pub fn holders(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.tables.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Proves the bookkeeping consistent: every block is free xor in exactly one table, and
    /// owners agree with tables. The error names the block at fault.
    pub fn check(&self) -> Result<()> {
        let n = self.num_blocks();
        let mut seen = vec![false; n];
        let mut mark = |b: u32, what: &str| -> Result<()> {
            let i = b as usize;
            if i >= n {
                return Err(Error::Invalid(format!(
                    "KV block {b} ({what}) is outside the pool of {n}"
                )));
            }
            if seen[i] {
                return Err(Error::Invalid(format!(
                    "KV block {b} appears twice (second time {what})"
                )));
            }
            seen[i] = true;
            Ok(())
        };
        for &b in &self.free {
            mark(b, "in the free list")?;
            if let Some(o) = self.owner[b as usize] {
                return Err(Error::Invalid(format!(
                    "KV block {b} is free but owned by sequence {o}"
                )));
            }
        }
        for (&seq, table) in &self.tables {
            for &b in table {
                mark(b, &format!("in sequence {seq}'s table"))?;
                if self.owner[b as usize] != Some(seq) {
                    return Err(Error::Invalid(format!(
                        "KV block {b} is in sequence {seq}'s table but owned by {:?}",
                        self.owner[b as usize]
                    )));
                }
            }
        }
        if let Some(b) = seen.iter().position(|s| !s) {
            return Err(Error::Invalid(format!(
                "KV block {b} is neither free nor in any table (leaked)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_at_block_boundaries_and_frees_everything() {
        let mut p = BlockPool::new(4, 16).unwrap();
        p.allocate(7, 1).unwrap();
        assert_eq!(p.table(7).len(), 1);
        p.allocate(7, 16).unwrap();
        assert_eq!(p.table(7).len(), 1);
        p.allocate(7, 17).unwrap();
        assert_eq!(p.table(7).len(), 2);
        assert!(p.can_allocate(8, 32));
        assert!(!p.can_allocate(8, 33));
        assert!(p.allocate(8, 33).is_err());
        assert_eq!(p.num_used(), 2, "a failed allocation moves nothing");
        p.check().unwrap();
        assert_eq!(p.free(7), 2);
        assert_eq!(p.num_used(), 0);
        assert_eq!(p.peak_used(), 2);
        p.check().unwrap();
    }

    #[test]
    fn budget_to_blocks() {
        // EXAONE-4.0-1.2B in bf16: 61,440 bytes per token, as the spec computes it
        let s = KvSpec {
            layers: 30,
            kv_heads: 8,
            head_dim: 64,
            dtype_bytes: 2,
            block_size: 16,
        };
        assert_eq!(s.bytes_per_token(), 61_440);
        assert_eq!(s.num_blocks(61_440 * 16 * 10, 1.0).unwrap(), 10);
        assert_eq!(s.num_blocks(61_440 * 16 * 10, 0.5).unwrap(), 5);
        assert!(s.num_blocks(1, 1.5).is_err());
    }
}
