//! Compressed Linears that run as compressed: W4A16 on compressed-tensors' packed int4
//! weights (`int4`: a tensor-core GEMM on weights shuffled at load; re-exported here), and
//! W8A8 through our 8-bit (int8, or fp8 on sm_89+) tensor-core GEMM with per-token activation
//! and per-channel weight scales applied (and the SiLU gate taken) in its epilogue (on Hopper,
//! plain int8 products of 1024 rows or more on its warpgroup-MMA tiles); from
//! [`CUBLAS_INT8_MIN_ROWS`] rows on, the other int8 products on cuBLAS's int8 GEMM and the scales
//! in a second pass; from [`FP8_LT_MIN_ROWS`] rows on, cuBLASLt's row-wise scaled fp8 GEMM where
//! the GPU runs it ([`q8_path`]). The shared pieces (loading packed weights, the GEMMs, the
//! thresholds) serve the engines too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, CudaView};
use candle_core::cuda::CudaDevice;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor,
};
use half::bf16;

use super::launch::gemm::{gemm_bf16, gemm_int8};
use super::launch::gemm_lt::Fp8Lt;
use super::launch::gemm_q8::{
    gemm_fp8_lt_quant, gemm_int8_cublas, gemm_int8_cublas_quant, gemm_q8, quant_rows_fp8, OutQuant,
    Q8Gemm, Q8Kind,
};
use super::launch::quant::quant_rows_int8;
use super::launch::{cuda_err, cuda_tensor, cuda_view, fp8_supported, wgmma_on, Dev};
use crate::checkpoint::Checkpoint;
use crate::model::layers::{LinearKernel, QuantizedRows};
use crate::model::{ActQuant, Exaone4};

