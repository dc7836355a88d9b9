//! Launchers of `kernels/quant.cu`: per-token int8 activation quantization (alone, or in the
//! RMSNorm that produces the activations: also fp8's, in `kernels/gemm_fp8.cu`) and the epilogues
//! of the int8 GEMM (W8A8).

use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::gemm_q8::Q8Kind;
use super::norm_rope::RmsNormRows;
use super::{allow_smem, config, cuda_err, dim, func, int, or_null, require, Dev, Kernel, Module};

/// q [rows, k] (int8, stored as bytes), scale [rows] = vLLM's dynamic per-token quantization of
/// x [rows, k]: scale = max |x| / 127, q = round-half-even(x / scale).
pub(crate) fn quant_rows_int8(
    dev: &CudaDevice,
    x: Dev<bf16>,
    q: Dev<u8>,
    scale: Dev<f32>,
    rows: usize,
    k: usize,
) -> Result<()> {
    let names = ("quant_rows_int8", "quant_rows_int8_warp");
    quant_rows(dev, Module::Quant, names, x, q, scale, rows, k)
}

/// Values per row up to which the quantizers run one warp per row (`quant_rows_warp` in
/// common.cuh: the row held in registers, 16 chunks of 8 values per lane), beyond one block.
const WARP_ROW_MAX: usize = 32 * 8 * 16;

/// Blocks per multiprocessor the warp-per-row quantizer needs before it replaces the
/// block-per-row one: with eight rows a block, a decode step's few rows leave most
/// multiprocessors idle and each row's work on one warp. It came in for prefills (f19c0b3; no
/// measurable change there) and was then taken at every row count; the serving engine's
/// batch-1 decode step at that commit's successor (3c295b1, `reports/serve_bench`) read W8A8
/// 1.532 and FP8 1.576 ms against 1.362 and 1.425 at 62e5236, the block-per-row kernels' last run
/// there (bf16 1.390 against 1.399), so fewer rows than this go back to a block per row.
const WARP_ROWS_MIN_BLOCKS_PER_SM: usize = 2;

