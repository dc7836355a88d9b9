//! The W8A8 GEMM microbenchmark (`bench_runtime --gemm-sweep`): the 1.2B's four Linear shapes
//! (q/k/v stacked, o, gate/up stacked with its SiLU gate, down) at M ∈ {1 … 16384} rows, each as
//! our int8 GEMM (scales and gate in the epilogue), our fp8 GEMM (sm_89+), cuBLASLt's fp8 GEMM
//! with row-wise scaling (where the GPU runs it), cuBLAS int8 + the scaling epilogue and cuBLAS
//! bf16 (the GEMM alone); beside them the
//! per-token quantizers that feed the 8-bit GEMMs. µs and TOP/s (2·M·N·K over the time) per
//! (shape, M, kernel), as rows of `Results` and a printed table, after the numerical checks
//! (`gemm_checks`). Device time from CUDA events around a captured graph of back-to-back
//! launches, each on another copy of the weights (together beyond the L2 cache), so that
//! neither launch overhead nor a warm cache flatters the small products.

use std::path::Path;

use candle_core::Device;

use crate::record::Results;
use crate::{Error, Result};

/// The 1.2B's Linears as the engines run them (hidden 2048, intermediate 4096, 32 query and 8 KV
/// heads of 64, as scripts/gpu_parity.py's CFG): (name, weight rows N, K, gated).
pub const SHAPES: [(&str, usize, usize, bool); 4] = [
    ("qkv", 3072, 2048, false),
    ("o", 2048, 2048, false),
    ("gate_up", 8192, 2048, true),
    ("down", 2048, 4096, false),
];

/// Rows: decode batches to a long prefill.
pub const MS: [usize; 7] = [1, 4, 16, 64, 256, 2048, 16384];

/// A small deterministic generator for operands (no dependency, same values on every machine).
pub struct Lcg(pub u64);

impl Lcg {
    /// 31 random bits.
    pub fn bits(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        self.bits() as f32 / (1u64 << 31) as f32
    }
}

/// The checks, then the sweep, then (`with_w4`) the W4A16 sweep (`gemm_w4`: every route checked
/// and timed beside our bf16 path), on `device`; rows (checks and timings) saved to `out`. An
/// error off CUDA, and when a check fails (after saving).
pub fn run(mut r: Results, device: &Device, out: &Path, with_w4: bool) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let checks = super::gemm_checks::run(d)?;
        let failed = report_checks(&mut r, &checks);
        // timed even when a check fails: the failures are reported and make the run fail, and
        // the timings say whether the failing kernel is worth fixing
        sweep::run(&mut r, d)?;
        // the W4A16 products, each route checked and timed beside our bf16 path
        let w4_failed = match with_w4 {
            true => w4_part(&mut r, device)?,
            false => vec![],
        };
        let failed: Vec<String> = failed.into_iter().chain(w4_failed).collect();
        r.save(out)?;
        if !failed.is_empty() {
            return Err(Error::Invalid(format!(
                "GEMM checks failed (timings taken anyway): {failed:?}"
            )));
        }
        return Ok(());
    }
    let _ = (&mut r, device, out, with_w4);
    Err(needs_cuda())
}

/// `bench_runtime --gemm-sweep --checks-only`: the W8A8 GEMMs' and quantizers' numerical checks
/// alone (`gemm_checks`, a few seconds), rows saved to `out`; an error off CUDA and when one
/// fails.
pub fn checks_only(mut r: Results, device: &Device, out: &Path) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let checks = super::gemm_checks::run(d)?;
        let failed = report_checks(&mut r, &checks);
        r.save(out)?;
        eprintln!(
            "W8A8 checks: {} of {} pass",
            checks.len() - failed.len(),
            checks.len()
        );
        if !failed.is_empty() {
            return Err(Error::Invalid(format!("GEMM checks failed: {failed:?}")));
        }
        return Ok(());
    }
    let _ = (&mut r, device, out);
    Err(needs_cuda())
}

