//! Launchers of `kernels/gemm_q8.cu` (int8), `kernels/gemm_fp8.cu` (fp8 e4m3, sm_89+) and
//! `kernels/gemm_q8_wgmma.cu` (both, on Hopper's warpgroup MMA): the W8A8 tensor-core GEMM with
//! the dequantization (and, gated, SiLU·mul) in its epilogue, y = bf16(q · Wᵀ · sx · sw), and the
//! per-token fp8 activation quantization.

use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::{
    allow_smem, config, cuda_err, dim, func, int, require, sm_count, wgmma_on, wgmma_supported,
    Dev, Module,
};

/// The 8-bit format of both operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Q8Kind {
    /// int8, int32 accumulation (every GPU the runtime runs on)
    Int8,
    /// fp8 e4m3, f32 accumulation (sm_89+)
    Fp8,
}

/// One CTA tile of the kernels: BM × BN outputs (BN weight rows; gated, BN / 2 outputs), BK-byte
/// K-tiles through a `stages`-deep ring. Mirrors `Q8_TILES` in `kernels/gemm_q8.cuh` (mma.sync,
/// every GPU) and `WG_TILES` in `kernels/gemm_q8_wgmma.cu` (`wgmma`: warpgroup MMA, compute
/// capability 9.0 only); the kernel is `gemm_{q8,fp8}[_silu]_<suffix>` of that module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Q8Tile {
    pub name: &'static str,
    /// the kernels: int8, int8 gated, fp8, fp8 gated
    kernels: [&'static str; 4],
    pub bm: usize,
    pub bn: usize,
    bk: usize,
    threads: u32,
    stages: usize,
    /// a tile of the warpgroup-MMA module
    pub wgmma: bool,
}

/// A tile of `Q8_TILES` by its kernel suffix (with `true` last: of `WG_TILES`).
macro_rules! tile {
    ($name:literal, $suffix:literal, ($bm:expr, $bn:expr, $bk:expr), $warps:expr, $stages:expr) => {
        tile!($name, $suffix, ($bm, $bn, $bk), $warps, $stages, false)
    };
    ($name:literal, $suffix:literal, ($bm:expr, $bn:expr, $bk:expr), $warps:expr, $stages:expr,
     $wgmma:expr) => {
        Q8Tile::new(
            $name,
            [
                concat!("gemm_q8_", $suffix),
                concat!("gemm_q8_silu_", $suffix),
                concat!("gemm_fp8_", $suffix),
                concat!("gemm_fp8_silu_", $suffix),
            ],
            ($bm, $bn, $bk),
            $warps,
            $stages,
            $wgmma,
        )
    };
}

/// A tile of `WG_TILES` (`kernels/gemm_q8_wgmma.cu`): 128-byte K-tiles, 64 rows per warpgroup.
macro_rules! wg_tile {
    ($name:literal, $suffix:literal, ($bm:expr, $bn:expr), $stages:expr) => {
        tile!($name, $suffix, ($bm, $bn, 128), $bm / 16, $stages, true)
    };
}