/// Launches a per-token 8-bit quantizer of `module` (int8 here, fp8 e4m3 in gemm_q8.rs) named
/// `names.0` (a block per row) or, for rows of at most [`WARP_ROW_MAX`] values and enough of
/// them ([`WARP_ROWS_MIN_BLOCKS_PER_SM`]), `names.1` (a warp per row): all read a row of bf16 and
/// write its bytes and its scale, the same in both.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quant_rows(
    dev: &CudaDevice,
    module: Module,
    (name, warp_name): (&'static str, &'static str),
    x: Dev<bf16>,
    q: Dev<u8>,
    scale: Dev<f32>,
    rows: usize,
    k: usize,
) -> Result<()> {
    require!(
        name,
        k.is_multiple_of(8),
        "k {k}: 16-byte loads, 8-byte stores"
    );
    require!(
        name,
        x.aligned(16) && q.aligned(8),
        "x 16-byte, q 8-byte aligned"
    );
    require!(
        name,
        x.len() >= rows * k && q.len() >= rows * k,
        "[{rows}, {k}] buffers"
    );
    require!(
        name,
        scale.len() >= rows,
        "{} scales for {rows} rows",
        scale.len()
    );
    if rows == 0 {
        return Ok(());
    }
    let stream = dev.cuda_stream();
    let (ki, ri) = (int(k, "k")?, int(rows, "rows")?);
    let many_rows = rows.div_ceil(8) >= WARP_ROWS_MIN_BLOCKS_PER_SM * super::sm_count(dev)?;
    if k <= WARP_ROW_MAX && many_rows {
        let f = func(dev, module, warp_name)?;
        let mut b = f.builder(&stream);
        b.arg(&x.addr)
            .arg(&q.addr)
            .arg(&scale.addr)
            .arg(&ri)
            .arg(&ki);
        let cfg = config((dim(rows.div_ceil(8), "rows / 8")?, 1, 1), 256, 0)?;
        // SAFETY: warp w of block i takes row 8i + w when below `rows` (tested in the kernel),
        // reads x[r] as k / 8 ≤ 32 · 16 16-byte words (the chunks of its lanes' 16 registers)
        // and writes q[r] as 8-byte words and scale[r]: k % 8 == 0, x 16-byte and q 8-byte
        // aligned, all three buffers hold `rows` rows (checked).
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        return Ok(());
    }
    let f = func(dev, module, name)?;
    let mut b = f.builder(&stream);
    b.arg(&x.addr).arg(&q.addr).arg(&scale.addr).arg(&ki);
    let cfg = config((dim(rows, "rows")?, 1, 1), 256, 0)?;
    // SAFETY: one block of 256 threads (a multiple of 32 for block_reduce) per row reads x[r] as
    // 16-byte words and writes q[r] as 8-byte words and scale[r]: k % 8 == 0, x 16-byte and q
    // 8-byte aligned, all three buffers hold `rows` rows (checked).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// `rmsnorm_rows` of `a` (one input row per output row: row_step 1, no offset, no index) whose
/// output rows also leave, in q [rows, n] and scale [rows], exactly what `quant_rows_int8` or
/// `quant_rows_fp8` (by `kind`) would make of them: the norm in front of an 8-bit GEMM, without
/// the quantizer's own launch and read of the rows.
pub(crate) fn rmsnorm_quant_rows(
    dev: &CudaDevice,
    a: &RmsNormRows,
    kind: Q8Kind,
    q: Dev<u8>,
    scale: Dev<f32>,
) -> Result<()> {
    let (module, name) = match kind {
        Q8Kind::Int8 => (Module::Quant, "rmsnorm_quant_int8"),
        Q8Kind::Fp8 => (Module::GemmFp8, "rmsnorm_quant_fp8"),
    };
    a.check(name)?;
    let (rows, n) = (a.rows, a.n);
    require!(
        name,
        a.row_step == 1 && a.row_off == 0 && a.idx.is_none(),
        "output row r normalises input row r"
    );
    check_quantized_rows(name, q, scale, rows, n)?;
    if rows == 0 {
        return Ok(());
    }
    let f = func(dev, module, name)?;
    let stream = dev.cuda_stream();
    let (ni, prev) = (int(n, "n")?, or_null(a.prev));
    let mut b = f.builder(&stream);
    b.arg(&a.x.addr).arg(&a.w.addr).arg(&prev).arg(&a.out.addr);
    b.arg(&ni).arg(&a.eps).arg(&q.addr).arg(&scale.addr);
    let cfg = config((dim(rows, "rows")?, 1, 1), 256, 0)?;
    // SAFETY: one block of 256 threads (a multiple of 32 for block_reduce) per row r reads x[r]
    // and the weight as 16-byte words, writes out[r] (16-byte words), then q[r] (8-byte words)
    // and scale[r]: n % 8 == 0, x, w, out 16-byte and q 8-byte aligned, every buffer holds
    // `rows` rows (all checked here and in RmsNormRows::check).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// The epilogue of an int8 GEMM: acc [m, ·] int32 with per-row activation scales sx [m] and
/// per-channel weight scales sw [·] → y [m, n] bf16.
pub(crate) struct Int8Epilogue<'a> {
    pub acc: Dev<'a, i32>,
    pub sx: Dev<'a, f32>,
    pub sw: Dev<'a, f32>,
    pub y: Dev<'a, bf16>,
    pub m: usize,
    /// outputs per row (for the gated epilogue: half of acc's columns)
    pub n: usize,
}

impl Int8Epilogue<'_> {
    /// `cols`: acc's columns (n, or 2n gated); `with_y`: whether the kernel writes y.
    fn check(&self, kernel: &str, cols: usize, with_y: bool) -> Result<()> {
        let (m, n) = (self.m, self.n);
        require!(
            kernel,
            n.is_multiple_of(4),
            "n {n}: four outputs per thread"
        );
        require!(
            kernel,
            self.acc.aligned(16) && self.sw.aligned(16),
            "16-byte vector loads"
        );
        let y_ok = |ok: bool| ok || !with_y;
        require!(kernel, y_ok(self.y.aligned(8)), "8-byte stores");
        require!(
            kernel,
            self.acc.len() >= m * cols,
            "acc of {} values",
            self.acc.len()
        );
        require!(
            kernel,
            self.sw.len() >= cols && self.sx.len() >= m,
            "scales"
        );
        require!(
            kernel,
            y_ok(self.y.len() >= m * n),
            "output of {} values",
            self.y.len()
        );
        Ok(())
    }
}

