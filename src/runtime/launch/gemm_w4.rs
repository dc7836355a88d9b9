//! Launchers of `kernels/gemm_w4.cu` (mma.sync, every GPU) and `kernels/gemm_w4_wgmma.cu`
//! (Hopper's warpgroup MMA): the W4A16 tensor-core GEMM on weights in the layout of
//! [`crate::runtime::w4_layout`] (shuffled once at load), its tile and split-K choice, and the
//! act-order column gather.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream};
use candle_core::cuda::CudaDevice;
use candle_core::Result;
use half::bf16;

use super::{
    allow_smem, config, cuda_err, dim, func, int, or_null, require, sm_count, wgmma_on,
    wgmma_supported, Dev, Module,
};
use crate::runtime::w4_layout::{W4Tiles, K_ALIGN, N_ALIGN};

/// A W4A16 weight on the device in the GEMM's layout: `q` Np·Kp/8 shuffled words, `scales`
/// and `zneg` (asymmetric only) [ceil(Kp/group), Np], `perm` [k] for act-order weights, and
/// `locks`, the split-K counters of its output tiles (zero between launches); `pairs` > 0: a
/// stacked gate/up Linear of `pairs` outputs each, stored with gate j and up j side by side
/// (columns 2j, 2j + 1), so that one thread holds both and the GEMM can gate in its epilogue.
#[derive(Clone, Copy)]
pub(crate) struct W4<'a> {
    pub q: Dev<'a, u32>,
    pub scales: Dev<'a, bf16>,
    pub zneg: Option<Dev<'a, bf16>>,
    pub perm: Option<Dev<'a, u32>>,
    pub locks: Dev<'a, u32>,
    pub n: usize,
    pub k: usize,
    pub group: usize,
    pub pairs: usize,
}

/// Split-K counters per weight: enough for every plan that splits (splits > 1 only while the
/// output tiles number fewer than two per multiprocessor).
const LOCKS: usize = 1024;

/// [`W4Tiles`] uploaded: the buffers a [`W4`] addresses.
#[derive(Debug)]
pub struct W4Weights {
    q: CudaSlice<u32>,
    scales: CudaSlice<bf16>,
    zneg: Option<CudaSlice<bf16>>,
    perm: Option<CudaSlice<u32>>,
    locks: CudaSlice<u32>,
    pub n: usize,
    pub k: usize,
    pub group: usize,
    /// gate/up pairs side by side (see [`W4`]); 0 for a plain Linear
    pub pairs: usize,
}

impl W4Weights {
    /// `pairs`: the tiles' rows are gate/up pairs side by side, `pairs` of each (0: plain).
    pub(crate) fn upload(t: &W4Tiles, pairs: usize, stream: &Arc<CudaStream>) -> Result<Self> {
        let up = |v: &[bf16]| stream.clone_htod(v).map_err(cuda_err);
        Ok(Self {
            q: stream.clone_htod(&t.q).map_err(cuda_err)?,
            scales: up(&t.scales)?,
            zneg: t.zneg.as_deref().map(up).transpose()?,
            perm: t
                .perm
                .as_deref()
                .map(|p| stream.clone_htod(p).map_err(cuda_err))
                .transpose()?,
            locks: stream.alloc_zeros::<u32>(LOCKS).map_err(cuda_err)?,
            n: t.n,
            k: t.k,
            group: t.group,
            pairs,
        })
    }

    /// Whether the activations are gathered (act-order weights).
    pub(crate) fn act_order(&self) -> bool {
        self.perm.is_some()
    }

    pub(crate) fn view(&self, stream: &CudaStream) -> W4<'_> {
        W4 {
            q: Dev::new(&self.q, stream),
            scales: Dev::new(&self.scales, stream),
            zneg: self.zneg.as_ref().map(|z| Dev::new(z, stream)),
            perm: self.perm.as_ref().map(|p| Dev::new(p, stream)),
            locks: Dev::new(&self.locks, stream),
            n: self.n,
            k: self.k,
            group: self.group,
            pairs: self.pairs,
        }
    }
}

/// Outputs from which a product of 17–64 rows takes the 64 × 64 warpgroup-MMA tile (see
/// [`plan_with`]).
pub const WGMMA_MIN_OUTS: usize = 3072;