fn ck(e: crate::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

pub use super::int4::{Int4Linear, PackedInt4};

/// W8A8 weights on the device: int8 [n, k] (stored as bytes) and one f32 scale per output
/// channel, several Linears of one input stacked along n.
#[derive(Debug)]
pub struct Int8Weights {
    pub w: CudaSlice<u8>,
    pub scale: CudaSlice<f32>,
    pub n: usize,
    pub k: usize,
}

impl Int8Weights {
    /// The int8 Linears `prefixes` stacked along their outputs, or None unless every one is
    /// stored as int8 with one scale per output channel.
    pub fn load(
        ckpt: &Checkpoint,
        prefixes: &[String],
        stream: &Arc<CudaStream>,
    ) -> Result<Option<Self>> {
        load_q8(ckpt, prefixes, stream, safetensors::Dtype::I8, false)
    }
}

/// W8A8 fp8 weights on the device: e4m3 [n, k] (as bytes) and one f32 scale per output channel
/// (a per-tensor scale repeated), several Linears of one input stacked along n.
#[derive(Debug)]
pub struct Fp8Weights(pub Int8Weights);

impl Fp8Weights {
    /// The fp8 e4m3 Linears `prefixes` stacked along their outputs, or None unless every one is
    /// stored as float8_e4m3 with per-channel or per-tensor scales.
    pub fn load(
        ckpt: &Checkpoint,
        prefixes: &[String],
        stream: &Arc<CudaStream>,
    ) -> Result<Option<Self>> {
        Ok(load_q8(ckpt, prefixes, stream, safetensors::Dtype::F8_E4M3, true)?.map(Self))
    }
}

/// 8-bit weights of `dtype` stacked along their outputs, per-channel scales (or, with
/// `per_tensor`, one scale repeated per channel); None unless every Linear is stored so.
fn load_q8(
    ckpt: &Checkpoint,
    prefixes: &[String],
    stream: &Arc<CudaStream>,
    dtype: safetensors::Dtype,
    per_tensor: bool,
) -> Result<Option<Int8Weights>> {
    let (mut w, mut scale) = (vec![], vec![]);
    let mut k = 0;
    for p in prefixes {
        let wname = format!("{p}.weight");
        let info = match ckpt.info(&wname) {
            Ok(i) if i.dtype == dtype && i.shape.len() == 2 => i,
            _ => return Ok(None),
        };
        let (n_i, k_i) = (info.shape[0], info.shape[1]);
        if k != 0 && k != k_i {
            candle_core::bail!("{prefixes:?}: stacked 8-bit Linears differ in input size");
        }
        let sname = format!("{p}.weight_scale");
        if !ckpt.contains(&sname) {
            return Ok(None);
        }
        let mut s: Vec<f32> = ckpt
            .raw(&sname, &Device::Cpu)
            .map_err(ck)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        if per_tensor && s.len() == 1 {
            s = vec![s[0]; n_i];
        }
        if s.len() != n_i {
            return Ok(None);
        }
        w.extend_from_slice(ckpt.bytes(&wname).map_err(ck)?);
        scale.extend(s);
        k = k_i;
    }
    let n = scale.len();
    if k % 16 != 0 || n % 8 != 0 {
        candle_core::bail!("{prefixes:?}: the 8-bit GEMMs need in_features % 16 == 0 and out_features % 8 == 0, got [{n}, {k}]");
    }
    Ok(Some(Int8Weights {
        w: stream.clone_htod(&w).map_err(cuda_err)?,
        scale: stream.clone_htod(&scale).map_err(cuda_err)?,
        n,
        k,
    }))
}

/// A W8A8 Linear: 8-bit weights [n, k] (int8, or fp8 e4m3) and per-output-channel scales,
/// activations quantized per token at run time to the same format. Several Linears of one input
/// can be stacked along n (one activation quantization, one GEMM); `gated` stacks gate and up
/// and returns silu(gate) · up.
#[derive(Debug)]
pub struct Q8Linear {
    kind: Q8Kind,
    w: Int8Weights,
    gated: bool,
    dev: CudaDevice,
    /// cuBLASLt's row-wise scaled fp8 GEMM (fp8 Linears, where the GPU runs it)
    lt: Option<Arc<Fp8Lt>>,
    /// whether our warpgroup-MMA tiles run here ([`wgmma_on`])
    wgmma: bool,
}

impl Q8Linear {
    fn load(
        ckpt: &Checkpoint,
        prefixes: &[String],
        gated: bool,
        dev: &CudaDevice,
        kind: Q8Kind,
        lt: Option<&Arc<Fp8Lt>>,
    ) -> Result<Option<Self>> {
        let stream = dev.cuda_stream();
        let w = match kind {
            Q8Kind::Int8 => Int8Weights::load(ckpt, prefixes, &stream)?,
            Q8Kind::Fp8 => Fp8Weights::load(ckpt, prefixes, &stream)?.map(|w| w.0),
        };
        let wgmma = wgmma_on(&stream)?;
        Ok(w.map(|w| Self {
            kind,
            w,
            gated,
            dev: dev.clone(),
            lt: lt.cloned(),
            wgmma,
        }))
    }
}

/// From this many rows on, the W8A8 Linears (the candle forward's: prefill, perplexity, KL; the
/// engines' prefill chunks) run cuBLAS's int8 GEMM into int32 and apply the scales (and the
/// gate) in a second pass instead of our tiles: in the H200 GEMM sweep (`reports/gemm_sweep`)
/// that path beats every tile of ours on all four of the 1.2B's shapes at M = 2048 and 16,384
/// (1.2–2.1×), while at M = 256 our tiles win on two shapes of four. 1024 lies between the two
/// measured points. The engines' decode steps, captured as graphs, have fewer rows and keep the
/// tiles.
pub const CUBLAS_INT8_MIN_ROWS: usize = 1024;

/// From this many rows on, the fp8 Linears (candle forward and engines) run cuBLASLt's fp8 GEMM
/// with row-wise scaling (per-token × per-channel, in its epilogue) instead of our `mma.sync`
/// tiles, where the GPU runs it (cuBLASLt offers the scaling on Hopper and later;
/// `launch::gemm_lt`). Timed alone (H200 GEMM sweeps, `reports/gemm_sweep`) our tiles and
/// cuBLASLt tie over the 1.2B's four Linears at M = 64 (41.7 vs 40.9 µs at db125f7; 37.5 vs 40.6
/// at bf184b4) and cuBLASLt leads at 256 (45.8 vs 86.0). In the serving engine the tiles lost at
/// 64 sequences: with this threshold at 128 (db125f7) FP8 served 19,661 tokens/s against
/// 21,505 with cuBLASLt from 64 rows (bf184b4), while bf16 moved −0.6% between the two runs
/// (`reports/serve_bench`). So cuBLASLt from 64 rows.
pub const FP8_LT_MIN_ROWS: usize = 64;

/// Which GEMM an 8-bit product of `rows` rows runs on (where the caller has what it needs:
/// the int32 scratch, a cuBLASLt handle that passed its probe; else our tiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Q8Path {
    CublasInt8,
    CublasLtFp8,
    Tiles,
}