impl Q8Tile {
    const fn new(
        name: &'static str,
        kernels: [&'static str; 4],
        (bm, bn, bk): (usize, usize, usize),
        warps: u32,
        stages: usize,
        wgmma: bool,
    ) -> Self {
        Self {
            name,
            kernels,
            bm,
            bn,
            bk,
            threads: warps * 32,
            stages,
            wgmma,
        }
    }

    /// The dynamic shared memory: the ring (warpgroup-MMA tiles: and 1024 bytes of slack, for
    /// the kernel to align the ring to the swizzle's period).
    fn smem(&self) -> usize {
        self.stages * (self.bm + self.bn) * self.bk + if self.wgmma { 1024 } else { 0 }
    }

    /// CTAs for an [m, n] product (n weight rows).
    fn ctas(&self, m: usize, n: usize) -> usize {
        m.div_ceil(self.bm) * n.div_ceil(self.bn)
    }
}

/// decode (M ≤ 16): 16 × 32, four warps splitting each 256-byte K-tile's k-steps, 6 stages
/// (72 KiB of shared memory: 40 KiB of weights in flight per CTA)
pub const TILE_S: Q8Tile = tile!("s16x32", "s", (16, 32, 256), 4, 6);
/// the decode tile 16 × 16: twice the CTAs where 16 × 32 fills only half the SMs
pub const TILE_S16: Q8Tile = tile!("s16x16", "s16", (16, 16, 256), 4, 6);
/// mid M: 64 × 64, 2 × 2 warps, 64-byte K-tiles, 4 stages
pub const TILE_M: Q8Tile = tile!("m64x64", "m", (64, 64, 64), 4, 4);
/// 64 × 64 with 128-byte K-tiles, 4 stages
pub const TILE_M128K: Q8Tile = tile!("m64x64k128", "m128k", (64, 64, 128), 4, 4);
/// 32 × 64, 1 × 2 warps, each 128-byte K-tile split two ways, 4 stages
pub const TILE_N32: Q8Tile = tile!("n32x64", "n32", (32, 64, 128), 4, 4);
/// 64 × 128, 2 × 4 warps, 128-byte K-tiles, 3 stages
pub const TILE_W: Q8Tile = tile!("w64x128", "w", (64, 128, 128), 8, 3);
/// prefill: 128 × 128, 2 × 4 warps of 64 × 32, 64-byte K-tiles, 4 stages (64 KiB)
pub const TILE_L: Q8Tile = tile!("l128x128", "l", (128, 128, 64), 8, 4);
/// 128 × 128 with 128-byte K-tiles, 3 stages (96 KiB)
pub const TILE_L128K: Q8Tile = tile!("l128x128k128", "l128k", (128, 128, 128), 8, 3);

/// warpgroup MMA, prefill: 128 × 256, two warpgroups, 4 stages (192 KiB)
pub const TILE_WGL: Q8Tile = wg_tile!("wg128x256", "wl", (128, 256), 4);
/// warpgroup MMA: 128 × 128, two warpgroups, 3 stages (96 KiB: two CTAs per SM)
pub const TILE_WGM: Q8Tile = wg_tile!("wg128x128", "wm", (128, 128), 3);
/// warpgroup MMA, serving batches: 64 × 128, one warpgroup, 4 stages (96 KiB: two CTAs per SM)
pub const TILE_WGS: Q8Tile = wg_tile!("wg64x128", "ws", (64, 128), 4);

/// Every tile the kernels are built with (the benchmark times each; the last three run on
/// compute capability 9.0 only: [`tiles_on`]).
pub const TILES: [Q8Tile; 11] = [
    TILE_S, TILE_S16, TILE_M, TILE_M128K, TILE_N32, TILE_W, TILE_L, TILE_L128K, TILE_WGL, TILE_WGM,
    TILE_WGS,
];

/// The tiles of [`TILES`] whose kernels run on `dev` (the warpgroup-MMA ones need sm_90a).
pub fn tiles_on(dev: &CudaDevice) -> Result<Vec<Q8Tile>> {
    let wgmma = wgmma_supported(&dev.cuda_stream())?;
    Ok(TILES.into_iter().filter(|t| wgmma || !t.wgmma).collect())
}

/// The tile for an [m, n] product (n weight rows) on `sms` multiprocessors, by the int8 GEMM
/// sweep (`bench_runtime --gemm-sweep`, H200, every tile forced at the 1.2B's four shapes):
/// at M ≤ 16 the 16 × 16 decode tile (twice the CTAs of 16 × 32: 4–9% faster); to M = 64 the
/// 16 × 32 one, or for the wide gate/up product 64 × 64 with 128-byte K-tiles (10.0 µs against
/// 20.7); below M = 1024 64 × 64 with 128-byte K-tiles (o 8.5 µs against 10.6 at M = 256, down
/// 14.4 against 18.5), the wide product keeping 64-byte K-tiles (20.2 against 25.1); from
/// M = 1024 128 × 128 with 128-byte K-tiles (15–20% faster than 64-byte ones). The decode tiles
/// are used only where they give at least one CTA per SM or more rows would not help.
///
/// With `wgmma` (Hopper), products of 1024 rows or more take the 128 × 128 warpgroup-MMA tile
/// (two CTAs per SM): in the H200 sweep of 8140ea6 it beats every other tile of ours at 2,048
/// and 16,384 rows on all four shapes (the 128 × 256 one, one CTA per SM, by 1.04–1.43×; the
/// mma.sync tiles by 1.6–1.9×); below 1024 rows the mma.sync tiles above win on three shapes of
/// four.
pub fn pick_tile(m: usize, n: usize, sms: usize, wgmma: bool) -> Q8Tile {
    let wide = n >= 8192;
    if wgmma && m >= 1024 {
        return TILE_WGM;
    }
    if m <= 16 {
        if TILE_S.ctas(m, n) >= sms {
            TILE_S
        } else {
            TILE_S16
        }
    } else if m <= 64 {
        if wide {
            TILE_M128K
        } else {
            TILE_S
        }
    } else if m < 1024 {
        if wide {
            TILE_M
        } else {
            TILE_M128K
        }
    } else {
        TILE_L128K
    }
}

/// One W8A8 product: q [m, k] and W [n, k] 8-bit (as bytes), sx [m] per-token and sw [n]
/// per-channel f32 scales, y [m, n] bf16 (gated: [m, n/2], W = [gate; up]).
pub(crate) struct Q8Gemm<'a> {
    pub q: Dev<'a, u8>,
    pub w: Dev<'a, u8>,
    pub sx: Dev<'a, f32>,
    pub sw: Dev<'a, f32>,
    pub y: Dev<'a, bf16>,
    pub m: usize,
    /// weight rows (gated: 2 × the outputs)
    pub n: usize,
    pub k: usize,
}

