//! W4A16 Linears on compressed-tensors' pack-quantized int4 weights, run as stored: the weights
//! are shuffled once at load into the tensor-core GEMM's layout (`w4_layout`,
//! `kernels/gemm_w4.cu`), and also kept in the checkpoint's packing where the GEMVs can read it
//! (the decode engine's single-row GEMVs with their fused prologues; dequantize + cuBLAS for
//! very wide products). [`PackedInt4::forward`] picks by row count; [`Int4Linear`] is the
//! candle forward's hook. Shared by the decode and serving engines (`engine::weights`).

use std::sync::Arc;

use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::cudarc::driver::{sys, CudaSlice, CudaStream};
use candle_core::cuda::CudaDevice;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor,
};
use half::bf16;

use super::launch::gemm::gemm_bf16;
use super::launch::gemm_w4::{gemm_w4, plan_with, workspace, W4Plan, W4Scratch, W4Weights};
use super::launch::gemv::{dequant_w4, gemv_w4, Int4};
use super::launch::norm_rope::silu_mul_rows;
use super::launch::{cuda_err, sm_count, wgmma_on, Dev};
use super::w4_layout::{pair_rows, W4Tiles};
use crate::checkpoint::{compressed_tensors::unpack_zero_points, Checkpoint};
use crate::model::layers::LinearKernel;

fn ck(e: crate::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// Rows up to which the packed GEMV runs instead of the tensor-core GEMM on weights of at
/// most [`GEMV_MAX_WEIGHTS`] values: in the H200 sweep (`reports/gemm_sweep`, 75f9bd0) the GEMV
/// wins at one row on q/k/v and o (4.9 vs 6.8 µs, 4.5 vs 5.7 µs) and ties on down (7.3 vs 7.2),
/// but costs ~1.8 µs (q/k/v) to ~3.6 µs (down) more per extra row while the split-K GEMM stays
/// flat, so that at four rows the GEMM takes well under its time (q/k/v 6.9 vs 10.3 µs, o 5.8
/// vs 10.1, down 7.3 vs 18.2). In a later sweep (H200, 2026-12-01) the GEMM took down at one
/// row in 5.2 µs (one block per multiprocessor, as the plan now splits a single row) against
/// the GEMV's 6.9 (q/k/v 5.1 vs 4.6, o 4.2 vs 4.2), so the GEMV keeps the weights below down's
/// 8 M values.
pub(crate) const GEMV_MAX_ROWS: usize = 1;
pub(crate) const GEMV_MAX_WEIGHTS: usize = 7 << 20;

/// Rows beyond which dequantize + cuBLAS replaces the GEMM. H200, 2026-12-02 (split-K partials
/// added with eight or more loads in flight per thread, 467ae2a): at 64 rows the GEMM in its planned 16-row tiles takes
/// q/k/v 11.6, o 8.3, gate/up 17.5 and down 11.9 µs against dequantize + cuBLAS's 12.1, 10.3,
/// 23.8 and 15.9 (before, weights of at most 8 M values left the GEMM at 32 rows); at 256 rows
/// the best tile and split of each shape (q/k/v 22.8, o 16.9, gate/up 38.8, down 27.4 µs) loses
/// to dequantize + cuBLAS (13.4, 11.1, 29.6, 18.0).
///
/// With the warpgroup-MMA tiles (Hopper) too: timed alone, at 256 rows the 128 × 128 tile took
/// the stacked gate/up in 24.7 µs against dequantize + cuBLAS's 29.6 (q/k/v, o and down lost:
/// 18.9, 14.4, 21.7 against 13.5, 11.2, 18.7), but with gate/up routed to it up to 512 rows (and
/// the 17–64-row tiles on) the serving engine's W4A16 throughput at 256 sequences was 3% lower
/// than with neither, at 64 sequences 3% higher (H200, one call, two rounds each way: 32,204 and
/// 32,551 tokens/s against 33,340 and 33,411 with `EXAONE_COMPRESS_WGMMA=0`; 20,196 and 20,024
/// against 19,445 and 19,469). So only the 17–64-row tiles are used.
pub(crate) const GEMM_MAX_ROWS: usize = 64;

/// The checkpoint's packing as the GEMVs read it: [n, k/8] words, scales and zero points
/// [n, k/group] in bf16.
#[derive(Debug)]
struct GemvPacking {
    packed: CudaSlice<u32>,
    scales: CudaSlice<bf16>,
    zeros: Option<CudaSlice<bf16>>,
}

/// W4A16 weights (pack-quantized, group or channel strategy; symmetric or asymmetric; act-order
/// through a column permutation) on the device, several Linears of one input stacked along n.
#[derive(Debug)]
pub struct PackedInt4 {
    pub n: usize,
    pub k: usize,
    pub group: usize,
    /// zero points stored (asymmetric)
    pub asymmetric: bool,
    /// None where the GEMVs cannot read the weights (act-order; a group that is not a power of
    /// two ≥ 32)
    gemv: Option<Box<GemvPacking>>,
    tc: Box<W4Weights>,
    /// the GEMM's warpgroup-MMA tiles run on this device ([`wgmma_on`] at load; they change the
    /// GEMM's plan, not the route)
    wgmma: bool,
}

/// How one product runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum W4Route {
    /// the packed GEMV (compressed-tensors' packing)
    Gemv,
    /// the tensor-core GEMM, with a given plan or the default
    Gemm(Option<W4Plan>),
    /// dequantize to bf16, then cuBLAS
    Dequant,
}

