//! Bit-for-bit checks of the kernels that quantize a Linear's input per token on the way out of
//! the kernel that produces it (W8A8 int8 and fp8): the RMSNorm + residual (in place, as the
//! engines run it, and into a new buffer, as the candle forward runs it) and the SiLU-gated
//! product's epilogue (after cuBLAS's int8 GEMM; after cuBLASLt's fp8 GEMM), each against the
//! unfused kernel followed by the quantizer. Rows, bytes and scales must be the same bits: a
//! check's `kernel_err` counts the values that differ (0 passes). Run on the GPU machine by
//! `bench_runtime --gemm-sweep` (with `--checks-only`, these and the GEMM checks alone).

use std::sync::Arc;

use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use candle_core::cuda::CudaDevice;
use half::bf16;

use super::gemm::Lcg;
use crate::runtime::launch::gemm_q8::{quant_rows_fp8, silu_mul_quant_fp8, Q8Kind};
use crate::runtime::launch::norm_rope::{rmsnorm_rows, silu_mul_rows, RmsNormRows};
use crate::runtime::launch::quant::{
    int8_silu_epilogue, int8_silu_epilogue_quant, quant_rows_int8, rmsnorm_quant_rows, Int8Epilogue,
};
use crate::runtime::launch::{cuda_err, Dev};
use crate::runtime::Check;
use crate::Result;

/// Every fused quantizer of `kind` on m rows of k values (gated: k outputs per row).
pub(super) fn run(dev: &CudaDevice, kind: Q8Kind, m: usize, k: usize) -> Result<Vec<Check>> {
    Ok(vec![
        norm_quant(dev, kind, m, k, true)?,
        norm_quant(dev, kind, m, k, false)?,
        gated_quant(dev, kind, m, k, true)?,
        gated_quant(dev, kind, m, k, false)?,
    ])
}

/// `m · k` bf16 values of magnitude up to ~`scale` · 12, varied along the row.
fn rows(rng: &mut Lcg, m: usize, k: usize, scale: f32) -> Vec<bf16> {
    (0..m * k)
        .map(|i| bf16::from_f32((rng.unit() * 2.0 - 1.0) * scale * (1.0 + (i % 89) as f32 / 8.0)))
        .collect()
}

/// Per-token quantization buffers: bytes [m, k] and scales [m], twice (unfused, fused).
struct Quantized {
    q: [CudaSlice<u8>; 2],
    s: [CudaSlice<f32>; 2],
}

impl Quantized {
    fn new(s: &Arc<CudaStream>, m: usize, k: usize) -> Result<Self> {
        let b = || s.alloc_zeros::<u8>(m * k).map_err(cuda_err);
        let f = || s.alloc_zeros::<f32>(m).map_err(cuda_err);
        Ok(Self {
            q: [b()?, b()?],
            s: [f()?, f()?],
        })
    }

    fn dev(&self, i: usize, s: &Arc<CudaStream>) -> (Dev<'_, u8>, Dev<'_, f32>) {
        (Dev::new(&self.q[i], s), Dev::new(&self.s[i], s))
    }

    /// Bytes and scales that differ between the two.
    fn differing(&self, s: &Arc<CudaStream>) -> Result<usize> {
        Ok(differing(s, &self.q[0], &self.q[1], |v: &u8| *v as u32)?
            + differing(s, &self.s[0], &self.s[1], |v: &f32| v.to_bits())?)
    }
}

/// The unfused quantizer of `kind` on rows x [m, k].
fn quantize(
    dev: &CudaDevice,
    kind: Q8Kind,
    x: Dev<bf16>,
    qs: (Dev<u8>, Dev<f32>),
    m: usize,
    k: usize,
) -> Result<()> {
    match kind {
        Q8Kind::Int8 => quant_rows_int8(dev, x, qs.0, qs.1, m, k)?,
        Q8Kind::Fp8 => quant_rows_fp8(dev, x, qs.0, qs.1, m, k)?,
    }
    Ok(())
}

fn check(what: String, differ: usize) -> Check {
    Check {
        what: format!("{what} (values differing from the unfused kernels; 0 passes)"),
        kernel_err: differ as f64,
        bf16_err: 0.0,
        top1: 1.0,
    }
}

