//! Numerical checks of the W8A8 GEMMs (`runtime::launch::gemm_q8`, cuBLAS int8 + epilogue and
//! cuBLASLt's row-wise scaled fp8 GEMM, the paths that take the larger products) and of the
//! per-token activation quantizers (alone, and fused into the RMSNorm before the product: bit for
//! bit the norm followed by the quantizer), in the tolerance scheme of `runtime::check`: every kernel's
//! output against an f32 product of the same 8-bit operands and scales, beside the error of the
//! bf16 path (the same product from bf16-rounded dequantized operands by cuBLAS bf16, its SiLU
//! gate in bf16); a kernel passes within twice that error.
//! Run on the GPU machine by `bench_runtime --gemm-sweep`.

use std::sync::Arc;

use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream};
use candle_core::cuda::CudaDevice;
use candle_core::{DType, Device, Tensor};
use half::bf16;

use super::gemm::{Lcg, MS, SHAPES};
use crate::model::ActQuant;
use crate::runtime::launch::gemm_lt::Fp8Lt;
use crate::runtime::launch::gemm_q8::{
    gemm_fp8_lt, gemm_int8_cublas, gemm_q8, quant_rows_fp8, tiles_on, Q8Gemm, Q8Kind, Q8Tile,
};
use crate::runtime::launch::quant::quant_rows_int8;
use crate::runtime::launch::{cuda_err, cuda_tensor, fp8_supported, Dev};
use crate::runtime::Check;
use crate::Result;

/// M values beside the sweep's that cross tile edges.
const AWKWARD_M: [usize; 3] = [3, 17, 255];

/// ‖a − r‖ / ‖r‖ on the device.
fn rel(a: &Tensor, r: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F32)?;
    let d = (a - r)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let n = r.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok((d / n.max(1e-30)).sqrt())
}

/// 8-bit operands: the bytes the kernels read and the values they stand for.
struct Operand {
    bytes: Vec<u8>,
    values: Vec<f32>,
}

fn operand(kind: Q8Kind, len: usize, rng: &mut Lcg) -> Operand {
    let (mut bytes, mut values) = (Vec::with_capacity(len), Vec::with_capacity(len));
    for _ in 0..len {
        let (b, v) = match kind {
            Q8Kind::Int8 => {
                let q = (rng.bits() % 255) as i32 - 127;
                (q as i8 as u8, q as f32)
            }
            Q8Kind::Fp8 => {
                let f = float8::F8E4M3::from_f32((rng.unit() * 2.0 - 1.0) * 240.0);
                (f.to_bits(), f.to_f32())
            }
        };
        bytes.push(b);
        values.push(v);
    }
    Operand { bytes, values }
}

/// One product's operands on the device, and the f32 and bf16-path references.
struct Case {
    what: String,
    kind: Q8Kind,
    m: usize,
    n: usize,
    k: usize,
    gated: bool,
    q: CudaSlice<u8>,
    w: CudaSlice<u8>,
    sx: CudaSlice<f32>,
    sw: CudaSlice<f32>,
    reference: Tensor,
    bf16_err: f64,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(
        dev: &CudaDevice,
        stream: &Arc<CudaStream>,
        kind: Q8Kind,
        label: &str,
        (m, n, k): (usize, usize, usize),
        gated: bool,
        seed: u64,
    ) -> Result<Self> {
        let device = Device::Cuda(dev.clone());
        let mut rng = Lcg(seed);
        let (q, w) = (
            operand(kind, m * k, &mut rng),
            operand(kind, n * k, &mut rng),
        );
        let sx: Vec<f32> = (0..m).map(|_| 0.005 + 0.015 * rng.unit()).collect();
        let sw: Vec<f32> = (0..n).map(|_| 0.001 + 0.004 * rng.unit()).collect();
        let qf = Tensor::from_vec(q.values, (m, k), &device)?;
        let wf = Tensor::from_vec(w.values, (n, k), &device)?;
        let sxt = Tensor::from_vec(sx.clone(), (m, 1), &device)?;
        let swt = Tensor::from_vec(sw.clone(), (1, n), &device)?;
        let gate = |y: &Tensor| -> Result<Tensor> {
            if !gated {
                return Ok(y.clone());
            }
            let i = n / 2;
            Ok((y.narrow(1, 0, i)?.silu()? * y.narrow(1, i, i)?)?)
        };
        let acc = qf.matmul(&wf.t()?)?;
        let reference = gate(&acc.broadcast_mul(&sxt)?.broadcast_mul(&swt)?)?;
        drop(acc);
        // the bf16 path: dequantized operands rounded to bf16, cuBLAS bf16, the gate in bf16
        let xb = qf.broadcast_mul(&sxt)?.to_dtype(DType::BF16)?;
        let wb = wf.broadcast_mul(&swt.t()?)?.to_dtype(DType::BF16)?;
        let bf16_err = rel(&gate(&xb.matmul(&wb.t()?)?)?, &reference)?;
        let up = |v: &[u8]| stream.clone_htod(v).map_err(cuda_err);
        Ok(Self {
            what: format!("{label} m={m} n={n} k={k}"),
            kind,
            m,
            n,
            k,
            gated,
            q: up(&q.bytes)?,
            w: up(&w.bytes)?,
            sx: stream.clone_htod(&sx).map_err(cuda_err)?,
            sw: stream.clone_htod(&sw).map_err(cuda_err)?,
            reference,
            bf16_err,
        })
    }