/// Device buffers one product may need (see [`PackedInt4::needs`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct W4Buffers<'a> {
    /// split-K partials
    pub ws: Option<Dev<'a, f32>>,
    /// gathered activations (act-order)
    pub xp: Option<Dev<'a, bf16>>,
    /// the dequantized weight
    pub wtmp: Option<Dev<'a, bf16>>,
}

impl<'a> W4Buffers<'a> {
    /// What the tensor-core GEMM uses of them.
    fn gemm(&self) -> W4Scratch<'a> {
        W4Scratch {
            ws: self.ws,
            xp: self.xp,
        }
    }
}

/// Element counts of the [`W4Buffers`] a product needs (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct W4Needs {
    pub ws: usize,
    pub xp: usize,
    pub wtmp: usize,
}

impl PackedInt4 {
    /// The Linears `prefixes` (stacked along the output dimension, e.g. q/k/v) if every one is
    /// stored pack-quantized; None if none is; an error for a mix or a layout the kernels cannot
    /// take (naming the tensor and the rule).
    pub fn load(
        ckpt: &Checkpoint,
        prefixes: &[String],
        stream: &Arc<CudaStream>,
    ) -> Result<Option<Self>> {
        Self::load_with(ckpt, prefixes, stream, false)
    }

    /// [`Self::load`] for a gate and an up Linear (`prefixes` in that order), stored for the
    /// GEMM as pairs so that it can gate in its epilogue ([`Self::forward_gated`]); plain where
    /// the two differ in size or their outputs number no multiple of 4.
    pub fn load_gate_up(
        ckpt: &Checkpoint,
        prefixes: &[String],
        stream: &Arc<CudaStream>,
    ) -> Result<Option<Self>> {
        Self::load_with(ckpt, prefixes, stream, true)
    }