/// The path for `rows` rows of `kind` (`gated`: the stacked gate/up product). Where our
/// warpgroup-MMA tiles run (`wgmma`, Hopper), plain int8 products stay on our tiles, which take
/// the warpgroup MMA from 1024 rows (`launch::gemm_q8::pick_tile`) with the scales in registers:
/// at 2,048 rows 1.2–1.5× faster than cuBLAS int8 and its second pass through int32, at 16,384
/// 1.02–1.07× (H200 sweep of 8140ea6). Gated int8 products keep cuBLAS (1.1× faster there, and
/// its epilogue also quantizes the output for down), and fp8 products cuBLASLt (1.6× faster).
/// Elsewhere [`CUBLAS_INT8_MIN_ROWS`] and [`FP8_LT_MIN_ROWS`] choose.
pub(crate) fn q8_path(kind: Q8Kind, rows: usize, gated: bool, wgmma: bool) -> Q8Path {
    match kind {
        Q8Kind::Int8 if wgmma && !gated => Q8Path::Tiles,
        Q8Kind::Int8 if rows >= CUBLAS_INT8_MIN_ROWS => Q8Path::CublasInt8,
        Q8Kind::Fp8 if rows >= FP8_LT_MIN_ROWS => Q8Path::CublasLtFp8,
        _ => Q8Path::Tiles,
    }
}

fn input<'a>(
    s: &'a CudaStorage,
    l: &Layout,
) -> Result<(
    candle_core::cuda::cudarc::driver::CudaView<'a, bf16>,
    usize,
    usize,
)> {
    let (m, k) = l.shape().dims2()?;
    if !l.is_contiguous() {
        candle_core::bail!("quantized Linear: input must be contiguous");
    }
    Ok((s.as_cuda_slice::<bf16>()?.slice(l.start_offset()..), m, k))
}

/// Rows quantized per token on the device: bytes [rows, n] and scales [rows].
type Quantized = (CudaSlice<u8>, CudaSlice<f32>);

/// Whether 8-bit Linears take their input quantized by its producer (see [`set_handoff`]).
static HANDOFF: AtomicBool = AtomicBool::new(true);

/// Turns on (the default) or off, for every model and engine of the process, the hand-off of
/// quantized rows into 8-bit Linears ([`QuantizedRows`] in the candle forward, `Staged` in the
/// decode and serving engines: the residual's RMSNorm and the gated product quantizing the next
/// product's input on the way out). Off, each product quantizes its own input, as before the
/// hand-off existed: the same values (checked bit for bit by `runtime::check::quant_handoff` and
/// `serve::check::handoff`), one pass more per product; for A/B timing. The engines read it
/// when a step is launched or captured as a graph: set it before loading one.
pub fn set_handoff(on: bool) {
    HANDOFF.store(on, Ordering::Relaxed);
}

/// Whether the hand-off of [`set_handoff`] is on.
pub fn handoff() -> bool {
    HANDOFF.load(Ordering::Relaxed)
}

/// The bf16 rows of a product run with `Out::Rows` or `Out::RowsQuantized` (always there).
fn output_rows<T>(y: Option<T>) -> Result<T> {
    y.ok_or_else(|| candle_core::Error::Msg("w8a8 Linear: no output rows".into()))
}