    fn outs(&self) -> usize {
        if self.gated {
            self.n / 2
        } else {
            self.n
        }
    }

    fn check(&self, what: String, y: Tensor) -> Result<Check> {
        Ok(Check {
            what,
            kernel_err: rel(&y, &self.reference)?,
            bf16_err: self.bf16_err,
            top1: 1.0,
        })
    }

    /// The product's operands on the device, writing into `y` [m, outs].
    fn gemm<'a>(&'a self, s: &CudaStream, y: &'a CudaSlice<bf16>) -> Q8Gemm<'a> {
        Q8Gemm {
            q: Dev::new(&self.q, s),
            w: Dev::new(&self.w, s),
            sx: Dev::new(&self.sx, s),
            sw: Dev::new(&self.sw, s),
            y: Dev::new(y, s),
            m: self.m,
            n: self.n,
            k: self.k,
        }
    }

    /// Runs `f` on the product's operands and checks what it wrote, named `what`.
    fn run(
        &self,
        dev: &CudaDevice,
        what: String,
        f: impl FnOnce(&Q8Gemm) -> candle_core::Result<()>,
    ) -> Result<Check> {
        let s = dev.cuda_stream();
        let y = s
            .alloc_zeros::<bf16>(self.m * self.outs())
            .map_err(cuda_err)?;
        f(&self.gemm(&s, &y))?;
        self.check(what, cuda_tensor(y, dev, (self.m, self.outs())))
    }

    /// Our GEMM on `tile` (None: the one the launcher picks).
    fn ours(&self, dev: &CudaDevice, tile: Option<Q8Tile>) -> Result<Check> {
        let name = match self.kind {
            Q8Kind::Int8 => "ours-int8",
            Q8Kind::Fp8 => "ours-fp8",
        };
        let t = tile.map_or(String::new(), |t| format!(" tile {}", t.name));
        let what = format!("gemm {name} {}{t}", self.what);
        self.run(dev, what, |g| gemm_q8(dev, self.kind, g, self.gated, tile))
    }

    /// cuBLAS int8 → int32, then the scaling (gating) epilogue.
    fn cublas(&self, dev: &CudaDevice) -> Result<Check> {
        let s = dev.cuda_stream();
        let acc = s.alloc_zeros::<i32>(self.m * self.n).map_err(cuda_err)?;
        let what = format!("gemm cublas-int8+epilogue {}", self.what);
        self.run(dev, what, |g| {
            let acc = Dev::new(&acc, &s);
            gemm_int8_cublas(dev, &dev.cublas_handle(), g, acc, self.gated)
        })
    }

    /// The fp8 product through cuBLASLt's row-wise scaled GEMM (gated: then silu · up).
    fn cublaslt(&self, dev: &CudaDevice, lt: &Fp8Lt) -> Result<Check> {
        let s = dev.cuda_stream();
        let gu = s.alloc_zeros::<bf16>(self.m * self.n).map_err(cuda_err)?;
        let what = format!("gemm cublaslt-fp8 {}", self.what);
        self.run(dev, what, |g| {
            gemm_fp8_lt(dev, lt, g, self.gated.then(|| Dev::new(&gu, &s)))
        })
    }
}