/// y[m, n] = bf16(acc[m, n] · sx[m] · sw[n]).
pub(crate) fn int8_epilogue(dev: &CudaDevice, a: &Int8Epilogue) -> Result<()> {
    const K: &str = "int8_epilogue";
    a.check(K, a.n, true)?;
    let f = func(dev, Module::Quant, K)?;
    let stream = dev.cuda_stream();
    let (mi, ni) = (int(a.m, "m")?, int(a.n, "n")?);
    let mut b = f.builder(&stream);
    b.arg(&a.acc.addr)
        .arg(&a.sx.addr)
        .arg(&a.sw.addr)
        .arg(&a.y.addr);
    b.arg(&mi).arg(&ni);
    let grid = (dim((a.n / 4).div_ceil(256), "n / 1024")?, dim(a.m, "m")?, 1);
    let cfg = config(grid, 256, 0)?;
    // SAFETY: thread (i, m) with i < n / 4 (the kernel tests it) reads acc[m, 4i..4i+4] and
    // sw[4i..4i+4] as 16-byte vectors and sx[m], and writes y[m, 4i..4i+4] as 8 bytes:
    // n % 4 == 0, the alignments and every buffer's length checked.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// The gated activation from the stacked gate/up int8 GEMM: acc [m, 2n] (gate | up), sw [2n],
/// y [m, n] = bf16(bf16(silu(g)) · u) with g, u as `int8_epilogue` would give them.
pub(crate) fn int8_silu_epilogue(dev: &CudaDevice, a: &Int8Epilogue) -> Result<()> {
    const K: &str = "int8_silu_epilogue";
    a.check(K, 2 * a.n, true)?;
    let f = func(dev, Module::Quant, K)?;
    let stream = dev.cuda_stream();
    let (mi, ni) = (int(a.m, "m")?, int(a.n, "n")?);
    let mut b = f.builder(&stream);
    b.arg(&a.acc.addr)
        .arg(&a.sx.addr)
        .arg(&a.sw.addr)
        .arg(&a.y.addr);
    b.arg(&mi).arg(&ni);
    let grid = (dim((a.n / 4).div_ceil(256), "n / 1024")?, dim(a.m, "m")?, 1);
    let cfg = config(grid, 256, 0)?;
    // SAFETY: thread (i, m) with i < n / 4 (tested in the kernel) reads acc[m, 4i..] and
    // acc[m, n + 4i..], sw[4i..] and sw[n + 4i..] as 16-byte vectors (n % 4 == 0 keeps the up
    // half 16-byte aligned too) and writes y[m, 4i..4i+4]: acc [m, 2n], sw [2n], sx [m] and
    // y [m, n] inside their buffers, alignments checked.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// Checks of a per-token quantization written beside rows of `n` values: q [rows, n] bytes
/// (8-byte aligned: 8-byte stores) and scale [rows].
pub(crate) fn check_quantized_rows(
    kernel: &str,
    q: Dev<u8>,
    scale: Dev<f32>,
    rows: usize,
    n: usize,
) -> Result<()> {
    require!(kernel, q.aligned(8), "q 8-byte aligned");
    require!(
        kernel,
        q.len() >= rows * n && scale.len() >= rows,
        "[{rows}, {n}] quantized rows and their scales"
    );
    Ok(())
}

/// [`int8_silu_epilogue`] whose output rows also leave, in q [m, n] and scale [m], exactly what
/// [`quant_rows_int8`] would make of them: down's input quantized without a pass of its own.
/// With `keep_y` false the bf16 rows are not written (`a.y` is not touched): where only the int8
/// product reads the activation.
pub(crate) fn int8_silu_epilogue_quant(
    dev: &CudaDevice,
    a: &Int8Epilogue,
    keep_y: bool,
    q: Dev<u8>,
    scale: Dev<f32>,
) -> Result<()> {
    const K: &str = "int8_silu_epilogue_quant";
    a.check(K, 2 * a.n, keep_y)?;
    require!(
        K,
        a.n.is_multiple_of(8) && (a.y.aligned(16) || !keep_y),
        "n {}: 16-byte stores of 8 outputs",
        a.n
    );
    check_quantized_rows(K, q, scale, a.m, a.n)?;
    if a.m == 0 {
        return Ok(());
    }
    let f = func(dev, Module::Quant, K)?;
    let stream = dev.cuda_stream();
    let ni = int(a.n, "n")?;
    let (y, stage) = staged_row(&f, keep_y.then_some(a.y), a.n)?;
    let mut b = f.builder(&stream);
    b.arg(&a.acc.addr).arg(&a.sx.addr).arg(&a.sw.addr).arg(&y);
    b.arg(&ni).arg(&q.addr).arg(&scale.addr);
    let cfg = config((dim(a.m, "m")?, 1, 1), 256, stage)?;
    // SAFETY: one block of 256 threads (a multiple of 32 for block_reduce) per row m reads
    // acc[m, 8c..8c+8] and acc[m, n + 8c..], sw[8c..] and sw[n + 8c..] as 16-byte vectors for
    // its chunks c < n / 8 (n % 8 == 0 keeps the up half aligned), sx[m], writes y[m, 8c..] as
    // 16 bytes (or, y null, the same chunks of its n · 2 bytes of shared memory), q[m, 8c..] as
    // 8 bytes and scale[m]: every buffer's length and alignment checked.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// The y argument of a gated quantizing epilogue (`silu_mul_quant_row` in common.cuh) and its
/// dynamic shared memory: `y` where the bf16 rows are kept, else null and a row of `n` bf16
/// staged in shared memory (allowed beyond 48 KiB where the GPU has it).
pub(crate) fn staged_row(f: &Kernel, y: Option<Dev<bf16>>, n: usize) -> Result<(u64, usize)> {
    let stage = if y.is_some() { 0 } else { 2 * n };
    allow_smem(f, stage)?;
    Ok((or_null(y), stage))
}
