//! Launchers of `kernels/norm_rope.cu`: embedding gather, RMSNorm, per-head QK-norm + RoPE +
//! KV-cache store (the engines) or into the candle forward's attention layouts (`qkv_heads`),
//! SiLU-gated products.

use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::{config, cuda_err, dim, func, int, or_null, require, Dev, Module};

/// out[r] = table[ids[r]] for `rows` rows of `hidden` values.
pub(crate) fn embed_rows(
    dev: &CudaDevice,
    ids: Dev<u32>,
    table: Dev<bf16>,
    out: Dev<bf16>,
    rows: usize,
    hidden: usize,
) -> Result<()> {
    const K: &str = "embed_rows";
    require!(K, hidden.is_multiple_of(8), "hidden {hidden}: 16-byte rows");
    require!(
        K,
        table.aligned(16) && out.aligned(16),
        "16-byte aligned rows"
    );
    require!(K, ids.len() >= rows, "{} ids for {rows} rows", ids.len());
    require!(
        K,
        table.len() >= hidden,
        "embedding table shorter than a row"
    );
    require!(
        K,
        out.len() >= rows * hidden,
        "output of {} values",
        out.len()
    );
    let f = func(dev, Module::NormRope, K)?;
    let stream = dev.cuda_stream();
    let h = int(hidden, "hidden")?;
    let mut b = f.builder(&stream);
    b.arg(&ids.addr).arg(&table.addr).arg(&out.addr).arg(&h);
    let cfg = config((dim(rows, "rows")?, 1, 1), 256, 0)?;
    // SAFETY: one block per row copies `hidden` bf16 values as 16-byte words: hidden % 8 == 0 and
    // both tables 16-byte aligned (checked), ids holds `rows` entries and out `rows · hidden`
    // values (checked). Every id must be below the table's rows (table.len / hidden): ids live
    // on the device, so that is the caller's duty (the engine's ids are tokenizer ids or its
    // own argmax picks, both below the vocabulary size).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// RMSNorm of `rows` rows: out[r] (=|+=) bf16(x[r·row_step + row_off] · rsqrt(mean x² + eps) · w).
pub(crate) struct RmsNormRows<'a> {
    pub x: Dev<'a, bf16>,
    pub w: Dev<'a, bf16>,
    pub out: Dev<'a, bf16>,
    /// rows written (one block each)
    pub rows: usize,
    /// values per row
    pub n: usize,
    pub eps: f32,
    /// rows the norm is added to (bf16 add, the post-norm residual: `out` itself in place, or
    /// another buffer of as many rows); None: out is overwritten
    pub prev: Option<Dev<'a, bf16>>,
    /// input row of output row r: r · row_step + row_off, or idx[r] where given
    pub row_step: usize,
    pub row_off: usize,
    pub idx: Option<Dev<'a, i32>>,
}

impl RmsNormRows<'_> {
    /// The launch's bounds, checked for `kernel`.
    pub(crate) fn check(&self, kernel: &str) -> Result<()> {
        let n = self.n;
        require!(kernel, n.is_multiple_of(8), "n {n}: 16-byte loads");
        require!(
            kernel,
            self.x.aligned(16) && self.w.aligned(16) && self.out.aligned(16),
            "16-byte aligned"
        );
        match self.idx {
            None => {
                let last_in = self.rows.saturating_sub(1) * self.row_step + self.row_off;
                require!(
                    kernel,
                    self.rows == 0 || self.x.len() >= (last_in + 1) * n,
                    "input of {} values",
                    self.x.len()
                );
            }
            Some(idx) => require!(kernel, idx.len() >= self.rows, "{} row indices", idx.len()),
        }
        require!(
            kernel,
            self.w.len() >= n,
            "weight of {} values",
            self.w.len()
        );
        require!(
            kernel,
            self.out.len() >= self.rows * n,
            "output of {} values",
            self.out.len()
        );
        if let Some(p) = self.prev {
            require!(
                kernel,
                p.aligned(16) && p.len() >= self.rows * n,
                "residual of {} values, 16-byte aligned",
                p.len()
            );
        }
        Ok(())
    }
}