/// What `--gemm-sweep` says off CUDA.
fn needs_cuda() -> Error {
    Error::Invalid("--gemm-sweep needs a CUDA build and --device cuda".into())
}

/// Each check printed with its verdict and recorded; the failed ones named.
#[cfg(feature = "cuda")]
fn report_checks(r: &mut Results, checks: &[crate::runtime::Check]) -> Vec<String> {
    for c in checks {
        let verdict = if c.passes() { "ok" } else { "FAIL" };
        eprintln!(
            "check {}: kernel {:.2e}, bf16 path {:.2e} → {verdict}",
            c.what, c.kernel_err, c.bf16_err
        );
    }
    super::checks::record(r, checks);
    super::checks::failed(checks)
}

/// What `bench_runtime --gemm-sweep` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepPart {
    /// the W8A8 checks and sweep, then the W4A16 sweep
    All,
    /// `--w4-only`
    W4,
    /// `--w8a8-only`: the W8A8 checks and sweep
    W8a8,
    /// `--checks-only`: the W8A8 checks
    Checks,
}

impl SweepPart {
    /// The part the flags name (clap keeps them exclusive; `checks_only` wins, then `w4_only`).
    pub fn from_flags(w4_only: bool, w8a8_only: bool, checks_only: bool) -> Self {
        match (w4_only, w8a8_only, checks_only) {
            (_, _, true) => SweepPart::Checks,
            (true, _, _) => SweepPart::W4,
            (_, true, _) => SweepPart::W8a8,
            _ => SweepPart::All,
        }
    }
}

/// `bench_runtime --gemm-sweep`: [`run`] (with or without the W4A16 part), [`run_w4`] or
/// [`checks_only`].
pub fn sweep(r: Results, device: &Device, out: &Path, part: SweepPart) -> Result<()> {
    match part {
        SweepPart::Checks => checks_only(r, device, out),
        SweepPart::W4 => run_w4(r, device, out),
        SweepPart::W8a8 => run(r, device, out, false),
        SweepPart::All => run(r, device, out, true),
    }
}

/// The W4A16 part of [`run`] alone (`bench_runtime --gemm-sweep --w4-only`): every route
/// checked and timed beside our bf16 path; rows saved to `out`; an error when a check fails.
pub fn run_w4(mut r: Results, device: &Device, out: &Path) -> Result<()> {
    if !device.is_cuda() {
        return Err(needs_cuda());
    }
    let failed = w4_part(&mut r, device)?;
    r.save(out)?;
    if !failed.is_empty() {
        return Err(Error::Invalid(format!(
            "W4A16 GEMM checks failed (timings taken anyway): {failed:?}"
        )));
    }
    Ok(())
}

/// The W4A16 sweep, its table printed; the failed points named.
fn w4_part(r: &mut Results, device: &Device) -> Result<Vec<String>> {
    use super::gemm_w4::{w4_sweep, W4_MS, W4_SHAPES};
    let mut w4 = w4_sweep(r, device, &W4_SHAPES, &W4_MS, 5)?;
    w4.extend(super::gemm_w4_pairs::pair_checks(device)?);
    println!("\nW4A16: what the engines run (w4 auto) ÷ our bf16 path, speed-up per product");
    print!("{:<10}", "shape");
    for m in W4_MS {
        print!("{:>9}", format!("M={m}"));
    }
    println!();
    for (shape, _, _) in W4_SHAPES {
        print!("{shape:<10}");
        for m in W4_MS {
            let x = r.get("w4a16-gemm", &format!("w4_speedup {shape} m={m}"));
            print!("{:>9}", x.map_or("–".to_string(), |x| format!("{x:.2}×")));
        }
        println!();
    }
    eprintln!(
        "W4A16 checks: {} of {} pass",
        w4.iter().filter(|p| p.pass).count(),
        w4.len()
    );
    Ok(w4
        .iter()
        .filter(|p| !p.pass)
        .map(|p| format!("w4 {} m={} {}", p.shape, p.m, p.kernel))
        .collect())
}

#[cfg(feature = "cuda")]
mod sweep {
    use std::sync::Arc;