    fn load_with(
        ckpt: &Checkpoint,
        prefixes: &[String],
        stream: &Arc<CudaStream>,
        gate_up: bool,
    ) -> Result<Option<Self>> {
        let have = prefixes
            .iter()
            .filter(|p| ckpt.contains(&format!("{p}.weight_packed")))
            .count();
        if have == 0 {
            return Ok(None);
        }
        if have != prefixes.len() {
            candle_core::bail!(
                "{}: {prefixes:?} mix packed int4 and other storage",
                ckpt.dir.display()
            );
        }
        let (mut packed, mut scales, mut zeros) = (vec![], vec![], vec![]);
        let (mut n, mut k, mut groups) = (0, 0, 0);
        let mut outs = vec![];
        let (mut any_zero, mut g_idx) = (false, None::<Vec<usize>>);
        let raw = |name: &str| ckpt.raw(name, &Device::Cpu).map_err(ck);
        for (j, p) in prefixes.iter().enumerate() {
            let shape: Vec<i64> = raw(&format!("{p}.weight_shape"))?
                .to_dtype(DType::I64)?
                .to_vec1()?;
            let (o, i) = match shape[..] {
                [o, i] if o > 0 && i > 0 => (o as usize, i as usize),
                _ => candle_core::bail!("{p}.weight_shape: {shape:?} is not [out, in]"),
            };
            let s = raw(&format!("{p}.weight_scale"))?.to_dtype(DType::F32)?;
            let (so, ng) = s.dims2()?;
            if so != o {
                candle_core::bail!("{p}.weight_scale: {so} rows for {o} outputs");
            }
            if j > 0 && (k != i || groups != ng) {
                candle_core::bail!("{prefixes:?}: stacked Linears differ in input size or groups");
            }
            let w: Vec<i32> = raw(&format!("{p}.weight_packed"))?
                .flatten_all()?
                .to_vec1()?;
            if w.len() != o * i.div_ceil(8) {
                candle_core::bail!("{p}.weight_packed: {} words for [{o}, {i}]", w.len());
            }
            packed.extend(w.into_iter().map(|x| x as u32));
            scales.extend(s.flatten_all()?.to_vec1::<f32>()?);
            let zname = format!("{p}.weight_zero_point");
            if ckpt.contains(&zname) {
                any_zero = true;
                let zp: Vec<i32> = raw(&zname)?.flatten_all()?.to_vec1()?;
                zeros.extend(unpack_zero_points(&zp, o, ng));
            } else {
                zeros.extend(std::iter::repeat_n(0f32, o * ng));
            }
            let gname = format!("{p}.weight_g_idx");
            let gi: Option<Vec<usize>> = if ckpt.contains(&gname) {
                let v: Vec<i64> = raw(&gname)?.to_dtype(DType::I64)?.to_vec1()?;
                if v.len() != i || v.iter().any(|&g| g < 0 || g as usize >= ng) {
                    candle_core::bail!("{gname}: needs {i} group indices in 0..{ng}");
                }
                Some(v.into_iter().map(|g| g as usize).collect())
            } else {
                None
            };
            if j > 0 && gi != g_idx {
                candle_core::bail!("{prefixes:?}: stacked Linears with different act-order g_idx cannot share one column gather");
            }
            g_idx = gi;
            outs.push(o);
            n += o;
            k = i;
            groups = ng;
        }
        let z = any_zero.then_some(zeros.as_slice());
        let pairs = match outs[..] {
            [g, u] if gate_up && g == u && n.is_multiple_of(4) => g,
            _ => 0,
        };
        Self::from_host_pairs(&packed, &scales, z, g_idx.as_deref(), n, k, pairs, stream)
            .map(Some)
            .map_err(|e| candle_core::Error::Msg(format!("{prefixes:?}: {e}")))
    }

    /// From compressed-tensors' arrays on the host (see [`W4Tiles::new`]): `packed` [n,
    /// ceil(k/8)], `scales` and `zeros` (q units) [n, groups], `g_idx` [k].
    pub fn from_host(
        packed: &[u32],
        scales: &[f32],
        zeros: Option<&[f32]>,
        g_idx: Option<&[usize]>,
        n: usize,
        k: usize,
        stream: &Arc<CudaStream>,
    ) -> Result<Self> {
        Self::from_host_pairs(packed, scales, zeros, g_idx, n, k, 0, stream)
    }

    /// [`Self::from_host`]; `pairs` > 0: the rows are a stacked gate/up Linear of `pairs`
    /// outputs each (n = 2 · pairs, a multiple of 4), stored for the GEMM as pairs
    /// ([`crate::runtime::w4_layout::pair_rows`]); the GEMVs' packing keeps the checkpoint's order.
    #[allow(clippy::too_many_arguments)]
    pub fn from_host_pairs(
        packed: &[u32],
        scales: &[f32],
        zeros: Option<&[f32]>,
        g_idx: Option<&[usize]>,
        n: usize,
        k: usize,
        pairs: usize,
        stream: &Arc<CudaStream>,
    ) -> Result<Self> {
        let msg = candle_core::Error::Msg;
        if pairs > 0 && (n != 2 * pairs || !n.is_multiple_of(4)) {
            candle_core::bail!("{n} outputs cannot be {pairs} gate/up pairs (a multiple of 4)");
        }
        let tiles = if pairs > 0 {
            let zp = zeros.map(|z| pair_rows(z, n)).transpose().map_err(msg)?;
            W4Tiles::new(
                &pair_rows(packed, n).map_err(msg)?,
                &pair_rows(scales, n).map_err(msg)?,
                zp.as_deref(),
                g_idx,
                n,
                k,
            )
        } else {
            W4Tiles::new(packed, scales, zeros, g_idx, n, k)
        }
        .map_err(msg)?;
        let group = tiles.group;
        // the GEMVs: groups in column order, a power of two ≥ 32 (a word never straddles two)
        let gemv = if tiles.perm.is_none()
            && group.is_power_of_two()
            && group >= 32
            && k.is_multiple_of(group)
        {
            let bf = |v: &[f32]| -> Vec<bf16> { v.iter().map(|&x| bf16::from_f32(x)).collect() };
            Some(Box::new(GemvPacking {
                packed: stream.clone_htod(packed).map_err(cuda_err)?,
                scales: stream.clone_htod(&bf(scales)).map_err(cuda_err)?,
                zeros: zeros
                    .map(|z| stream.clone_htod(&bf(z)).map_err(cuda_err))
                    .transpose()?,
            }))
        } else {
            None
        };
        Ok(Self {
            n,
            k,
            group,
            asymmetric: zeros.is_some(),
            gemv,
            tc: Box::new(W4Weights::upload(&tiles, pairs, stream)?),
            wgmma: wgmma_on(stream)?,
        })
    }