pub(crate) fn rmsnorm_rows(dev: &CudaDevice, a: &RmsNormRows) -> Result<()> {
    const K: &str = "rmsnorm_rows";
    a.check(K)?;
    let n = a.n;
    let f = func(dev, Module::NormRope, K)?;
    let stream = dev.cuda_stream();
    let (ni, prev) = (int(n, "n")?, or_null(a.prev));
    let (step, off) = (int(a.row_step, "row_step")?, int(a.row_off, "row_off")?);
    let mut b = f.builder(&stream);
    b.arg(&a.x.addr).arg(&a.w.addr).arg(&prev).arg(&a.out.addr);
    let idx = or_null(a.idx);
    b.arg(&ni).arg(&a.eps).arg(&step).arg(&off).arg(&idx);
    let cfg = config((dim(a.rows, "rows")?, 1, 1), 256, 0)?;
    // SAFETY: one block of 256 threads (a multiple of 32, as block_reduce needs) per output row
    // reads its input row and the weight as 16-byte words and writes output row r: n % 8 == 0,
    // all three 16-byte aligned, the weight and every output row inside their buffers, and the
    // last input row r·row_step + row_off too (all checked above). With `idx`, its `rows` entries
    // exist (checked); that each is a row of x is the caller's duty (device values).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// out [rows, inter] = bf16(bf16(silu(gate)) · up) for gu [rows, 2·inter] = [gate | up].
pub(crate) fn silu_mul_rows(
    dev: &CudaDevice,
    gu: Dev<bf16>,
    out: Dev<bf16>,
    rows: usize,
    inter: usize,
) -> Result<()> {
    const K: &str = "silu_mul_rows";
    require!(
        K,
        gu.len() >= rows * 2 * inter,
        "input of {} values",
        gu.len()
    );
    require!(
        K,
        out.len() >= rows * inter,
        "output of {} values",
        out.len()
    );
    let f = func(dev, Module::NormRope, K)?;
    let stream = dev.cuda_stream();
    let i = int(inter, "inter")?;
    let mut b = f.builder(&stream);
    b.arg(&gu.addr).arg(&out.addr).arg(&i);
    let grid = (
        dim(inter.div_ceil(256), "inter / 256")?,
        dim(rows, "rows")?,
        1,
    );
    let cfg = config(grid, 256, 0)?;
    // SAFETY: thread (i, r) with i < inter (the kernel tests it) reads gu[r, i] and
    // gu[r, inter + i] and writes out[r, i]; r < rows by the grid, and both buffers hold their
    // `rows` rows (checked). Element accesses: no alignment beyond bf16's.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// out = bf16(bf16(silu(g)) · u) over `n` values.
pub(crate) fn silu_mul_flat(
    dev: &CudaDevice,
    g: Dev<bf16>,
    u: Dev<bf16>,
    out: Dev<bf16>,
    n: usize,
) -> Result<()> {
    const K: &str = "silu_mul_flat";
    require!(
        K,
        g.len() >= n && u.len() >= n && out.len() >= n,
        "buffers shorter than {n}"
    );
    let f = func(dev, Module::NormRope, K)?;
    let stream = dev.cuda_stream();
    let nl = n as i64;
    let mut b = f.builder(&stream);
    b.arg(&g.addr).arg(&u.addr).arg(&out.addr).arg(&nl);
    let cfg = config((dim(n.div_ceil(256), "n / 256")?, 1, 1), 256, 0)?;
    // SAFETY: thread i < n (the kernel tests it, with a 64-bit index) reads g[i], u[i] and writes
    // out[i]; all three hold at least n values (checked).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// Per-head RMSNorm of q and k, RoPE, and the KV-cache write, for `rows` rows of `qkv`
/// [rows, (heads_q + 2·heads_kv)·head_dim]; row r belongs to sequence r / t, sits in cache slot
/// pos[r] and has RoPE position pos[r] − pad[r / t].
pub(crate) struct QkNormRope<'a> {
    pub qkv: Dev<'a, bf16>,
    pub q_norm: Dev<'a, bf16>,
    pub k_norm: Dev<'a, bf16>,
    /// RoPE tables [capacity, head_dim / 2]
    pub cos: Dev<'a, bf16>,
    pub sin: Dev<'a, bf16>,
    pub pos: Dev<'a, i32>,
    pub pad: Dev<'a, i32>,
    /// [rows, heads_q, head_dim]
    pub q_out: Dev<'a, bf16>,
    /// [rows / t, heads_kv, capacity, head_dim]
    pub k_cache: Dev<'a, bf16>,
    pub v_cache: Dev<'a, bf16>,
    pub rows: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    /// 64 or 128
    pub head_dim: usize,
    /// tokens per sequence in this call
    pub t: usize,
    pub capacity: usize,
    pub eps: f32,
    pub use_rope: bool,
}

pub(crate) fn qk_norm_rope_store(dev: &CudaDevice, a: &QkNormRope) -> Result<()> {
    const K: &str = "qk_norm_rope_store";
    let (d, hq, hkv, cap) = (a.head_dim, a.heads_q, a.heads_kv, a.capacity);
    let name = match d {
        64 => "qk_norm_rope_store_64",
        128 => "qk_norm_rope_store_128",
        _ => candle_core::bail!("{K}: head_dim {d} (64 or 128)"),
    };
    require!(
        K,
        a.t > 0 && a.rows.is_multiple_of(a.t),
        "{} rows of {} tokens",
        a.rows,
        a.t
    );
    let seqs = a.rows / a.t;
    let heads = hq + 2 * hkv;
    require!(
        K,
        a.qkv.len() >= a.rows * heads * d,
        "qkv of {} values",
        a.qkv.len()
    );
    require!(
        K,
        a.q_norm.len() >= d && a.k_norm.len() >= d,
        "norm weights of head_dim"
    );
    require!(
        K,
        a.cos.len() >= cap * d / 2 && a.sin.len() >= cap * d / 2,
        "RoPE tables"
    );
    require!(
        K,
        a.pos.len() >= a.rows && a.pad.len() >= seqs,
        "pos/pad entries"
    );
    require!(
        K,
        a.q_out.len() >= a.rows * hq * d,
        "q of {} values",
        a.q_out.len()
    );
    let cache = seqs * hkv * cap * d;
    require!(
        K,
        a.k_cache.len() >= cache && a.v_cache.len() >= cache,
        "caches of {cache}"
    );
    let f = func(dev, Module::NormRope, name)?;
    let stream = dev.cuda_stream();
    let (hqi, hkvi, ti) = (int(hq, "heads_q")?, int(hkv, "heads_kv")?, int(a.t, "t")?);
    let (capi, rope) = (int(cap, "capacity")?, a.use_rope as i32);
    let mut b = f.builder(&stream);
    b.arg(&a.qkv.addr).arg(&a.q_norm.addr).arg(&a.k_norm.addr);
    b.arg(&a.cos.addr)
        .arg(&a.sin.addr)
        .arg(&a.pos.addr)
        .arg(&a.pad.addr);
    b.arg(&a.q_out.addr)
        .arg(&a.k_cache.addr)
        .arg(&a.v_cache.addr);
    b.arg(&hqi)
        .arg(&hkvi)
        .arg(&ti)
        .arg(&capi)
        .arg(&a.eps)
        .arg(&rope);
    let grid = (
        dim(a.rows, "rows")?,
        dim(heads.div_ceil(4), "heads / 4")?,
        1,
    );
    let cfg = config(grid, 128, 0)?;
    // SAFETY: block (r, y) of 4 warps handles heads 4y..4y+3 of row r (warps past the last head
    // return); every lane touches elements lane + 32·j of one head (head_dim 64 or 128, checked).
    // qkv, q_out, the norm weights, pos, pad and both caches hold what rows, heads and head_dim
    // index (checked). Device-side values are the caller's duty: pos[r] < capacity (the cache
    // slot and, with pad[b] ≤ pos[r], the RoPE table row); the engine checks its length against
    // the capacity before every step.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// [`qk_norm_rope_store`] for the serving engine's paged pool: row r has RoPE position pos[r]
/// and its K/V go to pool slot slot[r] (block slot / block_size, offset slot % block_size; none
/// where slot[r] < 0).
pub(crate) struct QkNormRopePaged<'a> {
    pub qkv: Dev<'a, bf16>,
    pub q_norm: Dev<'a, bf16>,
    pub k_norm: Dev<'a, bf16>,
    /// RoPE tables [positions, head_dim / 2]
    pub cos: Dev<'a, bf16>,
    pub sin: Dev<'a, bf16>,
    pub pos: Dev<'a, i32>,
    pub slot: Dev<'a, i32>,
    /// [rows, heads_q, head_dim]
    pub q_out: Dev<'a, bf16>,
    /// [blocks, heads_kv, block_size, head_dim]
    pub k_pool: Dev<'a, bf16>,
    pub v_pool: Dev<'a, bf16>,
    pub rows: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    /// 64 or 128
    pub head_dim: usize,
    pub block_size: usize,
    pub eps: f32,
    pub use_rope: bool,
}

pub(crate) fn qk_norm_rope_paged(dev: &CudaDevice, a: &QkNormRopePaged) -> Result<()> {
    const K: &str = "qk_norm_rope_paged";
    let (d, hq, hkv, bs) = (a.head_dim, a.heads_q, a.heads_kv, a.block_size);
    let name = match d {
        64 => "qk_norm_rope_paged_64",
        128 => "qk_norm_rope_paged_128",
        _ => candle_core::bail!("{K}: head_dim {d} (64 or 128)"),
    };
    let heads = hq + 2 * hkv;
    require!(K, bs > 0, "block size {bs}");
    require!(
        K,
        a.qkv.len() >= a.rows * heads * d,
        "qkv of {} values",
        a.qkv.len()
    );
    require!(
        K,
        a.q_norm.len() >= d && a.k_norm.len() >= d,
        "norm weights of head_dim"
    );
    require!(
        K,
        a.pos.len() >= a.rows && a.slot.len() >= a.rows,
        "pos/slot entries"
    );
    require!(
        K,
        a.q_out.len() >= a.rows * hq * d,
        "q of {} values",
        a.q_out.len()
    );
    require!(
        K,
        a.k_pool.len() == a.v_pool.len() && a.k_pool.len().is_multiple_of(hkv * bs * d),
        "pools of whole blocks"
    );
    let f = func(dev, Module::NormRope, name)?;
    let stream = dev.cuda_stream();
    let (hqi, hkvi, bsi) = (
        int(hq, "heads_q")?,
        int(hkv, "heads_kv")?,
        int(bs, "block_size")?,
    );
    let rope = a.use_rope as i32;
    let mut b = f.builder(&stream);
    b.arg(&a.qkv.addr).arg(&a.q_norm.addr).arg(&a.k_norm.addr);
    b.arg(&a.cos.addr)
        .arg(&a.sin.addr)
        .arg(&a.pos.addr)
        .arg(&a.slot.addr);
    b.arg(&a.q_out.addr).arg(&a.k_pool.addr).arg(&a.v_pool.addr);
    b.arg(&hqi).arg(&hkvi).arg(&bsi).arg(&a.eps).arg(&rope);
    let grid = (
        dim(a.rows, "rows")?,
        dim(heads.div_ceil(4), "heads / 4")?,
        1,
    );
    let cfg = config(grid, 128, 0)?;
    // SAFETY: block (r, y) of 4 warps handles heads 4y..4y+3 of row r (warps past the last head
    // return); every lane touches elements lane + 32·j of one head (head_dim 64 or 128, checked).
    // qkv, q_out, the norm weights, pos and slot hold what rows, heads and head_dim index
    // (checked). Device-side values are the caller's duty: slot[r] < 0 or inside the pool
    // (blocks · block_size slots), pos[r] a row of the RoPE tables; the serving engine builds
    // both from the scheduler's block tables and checks positions against its context.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// One of the candle forward's q/k/v products as the kernel reads it: `rows` rows of `heads`
/// heads, row r at `x + r·row_stride` (a column range of a stacked product, or a product alone).
#[derive(Clone, Copy)]
pub(crate) struct HeadRows<'a> {
    pub x: Dev<'a, bf16>,
    pub row_stride: usize,
}

/// The candle forward's attention inputs from its q, k and v products (`rows` = batch · t rows
/// of heads_q, heads_kv, heads_kv heads): per-head RMSNorm of q and k, RoPE at table row
/// r mod t, q to `q_out` [rows, heads_q, head_dim], k and v to `k_out`/`v_out` [batch,
/// heads_kv, t, head_dim] (the layouts attention and the KV cache take).
pub(crate) struct QkvHeads<'a> {
    pub q: HeadRows<'a>,
    pub k: HeadRows<'a>,
    pub v: HeadRows<'a>,
    pub q_norm: Dev<'a, bf16>,
    pub k_norm: Dev<'a, bf16>,
    /// RoPE tables [t, head_dim / 2], row i for the sequence's i-th token here
    pub cos: Dev<'a, bf16>,
    pub sin: Dev<'a, bf16>,
    pub q_out: Dev<'a, bf16>,
    pub k_out: Dev<'a, bf16>,
    pub v_out: Dev<'a, bf16>,
    pub rows: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    /// 64 or 128
    pub head_dim: usize,
    pub t: usize,
    pub eps: f32,
    pub use_rope: bool,
}

pub(crate) fn qkv_heads(dev: &CudaDevice, a: &QkvHeads) -> Result<()> {
    const K: &str = "qkv_heads";
    let (d, hq, hkv, t, rows) = (a.head_dim, a.heads_q, a.heads_kv, a.t, a.rows);
    let name = match d {
        64 => "qkv_heads_64",
        128 => "qkv_heads_128",
        _ => candle_core::bail!("{K}: head_dim {d} (64 or 128)"),
    };
    require!(
        K,
        rows > 0 && t > 0 && rows.is_multiple_of(t),
        "{rows} rows of {t} tokens"
    );
    for (what, x, heads) in [("q", a.q, hq), ("k", a.k, hkv), ("v", a.v, hkv)] {
        require!(
            K,
            x.row_stride >= heads * d && x.x.len() >= (rows - 1) * x.row_stride + heads * d,
            "{what}: {rows} rows of {heads} heads in {} values, rows {} apart",
            x.x.len(),
            x.row_stride
        );
    }
    require!(
        K,
        a.q_norm.len() >= d && a.k_norm.len() >= d,
        "norm weights of head_dim"
    );
    require!(
        K,
        !a.use_rope || (a.cos.len() >= t * d / 2 && a.sin.len() >= t * d / 2),
        "RoPE tables of {t} rows"
    );
    require!(
        K,
        a.q_out.len() >= rows * hq * d
            && a.k_out.len() >= rows * hkv * d
            && a.v_out.len() >= rows * hkv * d,
        "outputs of [{rows}, heads, {d}]"
    );
    let f = func(dev, Module::NormRope, name)?;
    let stream = dev.cuda_stream();
    let (hqi, hkvi, ti, rope) = (
        int(hq, "heads_q")?,
        int(hkv, "heads_kv")?,
        int(t, "t")?,
        a.use_rope as i32,
    );
    let strides = [a.q.row_stride, a.k.row_stride, a.v.row_stride].map(|s| s as i64);
    let mut b = f.builder(&stream);
    b.arg(&a.q.x.addr).arg(&a.k.x.addr).arg(&a.v.x.addr);
    b.arg(&strides[0]).arg(&strides[1]).arg(&strides[2]);
    b.arg(&a.q_norm.addr)
        .arg(&a.k_norm.addr)
        .arg(&a.cos.addr)
        .arg(&a.sin.addr);
    b.arg(&a.q_out.addr).arg(&a.k_out.addr).arg(&a.v_out.addr);
    b.arg(&hqi).arg(&hkvi).arg(&ti).arg(&a.eps).arg(&rope);
    let heads = hq + 2 * hkv;
    let grid = (dim(rows, "rows")?, dim(heads.div_ceil(4), "heads / 4")?, 1);
    let cfg = config(grid, 128, 0)?;
    // SAFETY: block (r, y) of 4 warps handles heads 4y..4y+3 of row r (warps past the last head
    // return); every lane touches elements lane + 32·j of one head (head_dim 64 or 128, checked).
    // Row r of q/k/v starts r·row_stride values in and holds its heads (checked for the last
    // row); q_out [rows, hq, d] and k_out/v_out [rows / t, hkv, t, d] hold every row's heads
    // (checked); RoPE reads table row r mod t < t of tables of t rows (checked where used).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}