/// What an 8-bit product leaves (see `Q8Linear::run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    /// its bf16 rows
    Rows,
    /// its bf16 rows and, gated where it can, their per-token quantization
    RowsQuantized,
    /// gated: the quantization alone
    QuantizedOnly,
}

impl Q8Linear {
    /// The per-token format of this Linear's activations.
    fn format(&self) -> ActQuant {
        match self.kind {
            Q8Kind::Int8 => ActQuant::Int8PerToken,
            Q8Kind::Fp8 => ActQuant::Fp8PerToken,
        }
    }

    /// Whether a gated product of `m` rows runs on a path whose epilogue sees whole rows
    /// (cuBLAS int8, cuBLASLt fp8), so that it can quantize its output per token for down.
    fn quantizes_out(&self, m: usize) -> bool {
        self.gated
            && matches!(
                (q8_path(self.kind, m, self.gated, self.wgmma), &self.lt),
                (Q8Path::CublasInt8, _) | (Q8Path::CublasLtFp8, Some(_))
            )
    }

    /// y [m, n] (gated: [m, n/2]) for the bf16 rows x [m, k]; `xq`: their per-token
    /// quantization where their producer made it (else quantized here from x, which must then
    /// be given); with `out`, a gated product that [`Self::quantizes_out`] also returns its
    /// output's quantization, for down's input, and with `Out::QuantizedOnly` no bf16 rows.
    fn run(
        &self,
        x: Option<CudaView<bf16>>,
        m: usize,
        xq: Option<(CudaView<u8>, CudaView<f32>)>,
        out: Out,
    ) -> Result<(Option<CudaSlice<bf16>>, Option<Quantized>)> {
        let (dev, n, k, n_out) = (&self.dev, self.w.n, self.w.k, self.n_out());
        let stream = dev.cuda_stream();
        let out_quant = out != Out::Rows && self.quantizes_out(m);
        if out == Out::QuantizedOnly && !out_quant {
            candle_core::bail!("w8a8 Linear: this product cannot leave its output quantized alone");
        }
        let keep_y = out != Out::QuantizedOnly;
        // SAFETY: uninitialised, written in full by the GEMM's epilogue before it is read.
        let y = match keep_y {
            true => Some(unsafe { dev.alloc::<bf16>(m * n_out)? }),
            false => None,
        };
        let own;
        let (qd, sxd) = match (&xq, &x) {
            (Some((q, sx)), _) => (Dev::new(q, &stream), Dev::new(sx, &stream)),
            (None, None) => candle_core::bail!("w8a8 Linear: neither rows nor their quantization"),
            (None, Some(x)) => {
                // SAFETY: uninitialised, written in full by the quantizer before the GEMM reads.
                own = unsafe { (dev.alloc::<u8>(m * k)?, dev.alloc::<f32>(m)?) };
                let (qd, sxd) = (Dev::new(&own.0, &stream), Dev::new(&own.1, &stream));
                let xd = Dev::new(x, &stream);
                match self.kind {
                    Q8Kind::Int8 => quant_rows_int8(dev, xd, qd, sxd, m, k)?,
                    Q8Kind::Fp8 => quant_rows_fp8(dev, xd, qd, sxd, m, k)?,
                }
                (qd, sxd)
            }
        };
        let g = Q8Gemm {
            q: qd,
            w: Dev::new(&self.w.w, &stream),
            sx: sxd,
            sw: Dev::new(&self.w.scale, &stream),
            y: y.as_ref().map_or_else(Dev::none, |y| Dev::new(y, &stream)),
            m,
            n,
            k,
        };
        let yq = if out_quant {
            // SAFETY: uninitialised, written in full by the gated epilogue.
            Some(unsafe { (dev.alloc::<u8>(m * n_out)?, dev.alloc::<f32>(m)?) })
        } else {
            None
        };
        let yqd = yq.as_ref().map(|(q, s)| OutQuant {
            q: Dev::new(q, &stream),
            scale: Dev::new(s, &stream),
            keep_y,
        });
        match (q8_path(self.kind, m, self.gated, self.wgmma), &self.lt) {
            (Q8Path::CublasInt8, _) => {
                // SAFETY: uninitialised, written in full by the GEMM before the epilogue reads it.
                let acc = unsafe { dev.alloc::<i32>(m * n)? };
                let acc = Dev::new(&acc, &stream);
                gemm_int8_cublas_quant(dev, &dev.cublas_handle(), &g, acc, self.gated, yqd)?;
            }
            (Q8Path::CublasLtFp8, Some(lt)) => {
                // SAFETY: uninitialised, written in full by the GEMM before the gate reads it.
                let gu = if self.gated {
                    Some(unsafe { dev.alloc::<bf16>(m * n)? })
                } else {
                    None
                };
                let gu = gu.as_ref().map(|b| Dev::new(b, &stream));
                gemm_fp8_lt_quant(dev, lt, &g, gu, yqd)?;
            }
            _ => gemm_q8(dev, self.kind, &g, self.gated, None)?,
        }
        Ok((y, yq))
    }

