//! Launchers of `kernels/attention.cu`: flash attention (the candle forward's prefill), the
//! decode engine's attention of each row over its KV cache, and the serving engine's attention
//! over the paged KV pool (prompt chunks and single tokens).

use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::{allow_smem, config, cuda_err, dim, func, int, require, Dev, Module};

/// softmax(q kᵀ / √d) v for q [batch, heads, t, d] and k/v [batch, heads_kv, l, d] given by
/// (batch, head, token) strides in elements, d contiguous; out [batch, t, heads, d] contiguous.
/// With `causal`, query i sees keys j ≤ i + l − t.
pub(crate) struct Flash<'a> {
    pub q: Dev<'a, bf16>,
    pub k: Dev<'a, bf16>,
    pub v: Dev<'a, bf16>,
    pub out: Dev<'a, bf16>,
    pub batch: usize,
    pub heads: usize,
    pub heads_kv: usize,
    pub t: usize,
    pub l: usize,
    /// 64 or 128
    pub head_dim: usize,
    pub q_strides: [i64; 3],
    pub k_strides: [i64; 3],
    pub v_strides: [i64; 3],
    pub causal: bool,
}

/// Elements a [batch, heads, tokens, d] layout with `strides` spans from its first element.
fn extent(strides: [i64; 3], dims: [usize; 3], d: usize) -> Option<usize> {
    let mut e = d;
    for (s, n) in strides.iter().zip(dims) {
        let s = usize::try_from(*s).ok()?;
        e += s * n.saturating_sub(1);
    }
    Some(e)
}

