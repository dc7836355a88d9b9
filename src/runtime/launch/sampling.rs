//! Launchers of `kernels/sampling.cu`: greedy argmax, the device-side advance of a replayed
//! decode step, the log-softmax.

use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::{
    allow_smem, config, cuda_err, dim, func, int, max_smem_per_block, require, Dev, Module,
};

/// out[r] = argmax_j logits[r, j] (lowest index among ties) for logits [rows, vocab].
pub(crate) fn argmax_rows(
    dev: &CudaDevice,
    logits: Dev<bf16>,
    out: Dev<u32>,
    rows: usize,
    vocab: usize,
) -> Result<()> {
    const K: &str = "argmax_rows";
    require!(
        K,
        logits.len() >= rows * vocab,
        "logits of {} values",
        logits.len()
    );
    require!(
        K,
        out.len() >= rows,
        "{} outputs for {rows} rows",
        out.len()
    );
    let f = func(dev, Module::Sampling, K)?;
    let stream = dev.cuda_stream();
    let v = int(vocab, "vocab")?;
    let mut b = f.builder(&stream);
    b.arg(&logits.addr).arg(&out.addr).arg(&v);
    let cfg = config((dim(rows, "rows")?, 1, 1), 1024, 0)?;
    // SAFETY: one block of 1024 threads (32 warps: the 32-entry shared arrays of the block
    // reduction) per row reads logits[r, ..vocab] and writes out[r]: both buffers hold their
    // `rows` rows (checked).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// ids[b] = next[b], pos[b] += 1 for b < batch: the next step's inputs, on the device.
pub(crate) fn advance(
    dev: &CudaDevice,
    next: Dev<u32>,
    ids: Dev<u32>,
    pos: Dev<i32>,
    batch: usize,
) -> Result<()> {
    const K: &str = "advance";
    require!(
        K,
        (1..=1024).contains(&batch),
        "batch {batch}: one block of threads"
    );
    require!(
        K,
        next.len() >= batch && ids.len() >= batch && pos.len() >= batch,
        "batch entries"
    );
    let f = func(dev, Module::Sampling, K)?;
    let stream = dev.cuda_stream();
    let bi = int(batch, "batch")?;
    let mut b = f.builder(&stream);
    b.arg(&next.addr).arg(&ids.addr).arg(&pos.addr).arg(&bi);
    let cfg = config((1, 1, 1), batch.next_multiple_of(32) as u32, 0)?;
    // SAFETY: thread b < batch (the kernel tests it) reads next[b] and updates ids[b], pos[b];
    // all three hold `batch` entries and one block of ≤ 1024 threads covers them (checked).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// Logits for [`log_softmax_rows`]: bf16 or f32.
#[derive(Clone, Copy)]
pub(crate) enum Logits<'a> {
    Bf16(Dev<'a, bf16>),
    F32(Dev<'a, f32>),
}

/// out [rows, v] = x − logsumexp(x) over each row of x [rows, v], f32 out: bf16 rows that fit
/// the GPU's shared memory (v · 2 bytes, v % 8 == 0, 16-byte aligned) are read once
/// (`log_softmax_bf16_staged`), others twice.
pub(crate) fn log_softmax_rows(
    dev: &CudaDevice,
    x: Logits,
    out: Dev<f32>,
    rows: usize,
    v: usize,
) -> Result<()> {
    const K: &str = "log_softmax_rows";
    let (addr, len, is_bf16) = match x {
        Logits::Bf16(x) => (x.addr, x.len, 1i32),
        Logits::F32(x) => (x.addr, x.len, 0i32),
    };
    require!(
        K,
        len >= rows * v,
        "input of {len} values for [{rows}, {v}]"
    );
    require!(K, out.len() >= rows * v, "output of {} values", out.len());
    let stream = dev.cuda_stream();
    let vi = int(v, "v")?;
    if let Logits::Bf16(x) = x {
        let stage = 2 * v;
        let fits = stage <= max_smem_per_block(dev)?;
        if fits && v.is_multiple_of(8) && x.aligned(16) && out.aligned(16) && rows > 0 {
            const S: &str = "log_softmax_bf16_staged";
            let f = func(dev, Module::Sampling, S)?;
            allow_smem(&f, stage)?;
            let mut b = f.builder(&stream);
            b.arg(&x.addr).arg(&out.addr).arg(&vi);
            let cfg = config((dim(rows, "rows")?, 1, 1), 1024, stage)?;
            // SAFETY: one block of 1024 threads (32 warps: the 32-entry shared arrays) per row r
            // reads x[r, ..v] as 16-byte chunks into its v · 2 bytes of shared memory and writes
            // out[r, ..v] as 16-byte f32 chunks: both hold [rows, v] (checked), v % 8 == 0 and
            // both 16-byte aligned, the shared memory within the device's limit (checked).
            unsafe { b.launch(cfg) }.map_err(cuda_err)?;
            return Ok(());
        }
    }
    let f = func(dev, Module::Sampling, K)?;
    let mut b = f.builder(&stream);
    b.arg(&addr).arg(&out.addr).arg(&vi).arg(&is_bf16);
    let cfg = config((dim(rows, "rows")?, 1, 1), 1024, 0)?;
    // SAFETY: one block of 1024 threads (32 warps: the 32-entry shared arrays) per row reads
    // x[r, ..v] as the element type `is_bf16` names (the variant it came in) and writes
    // out[r, ..v]; both hold [rows, v] (checked).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}