/// A block tile of the kernel (rows × outputs; see the kernel file's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum W4Tile {
    /// 16 rows × 128 outputs, K tiles of 128, warps split K four ways (1–16 rows: memory bound)
    S16,
    /// 16 rows × 32 outputs, K tiles of 128, four warps along K (1–16 rows: four times the
    /// output tiles of S16, so fewer K splits to fill the GPU)
    N32,
    /// 32 rows, K tiles of 64
    M32,
    /// 64 rows, K tiles of 64
    M64,
    /// 128 rows, K tiles of 64 (compute bound)
    L128,
    /// warpgroup MMA (compute capability 9.0): 64 rows × 64 outputs, one warpgroup
    Wg64x64,
    /// warpgroup MMA: 128 rows × 64 outputs, one warpgroup
    Wg128x64,
    /// warpgroup MMA: 128 rows × 128 outputs, two warpgroups
    Wg128x128,
    /// warpgroup MMA: 256 rows × 128 outputs, two warpgroups (never split)
    Wg256x128,
}

impl W4Tile {
    /// Every tile the kernels are built with (the last four run on compute capability 9.0 only:
    /// [`tiles_on`]).
    pub const ALL: [W4Tile; 9] = [
        W4Tile::S16,
        W4Tile::N32,
        W4Tile::M32,
        W4Tile::M64,
        W4Tile::L128,
        W4Tile::Wg64x64,
        W4Tile::Wg128x64,
        W4Tile::Wg128x128,
        W4Tile::Wg256x128,
    ];

    /// Whether the tile is one of `kernels/gemm_w4_wgmma.cu`'s (sm_90a).
    pub fn wgmma(self) -> bool {
        matches!(
            self,
            W4Tile::Wg64x64 | W4Tile::Wg128x64 | W4Tile::Wg128x128 | W4Tile::Wg256x128
        )
    }

    /// (BM, BN, BK, threads, dynamic shared memory bytes) as `Cfg` in the kernel computes them
    /// (BM rows of y, BN outputs).
    fn shape(self) -> (usize, usize, usize, u32, usize) {
        if self.wgmma() {
            // warpgroups (64 outputs each), rows; 4 stages of: the rows' 64-wide K slice
            // (128 bytes each), the weight words, scale and zero-point rows, rounded up to
            // 1024 bytes; + 1024 bytes of alignment slack
            let (wg, bm): (usize, usize) = match self {
                W4Tile::Wg64x64 => (1, 64),
                W4Tile::Wg128x64 => (1, 128),
                W4Tile::Wg128x128 => (2, 128),
                _ => (2, 256),
            };
            let bn = 64 * wg;
            let stage = (bm * 128 + 4 * (bn / 32) * 256 + 2 * 4 * bn * 2).next_multiple_of(1024);
            return (bm, bn, 64, 128 * wg as u32, 4 * stage + 1024);
        }
        // warps along M, N, K; m16 and n8 tiles per warp; k16 steps per warp and K tile; stages
        let (wm, wn, wk, mtw, ntw, ksw, stages) = match self {
            W4Tile::S16 => (1, 2, 4, 1, 8, 2, 4),
            W4Tile::N32 => (1, 1, 4, 1, 4, 2, 4),
            W4Tile::M32 => (1, 4, 2, 2, 4, 2, 4),
            W4Tile::M64 => (1, 4, 2, 4, 4, 2, 4),
            _ => (2, 4, 1, 4, 4, 4, 4),
        };
        let (bm, bn, bk) = (16 * mtw * wm, 8 * ntw * wn, 16 * ksw * wk);
        let stage = bm * bk * 2 + (bk / 16) * (bn / 32) * 256 + 2 * (bk / 16) * bn * 2;
        let pipe = stages * stage;
        let red = (wk - 1) * wm * wn * mtw * ntw * 4 * 32 * 4;
        (bm, bn, bk, 32 * (wm * wn * wk) as u32, pipe.max(red))
    }