pub(crate) fn flash_fwd(dev: &CudaDevice, a: &Flash) -> Result<()> {
    const K: &str = "flash_fwd";
    let (b, h, hkv, t, l, d) = (a.batch, a.heads, a.heads_kv, a.t, a.l, a.head_dim);
    let name = match d {
        64 => "flash_fwd_64",
        128 => "flash_fwd_128",
        _ => candle_core::bail!("{K}: head_dim {d} (64 or 128)"),
    };
    require!(
        K,
        hkv > 0 && h.is_multiple_of(hkv),
        "{h} heads over {hkv} kv heads"
    );
    for (what, buf, s, n) in [
        ("q", a.q, a.q_strides, t),
        ("k", a.k, a.k_strides, l),
        ("v", a.v, a.v_strides, l),
    ] {
        let heads = if what == "q" { h } else { hkv };
        require!(K, buf.aligned(16), "{what}: 16-byte aligned (cp.async)");
        // (a dimension of size 1 is never stepped along: its stride does not matter)
        let rows16 = s
            .iter()
            .zip([b, heads, n])
            .all(|(x, n)| n <= 1 || x % 8 == 0);
        require!(K, rows16, "{what} strides {s:?}: whole 16-byte rows");
        let e = extent(s, [b, heads, n], d);
        require!(
            K,
            e.is_some_and(|e| e <= buf.len()),
            "{what} of {} values",
            buf.len()
        );
    }
    require!(
        K,
        a.out.aligned(4) && a.out.len() >= b * t * h * d,
        "output [b, t, h, d]"
    );
    let f = func(dev, Module::Attention, name)?;
    // Q tile + double-buffered K and V tiles, 64 rows each, rows padded by 8 elements
    let smem = 5 * 64 * (d + 8) * 2;
    allow_smem(&f, smem)?;
    let stream = dev.cuda_stream();
    let scale_log2 = std::f32::consts::LOG2_E / (d as f32).sqrt();
    let (ti, li, hi, hkvi) = (
        int(t, "t")?,
        int(l, "l")?,
        int(h, "heads")?,
        int(hkv, "heads_kv")?,
    );
    let (causal, offset) = (a.causal as i32, li - ti);
    let mut bld = f.builder(&stream);
    bld.arg(&a.q.addr)
        .arg(&a.k.addr)
        .arg(&a.v.addr)
        .arg(&a.out.addr);
    bld.arg(&ti).arg(&li).arg(&hi).arg(&hkvi);
    for s in [&a.q_strides, &a.k_strides, &a.v_strides] {
        bld.arg(&s[0]).arg(&s[1]).arg(&s[2]);
    }
    bld.arg(&causal).arg(&offset).arg(&scale_log2);
    let grid = (
        dim(t.div_ceil(64), "t / 64")?,
        dim(h, "heads")?,
        dim(b, "batch")?,
    );
    let cfg = config(grid, 128, smem)?;
    // SAFETY: 128 threads (the kernel's __launch_bounds__: 4 warps × 16 query rows) and the
    // 5 · 64 · (d + 8) bf16 of shared memory it indexes, allowed above. Q/K/V rows are copied
    // with 16-byte cp.async: the base addresses 16-byte aligned and every stride a multiple of 8
    // elements (checked); rows past t or l are zero-filled without a read, and every row read
    // lies within its buffer (extent checked). head_dim is 64 or 128 and heads % heads_kv == 0
    // (checked); the output [b, t, h, d] fits (checked) and is written as bf16 pairs.
    unsafe { bld.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// Attention of each row over its cached keys pad[r / t] ..= pos[r] (the decode engine).
pub(crate) struct AttnRows<'a> {
    /// [rows, heads_q, head_dim]
    pub q: Dev<'a, bf16>,
    /// [rows / t, heads_kv, capacity, head_dim]
    pub k_cache: Dev<'a, bf16>,
    pub v_cache: Dev<'a, bf16>,
    pub pos: Dev<'a, i32>,
    pub pad: Dev<'a, i32>,
    /// [rows, heads_q · head_dim]
    pub out: Dev<'a, bf16>,
    pub rows: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    /// 64 or 128
    pub head_dim: usize,
    /// tokens per sequence in this call
    pub t: usize,
    pub capacity: usize,
    pub scale: f32,
}

/// Shared memory of `attn_rows`: q, 8 warps' partial outputs, reduction scratch, the scores.
pub(crate) fn attn_rows_smem(head_dim: usize, capacity: usize) -> usize {
    (head_dim + 8 * head_dim + 32 + capacity) * 4
}

/// Lets `attn_rows` use the shared memory of a cache of `capacity` slots (once per device).
pub(crate) fn allow_attn_rows(dev: &CudaDevice, head_dim: usize, capacity: usize) -> Result<()> {
    allow_smem(
        &func(dev, Module::Attention, "attn_rows")?,
        attn_rows_smem(head_dim, capacity),
    )
}

pub(crate) fn attn_rows(dev: &CudaDevice, a: &AttnRows) -> Result<()> {
    const K: &str = "attn_rows";
    let (d, hq, hkv, cap) = (a.head_dim, a.heads_q, a.heads_kv, a.capacity);
    require!(K, d == 64 || d == 128, "head_dim {d} (64 or 128)");
    require!(
        K,
        hkv > 0 && hq.is_multiple_of(hkv),
        "{hq} heads over {hkv} kv heads"
    );
    require!(
        K,
        a.t > 0 && a.rows.is_multiple_of(a.t),
        "{} rows of {} tokens",
        a.rows,
        a.t
    );
    let seqs = a.rows / a.t;
    require!(K, a.q.len() >= a.rows * hq * d, "q of {} values", a.q.len());
    require!(
        K,
        a.out.len() >= a.rows * hq * d,
        "output of {} values",
        a.out.len()
    );
    let cache = seqs * hkv * cap * d;
    require!(
        K,
        a.k_cache.len() >= cache && a.v_cache.len() >= cache,
        "caches of {cache}"
    );
    require!(
        K,
        a.k_cache.aligned(16) && a.v_cache.aligned(4),
        "cache alignment"
    );
    require!(
        K,
        a.pos.len() >= a.rows && a.pad.len() >= seqs,
        "pos/pad entries"
    );
    let f = func(dev, Module::Attention, K)?;
    let stream = dev.cuda_stream();
    let (hqi, hkvi, di) = (
        int(hq, "heads_q")?,
        int(hkv, "heads_kv")?,
        int(d, "head_dim")?,
    );
    let (ti, capi) = (int(a.t, "t")?, int(cap, "capacity")?);
    let mut b = f.builder(&stream);
    b.arg(&a.q.addr).arg(&a.k_cache.addr).arg(&a.v_cache.addr);
    b.arg(&a.pos.addr).arg(&a.pad.addr).arg(&a.out.addr);
    b.arg(&hqi)
        .arg(&hkvi)
        .arg(&di)
        .arg(&ti)
        .arg(&capi)
        .arg(&a.scale);
    let grid = (dim(a.rows, "rows")?, dim(hq, "heads_q")?, 1);
    let cfg = config(grid, 256, attn_rows_smem(d, cap))?;
    // SAFETY: 256 threads (the kernel's 8 warps, NW) and the shared memory it carves (q, 8
    // partial outputs, 32 floats of scratch, `capacity` scores); a launch above what
    // allow_attn_rows allowed fails with an error. head_dim 64 or 128 (the lanes' two bf16 pairs
    // cover it), heads_q % heads_kv == 0, q/out [rows, heads_q, d], the caches
    // [rows / t, heads_kv, capacity, d] (K 16-byte aligned for its 16-byte loads, V 4-byte for
    // its bf16 pairs), pos [rows] and pad [rows / t] (all checked). Device-side values are the
    // caller's duty: pad[b] ≤ pos[r] < capacity, so the scores stay in shared memory and the
    // keys in the cache; the engine checks its length against the capacity before every step.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// The serving engine's paged KV pool for one layer, as the attention kernels read it.
pub(crate) struct PagedPool<'a> {
    /// [blocks, heads_kv, block_size, head_dim]
    pub k: Dev<'a, bf16>,
    pub v: Dev<'a, bf16>,
    /// block tables, rows `stride` entries apart
    pub tables: Dev<'a, i32>,
    pub stride: usize,
    pub block_size: usize,
    pub heads_kv: usize,
    /// 64 or 128
    pub head_dim: usize,
    /// keys a query sees, itself included (sliding-window layers); None: all earlier ones
    pub window: Option<usize>,
}

impl PagedPool<'_> {
    fn check(&self, kernel: &str, heads_q: usize) -> Result<()> {
        let (d, hkv, bs) = (self.head_dim, self.heads_kv, self.block_size);
        require!(kernel, d == 64 || d == 128, "head_dim {d} (64 or 128)");
        require!(
            kernel,
            hkv > 0 && heads_q.is_multiple_of(hkv) && heads_q / hkv <= 8,
            "{heads_q} heads over {hkv} kv heads (at most 8 per kv head)"
        );
        require!(kernel, bs > 0 && self.stride > 0, "block size and stride");
        require!(
            kernel,
            self.k.len() == self.v.len() && self.k.len().is_multiple_of(hkv * bs * d),
            "pools of whole blocks"
        );
        require!(
            kernel,
            self.k.aligned(16) && self.v.aligned(16),
            "16-byte aligned pools"
        );
        Ok(())
    }

    fn window(&self) -> Result<i32> {
        int(self.window.unwrap_or(0), "window")
    }
}