/// y = bf16(q · Wᵀ · sx · sw), or gated y = silu(gate) · up with gate, up the two halves of W's
/// rows (rounded as `int8_silu_epilogue` rounds them), on the tile [`pick_tile`] chooses (or
/// `tile`, for the benchmark).
pub(crate) fn gemm_q8(
    dev: &CudaDevice,
    kind: Q8Kind,
    a: &Q8Gemm,
    gated: bool,
    tile: Option<Q8Tile>,
) -> Result<()> {
    let (m, n, k) = (a.m, a.n, a.k);
    let tile = match tile {
        Some(t) => t,
        None => pick_tile(m, n, sm_count(dev)?, wgmma_on(&dev.cuda_stream())?),
    };
    let name = tile.kernels[(kind == Q8Kind::Fp8) as usize * 2 + gated as usize];
    require!(
        name,
        k > 0 && k.is_multiple_of(16),
        "k {k}: whole 16-byte chunks"
    );
    require!(
        name,
        n.is_multiple_of(8),
        "n {n}: outputs in pairs, n8 fragments"
    );
    require!(name, a.q.aligned(16) && a.w.aligned(16), "16-byte cp.async");
    require!(name, a.y.aligned(4), "bf16 pairs stored as 4 bytes");
    require!(
        name,
        a.q.len() >= m * k && a.w.len() >= n * k,
        "operands [{m}, {k}] and [{n}, {k}]"
    );
    require!(
        name,
        a.sx.len() >= m && a.sw.len() >= n,
        "{} and {} scales for [{m}, {n}]",
        a.sx.len(),
        a.sw.len()
    );
    let outs = if gated { n / 2 } else { n };
    require!(
        name,
        a.y.len() >= m * outs,
        "output of {} values for [{m}, {outs}]",
        a.y.len()
    );
    if m == 0 {
        return Ok(());
    }
    let module = match (tile.wgmma, kind) {
        (true, _) => Module::GemmQ8Wgmma,
        (false, Q8Kind::Int8) => Module::GemmQ8,
        (false, Q8Kind::Fp8) => Module::GemmFp8,
    };
    let f = func(dev, module, name)?;
    allow_smem(&f, tile.smem())?;
    let stream = dev.cuda_stream();
    let (mi, ni, ki) = (int(m, "m")?, int(n, "n")?, int(k, "k")?);
    let mut b = f.builder(&stream);
    b.arg(&a.q.addr)
        .arg(&a.w.addr)
        .arg(&a.sx.addr)
        .arg(&a.sw.addr)
        .arg(&a.y.addr);
    b.arg(&mi).arg(&ni).arg(&ki);
    let grid = (
        dim(n.div_ceil(tile.bn), "n tiles")?,
        dim(m.div_ceil(tile.bm), "m tiles")?,
        1,
    );
    require!(name, grid.1 <= 65535, "{} row tiles (grid y)", grid.1);
    let cfg = config(grid, tile.threads, tile.smem())?;
    // SAFETY: CTA (x, y) reads q rows [y·BM, y·BM + BM) ∩ [0, m) and W rows of tile x (gated:
    // output columns [x·BN/2, x·BN/2 + BN/2) ∩ [0, n/2) of both halves) as 16-byte chunks below
    // k (k % 16 == 0; rows and chunks outside are zero-filled, never read), so every read lies in
    // the [m, k] and [n, k] operands, whose lengths and 16-byte alignment are checked; it reads
    // sx[row < m] and sw[col < n], and writes bf16 pairs y[row < m, col < n or n/2] at even
    // columns of rows of even width (4-byte aligned base, checked). The dynamic shared memory is
    // the tile's ring, allowed above 48 KiB by allow_smem; the block size is the one the
    // kernel's warp layout and __launch_bounds__ assume (a warpgroup tile aligns its ring within
    // the 1024 bytes of slack smem() adds).
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// The same product through cuBLAS's int8 GEMM (on `blas`'s stream) into `acc` [m, n] int32,
/// then the scales (and the gate) in a second pass (`int8_epilogue` / `int8_silu_epilogue`): the
/// path that wins at prefill sizes on Hopper (`reports/gemm_sweep`).
pub(crate) fn gemm_int8_cublas(
    dev: &CudaDevice,
    blas: &CudaBlas,
    a: &Q8Gemm,
    acc: Dev<i32>,
    gated: bool,
) -> Result<()> {
    gemm_int8_cublas_quant(dev, blas, a, acc, gated, None)
}

/// Where a gated 8-bit product also leaves its output's per-token quantization, the input of
/// the next product (down): bytes [m, n/2] and scales [m]; `keep_y`: whether the bf16 rows are
/// still written to the product's y (not where only that product reads them: the engines, and
/// the candle forward without calibration hooks).
#[derive(Clone, Copy)]
pub(crate) struct OutQuant<'a> {
    pub q: Dev<'a, u8>,
    pub scale: Dev<'a, f32>,
    pub keep_y: bool,
}