    pub fn name(self) -> &'static str {
        match self {
            W4Tile::S16 => "s16",
            W4Tile::N32 => "n32",
            W4Tile::M32 => "m32",
            W4Tile::M64 => "m64",
            W4Tile::L128 => "l128",
            W4Tile::Wg64x64 => "wg64x64",
            W4Tile::Wg128x64 => "wg128x64",
            W4Tile::Wg128x128 => "wg128x128",
            W4Tile::Wg256x128 => "wg256x128",
        }
    }

    fn kernel(self, zeros: bool) -> &'static str {
        match (self, zeros) {
            (W4Tile::S16, false) => "gemm_w4_s16",
            (W4Tile::S16, true) => "gemm_w4_s16_z",
            (W4Tile::N32, false) => "gemm_w4_n32",
            (W4Tile::N32, true) => "gemm_w4_n32_z",
            (W4Tile::M32, false) => "gemm_w4_m32",
            (W4Tile::M32, true) => "gemm_w4_m32_z",
            (W4Tile::M64, false) => "gemm_w4_m64",
            (W4Tile::M64, true) => "gemm_w4_m64_z",
            (W4Tile::L128, false) => "gemm_w4_l128",
            (W4Tile::L128, true) => "gemm_w4_l128_z",
            (W4Tile::Wg64x64, false) => "gemm_w4_wg64x64",
            (W4Tile::Wg64x64, true) => "gemm_w4_wg64x64_z",
            (W4Tile::Wg128x64, false) => "gemm_w4_wg128x64",
            (W4Tile::Wg128x64, true) => "gemm_w4_wg128x64_z",
            (W4Tile::Wg128x128, false) => "gemm_w4_wg128x128",
            (W4Tile::Wg128x128, true) => "gemm_w4_wg128x128_z",
            (W4Tile::Wg256x128, false) => "gemm_w4_wg256x128",
            (W4Tile::Wg256x128, true) => "gemm_w4_wg256x128_z",
        }
    }

    fn module(self) -> Module {
        if self.wgmma() {
            Module::GemmW4Wgmma
        } else {
            Module::GemmW4
        }
    }

    /// The most K splits worth their fixup (measured on an H200: beyond, re-reading the
    /// partials of many rows costs more than the parallelism gains).
    pub fn max_splits(self) -> usize {
        match self {
            W4Tile::S16 | W4Tile::N32 => 16,
            W4Tile::M32 => 8,
            W4Tile::M64 => 4,
            W4Tile::L128 => 2,
            W4Tile::Wg64x64 => 8,
            W4Tile::Wg128x64 => 4,
            W4Tile::Wg128x128 => 2,
            // its split-K fixup would need more registers than it has (the kernel traps)
            W4Tile::Wg256x128 => 1,
        }
    }
}

/// The tiles of [`W4Tile::ALL`] whose kernels run on `dev` (the warpgroup-MMA ones need sm_90a).
pub fn tiles_on(dev: &CudaDevice) -> Result<Vec<W4Tile>> {
    let wgmma = wgmma_supported(&dev.cuda_stream())?;
    Ok(W4Tile::ALL
        .into_iter()
        .filter(|t| wgmma || !t.wgmma())
        .collect())
}

/// How one product is launched: the tile and the number of K splits (1: no partials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct W4Plan {
    pub tile: W4Tile,
    pub splits: usize,
}