    use candle_core::cuda::cudarc::driver::{sys, CudaSlice, CudaStream, DeviceRepr};
    use candle_core::cuda::CudaDevice;
    use half::bf16;
    use serde_json::json;

    use super::{Lcg, MS, SHAPES};
    use crate::record::{Results, Variant};
    use crate::runtime::launch::gemm::gemm_bf16;
    use crate::runtime::launch::gemm_lt::Fp8Lt;
    use crate::runtime::launch::gemm_q8::{
        gemm_fp8_lt, gemm_int8_cublas, gemm_q8, pick_tile, quant_rows_fp8, tiles_on, Q8Gemm,
        Q8Kind, Q8Tile,
    };
    use crate::runtime::launch::quant::quant_rows_int8;
    use crate::runtime::launch::{cuda_err, fp8_supported, sm_count, wgmma_on, Dev};
    use crate::Result;

    /// Bytes of weights the launches of one timing cycle through (beyond any L2 cache).
    const RING_BYTES: usize = 256 << 20;

    /// Device µs per call of `f(i)` (i: the launch's index, for its weight copy): `iters`
    /// launches captured as one graph, replayed 5 times after a warm-up, the median. Where
    /// capture fails (a library that will not be captured), the same launches eagerly.
    fn time_us(
        s: &Arc<CudaStream>,
        iters: usize,
        f: &dyn Fn(usize) -> candle_core::Result<()>,
    ) -> Result<f64> {
        f(0)?; // loads the module, sets attributes: not inside a capture
        s.synchronize().map_err(cuda_err)?;
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        s.begin_capture(mode).map_err(cuda_err)?;
        let launched = (0..iters).try_for_each(f);
        let graph = s.end_capture(sys::CUgraphInstantiate_flags(0));
        let graph = match (launched, graph) {
            (Ok(()), Ok(Some(g))) => Some(g),
            _ => None,
        };
        let run = || -> candle_core::Result<()> {
            match &graph {
                Some(g) => g.launch().map_err(cuda_err),
                None => (0..iters).try_for_each(f),
            }
        };
        let ev = || s.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT));
        run()?;
        let mut v = vec![];
        for _ in 0..5 {
            let e0 = ev().map_err(cuda_err)?;
            run()?;
            let e1 = ev().map_err(cuda_err)?;
            e1.synchronize().map_err(cuda_err)?;
            v.push(e0.elapsed_ms(&e1).map_err(cuda_err)? as f64 * 1e3 / iters as f64);
        }
        v.sort_by(f64::total_cmp);
        Ok(v[v.len() / 2])
    }

    fn upload<T: DeviceRepr>(s: &Arc<CudaStream>, v: &[T]) -> Result<CudaSlice<T>> {
        Ok(s.clone_htod(v).map_err(cuda_err)?)
    }

    /// `copies` copies of one random [n, k] weight of each format, back to back.
    struct Rings {
        int8: CudaSlice<u8>,
        fp8: CudaSlice<u8>,
        bf16: CudaSlice<bf16>,
        copies: usize,
    }

    impl Rings {
        fn new(s: &Arc<CudaStream>, n: usize, k: usize, rng: &mut Lcg) -> Result<Self> {
            let copies = RING_BYTES.div_ceil(n * k).clamp(2, 64);
            let one: Vec<u8> = (0..n * k).map(|_| rng.bits() as u8).collect();
            let int8: Vec<u8> = one.repeat(copies);
            // e4m3 without NaNs (S.1111.111): bit 6 cleared keeps |v| < 2
            let fp8: Vec<u8> = int8.iter().map(|b| b & 0xBF).collect();
            let bf: Vec<bf16> = one
                .iter()
                .map(|&b| bf16::from_f32((b as i8) as f32 / 64.0))
                .collect::<Vec<_>>()
                .repeat(copies);
            Ok(Self {
                int8: upload(s, &int8)?,
                fp8: upload(s, &fp8)?,
                bf16: upload(s, &bf)?,
                copies,
            })
        }
    }

    struct Row {
        shape: &'static str,
        m: usize,
        tile: &'static str,
        us: Vec<(String, f64, f64)>,
    }

    /// Times every kernel at every shape and M, adds the rows to `r` and prints the table.
    pub(super) fn run(r: &mut Results, d: &CudaDevice) -> Result<()> {
        let s = d.cuda_stream();
        let blas = d.cublas_handle();
        let fp8 = fp8_supported(&s)?;
        let lt = fp8
            .then(|| Fp8Lt::probe_or_say(&s, "gemm sweep: no cuBLASLt row-wise fp8 column"))
            .flatten();
        let sms = sm_count(d)?;
        let wgmma = wgmma_on(&s)?;
        let runnable = tiles_on(d)?;
        let mut rng = Lcg(42);
        let mmax = *MS.iter().max().expect("rows");
        let mut table = vec![];
        for &(shape, n, k, gated) in &SHAPES {
            let rings = Rings::new(&s, n, k, &mut rng)?;
            let xs: Vec<bf16> = (0..mmax * k)
                .map(|_| bf16::from_f32(rng.unit() * 2.0 - 1.0))
                .collect();
            let x = upload(&s, &xs)?;
            let qb: Vec<u8> = (0..mmax * k).map(|_| rng.bits() as u8).collect();
            let q8 = upload(&s, &qb)?;
            let qf8 = upload(&s, &qb.iter().map(|b| b & 0xBF).collect::<Vec<_>>())?;
            let sx = upload(&s, &vec![0.01f32; mmax])?;
            let sw = upload(&s, &vec![0.002f32; n])?;
            let y = s.alloc_zeros::<bf16>(mmax * n).map_err(cuda_err)?;
            let acc = s.alloc_zeros::<i32>(mmax * n).map_err(cuda_err)?;
            let gu = s.alloc_zeros::<bf16>(mmax * n).map_err(cuda_err)?;
            let gud = Dev::new(&gu, &s);
            let qs = s.alloc_zeros::<u8>(mmax * k).map_err(cuda_err)?;
            let (xd, yd, accd, qsd) = (
                Dev::new(&x, &s),
                Dev::new(&y, &s),
                Dev::new(&acc, &s),
                Dev::new(&qs, &s),
            );
            let (sxd, swd) = (Dev::new(&sx, &s), Dev::new(&sw, &s));
            let w8 = |i: usize| Dev::new(&rings.int8, &s).skip((i % rings.copies) * n * k);
            let wf8 = |i: usize| Dev::new(&rings.fp8, &s).skip((i % rings.copies) * n * k);
            let wbf = |i: usize| Dev::new(&rings.bf16, &s).skip((i % rings.copies) * n * k);
            for &m in &MS {
                let ops = 2.0 * (m * n * k) as f64;
                // enough launches to cycle the ring, and ≥ ~1 ms of work for the timing
                let iters = rings
                    .copies
                    .max((1e-3 * 300e12 / ops) as usize)
                    .clamp(8, 200);
                let mut us = vec![];
                let ours = |kind: Q8Kind, q: &CudaSlice<u8>, w: Dev<u8>, tile: Option<Q8Tile>| {
                    let g = Q8Gemm {
                        q: Dev::new(q, &s),
                        w,
                        sx: sxd,
                        sw: swd,
                        y: yd,
                        m,
                        n,
                        k,
                    };
                    gemm_q8(d, kind, &g, gated, tile)
                };
                let ours8 = |i: usize| ours(Q8Kind::Int8, &q8, w8(i), None);
                us.push(("ours-int8".to_string(), time_us(&s, iters, &ours8)?));
                // every tile forced, to see where pick_tile's thresholds should lie
                for &tile in &runnable {
                    let f = |i: usize| ours(Q8Kind::Int8, &q8, w8(i), Some(tile));
                    us.push((format!("int8@{}", tile.name), time_us(&s, iters, &f)?));
                }
                if fp8 {
                    let ours_f8 = |i: usize| ours(Q8Kind::Fp8, &qf8, wf8(i), None);
                    us.push(("ours-fp8".to_string(), time_us(&s, iters, &ours_f8)?));
                    // the warpgroup-MMA tiles also take fp8 (the mma.sync ones: as int8)
                    for tile in runnable.iter().filter(|t| t.wgmma) {
                        let f = |i: usize| ours(Q8Kind::Fp8, &qf8, wf8(i), Some(*tile));
                        us.push((format!("fp8@{}", tile.name), time_us(&s, iters, &f)?));
                    }
                }
                let (q8d, qf8d) = (Dev::new(&q8, &s), Dev::new(&qf8, &s));
                let gemm = |q, w| Q8Gemm {
                    q,
                    w,
                    sx: sxd,
                    sw: swd,
                    y: yd,
                    m,
                    n,
                    k,
                };
                if let Some(lt) = &lt {
                    // gated: the products into gu, then silu · up (as the engines run it)
                    let gu = gated.then_some(gud);
                    let f = |i: usize| gemm_fp8_lt(d, lt, &gemm(qf8d, wf8(i)), gu);
                    us.push(("cublaslt-fp8".to_string(), time_us(&s, iters, &f)?));
                }
                let old = |i: usize| gemm_int8_cublas(d, &blas, &gemm(q8d, w8(i)), accd, gated);
                us.push((
                    "cublas-int8+epilogue".to_string(),
                    time_us(&s, iters, &old)?,
                ));
                let bf = |i: usize| gemm_bf16(&blas, xd, wbf(i), yd, m, n, k);
                us.push(("cublas-bf16".to_string(), time_us(&s, iters, &bf)?));
                let qi8 = |_: usize| quant_rows_int8(d, xd, qsd, sxd, m, k);
                us.push(("quant-int8".to_string(), time_us(&s, iters, &qi8)?));
                if fp8 {
                    let qf = |_: usize| quant_rows_fp8(d, xd, qsd, sxd, m, k);
                    us.push(("quant-fp8".to_string(), time_us(&s, iters, &qf)?));
                }
                let tile = pick_tile(m, n, sms, wgmma).name;
                let mut row = Row {
                    shape,
                    m,
                    tile,
                    us: vec![],
                };
                for (kernel, t) in us {
                    let kernel = kernel.as_str();
                    let quant = kernel.starts_with("quant");
                    let tops = if quant { f64::NAN } else { ops / t / 1e6 };
                    let t_name = match kernel.split_once('@') {
                        Some((_, forced)) => forced,
                        None if kernel.starts_with("ours") => tile,
                        None => "",
                    };
                    let params = json!({"shape": shape, "m": m, "n": n, "k": k, "gated": gated,
                        "tile": t_name});
                    let v = Variant::new(kernel, "gemm_sweep", params);
                    r.add(&v, &format!("gemm_us {shape} m={m}"), t, None, "us");
                    if !quant {
                        r.add(&v, &format!("gemm_tops {shape} m={m}"), tops, None, "TOP/s");
                    }
                    row.us.push((kernel.to_string(), t, tops));
                }
                eprintln!("timed {shape} m={m}");
                table.push(row);
            }
        }
        print_table(&table);
        Ok(())
    }

    /// One line per (shape, M): each kernel's µs (TOP/s), our tile.
    fn print_table(rows: &[Row]) {
        let Some(first) = rows.first() else { return };
        let mut head = format!("{:<8} {:>6} {:>9}", "shape", "M", "tile");
        for (kernel, _, _) in &first.us {
            head += &format!(" {kernel:>20}");
        }
        println!("{head}   (µs (TOP/s); quantizers: µs)");
        for row in rows {
            let mut line = format!("{:<8} {:>6} {:>9}", row.shape, row.m, row.tile);
            for (_, t, tops) in &row.us {
                let cell = if tops.is_nan() {
                    format!("{t:.1}")
                } else {
                    format!("{t:.1} ({tops:.0})")
                };
                line += &format!(" {cell:>20}");
            }
            println!("{line}");
        }
    }
}