/// [`gemm_int8_cublas`], gated, whose output rows also leave their per-token int8 quantization
/// in `out_quant` where given: the input of the int8 down product.
pub(crate) fn gemm_int8_cublas_quant(
    dev: &CudaDevice,
    blas: &CudaBlas,
    a: &Q8Gemm,
    acc: Dev<i32>,
    gated: bool,
    out_quant: Option<OutQuant>,
) -> Result<()> {
    use super::gemm::gemm_int8;
    use super::quant::{int8_epilogue, int8_silu_epilogue, int8_silu_epilogue_quant, Int8Epilogue};
    if out_quant.is_some() && !gated {
        candle_core::bail!("gemm_int8_cublas: only the gated product quantizes its output");
    }
    gemm_int8(blas, a.q, a.w, acc, a.m, a.n, a.k)?;
    let e = Int8Epilogue {
        acc,
        sx: a.sx,
        sw: a.sw,
        y: a.y,
        m: a.m,
        n: if gated { a.n / 2 } else { a.n },
    };
    match (gated, out_quant) {
        (true, Some(o)) => int8_silu_epilogue_quant(dev, &e, o.keep_y, o.q, o.scale),
        (true, None) => int8_silu_epilogue(dev, &e),
        (false, _) => int8_epilogue(dev, &e),
    }
}

/// The same fp8 product through cuBLASLt's row-wise scaled fp8 GEMM (`gemm_lt`): y directly,
/// or, gated, the products into `gu` [m, n] and then y = silu(gate) · up (`silu_mul_rows`, the
/// rounding of the gated tiles).
pub(crate) fn gemm_fp8_lt(
    dev: &CudaDevice,
    lt: &super::gemm_lt::Fp8Lt,
    a: &Q8Gemm,
    gu: Option<Dev<bf16>>,
) -> Result<()> {
    gemm_fp8_lt_quant(dev, lt, a, gu, None)
}