/// The plan for [m, k] × [n, k]ᵀ on `sms` multiprocessors with tile `tile` (None: by rows;
/// `wgmma`: the GPU runs the warpgroup-MMA tiles and they are on, [`wgmma_on`]).
/// With `wgmma` (H200 sweep, `kernels/gemm_w4_wgmma.cu`'s status): 17–64 rows on products of
/// at least [`WGMMA_MIN_OUTS`] outputs the 64 × 64 warpgroup-MMA tile (q/k/v at 64 rows 10.1 µs
/// against the 16-row tile's 11.7, gate/up 14.4 against 17.6; o and down stay on the 16-row
/// tile: 8.3 and 12.1 against 10.1 and 12.6), from 65 rows 128 × 128 (gate/up at 256 rows 24.7
/// against 64 × 64's 29.5), from 1024 rows 256 × 128 (1.6–1.9× the mma.sync tiles). Beyond 64
/// rows `int4::PackedInt4::route` sends every product to dequantize + cuBLAS where it can (the
/// larger tiles run act-order weights, which have no such route).
///
/// Else (chosen from H200 sweeps, `bench::gemm_w4`): 16 rows up to 64, beyond 128 where that
/// still makes a block per multiprocessor, else 64. At 64 rows, with each plan's splits, the
/// 16-row tile takes the 1.2B's four products in 49.3 µs, the 32-row tile in 51.0 (H200,
/// 2026-12-02). K is split until there are
/// about two blocks per multiprocessor, one for a single row (few rows are memory bound: the
/// whole GPU must stream the weights), into a number of splits that divides the K tiles
/// evenly, at most the tile's [`W4Tile::max_splits`] and with at least two K tiles per split.
///
/// Timed alone (a graph of back-to-back products), the 16-row tile is faster at about one
/// block per multiprocessor (H200, 2026-12-01: q/k/v at 16 rows 6.55 µs in 4 splits against
/// 6.85 in 8, down 6.75 in 8 against 7.87 in 16). In the engines that holds at one row only
/// (W4A16 batch-1 step 1.12 ms against 1.16 at two blocks, gate/up and down on the GEMM); at
/// 16 rows each block requests its first three K tiles' weights before it waits for the
/// previous kernel, so more splits of fewer tiles overlap more of the weight stream with that
/// kernel: at one block per multiprocessor the batch-16 step went from 1.56 to 1.63 ms (bf16
/// 1.76 in both runs).
pub fn plan_with(
    m: usize,
    n: usize,
    k: usize,
    sms: usize,
    tile: Option<W4Tile>,
    wgmma: bool,
) -> W4Plan {
    let tiles_of = |t: W4Tile| {
        let (bm, bn, ..) = t.shape();
        m.div_ceil(bm) * n.div_ceil(bn)
    };
    let tile = tile.unwrap_or(match m {
        17..=64 if wgmma && n >= WGMMA_MIN_OUTS => W4Tile::Wg64x64,
        65.. if wgmma => match m {
            ..=1023 => W4Tile::Wg128x128,
            _ => W4Tile::Wg256x128,
        },
        0..=64 => W4Tile::S16,
        _ if tiles_of(W4Tile::L128) >= sms => W4Tile::L128,
        _ => W4Tile::M64,
    });
    let (_, _, bk, _, _) = tile.shape();
    let ktiles = k.div_ceil(bk);
    // the large warpgroup-MMA tiles fill a multiprocessor alone (64 × 64: measured at two)
    let per_sm = if m == 1 || (tile.wgmma() && tile != W4Tile::Wg64x64) {
        1
    } else {
        2
    };
    let want = (per_sm * sms / tiles_of(tile).max(1))
        .min(tile.max_splits())
        .min(ktiles / 2)
        .max(1);
    let splits = (1..=want)
        .rev()
        .find(|d| ktiles.is_multiple_of(*d))
        .unwrap_or(1);
    W4Plan { tile, splits }
}

/// f32 values of split-K workspace and lock counters a plan needs for m rows of n outputs.
pub fn workspace(plan: W4Plan, m: usize, n: usize) -> (usize, usize) {
    if plan.splits <= 1 {
        return (0, 0);
    }
    let (bm, bn, ..) = plan.tile.shape();
    (plan.splits * m * n, m.div_ceil(bm) * n.div_ceil(bn))
}

/// Scratch of one product: split-K partials [splits, m, n] and the gathered activations of
/// act-order weights [m, k].
#[derive(Clone, Copy, Default)]
pub(crate) struct W4Scratch<'a> {
    pub ws: Option<Dev<'a, f32>>,
    pub xp: Option<Dev<'a, bf16>>,
}