    fn n_out(&self) -> usize {
        if self.gated {
            self.w.n / 2
        } else {
            self.w.n
        }
    }

    /// [`Q8Linear::run`] on tensors: rows `x` [m, k] (bf16) and/or their quantization `xq` in
    /// this Linear's format, shapes checked; the outputs as tensors.
    fn run_tensors(
        &self,
        x: Option<&Tensor>,
        xq: Option<&QuantizedRows>,
        out: Out,
    ) -> Result<(Option<Tensor>, Option<QuantizedRows>)> {
        let k = self.w.k;
        let x = x.map(|x| x.contiguous()).transpose()?;
        let m = match (&x, xq) {
            (Some(x), _) => {
                let (m, kx) = x.dims2()?;
                if kx != k || x.dtype() != DType::BF16 {
                    candle_core::bail!(
                        "w8a8 Linear: input {:?} {:?}, weight [_, {k}]",
                        x.dims(),
                        x.dtype()
                    );
                }
                m
            }
            (None, Some(q)) => q.bytes.dim(0)?,
            (None, None) => candle_core::bail!("w8a8 Linear: no input"),
        };
        if let Some(q) = xq {
            if q.bytes.dims() != [m, k]
                || q.bytes.dtype() != DType::U8
                || q.scales.dims() != [m]
                || q.scales.dtype() != DType::F32
            {
                candle_core::bail!(
                    "w8a8 Linear: quantized rows {:?} {:?} / scales {:?} {:?} for input [{m}, {k}]",
                    q.bytes.dims(),
                    q.bytes.dtype(),
                    q.scales.dims(),
                    q.scales.dtype()
                );
            }
        }
        let xg = x.as_ref().map(|x| x.storage_and_layout());
        let xv = match &xg {
            Some((xs, xl)) => Some(cuda_view::<bf16>(xs, xl)?),
            None => None,
        };
        let guards = xq.map(|q| (q.bytes.storage_and_layout(), q.scales.storage_and_layout()));
        let qv = match &guards {
            Some(((bs, bl), (ss, sl))) => {
                Some((cuda_view::<u8>(bs, bl)?, cuda_view::<f32>(ss, sl)?))
            }
            None => None,
        };
        let (y, yq) = self.run(xv, m, qv, out)?;
        let n_out = self.n_out();
        let yq = yq.map(|(q, s)| QuantizedRows {
            format: self.format(),
            bytes: cuda_tensor(q, &self.dev, (m, n_out)),
            scales: cuda_tensor(s, &self.dev, m),
        });
        Ok((y.map(|y| cuda_tensor(y, &self.dev, (m, n_out))), yq))
    }
}

impl CustomOp1 for Q8Linear {
    fn name(&self) -> &'static str {
        "w8a8-linear"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("8-bit Linear runs on CUDA only")
    }
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (x, m, k) = input(s, l)?;
        if k != self.w.k {
            candle_core::bail!("w8a8 Linear: input has {k} features, weight {}", self.w.k);
        }
        let (y, _) = self.run(Some(x), m, None, Out::Rows)?;
        let y = output_rows(y)?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, self.dev.clone()),
            Shape::from((m, self.n_out())),
        ))
    }
}