    /// The weights as the GEMV kernels take them, addressed for `stream`; an error where the
    /// GEMVs cannot read them (act-order, a group that is not a power of two ≥ 32).
    pub(crate) fn view(&self, stream: &CudaStream) -> Result<Int4<'_>> {
        let g = self.gemv.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "W4A16 [{}, {}] group {}: the packed GEMVs need groups in column order (no act-order) of a power of two ≥ 32; this weight runs on the W4 GEMM only",
                self.n, self.k, self.group
            ))
        })?;
        Ok(Int4 {
            packed: Dev::new(&g.packed, stream),
            scales: Dev::new(&g.scales, stream),
            zeros: g.zeros.as_ref().map(|z| Dev::new(z, stream)),
            n: self.n,
            k: self.k,
            group: self.group,
        })
    }

    /// The default route for `m` rows: the GEMM, except the GEMV up to [`GEMV_MAX_ROWS`] on
    /// small weights and dequantize + cuBLAS beyond [`GEMM_MAX_ROWS`] rows, where the GEMVs'
    /// packing exists.
    pub fn route(&self, m: usize) -> W4Route {
        match m {
            _ if self.gemv.is_none() => W4Route::Gemm(None),
            m if m <= GEMV_MAX_ROWS && self.n * self.k <= GEMV_MAX_WEIGHTS => W4Route::Gemv,
            m if m > GEMM_MAX_ROWS => W4Route::Dequant,
            _ => W4Route::Gemm(None),
        }
    }

    /// The buffers `route` needs for `m` rows on a GPU of `sms` multiprocessors.
    pub fn needs(&self, route: W4Route, m: usize, sms: usize) -> W4Needs {
        match route {
            W4Route::Gemv => W4Needs::default(),
            W4Route::Dequant => W4Needs {
                wtmp: self.n * self.k,
                ..W4Needs::default()
            },
            W4Route::Gemm(p) => {
                let p = p.unwrap_or_else(|| plan_with(m, self.n, self.k, sms, None, self.wgmma));
                W4Needs {
                    ws: workspace(p, m, self.n).0,
                    xp: if self.tc.act_order() { m * self.k } else { 0 },
                    wtmp: 0,
                }
            }
        }
    }

    /// y [m, n] = x [m, k] · Wᵀ by `route` (None: [`Self::route`]). The GEMM splits K only
    /// where `buf.ws` holds the partials (else it runs unsplit); act-order weights need
    /// `buf.xp`, dequantization `buf.wtmp` (an error names what is missing).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &self,
        dev: &CudaDevice,
        blas: &CudaBlas,
        stream: &CudaStream,
        x: Dev<bf16>,
        y: Dev<bf16>,
        m: usize,
        buf: &W4Buffers,
        route: Option<W4Route>,
    ) -> Result<()> {
        match route.unwrap_or_else(|| self.route(m)) {
            W4Route::Gemv => gemv_w4(dev, &self.view(stream)?, x, y, m),
            W4Route::Dequant => {
                let tmp = buf.wtmp.ok_or_else(|| {
                    candle_core::Error::Msg("W4A16: no buffer for the dequantized weight".into())
                })?;
                dequant_w4(dev, &self.view(stream)?, tmp)?;
                gemm_bf16(blas, x, tmp, y, m, self.n, self.k)
            }
            W4Route::Gemm(plan) => gemm_w4(
                dev,
                &self.tc.view(stream),
                x,
                y,
                m,
                &buf.gemm(),
                plan,
                false,
            ),
        }
    }

    /// act [m, n/2] = bf16(silu(gate)) · up of the stacked gate/up product, `gu` [m, n] holding
    /// the product where it is materialised: on the GEMM, with the weights stored as pairs
    /// ([`Self::load_gate_up`]), the gating is its epilogue (one launch, `gu` untouched); else
    /// the product, then `silu_mul_rows`. The same values either way.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_gated(
        &self,
        dev: &CudaDevice,
        blas: &CudaBlas,
        stream: &CudaStream,
        x: Dev<bf16>,
        gu: Dev<bf16>,
        act: Dev<bf16>,
        m: usize,
        buf: &W4Buffers,
        route: Option<W4Route>,
    ) -> Result<()> {
        let route = route.unwrap_or_else(|| self.route(m));
        if let (W4Route::Gemm(plan), true) = (route, self.tc.pairs > 0) {
            return gemm_w4(
                dev,
                &self.tc.view(stream),
                x,
                act,
                m,
                &buf.gemm(),
                plan,
                true,
            );
        }
        self.forward(dev, blas, stream, x, gu, m, buf, Some(route))?;
        silu_mul_rows(dev, gu, act, m, self.n / 2)
    }

    /// Whether the GEMM gates in its epilogue ([`Self::load_gate_up`]).
    pub fn gates_in_epilogue(&self) -> bool {
        self.tc.pairs > 0
    }

    /// The largest [`W4Needs`] of the default routes for 1..=`rows` rows on a GPU of `sms`
    /// multiprocessors.
    pub(crate) fn needs_up_to(&self, sms: usize, rows: usize) -> W4Needs {
        let mut need = W4Needs::default();
        // split-K partials are needed up to the last row count the GEMM takes: beyond, dequantize
        // + cuBLAS; act-order weights stay on the GEMM at every count, and their warpgroup-MMA
        // plans are the ones timed with partials (`reports/gemm_sweep`; elsewhere the GEMM runs
        // their larger products unsplit, as before those tiles)
        let top = if self.gemv.is_none() && self.wgmma {
            rows
        } else {
            rows.min(GEMM_MAX_ROWS + 1)
        };
        for m in 1..=top {
            let x = self.needs(self.route(m), m, sms);
            need.ws = need.ws.max(x.ws);
        }
        let last = self.needs(self.route(rows), rows, sms);
        need.xp = if self.tc.act_order() {
            rows * self.k
        } else {
            0
        };
        need.wtmp = last.wtmp;
        need
    }
}