/// [`gemm_fp8_lt`], gated, whose output rows also leave their per-token fp8 quantization in
/// `out_quant` (bytes [m, n/2], scales [m]) where given ([`silu_mul_quant_fp8`]): the input of
/// the fp8 down product.
pub(crate) fn gemm_fp8_lt_quant(
    dev: &CudaDevice,
    lt: &super::gemm_lt::Fp8Lt,
    a: &Q8Gemm,
    gu: Option<Dev<bf16>>,
    out_quant: Option<OutQuant>,
) -> Result<()> {
    match (gu, out_quant) {
        (None, None) => lt.gemm(a.q, a.w, a.sx, a.sw, a.y, a.m, a.n, a.k),
        (None, Some(_)) => {
            candle_core::bail!("gemm_fp8_lt: only the gated product quantizes its output")
        }
        (Some(gu), quant) => {
            lt.gemm(a.q, a.w, a.sx, a.sw, gu, a.m, a.n, a.k)?;
            match quant {
                Some(o) => {
                    let y = o.keep_y.then_some(a.y);
                    silu_mul_quant_fp8(dev, gu, y, o.q, o.scale, a.m, a.n / 2)
                }
                None => super::norm_rope::silu_mul_rows(dev, gu, a.y, a.m, a.n / 2),
            }
        }
    }
}

/// `silu_mul_rows` (y [rows, inter] = bf16(bf16(silu(gate)) · up) of gu [rows, 2·inter]) whose
/// output rows also leave, in q [rows, inter] and scale [rows], exactly what [`quant_rows_fp8`]
/// would make of them (sm_89+). With `y` None the bf16 rows are not written: where only the fp8
/// product reads the activation.
pub(crate) fn silu_mul_quant_fp8(
    dev: &CudaDevice,
    gu: Dev<bf16>,
    y: Option<Dev<bf16>>,
    q: Dev<u8>,
    scale: Dev<f32>,
    rows: usize,
    inter: usize,
) -> Result<()> {
    const K: &str = "silu_mul_quant_fp8";
    require!(
        K,
        inter.is_multiple_of(8) && gu.aligned(16) && y.is_none_or(|y| y.aligned(16)),
        "inter {inter}: 16-byte loads and stores of 8 values"
    );
    require!(
        K,
        gu.len() >= rows * 2 * inter && y.is_none_or(|y| y.len() >= rows * inter),
        "[{rows}, 2·{inter}] products and [{rows}, {inter}] outputs"
    );
    super::quant::check_quantized_rows(K, q, scale, rows, inter)?;
    if rows == 0 {
        return Ok(());
    }
    let f = func(dev, Module::GemmFp8, K)?;
    let stream = dev.cuda_stream();
    let i = int(inter, "inter")?;
    let (y, stage) = super::quant::staged_row(&f, y, inter)?;
    let mut b = f.builder(&stream);
    b.arg(&gu.addr)
        .arg(&y)
        .arg(&i)
        .arg(&q.addr)
        .arg(&scale.addr);
    let cfg = config((dim(rows, "rows")?, 1, 1), 256, stage)?;
    // SAFETY: one block of 256 threads (a multiple of 32 for block_reduce) per row r reads
    // gu[r, 8c..8c+8] and gu[r, inter + 8c..] as 16-byte words for its chunks c < inter / 8
    // (inter % 8 == 0 keeps the up half aligned), writes y[r, 8c..] as 16 bytes (or, y null,
    // the same chunks of its inter · 2 bytes of shared memory), q[r, 8c..] as 8 bytes and
    // scale[r]: every buffer's length and alignment checked.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// q [rows, k] (fp8 e4m3 as bytes), scale [rows] = dynamic per-token fp8 quantization of
/// x [rows, k]: scale = max |x| / 448, q = e4m3(x / scale) (sm_89+).
pub(crate) fn quant_rows_fp8(
    dev: &CudaDevice,
    x: Dev<bf16>,
    q: Dev<u8>,
    scale: Dev<f32>,
    rows: usize,
    k: usize,
) -> Result<()> {
    let names = ("quant_rows_fp8", "quant_rows_fp8_warp");
    super::quant::quant_rows(dev, Module::GemmFp8, names, x, q, scale, rows, k)
}