/// The RMSNorm + residual with the quantizer fused in (`rmsnorm_quant_rows`) against
/// `rmsnorm_rows` followed by the quantizer: `in_place`, the residual added where it lies (the
/// engines, before the q/k/v and gate/up products); else written to a new buffer (the candle
/// forward's `h + norm(o)`), whose rows must also equal the in-place sum's.
fn norm_quant(dev: &CudaDevice, kind: Q8Kind, m: usize, k: usize, in_place: bool) -> Result<Check> {
    let s = dev.cuda_stream();
    let mut rng = Lcg(11 + m as u64);
    let (xv, hv) = (rows(&mut rng, m, k, 3.0), rows(&mut rng, m, k, 1.0));
    let wv: Vec<bf16> = (0..k)
        .map(|i| bf16::from_f32(0.5 + (i % 13) as f32 / 10.0))
        .collect();
    let up = |v: &[bf16]| s.clone_htod(v).map_err(cuda_err);
    let (x, w) = (up(&xv)?, up(&wv)?);
    // in place: both sums overwrite copies of h; else into out0/out1, h left as it is
    let (h, outs) = (up(&hv)?, [up(&hv)?, up(&hv)?]);
    let norm = |out, prev| RmsNormRows {
        x: Dev::new(&x, &s),
        w: Dev::new(&w, &s),
        out,
        rows: m,
        n: k,
        eps: 1e-5,
        prev: Some(prev),
        row_step: 1,
        row_off: 0,
        idx: None,
    };
    let qz = Quantized::new(&s, m, k)?;
    let (o0, o1) = (Dev::new(&outs[0], &s), Dev::new(&outs[1], &s));
    let hd = Dev::new(&h, &s);
    let (p0, p1) = if in_place { (o0, o1) } else { (hd, hd) };
    rmsnorm_rows(dev, &norm(o0, p0))?;
    quantize(dev, kind, o0, qz.dev(0, &s), m, k)?;
    rmsnorm_quant_rows(dev, &norm(o1, p1), kind, qz.dev(1, &s).0, qz.dev(1, &s).1)?;
    let mut differ = differing(&s, &outs[0], &outs[1], |v: &bf16| v.to_bits() as u32)?;
    differ += qz.differing(&s)?;
    if !in_place {
        // the same sum as adding in place
        let inplace = up(&hv)?;
        let d = Dev::new(&inplace, &s);
        rmsnorm_rows(dev, &norm(d, d))?;
        differ += differing(&s, &outs[0], &inplace, |v: &bf16| v.to_bits() as u32)?;
        differ += differing(&s, &h, &up(&hv)?, |v: &bf16| v.to_bits() as u32)?;
    }
    let name = match kind {
        Q8Kind::Int8 => "rmsnorm_quant_int8",
        Q8Kind::Fp8 => "rmsnorm_quant_fp8",
    };
    let place = if in_place {
        "in place"
    } else {
        "into a new buffer"
    };
    Ok(check(format!("{name} {place} m={m} k={k}"), differ))
}

/// The gated product's output quantized on the way out: int8, `int8_silu_epilogue_quant` on a
/// random int32 gate/up accumulator against `int8_silu_epilogue` + the quantizer; fp8,
/// `silu_mul_quant_fp8` on random bf16 gate/up products against `silu_mul_rows` + the
/// quantizer. `inter` outputs per row. Without `keep_y` the fused kernel writes no bf16 rows
/// (staged in shared memory) and only its bytes and scales are compared.
fn gated_quant(
    dev: &CudaDevice,
    kind: Q8Kind,
    m: usize,
    inter: usize,
    keep_y: bool,
) -> Result<Check> {
    let s = dev.cuda_stream();
    let mut rng = Lcg(29 + m as u64);
    let ys = [0, 1].map(|_| s.alloc_zeros::<bf16>(m * inter).map_err(cuda_err));
    let [y0, y1] = ys;
    let (y0, y1) = (y0?, y1?);
    let (y0d, y1d) = (Dev::new(&y0, &s), Dev::new(&y1, &s));
    let qz = Quantized::new(&s, m, inter)?;
    let name = match kind {
        Q8Kind::Int8 => {
            let acc: Vec<i32> = (0..m * 2 * inter)
                .map(|_| rng.bits() as i32 % 400_000 - 200_000)
                .collect();
            let sx: Vec<f32> = (0..m).map(|r| 1e-4 * (1.0 + (r % 7) as f32)).collect();
            let sw: Vec<f32> = (0..2 * inter)
                .map(|i| 2e-4 * (1.0 + (i % 11) as f32 / 4.0))
                .collect();
            let acc = s.clone_htod(&acc).map_err(cuda_err)?;
            let (sx, sw) = (
                s.clone_htod(&sx).map_err(cuda_err)?,
                s.clone_htod(&sw).map_err(cuda_err)?,
            );
            let e = |y| Int8Epilogue {
                acc: Dev::new(&acc, &s),
                sx: Dev::new(&sx, &s),
                sw: Dev::new(&sw, &s),
                y,
                m,
                n: inter,
            };
            int8_silu_epilogue(dev, &e(y0d))?;
            quantize(dev, kind, y0d, qz.dev(0, &s), m, inter)?;
            let (q1, s1) = qz.dev(1, &s);
            int8_silu_epilogue_quant(dev, &e(y1d), keep_y, q1, s1)?;
            "int8_silu_epilogue_quant"
        }
        Q8Kind::Fp8 => {
            let gu = s
                .clone_htod(&rows(&mut rng, m, 2 * inter, 1.5))
                .map_err(cuda_err)?;
            let gud = Dev::new(&gu, &s);
            silu_mul_rows(dev, gud, y0d, m, inter)?;
            quantize(dev, kind, y0d, qz.dev(0, &s), m, inter)?;
            let (q1, s1) = qz.dev(1, &s);
            silu_mul_quant_fp8(dev, gud, keep_y.then_some(y1d), q1, s1, m, inter)?;
            "silu_mul_quant_fp8"
        }
    };
    let rows_differ = match keep_y {
        true => differing(&s, &y0, &y1, |v: &bf16| v.to_bits() as u32)?,
        false => 0,
    };
    let differ = rows_differ + qz.differing(&s)?;
    let staged = if keep_y { "" } else { " (no bf16 rows)" };
    Ok(check(format!("{name}{staged} m={m} inter={inter}"), differ))
}

/// How many elements of two device buffers differ in their bits (`bits` of each).
fn differing<T: DeviceRepr + Default + Clone>(
    s: &Arc<CudaStream>,
    a: &CudaSlice<T>,
    b: &CudaSlice<T>,
    bits: impl Fn(&T) -> u32,
) -> Result<usize> {
    let (a, b) = (
        s.clone_dtoh(a).map_err(cuda_err)?,
        s.clone_dtoh(b).map_err(cuda_err)?,
    );
    Ok(a.iter().zip(&b).filter(|(u, v)| bits(u) != bits(v)).count())
}