/// Opts each kernel into its shared memory once per loaded function. Keyed as [`func`] caches
/// them, by device handle, not by ordinal: a second `CudaDevice` on the same GPU loads its own
/// module, whose functions start at the 48 KiB default (keyed by ordinal, the second handle's
/// launches failed with CUDA_ERROR_INVALID_VALUE).
fn allow_once(dev: &CudaDevice, module: Module, name: &'static str, smem: usize) -> Result<()> {
    type Done = Mutex<HashSet<(candle_core::cuda::DeviceId, &'static str)>>;
    static DONE: OnceLock<Done> = OnceLock::new();
    let done = DONE.get_or_init(|| Mutex::new(HashSet::new()));
    let key = (dev.id(), name);
    if done.lock().expect("smem opt-in").contains(&key) {
        return Ok(());
    }
    allow_smem(&func(dev, module, name)?, smem)?;
    done.lock().expect("smem opt-in").insert(key);
    Ok(())
}

/// The default plan on `dev` for m rows of `w`.
pub(crate) fn plan(dev: &CudaDevice, w: &W4, m: usize) -> Result<W4Plan> {
    let wgmma = wgmma_on(&dev.cuda_stream())?;
    Ok(plan_with(m, w.n, w.k, sm_count(dev)?, None, wgmma))
}

/// y [m, n] = x [m, k] · Wᵀ on W4A16 weights in the GEMM's layout (for gate/up pairs, in the
/// checkpoint's order: the gates, then the ups); `gated` (pairs only): y [m, n/2] = bf16(silu(
/// gate)) · up instead, rounded as the GEMM followed by `silu_mul_rows`. `plan` None: [`plan`];
/// its splits are cut to 1 where `scratch` lacks the workspace (or the weight the lock counters)
/// for them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_w4(
    dev: &CudaDevice,
    w: &W4,
    x: Dev<bf16>,
    y: Dev<bf16>,
    m: usize,
    scratch: &W4Scratch,
    plan_: Option<W4Plan>,
    gated: bool,
) -> Result<()> {
    const K: &str = "gemm_w4";
    let (n, k, g) = (w.n, w.k, w.group);
    require!(
        K,
        w.pairs == 0 || (n == 2 * w.pairs && n.is_multiple_of(4)),
        "gate/up pairs of {} for {n} outputs (n = 2 · pairs, a multiple of 4)",
        w.pairs
    );
    require!(
        K,
        !gated || w.pairs > 0,
        "gating needs weights stored as gate/up pairs"
    );
    let outs = if gated { n / 2 } else { n };
    let (np, kp) = (n.next_multiple_of(N_ALIGN), k.next_multiple_of(K_ALIGN));
    require!(K, m > 0 && n > 0, "empty product [{m}, {n}]");
    require!(
        K,
        k.is_multiple_of(16) && g.is_multiple_of(16) && g > 0,
        "k {k}, group {g}: multiples of 16"
    );
    require!(
        K,
        w.q.len() >= np * kp / 8,
        "weights [{np}, {kp}] / 8 words"
    );
    let rows = kp.div_ceil(g) * np;
    require!(K, w.scales.len() >= rows, "scales [{kp}/{g}, {np}]");
    require!(
        K,
        w.zneg.is_none_or(|z| z.len() >= rows),
        "zero points [{kp}/{g}, {np}]"
    );
    require!(K, x.aligned(16), "16-byte aligned input rows");
    require!(
        K,
        x.len() >= m * k,
        "input of {} values for [{m}, {k}]",
        x.len()
    );
    require!(
        K,
        y.len() >= m * outs,
        "output of {} values for [{m}, {outs}]",
        y.len()
    );
    require!(K, y.aligned(4), "4-byte aligned output");
    let mut p = match plan_ {
        Some(p) => p,
        None => plan(dev, w, m)?,
    };
    let (ws_need, locks_need) = workspace(p, m, n);
    let ws_ok = scratch
        .ws
        .is_some_and(|b| b.len() >= ws_need && b.aligned(16));
    let locks_ok = w.locks.len() >= locks_need;
    if p.splits > 1 && !(ws_ok && locks_ok) {
        p.splits = 1;
    }
    require!(
        K,
        p.splits <= 1 || p.tile.max_splits() > 1,
        "tile {} runs unsplit ({} splits asked)",
        p.tile.name(),
        p.splits
    );
    let x = match w.perm {
        Some(perm) => {
            let xp = scratch.xp.ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "{K}: act-order weights need a gather buffer of [{m}, {k}]"
                ))
            })?;
            permute_cols(dev, x, perm, xp, m, k)?;
            xp
        }
        None => x,
    };
    let (bm, bn, bk, threads, smem) = p.tile.shape();
    let name = p.tile.kernel(w.zneg.is_some());
    allow_once(dev, p.tile.module(), name, smem)?;
    let f = func(dev, p.tile.module(), name)?;
    let stream = dev.cuda_stream();
    let ktiles = k.div_ceil(bk);
    let per = ktiles.div_ceil(p.splits);
    let splits = ktiles.div_ceil(per);
    let (ws, locks) = if splits > 1 {
        (or_null(scratch.ws), w.locks.addr)
    } else {
        (0, 0)
    };
    let (mi, ni, ki, npi, gi, peri) = (
        int(m, "m")?,
        int(n, "n")?,
        int(k, "k")?,
        int(np, "np")?,
        int(g, "group")?,
        int(per, "tiles per split")?,
    );
    // the kernel's epilogue mode: 0 plain, pairs > 0 back to the checkpoint's order, < 0 gated
    let pairs = int(w.pairs, "pairs")? * if gated { -1 } else { 1 };
    let z = or_null(w.zneg);
    let mut b = f.builder(&stream);
    b.arg(&x.addr).arg(&w.q.addr).arg(&w.scales.addr).arg(&z);
    b.arg(&y.addr).arg(&ws).arg(&locks);
    b.arg(&mi)
        .arg(&ni)
        .arg(&ki)
        .arg(&npi)
        .arg(&gi)
        .arg(&peri)
        .arg(&pairs);
    let grid = (
        dim(n.div_ceil(bn), "n tiles")?,
        dim(m.div_ceil(bm), "m tiles")?,
        dim(splits, "splits")?,
    );
    let cfg = config(grid, threads, smem)?;
    // SAFETY: `threads` and `smem` are the kernel's Cfg::THREADS and Cfg::SMEM (the shared
    // memory opted into above). Block (x, y, z) copies weight blocks [k0/16.., n0/32..] of the
    // shuffled words (Np·Kp/8 of them, checked; blocks past Np/32 are zero-filled, not read),
    // scale/zero rows (k0 + 16r)/group < ceil(Kp/group) of Np values (checked), input rows
    // < m and columns < k in 16-byte chunks (k % 16 == 0, x 16-byte aligned, [m, k] inside),
    // and writes y[r, c] for r < m, c < n only (y [m, n] inside, 4-byte aligned; with pairs,
    // n = 2·pairs: y[r, c / 2] and y[r, pairs + c / 2], or gated y[r, c / 2] of [m, n / 2],
    // inside, in pairs of bf16 at even offsets, n % 4 == 0 checked). With splits
    // > 1 it writes ws[z, r, c] (splits·m·n f32, checked by `workspace`) and counts in
    // locks[tile] (one per output tile, checked), which must hold 0 before the launch: they
    // are zeroed at allocation and the last split of each tile resets its counter; kernels on
    // one stream run one after another, so no two launches share the counters at once.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// xp [m, k] = x [m, perm] (act-order weights' column order).