/// Streaming multiprocessors of the device `stream` runs on.
pub(crate) fn sm_count_of(stream: &CudaStream) -> Result<usize> {
    let n = stream
        .context()
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(cuda_err)?;
    Ok(n.max(1) as usize)
}

/// A W4A16 Linear on the candle forward.
#[derive(Debug)]
pub struct Int4Linear {
    w: PackedInt4,
    dev: CudaDevice,
}

impl Int4Linear {
    pub fn new(w: PackedInt4, dev: &CudaDevice) -> Self {
        Self {
            w,
            dev: dev.clone(),
        }
    }
}

impl CustomOp1 for Int4Linear {
    fn name(&self) -> &'static str {
        "w4a16-linear"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("packed int4 Linear runs on CUDA only")
    }
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (m, k) = l.shape().dims2()?;
        if !l.is_contiguous() {
            candle_core::bail!("w4a16 Linear: input must be contiguous");
        }
        if k != self.w.k {
            candle_core::bail!("w4a16 Linear: input has {k} features, weight {}", self.w.k);
        }
        let x = s.as_cuda_slice::<bf16>()?.slice(l.start_offset()..);
        let dev = &self.dev;
        let stream = dev.cuda_stream();
        let route = self.w.route(m);
        let need = self.w.needs(route, m, sm_count(dev)?);
        // SAFETY (all four): uninitialised memory, each written in full before it is read: y
        // ([m, n]) by the product, ws (the splits' partials, each split writing all of its
        // tile's elements before the last split reads them), xp by the gather, wtmp by the
        // dequantization.
        let y = unsafe { dev.alloc::<bf16>(m * self.w.n) }?;
        let alloc_f32 = |n: usize| (n > 0).then(|| unsafe { dev.alloc::<f32>(n) }).transpose();
        let alloc_bf = |n: usize| (n > 0).then(|| unsafe { dev.alloc::<bf16>(n) }).transpose();
        let (ws, xp, wtmp) = (
            alloc_f32(need.ws)?,
            alloc_bf(need.xp)?,
            alloc_bf(need.wtmp)?,
        );
        let buf = W4Buffers {
            ws: ws.as_ref().map(|b| Dev::new(b, &stream)),
            xp: xp.as_ref().map(|b| Dev::new(b, &stream)),
            wtmp: wtmp.as_ref().map(|b| Dev::new(b, &stream)),
        };
        let blas = dev.cublas_handle();
        let (xd, yd) = (Dev::new(&x, &stream), Dev::new(&y, &stream));
        self.w
            .forward(dev, &blas, &stream, xd, yd, m, &buf, Some(route))?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            Shape::from((m, self.w.n)),
        ))
    }
}

impl LinearKernel for Int4Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}