impl LinearKernel for Q8Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }

    fn input_quant(&self) -> Option<ActQuant> {
        handoff().then(|| self.format())
    }

    fn forward_fused(
        &self,
        x: &Tensor,
        xq: Option<&QuantizedRows>,
        out_quant: Option<ActQuant>,
    ) -> Result<(Tensor, Option<QuantizedRows>)> {
        let fmt = self.format();
        let xq = xq.filter(|q| q.format == fmt);
        let out_quant = out_quant == Some(fmt) && self.gated;
        if xq.is_none() && !out_quant {
            return Ok((self.forward(x)?, None));
        }
        let out = if out_quant {
            Out::RowsQuantized
        } else {
            Out::Rows
        };
        let (y, yq) = self.run_tensors(Some(x), xq, out)?;
        let y = output_rows(y)?;
        Ok((y, yq))
    }

    fn gated_rows(
        &self,
        x: &Tensor,
        xq: Option<&QuantizedRows>,
        out_quant: ActQuant,
    ) -> Result<Option<QuantizedRows>> {
        let fmt = self.format();
        if out_quant != fmt || !self.quantizes_out(x.dim(0)?) {
            return Ok(None);
        }
        let xq = xq.filter(|q| q.format == fmt);
        Ok(self.run_tensors(Some(x), xq, Out::QuantizedOnly)?.1)
    }

    fn forward_rows(&self, xq: &QuantizedRows) -> Result<Tensor> {
        if xq.format != self.format() {
            candle_core::bail!(
                "w8a8 Linear: {:?} rows for a {:?} product",
                xq.format,
                self.format()
            );
        }
        let (y, _) = self.run_tensors(None, Some(xq), Out::Rows)?;
        output_rows(y)
    }
}

/// What [`attach`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Attached {
    /// Linears on the packed int4 kernels
    pub int4: usize,
    /// Linears on int8 tensor cores (q/k/v and gate/up counted one by one, though stacked)
    pub int8: usize,
    /// Linears on fp8 tensor cores (counted as int8)
    pub fp8: usize,
}

/// Makes every Linear of `model` that `ckpt` stores as W4A16 (pack-quantized) or W8A8 (int8, or
/// fp8 e4m3 where the GPU has fp8 tensor cores, with dynamic per-token activations of the same
/// format) run on its stored weights through these kernels; 8-bit q/k/v and gate/up are stacked
/// (one quantization and one GEMM each, the SiLU gate in gate/up's epilogue). The model must be
/// on CUDA in bf16; other Linears are left as they are. The kernels hold their own copy of the
/// weights: attach after any edit to them.
pub fn attach(model: &mut Exaone4, ckpt: &Checkpoint) -> Result<Attached> {
    let dev = match model.device() {
        Device::Cuda(d) => d.clone(),
        _ => candle_core::bail!("quantized kernels need the model on CUDA"),
    };
    if model.dtype() != DType::BF16 {
        candle_core::bail!(
            "quantized kernels need a bf16 model, got {:?}",
            model.dtype()
        );
    }
    let stream = dev.cuda_stream();
    let fp8_ok = fp8_supported(&stream)?;
    let mut lt: Option<Option<Arc<Fp8Lt>>> = None; // probed at the first fp8 layer
    let mut done = Attached::default();
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        let all = |a: ActQuant| layer.linears().iter().all(|(_, l)| l.act_quant == Some(a));
        let kind = if all(ActQuant::Int8PerToken) {
            Some(Q8Kind::Int8)
        } else if all(ActQuant::Fp8PerToken) && fp8_ok {
            Some(Q8Kind::Fp8)
        } else {
            None
        };
        if let Some(kind) = kind {
            let lt = match kind {
                Q8Kind::Int8 => None,
                Q8Kind::Fp8 => lt
                    .get_or_insert_with(|| {
                        Fp8Lt::probe_or_say(&stream, "fp8 Linears run on our tiles at every size")
                            .map(Arc::new)
                    })
                    .as_ref(),
            };
            let mut count = |n: usize| match kind {
                Q8Kind::Int8 => done.int8 += n,
                Q8Kind::Fp8 => done.fp8 += n,
            };
            let load =
                |prefixes: &[String], gated| Q8Linear::load(ckpt, prefixes, gated, &dev, kind, lt);
            let qkv = [
                p("self_attn.q_proj"),
                p("self_attn.k_proj"),
                p("self_attn.v_proj"),
            ];
            if let Some(k) = load(&qkv, false)? {
                layer.self_attn.fused_qkv = Some(Arc::new(k));
                count(3);
            }
            if let Some(k) = load(&[p("mlp.gate_proj"), p("mlp.up_proj")], true)? {
                layer.mlp.fused_gate_up = Some(Arc::new(k));
                count(2);
            }
            for (name, lin) in [
                ("self_attn.o_proj", &mut layer.self_attn.o_proj),
                ("mlp.down_proj", &mut layer.mlp.down_proj),
            ] {
                if let Some(k) = load(&[p(name)], false)? {
                    lin.kernel = Some(Arc::new(k));
                    count(1);
                }
            }
            continue;
        }
        for (name, lin) in layer.linears_mut() {
            if let Some(w) = PackedInt4::load(ckpt, &[p(name)], &stream)? {
                lin.kernel = Some(Arc::new(Int4Linear::new(w, &dev)));
                done.int4 += 1;
            }
        }
    }
    Ok(done)
}