pub(crate) fn permute_cols(
    dev: &CudaDevice,
    x: Dev<bf16>,
    perm: Dev<u32>,
    xp: Dev<bf16>,
    m: usize,
    k: usize,
) -> Result<()> {
    const K: &str = "w4_permute_cols";
    require!(
        K,
        perm.len() >= k,
        "permutation of {} entries for {k}",
        perm.len()
    );
    require!(
        K,
        x.len() >= m * k && xp.len() >= m * k,
        "input and output [{m}, {k}]"
    );
    let f = func(dev, Module::GemmW4, K)?;
    let stream = dev.cuda_stream();
    let (mi, ki) = (int(m, "m")?, int(k, "k")?);
    let mut b = f.builder(&stream);
    b.arg(&x.addr)
        .arg(&perm.addr)
        .arg(&xp.addr)
        .arg(&mi)
        .arg(&ki);
    let cfg = config((dim((m * k).div_ceil(256), "m·k / 256")?, 1, 1), 256, 0)?;
    // SAFETY: thread i < m·k (tested in the kernel) reads perm[i % k] and x[i / k, perm[i % k]]
    // and writes xp[i]: x, xp [m, k] and perm [k] inside their buffers (checked); the entries of
    // perm are < k by construction (W4Tiles sorts 0..k), which the host cannot recheck here.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}
