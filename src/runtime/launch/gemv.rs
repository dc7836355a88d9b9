//! Launchers of `kernels/gemv.cu`: y = x · Wᵀ for a few rows on bf16 or packed int4 weights, the
//! single-row GEMVs with a prologue that builds x, and the int4 → bf16 dequantization.

use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::{allow_smem, config, cuda_err, dim, func, int, or_null, require, Dev, Module};

/// A bf16 weight W [n, k], row-major.
pub(crate) struct Dense<'a> {
    pub w: Dev<'a, bf16>,
    pub n: usize,
    pub k: usize,
}

impl Dense<'_> {
    fn check(&self, kernel: &str) -> Result<()> {
        let (n, k) = (self.n, self.k);
        require!(kernel, k.is_multiple_of(8), "k {k}: 16-byte weight loads");
        require!(kernel, self.w.aligned(16), "16-byte aligned weight");
        require!(kernel, n > 0 && self.w.len() >= n * k, "weight [{n}, {k}]");
        Ok(())
    }
}

/// W4A16 weights as compressed-tensors stores them (pack-quantized, group strategy):
/// `packed` [n, k/8] words of eight nibbles (q + 8), `scales` [n, k/group], `zeros`
/// [n, k/group] (zero points in q units; none for symmetric).
pub(crate) struct Int4<'a> {
    pub packed: Dev<'a, u32>,
    pub scales: Dev<'a, bf16>,
    pub zeros: Option<Dev<'a, bf16>>,
    pub n: usize,
    pub k: usize,
    pub group: usize,
}

impl Int4<'_> {
    fn check(&self, kernel: &str) -> Result<()> {
        let (n, k, g) = (self.n, self.k, self.group);
        require!(
            kernel,
            g.is_power_of_two() && g >= 32,
            "group {g}: a power of two ≥ 32"
        );
        require!(kernel, k.is_multiple_of(g), "k {k} in whole groups of {g}");
        require!(
            kernel,
            n > 0 && self.packed.len() >= n * k / 8,
            "packed [{n}, {k}/8]"
        );
        let groups = n * (k / g);
        require!(kernel, self.scales.len() >= groups, "scales [{n}, {k}/{g}]");
        require!(
            kernel,
            self.zeros.is_none_or(|z| z.len() >= groups),
            "zeros [{n}, {k}/{g}]"
        );
        Ok(())
    }
}

/// Activation rows x [rows, k] and outputs y [rows, n] of a few-row GEMV.
fn check_rows(
    kernel: &str,
    x: Dev<bf16>,
    y: Dev<bf16>,
    n: usize,
    k: usize,
    rows: usize,
) -> Result<()> {
    require!(kernel, rows > 0, "no rows");
    require!(kernel, x.aligned(16), "16-byte aligned input rows");
    require!(
        kernel,
        x.len() >= rows * k,
        "input of {} values for [{rows}, {k}]",
        x.len()
    );
    require!(
        kernel,
        y.len() >= rows * n,
        "output of {} values for [{rows}, {n}]",
        y.len()
    );
    Ok(())
}