/// The per-token quantizer of `kind` on random rows [m, k], dequantized, against the model's
/// `ActQuant` fake quantization in f32 (bf16 path: the same in bf16).
fn quant_check(dev: &CudaDevice, kind: Q8Kind, m: usize, k: usize) -> Result<Check> {
    let device = Device::Cuda(dev.clone());
    let s = dev.cuda_stream();
    let mut rng = Lcg(7 + m as u64);
    let xv: Vec<bf16> = (0..m * k)
        .map(|i| bf16::from_f32((rng.unit() * 2.0 - 1.0) * (1.0 + (i % 97) as f32 / 10.0)))
        .collect();
    let xd = s.clone_htod(&xv).map_err(cuda_err)?;
    let q = s.alloc_zeros::<u8>(m * k).map_err(cuda_err)?;
    let sc = s.alloc_zeros::<f32>(m).map_err(cuda_err)?;
    let (xa, qa, sa) = (Dev::new(&xd, &s), Dev::new(&q, &s), Dev::new(&sc, &s));
    let act = match kind {
        Q8Kind::Int8 => {
            quant_rows_int8(dev, xa, qa, sa, m, k)?;
            ActQuant::Int8PerToken
        }
        Q8Kind::Fp8 => {
            quant_rows_fp8(dev, xa, qa, sa, m, k)?;
            ActQuant::Fp8PerToken
        }
    };
    let qh = s.clone_dtoh(&q).map_err(cuda_err)?;
    let sh = s.clone_dtoh(&sc).map_err(cuda_err)?;
    let deq: Vec<f32> = qh
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let v = match kind {
                Q8Kind::Int8 => b as i8 as f32,
                Q8Kind::Fp8 => float8::F8E4M3::from_bits(b).to_f32(),
            };
            v * sh[i / k]
        })
        .collect();
    let x = Tensor::from_vec(xv, (m, k), &device)?;
    let reference = act.fake_quant(&x.to_dtype(DType::F32)?)?;
    if kind == Q8Kind::Fp8 {
        // e4m3 has 3 mantissa bits, so a value on a rounding tie (or a scale a last bit apart)
        // lands one step away and a relative L2 error says little: the check is that no value
        // is more than one e4m3 step (at its row's scale) from the reference's.
        let r: Vec<f32> = reference.flatten_all()?.to_vec1()?;
        let worst = deq
            .iter()
            .zip(&r)
            .enumerate()
            .map(|(i, (&d, &v))| {
                let s = sh[i / k].max(1e-30);
                let e = (v.abs() / s)
                    .max(f32::MIN_POSITIVE)
                    .log2()
                    .floor()
                    .max(-6.0);
                ((d - v).abs() / (s * (e - 3.0).exp2())) as f64
            })
            .fold(0.0, f64::max);
        return Ok(Check {
            what: format!("quant_rows_fp8 m={m} k={k} (worst error in e4m3 steps; ≤ 1 passes)"),
            kernel_err: worst,
            bf16_err: 0.5,
            top1: 1.0,
        });
    }
    let kernel = Tensor::from_vec(deq, (m, k), &device)?;
    let name = "quant_rows_int8";
    Ok(Check {
        what: format!("{name} m={m} k={k}"),
        kernel_err: rel(&kernel, &reference)?,
        bf16_err: rel(&act.fake_quant(&x)?, &reference)?,
        top1: 1.0,
    })
}

/// Every GEMM on every shape of the sweep at every M of the sweep and the awkward ones (3, 17,
/// 255), picked tile and (Hopper) every warpgroup-MMA tile; then K = 2064 (not a multiple of any
/// K-tile) and N = 1040 (not a multiple of any N-tile) at the awkward M on every tile the GPU
/// runs, plain and gated; then the quantizers, alone and fused into the RMSNorm. fp8 only where
/// the GPU has fp8 tensor cores.
pub fn run(dev: &CudaDevice) -> Result<Vec<Check>> {
    let s = dev.cuda_stream();
    let fp8 = fp8_supported(&s)?;
    let mut kinds = vec![Q8Kind::Int8];
    if fp8 {
        kinds.push(Q8Kind::Fp8);
    } else {
        eprintln!("gemm checks: this GPU lacks fp8 tensor cores; fp8 GEMMs not checked");
    }
    let lt = fp8
        .then(|| Fp8Lt::probe_or_say(&s, "gemm checks: cuBLASLt's row-wise fp8 GEMM not checked"))
        .flatten();
    let tiles = tiles_on(dev)?;
    let mut out = vec![];
    let mut seed = 1;
    let ms = MS.iter().chain(&AWKWARD_M).copied();
    for m in ms {
        for &(label, n, k, gated) in &SHAPES {
            for &kind in &kinds {
                seed += 1;
                let c = Case::new(dev, &s, kind, label, (m, n, k), gated, seed)?;
                out.push(c.ours(dev, None)?);
                // the warpgroup-MMA tiles at every shape and M, whichever the launcher picks
                for &tile in tiles.iter().filter(|t| t.wgmma) {
                    out.push(c.ours(dev, Some(tile))?);
                }
                match (kind, &lt) {
                    (Q8Kind::Int8, _) => out.push(c.cublas(dev)?),
                    (Q8Kind::Fp8, Some(lt)) => out.push(c.cublaslt(dev, lt)?),
                    _ => {}
                }
            }
        }
    }
    for m in AWKWARD_M {
        for gated in [false, true] {
            for &kind in &kinds {
                seed += 1;
                let label = if gated { "odd-gated" } else { "odd" };
                let c = Case::new(dev, &s, kind, label, (m, 1040, 2064), gated, seed)?;
                for &tile in &tiles {
                    out.push(c.ours(dev, Some(tile))?);
                }
                if let (Q8Kind::Fp8, Some(lt)) = (kind, &lt) {
                    out.push(c.cublaslt(dev, lt)?);
                }
            }
        }
    }
    // the last: enough rows for the warp-per-row quantizer on this GPU (`launch::quant`), the
    // others take the block-per-row one
    let many = 16 * crate::runtime::launch::sm_count(dev)? + 3;
    for (m, k) in [(1, 2048), (17, 2064), (255, 4096), (many, 2048)] {
        for &kind in &kinds {
            out.push(quant_check(dev, kind, m, k)?);
            out.extend(super::fused_quant_checks::run(dev, kind, m, k)?);
        }
    }
    Ok(out)
}