/// Attention of prompt chunks over the paged pool: `tiles` holds 5 ints per tile of 64 queries
/// (first packed row of the chunk, its length, tokens before it, the tile's first query, its
/// block-table row); q [rows, heads_q, head_dim], out [rows, heads_q · head_dim].
pub(crate) fn flash_paged(
    dev: &CudaDevice,
    pool: &PagedPool,
    q: Dev<bf16>,
    out: Dev<bf16>,
    tiles: Dev<i32>,
    n_tiles: usize,
    heads_q: usize,
) -> Result<()> {
    const K: &str = "flash_paged";
    pool.check(K, heads_q)?;
    let d = pool.head_dim;
    let name = if d == 64 {
        "flash_paged_64"
    } else {
        "flash_paged_128"
    };
    require!(
        K,
        tiles.len() >= 5 * n_tiles,
        "{} tile entries",
        tiles.len()
    );
    require!(
        K,
        q.aligned(16) && out.aligned(4),
        "q 16-byte, out 4-byte aligned"
    );
    require!(
        K,
        q.len().is_multiple_of(heads_q * d) && out.len().is_multiple_of(heads_q * d),
        "q and out of whole rows"
    );
    if n_tiles == 0 {
        return Ok(());
    }
    let f = func(dev, Module::Attention, name)?;
    let smem = 5 * 64 * (d + 8) * 2;
    allow_smem(&f, smem)?;
    let stream = dev.cuda_stream();
    let scale_log2 = std::f32::consts::LOG2_E / (d as f32).sqrt();
    let (stride, hqi, hkvi) = (
        int(pool.stride, "stride")?,
        int(heads_q, "heads_q")?,
        int(pool.heads_kv, "heads_kv")?,
    );
    let (bs, window) = (int(pool.block_size, "block_size")?, pool.window()?);
    let mut b = f.builder(&stream);
    b.arg(&q.addr)
        .arg(&pool.k.addr)
        .arg(&pool.v.addr)
        .arg(&out.addr);
    b.arg(&tiles.addr).arg(&pool.tables.addr).arg(&stride);
    b.arg(&hqi)
        .arg(&hkvi)
        .arg(&bs)
        .arg(&window)
        .arg(&scale_log2);
    let cfg = config(
        (dim(n_tiles, "tiles")?, dim(heads_q, "heads_q")?, 1),
        128,
        smem,
    )?;
    // SAFETY: 128 threads (the kernel's __launch_bounds__: 4 warps × 16 query rows) and the
    // 5 · 64 · (d + 8) bf16 of shared memory the flash tile indexes, allowed above; head_dim 64
    // or 128, heads_q % heads_kv == 0, pools of whole blocks, 16-byte aligned for cp.async, and
    // `n_tiles` tiles of 5 ints (all checked). Device-side values are the caller's duty: every
    // tile's rows lie in q and out, its table row and the blocks it names exist, and its chunk's
    // tokens (before and in it) are covered by the table; the serving engine builds the tiles
    // and tables from the scheduler's step.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// Warps of a `paged_decode` block and the depth of each warp's cp.async ring (DECODE_WARPS and
/// DECODE_STAGES in attention.cu).
const DECODE_WARPS: usize = 4;
const DECODE_STAGES: usize = 2;

/// Shared memory of `paged_decode` for `g` query heads per kv head: each warp's ring of 16-key
/// K and V tiles (rows padded to d + 8), then the warps' partial results.
fn paged_decode_smem(d: usize, g: usize) -> usize {
    DECODE_WARPS * DECODE_STAGES * 2 * 16 * (d + 8) * 2 + DECODE_WARPS * g * (d + 2) * 4
}

/// Blocks `paged_decode` aims to launch: with fewer (entries × kv heads) it splits each
/// sequence's keys among several blocks and merges their partial softmaxes after.
const DECODE_TARGET_BLOCKS: usize = 256;

/// The splits of `n` entries' keys: enough blocks to fill the GPU, at most 16.
fn decode_splits(n: usize, heads_kv: usize) -> usize {
    (DECODE_TARGET_BLOCKS / (n * heads_kv).max(1)).clamp(1, 16)
}

/// f32 values of the scratch `paged_decode` needs for its splits' partial results.
pub(crate) fn paged_decode_part_len(heads_q: usize, heads_kv: usize, head_dim: usize) -> usize {
    DECODE_TARGET_BLOCKS * (heads_q / heads_kv.max(1)) * (head_dim + 2)
}

/// Attention of single tokens over the paged pool: `entries` holds 3 ints per token (its packed
/// row, its block-table row, the keys it sees = its position + 1, or 0 for a padding row that
/// gets zeros); q [rows, heads_q, head_dim], out [rows, heads_q · head_dim]. `part`: scratch of
/// [`paged_decode_part_len`] values for the splits of few sequences.
#[allow(clippy::too_many_arguments)]
pub(crate) fn paged_decode(
    dev: &CudaDevice,
    pool: &PagedPool,
    q: Dev<bf16>,
    out: Dev<bf16>,
    entries: Dev<i32>,
    n: usize,
    heads_q: usize,
    part: Dev<f32>,
) -> Result<()> {
    const K: &str = "paged_decode";
    pool.check(K, heads_q)?;
    let d = pool.head_dim;
    let name = match (d, heads_q / pool.heads_kv) {
        (64, 1) => "paged_decode_64_g1",
        (64, 2) => "paged_decode_64_g2",
        (64, 4) => "paged_decode_64_g4",
        (64, 8) => "paged_decode_64_g8",
        (128, 1) => "paged_decode_128_g1",
        (128, 2) => "paged_decode_128_g2",
        (128, 4) => "paged_decode_128_g4",
        (128, 8) => "paged_decode_128_g8",
        (_, g) => candle_core::bail!("{K}: {g} query heads per kv head (1, 2, 4 or 8)"),
    };
    require!(K, entries.len() >= 3 * n, "{} entries", entries.len());
    require!(
        K,
        q.len().is_multiple_of(heads_q * d) && out.len().is_multiple_of(heads_q * d),
        "q and out of whole rows"
    );
    if n == 0 {
        return Ok(());
    }
    let (g, hkv) = (heads_q / pool.heads_kv, pool.heads_kv);
    let splits = decode_splits(n, hkv);
    require!(
        K,
        splits == 1 || part.len() >= n * hkv * splits * g * (d + 2),
        "partials of {} values",
        part.len()
    );
    let f = func(dev, Module::Attention, name)?;
    let smem = paged_decode_smem(d, g);
    allow_smem(&f, smem)?;
    let stream = dev.cuda_stream();
    let scale = 1.0 / (d as f32).sqrt();
    let (stride, hqi, hkvi) = (
        int(pool.stride, "stride")?,
        int(heads_q, "heads_q")?,
        int(hkv, "heads_kv")?,
    );
    let (bs, window, si) = (
        int(pool.block_size, "block_size")?,
        pool.window()?,
        int(splits, "splits")?,
    );
    let mut b = f.builder(&stream);
    b.arg(&q.addr)
        .arg(&pool.k.addr)
        .arg(&pool.v.addr)
        .arg(&out.addr);
    b.arg(&entries.addr).arg(&pool.tables.addr).arg(&stride);
    b.arg(&hqi).arg(&hkvi).arg(&bs).arg(&window).arg(&scale);
    b.arg(&si).arg(&part.addr);
    let grid = (
        dim(n, "entries")?,
        dim(hkv, "heads_kv")?,
        dim(splits, "splits")?,
    );
    let cfg = config(grid, (DECODE_WARPS * 32) as u32, smem)?;
    // SAFETY: DECODE_WARPS warps, as the kernel is built for, and the shared memory it carves
    // for its G = heads_q / heads_kv ∈ {1, 2, 4, 8} query heads (each warp's K/V ring, the
    // warps' partial outputs), allowed above; head_dim 64 or 128, pools of whole blocks,
    // 16-byte aligned for the 16-byte key and value loads, `n` entries of 3 ints, and with splits the partials' scratch (all
    // checked). Device-side values are the caller's duty: each entry's row lies in q and out,
    // its table row exists, and its first `keys` tokens are covered by that row's blocks (the
    // serving engine builds them from the scheduler's step).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    if splits == 1 {
        return Ok(());
    }
    let f = func(dev, Module::Attention, "paged_decode_combine")?;
    let di = int(d, "head_dim")?;
    let mut b = f.builder(&stream);
    b.arg(&part.addr).arg(&entries.addr).arg(&out.addr);
    b.arg(&hqi).arg(&hkvi).arg(&di).arg(&si);
    let cfg = config((dim(n, "entries")?, dim(hkv, "heads_kv")?, 1), 256, 0)?;
    // SAFETY: block (e, kvh) reads the `splits` partials of its G heads, inside the scratch
    // (its length checked above), and writes the G heads of entry e's row of `out` (a row of q
    // and out by the caller's duty, as above).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}