/// y [rows, n] = x [rows, k] · Wᵀ, one warp per output feature (meant for rows ≤ 4; it is
/// correct for any).
pub(crate) fn gemv_bf16(
    dev: &CudaDevice,
    w: &Dense,
    x: Dev<bf16>,
    y: Dev<bf16>,
    rows: usize,
) -> Result<()> {
    const K: &str = "gemv_bf16";
    w.check(K)?;
    check_rows(K, x, y, w.n, w.k, rows)?;
    let (name, nb) = if rows == 1 {
        ("gemv_bf16_1", 1)
    } else {
        ("gemv_bf16_4", 4)
    };
    let f = func(dev, Module::Gemv, name)?;
    let stream = dev.cuda_stream();
    let (n, k, r) = (int(w.n, "n")?, int(w.k, "k")?, int(rows, "rows")?);
    let mut b = f.builder(&stream);
    b.arg(&w.w.addr)
        .arg(&x.addr)
        .arg(&y.addr)
        .arg(&n)
        .arg(&k)
        .arg(&r);
    let grid = (
        dim(w.n.div_ceil(4), "n / 4")?,
        dim(rows.div_ceil(nb), "rows / nb")?,
        1,
    );
    let cfg = config(grid, 128, 0)?;
    // SAFETY: warp n < N (the kernel tests it) reads weight row n and rows r0..r0+nb of x (nb
    // clipped to `rows`) as 16-byte words and writes y[r, n]: k % 8 == 0, W and x 16-byte
    // aligned, W [n, k], x [rows, k] and y [rows, n] inside their buffers (all checked).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// y [rows, n] = x [rows, k] · Wᵀ straight from packed int4 weights (1, 4 or 16 rows per block
/// row: the weights are read once per block row).
pub(crate) fn gemv_w4(
    dev: &CudaDevice,
    w: &Int4,
    x: Dev<bf16>,
    y: Dev<bf16>,
    rows: usize,
) -> Result<()> {
    const K: &str = "gemv_w4";
    w.check(K)?;
    check_rows(K, x, y, w.n, w.k, rows)?;
    let (name, nb) = match rows {
        1 => ("gemv_w4_1", 1),
        2..=4 => ("gemv_w4_4", 4),
        _ => ("gemv_w4_16", 16),
    };
    let f = func(dev, Module::Gemv, name)?;
    let stream = dev.cuda_stream();
    let z = or_null(w.zeros);
    let (n, k, g, r) = (
        int(w.n, "n")?,
        int(w.k, "k")?,
        int(w.group, "group")?,
        int(rows, "rows")?,
    );
    let mut b = f.builder(&stream);
    b.arg(&w.packed.addr)
        .arg(&w.scales.addr)
        .arg(&z)
        .arg(&x.addr)
        .arg(&y.addr);
    b.arg(&n).arg(&k).arg(&g).arg(&r);
    let grid = (
        dim(w.n.div_ceil(4), "n / 4")?,
        dim(rows.div_ceil(nb), "rows / nb")?,
        1,
    );
    let cfg = config(grid, 128, 0)?;
    // SAFETY: warp n < N (tested in the kernel) reads packed row n word by word, its group's
    // scale (and zero point where `zeros` is not null), and x rows r0..r0+nb (clipped to `rows`)
    // as 16-byte words; it writes y[r, n]. Checked: k a whole number of groups, the group a power
    // of two ≥ 32 (a word never straddles groups), packed/scales/zeros [n, ·] and x [rows, k],
    // y [rows, n] inside their buffers, x 16-byte aligned.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// How a single-row GEMV builds its input x [k] in shared memory before the product.
pub(crate) enum Prologue<'a> {
    /// x = a [k]
    Plain(Dev<'a, bf16>),
    /// x = bf16(residual + bf16(rmsnorm(a)·w)), the post-norm residual; `out` receives x
    NormResidual {
        a: Dev<'a, bf16>,
        w: Dev<'a, bf16>,
        residual: Dev<'a, bf16>,
        out: Dev<'a, bf16>,
        eps: f32,
    },
    /// x = bf16(bf16(silu(gu[..k]))·gu[k..]), the gated MLP activation from gu [2k]
    SiluGate(Dev<'a, bf16>),
}

impl Prologue<'_> {
    /// (mode, a, b, c, d, eps) as the kernels take them; null and 0 where unused.
    fn args(&self) -> (i32, u64, u64, u64, u64, f32) {
        match *self {
            Prologue::Plain(a) => (0, a.addr, 0, 0, 0, 0.0),
            Prologue::NormResidual {
                a,
                w,
                residual,
                out,
                eps,
            } => (1, a.addr, w.addr, residual.addr, out.addr, eps),
            Prologue::SiluGate(gu) => (2, gu.addr, 0, 0, 0, 0.0),
        }
    }

    fn check(&self, kernel: &str, k: usize) -> Result<()> {
        let all =
            |bufs: &[Dev<bf16>], len: usize| bufs.iter().all(|b| b.aligned(16) && b.len() >= len);
        let ok = match *self {
            Prologue::Plain(a) => all(&[a], k),
            Prologue::NormResidual {
                a,
                w,
                residual,
                out,
                ..
            } => all(&[a, w, residual, out], k),
            Prologue::SiluGate(gu) => all(&[gu], 2 * k),
        };
        require!(
            kernel,
            ok,
            "prologue inputs: 16-byte aligned, k = {k} values (2k for the gate)"
        );
        Ok(())
    }
}

/// Dynamic shared memory of a single-row GEMV with input size k: x in f32 and 32 floats of
/// reduction scratch.
pub(crate) fn single_row_smem(k: usize) -> usize {
    (k + 32) * 4
}

/// Lets the single-row GEMVs take inputs of up to `max_k` values (their shared memory beyond
/// 48 KiB must be allowed once per device before launching).
pub(crate) fn allow_single_row(dev: &CudaDevice, max_k: usize) -> Result<()> {
    let smem = single_row_smem(max_k);
    allow_smem(&func(dev, Module::Gemv, "gemv1x_bf16")?, smem)?;
    allow_smem(&func(dev, Module::Gemv, "gemv1x_w4")?, smem)
}

fn check_single_row(kernel: &str, x: &Prologue, y: Dev<bf16>, n: usize, k: usize) -> Result<()> {
    x.check(kernel, k)?;
    require!(kernel, y.len() >= n, "output of {} values for {n}", y.len());
    Ok(())
}

/// y [n] = x · Wᵀ for one row whose x [k] the prologue builds; two outputs per warp, 8 warps
/// per block.
pub(crate) fn gemv1x_bf16(dev: &CudaDevice, w: &Dense, x: &Prologue, y: Dev<bf16>) -> Result<()> {
    const K: &str = "gemv1x_bf16";
    w.check(K)?;
    check_single_row(K, x, y, w.n, w.k)?;
    let f = func(dev, Module::Gemv, K)?;
    let stream = dev.cuda_stream();
    let (mode, a, pb, c, d, eps) = x.args();
    let (n, k) = (int(w.n, "n")?, int(w.k, "k")?);
    let mut b = f.builder(&stream);
    b.arg(&w.w.addr)
        .arg(&mode)
        .arg(&a)
        .arg(&pb)
        .arg(&c)
        .arg(&d)
        .arg(&eps);
    b.arg(&y.addr).arg(&n).arg(&k);
    let cfg = config(
        (dim(w.n.div_ceil(16), "n / 16")?, 1, 1),
        256,
        single_row_smem(w.k),
    )?;
    // SAFETY: 256 threads (8 warps, a multiple of 32 for block_reduce) and (k + 32) floats of
    // shared memory, as the kernel indexes them; a launch above the allowed shared memory fails
    // with an error (see allow_single_row). Weight rows min(n0, N − 1) and min(n0 + 1, N − 1) are
    // read as 16-byte words (k % 8 == 0, W 16-byte aligned, [n, k] inside, checked); the
    // prologue's buffers hold k values (2k for the gate) and are 16-byte aligned (checked), only
    // block 0 writes `out`; y has n values and warps with n0 ≥ N write nothing.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// y [n] = x · Wᵀ for one row on packed int4 weights, x [k] built by the prologue.
pub(crate) fn gemv1x_w4(dev: &CudaDevice, w: &Int4, x: &Prologue, y: Dev<bf16>) -> Result<()> {
    const K: &str = "gemv1x_w4";
    w.check(K)?;
    check_single_row(K, x, y, w.n, w.k)?;
    let f = func(dev, Module::Gemv, K)?;
    let stream = dev.cuda_stream();
    let (mode, a, pb, c, d, eps) = x.args();
    let z = or_null(w.zeros);
    let (n, k) = (int(w.n, "n")?, int(w.k, "k")?);
    // log2 of the words per group (a power of two: the group is, and at least 32)
    let lg = (w.group / 8).trailing_zeros() as i32;
    let mut b = f.builder(&stream);
    b.arg(&w.packed.addr).arg(&w.scales.addr).arg(&z);
    b.arg(&mode).arg(&a).arg(&pb).arg(&c).arg(&d).arg(&eps);
    b.arg(&y.addr).arg(&n).arg(&k).arg(&lg);
    let cfg = config(
        (dim(w.n.div_ceil(16), "n / 16")?, 1, 1),
        256,
        single_row_smem(w.k),
    )?;
    // SAFETY: as for gemv1x_bf16 (block, shared memory, prologue, y); the weights are read as
    // 32-bit words of rows min(n0, N − 1), min(n0 + 1, N − 1) with their group's scale (and zero
    // point where not null): the group a power of two ≥ 32 so `lg` is exact, k a whole number of
    // groups, packed/scales/zeros [n, ·] inside their buffers (checked).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// out [n, k] = the bf16 weight the packed int4 weights stand for (for many-row products
/// through cuBLAS).
pub(crate) fn dequant_w4(dev: &CudaDevice, w: &Int4, out: Dev<bf16>) -> Result<()> {
    const K: &str = "dequant_w4";
    w.check(K)?;
    require!(
        K,
        out.len() >= w.n * w.k,
        "output of {} values for [{}, {}]",
        out.len(),
        w.n,
        w.k
    );
    require!(
        K,
        out.aligned(16),
        "16-byte aligned output (8 values per store)"
    );
    let f = func(dev, Module::Gemv, K)?;
    let stream = dev.cuda_stream();
    let z = or_null(w.zeros);
    let (n, k, g) = (int(w.n, "n")?, int(w.k, "k")?, int(w.group, "group")?);
    let words = w.n * w.k / 8;
    let mut b = f.builder(&stream);
    b.arg(&w.packed.addr)
        .arg(&w.scales.addr)
        .arg(&z)
        .arg(&out.addr);
    b.arg(&n).arg(&k).arg(&g);
    let cfg = config((dim(words.div_ceil(256), "words / 256")?, 1, 1), 256, 0)?;
    // SAFETY: thread i < n·k/8 (the kernel tests it) unpacks word i with its group's scale (and
    // zero point where not null) into out[8i..8i+8] as one 16-byte store: packed/scales/zeros
    // [n, ·] and out [n, k] inside their buffers, k a whole number of groups of a multiple of 8,
    // out 16-byte aligned (checked).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}