/// Times a bf16 GEMM and the int8 path (quantize + int8 GEMM + epilogue) at [m, k] × [n, k]ᵀ
/// on `dev`: (bf16 ms, int8 GEMM alone ms, int8 path ms), medians of 10 after 3 warm-ups.
pub fn gemm_timings(dev: &CudaDevice, m: usize, n: usize, k: usize) -> Result<(f64, f64, f64)> {
    let stream = dev.cuda_stream();
    let blas = dev.cublas_handle();
    let x = stream.alloc_zeros::<bf16>(m * k).map_err(cuda_err)?;
    let w = stream.alloc_zeros::<bf16>(n * k).map_err(cuda_err)?;
    let y = stream.alloc_zeros::<bf16>(m * n).map_err(cuda_err)?;
    let w8 = stream.alloc_zeros::<u8>(n * k).map_err(cuda_err)?;
    let q = stream.alloc_zeros::<u8>(m * k).map_err(cuda_err)?;
    let sx = stream.alloc_zeros::<f32>(m).map_err(cuda_err)?;
    let sw = stream.alloc_zeros::<f32>(n).map_err(cuda_err)?;
    let acc = stream.alloc_zeros::<i32>(m * n).map_err(cuda_err)?;
    let (xa, wa, ya, w8a, qa, sxa, swa, acca) = (
        Dev::new(&x, &stream),
        Dev::new(&w, &stream),
        Dev::new(&y, &stream),
        Dev::new(&w8, &stream),
        Dev::new(&q, &stream),
        Dev::new(&sx, &stream),
        Dev::new(&sw, &stream),
        Dev::new(&acc, &stream),
    );
    let time = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
        let mut v = vec![];
        for i in 0..13 {
            stream.synchronize().map_err(cuda_err)?;
            let t0 = std::time::Instant::now();
            f()?;
            stream.synchronize().map_err(cuda_err)?;
            if i >= 3 {
                v.push(1e3 * t0.elapsed().as_secs_f64());
            }
        }
        v.sort_by(f64::total_cmp);
        Ok(v[v.len() / 2])
    };
    let bf = time(&|| gemm_bf16(&blas, xa, wa, ya, m, n, k))?;
    let i8g = time(&|| gemm_int8(&blas, qa, w8a, acca, m, n, k))?;
    let i8p = time(&|| {
        quant_rows_int8(dev, xa, qa, sxa, m, k)?;
        let g = Q8Gemm {
            q: qa,
            w: w8a,
            sx: sxa,
            sw: swa,
            y: ya,
            m,
            n,
            k,
        };
        gemm_int8_cublas(dev, &blas, &g, acca, false)
    })?;
    Ok((bf, i8g, i8p))
}
