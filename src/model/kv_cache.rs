//! A pre-allocated KV cache: one [b, kv_heads, capacity, head_dim] buffer per layer for K and V,
//! written in place, so a decoding step costs no concatenation.

use candle_core::{DType, Device, Result, Tensor};

#[derive(Debug)]
pub struct KvCache {
    pub(crate) k: Vec<Tensor>,
    pub(crate) v: Vec<Tensor>,
    /// tokens already in the cache (the same for every row: rows are left-padded)
    pub len: usize,
    pub capacity: usize,
    /// left padding of each row; keys before it are never attended to
    pub pad: Vec<usize>,
}

/// The dimensions of a cache: `layers` buffers of [batch, kv_heads, capacity, head_dim].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheShape {
    pub layers: usize,
    pub batch: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub capacity: usize,
}

impl KvCache {
    /// A zeroed cache of `shape`, rows left-padded by `pad` (one count per row).
    pub fn new(shape: CacheShape, pad: Vec<usize>, dtype: DType, device: &Device) -> Result<Self> {
        let CacheShape {
            layers,
            batch,
            kv_heads,
            head_dim,
            capacity,
        } = shape;
        if pad.len() != batch {
            candle_core::bail!("KV cache: {} padding counts for {batch} rows", pad.len());
        }
        let mut k = Vec::with_capacity(layers);
        let mut v = Vec::with_capacity(layers);
        for _ in 0..layers {
            k.push(Tensor::zeros(
                (batch, kv_heads, capacity, head_dim),
                dtype,
                device,
            )?);
            v.push(Tensor::zeros(
                (batch, kv_heads, capacity, head_dim),
                dtype,
                device,
            )?);
        }
        Ok(Self {
            k,
            v,
            len: 0,
            capacity,
            pad,
        })
    }

    pub fn batch(&self) -> usize {
        self.pad.len()
    }

    /// A cache of `n` rows, each a copy of this one-row cache (e.g. a prompt run once, then
    /// continued by `n` different continuations).
    pub fn repeat_rows(&self, n: usize) -> Result<Self> {
        if self.batch() != 1 {
            candle_core::bail!(
                "KV cache: only a one-row cache is repeated, this has {} rows",
                self.batch()
            );
        }
        let rep = |ts: &[Tensor]| -> Result<Vec<Tensor>> {
            ts.iter().map(|t| t.repeat((n, 1, 1, 1))).collect()
        };
        Ok(Self {
            k: rep(&self.k)?,
            v: rep(&self.v)?,
            len: self.len,
            capacity: self.capacity,
            pad: vec![self.pad[0]; n],
        })
    }

    /// Writes `k_new`/`v_new` [b, kvh, t, d] of layer `i` at the current end and returns the keys
    /// and values from `from` to the new end.
    pub(crate) fn append(
        &self,
        i: usize,
        k_new: &Tensor,
        v_new: &Tensor,
        from: usize,
    ) -> Result<(Tensor, Tensor)> {
        let t = k_new.dim(2)?;
        if self.len + t > self.capacity {
            candle_core::bail!(
                "KV cache full: {} + {t} tokens > capacity {}",
                self.len,
                self.capacity
            );
        }
        self.k[i].slice_set(&k_new.contiguous()?, 2, self.len)?;
        self.v[i].slice_set(&v_new.contiguous()?, 2, self.len)?;
        let end = self.len + t;
        Ok((
            self.k[i].narrow(2, from, end - from)?,
            self.v[i].narrow(2, from, end - from)?,
        ))
    }
}
