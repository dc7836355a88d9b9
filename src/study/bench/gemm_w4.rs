//! The W4A16 GEMM sweep (`runtime::int4`, `kernels/gemm_w4.cu`): every route of a W4A16
//! product — the tensor-core GEMM on each tile, the packed GEMV, dequantize + cuBLAS, and the
//! default choice — checked against an f32 product of the same dequantized weights and timed
//! beside our bf16 path on the same weights, at EXAONE-4.0-1.2B's Linear shapes; plus
//! correctness cases the shapes do not reach (asymmetric, act-order, per-channel, group 16 with
//! K = 2064, odd N, M across tile edges).
//!
//! Tolerance as `runtime::check`: a kernel passes when its relative L2 error against the f32
//! reference is at most twice that of the bf16 path (cuBLAS bf16 on the bf16 dequantized
//! weights), and never needs to beat 1e-3. Times are per product, from a CUDA graph of many
//! back-to-back launches (no host launch overhead), rotating over enough weight copies that
//! they do not sit in L2 between launches (as in a decode step, where every weight is read
//! once).

use candle_core::Device;

use crate::record::Results;
use crate::Result;

/// EXAONE-4.0-1.2B's Linears as the engines stack them: (name, n, k).
pub const W4_SHAPES: [(&str, usize, usize); 4] = [
    ("qkv", 3072, 2048),
    ("o", 2048, 2048),
    ("gate_up", 8192, 2048),
    ("down", 2048, 4096),
];

/// The row counts the bars name.
pub const W4_MS: [usize; 7] = [1, 4, 16, 64, 256, 2048, 16384];

/// One kernel on one product: what ran, its time and its error.
#[derive(Debug, Clone)]
pub struct W4Point {
    /// the shape's or the check case's name
    pub shape: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `bf16 gemv`, `bf16 cublas`, `bf16 ours` (what the engines run for bf16 at this m),
    /// `w4 auto` (what they run for W4A16), `w4 gemm <tile>`, `w4 gemm <tile> unsplit`,
    /// `w4 gemv`, `w4 dequant+cublas`
    pub kernel: String,
    /// median µs per product (NaN where not timed: the correctness cases)
    pub us: f64,
    /// largest |y − y_f32|
    pub max_err: f64,
    /// ‖y − y_f32‖ / ‖y_f32‖
    pub rel_err: f64,
    /// the bf16 path's relative error on the same product (the tolerance's base)
    pub bf16_rel_err: f64,
    pub pass: bool,
}

/// Checks and times W4A16 products on `device` (CUDA; empty elsewhere).
///
/// Inputs: `shapes` (name, n, k) — [`W4_SHAPES`] for the bars —, row counts `ms`
/// ([`W4_MS`]), and `repeats` graph replays per kernel (the median is kept). Every shape is a
/// symmetric group-128 weight; then fixed correctness cases (untimed) cover asymmetric,
/// act-order, per-channel, group 16 at K = 2064, odd N and M across tile edges.
///
/// Rows added to `r` (variant `w4a16-gemm`, method = the kernel, params {shape, m, n, k, …}):
/// `w4_us <shape> m=<m>: <kernel>` (µs, spread max − min), `w4_max_err …`, `w4_rel_err …`,
/// `w4_pass …` (1/0) and, per shape and m, `w4_speedup <shape> m=<m>` (bf16 ours µs / w4 auto
/// µs). The same points are returned, failures included (check `pass`).
pub fn w4_sweep(
    r: &mut Results,
    device: &Device,
    shapes: &[(&str, usize, usize)],
    ms: &[usize],
    repeats: usize,
) -> Result<Vec<W4Point>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        return cuda::sweep(r, dev, shapes, ms, repeats.max(1));
    }
    let _ = (r, device, shapes, ms, repeats);
    Ok(vec![])
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Arc;

    use candle_core::cuda::cudarc::driver::{sys, CudaSlice, CudaStream};
    use candle_core::cuda::CudaDevice;
    use candle_core::{DType, Device, Tensor};
    use half::bf16;
    use serde_json::json;

    use super::W4Point;
    use crate::record::{Results, Variant};
    use crate::runtime::engine::weights::DENSE_GEMV_MAX_ROWS;
    use crate::runtime::int4::{sm_count_of, PackedInt4, W4Buffers, W4Route};
    use crate::runtime::launch::cuda_tensor;
    use crate::runtime::launch::gemm::gemm_bf16;
    use crate::runtime::launch::gemm_w4::{plan_with, tiles_on, W4Plan, W4Tile};
    use crate::runtime::launch::gemv::{gemv_bf16, Dense};
    use crate::runtime::launch::{cuda_err, wgmma_on, Dev};
    use crate::runtime::Check;
    use crate::Result;

    /// A small deterministic generator (the sweep must not depend on a seed source).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        fn unit(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32
        }
    }

    /// How a case's weight is quantized.
    #[derive(Clone, Copy)]
    struct Kind {
        group: usize,
        asym: bool,
        act_order: bool,
    }

    /// One weight on the device: int4 and bf16 copies (rotated while timing), and the
    /// dequantized weight in f32 for references.
    struct Weight {
        name: String,
        n: usize,
        k: usize,
        kind: Kind,
        w4: Vec<PackedInt4>,
        wbf: Vec<CudaSlice<bf16>>,
        w32: Tensor,
    }

    /// One product: a weight, activations [m, k] and the f32 reference.
    struct Case<'w> {
        name: String,
        m: usize,
        n: usize,
        k: usize,
        kind: Kind,
        w4: &'w [PackedInt4],
        wbf: &'w [CudaSlice<bf16>],
        x: CudaSlice<bf16>,
        reference: Tensor,
        bf16_err: f64,
    }

    /// (relative L2, max abs) error of `y` against `r` (f32).
    fn errs(y: &Tensor, r: &Tensor) -> Result<(f64, f64)> {
        let d = (y.to_dtype(DType::F32)? - r)?;
        let num = d.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        let den = r.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        let max = d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
        Ok(((num / den.max(1e-30)).sqrt(), max))
    }

    impl Weight {
        /// Random int4 weights [n, k] quantized as `kind`, `copies` device copies of them.
        fn new(
            dev: &CudaDevice,
            stream: &Arc<CudaStream>,
            name: &str,
            (n, k): (usize, usize),
            kind: Kind,
            copies: usize,
            seed: u64,
        ) -> Result<Self> {
            let device = Device::Cuda(dev.clone());
            let mut rng = Lcg(seed);
            let groups = k.div_ceil(kind.group);
            let nib: Vec<u32> = (0..n * k).map(|_| rng.next() % 16).collect();
            let scales: Vec<f32> = (0..n * groups)
                .map(|_| bf16::from_f32(0.004 + 0.012 * rng.unit()).to_f32())
                .collect();
            let zeros: Vec<f32> = (0..n * groups)
                .map(|_| {
                    if kind.asym {
                        (rng.next() % 16) as f32 - 8.0
                    } else {
                        0.0
                    }
                })
                .collect();
            // act-order: column c in group g_idx[c], each group `group` columns (a permutation
            // of c / group by an odd stride)
            let g_idx: Vec<usize> = (0..k).map(|c| (c * 131 % k) / kind.group).collect();
            let g_of = |c: usize| {
                if kind.act_order {
                    g_idx[c]
                } else {
                    c / kind.group
                }
            };
            let words = k.div_ceil(8);
            let mut packed = vec![0u32; n * words];
            let mut wdq = vec![bf16::ZERO; n * k];
            for row in 0..n {
                for c in 0..k {
                    let v = nib[row * k + c];
                    packed[row * words + c / 8] |= v << (4 * (c % 8));
                    let g = row * groups + g_of(c);
                    // compressed-tensors' dequantization, rounded to bf16
                    wdq[row * k + c] = bf16::from_f32((v as f32 - 8.0 - zeros[g]) * scales[g]);
                }
            }
            let mut w4 = vec![];
            for _ in 0..copies {
                w4.push(PackedInt4::from_host(
                    &packed,
                    &scales,
                    kind.asym.then_some(zeros.as_slice()),
                    kind.act_order.then_some(g_idx.as_slice()),
                    n,
                    k,
                    stream,
                )?);
            }
            let bf_copies = copies.div_ceil(4).max(1);
            let mut wbf = vec![];
            for _ in 0..bf_copies {
                wbf.push(stream.clone_htod(&wdq).map_err(cuda_err)?);
            }
            let w32 = Tensor::from_vec(wdq, (n, k), &device)?.to_dtype(DType::F32)?;
            Ok(Self {
                name: name.to_string(),
                n,
                k,
                kind,
                w4,
                wbf,
                w32,
            })
        }

        /// Random activations [m, k] and the f32 reference of their product.
        fn rows(&self, dev: &CudaDevice, m: usize, seed: u64) -> Result<Case<'_>> {
            let stream = dev.cuda_stream();
            let device = Device::Cuda(dev.clone());
            let mut rng = Lcg(seed);
            let x: Vec<bf16> = (0..m * self.k)
                .map(|_| bf16::from_f32(rng.unit() * 2.0 - 1.0))
                .collect();
            let xt = Tensor::from_vec(x.clone(), (m, self.k), &device)?.to_dtype(DType::F32)?;
            let reference = xt.matmul(&self.w32.t()?)?;
            let mut case = Case {
                name: self.name.clone(),
                m,
                n: self.n,
                k: self.k,
                kind: self.kind,
                w4: &self.w4,
                wbf: &self.wbf,
                x: stream.clone_htod(&x).map_err(cuda_err)?,
                reference,
                bf16_err: 0.0,
            };
            let (n, m) = (self.n, m);
            let y = case.run(dev, &Kernel::BfCublas, 0)?;
            case.bf16_err = errs(&cuda_tensor(y, dev, (m, n)), &case.reference)?.0;
            Ok(case)
        }
    }

    impl Case<'_> {
        /// One product by `kernel` on weight copy `i` into a fresh output.
        fn run(&self, dev: &CudaDevice, kernel: &Kernel, i: usize) -> Result<CudaSlice<bf16>> {
            let stream = dev.cuda_stream();
            let y = stream
                .alloc_zeros::<bf16>(self.m * self.n)
                .map_err(cuda_err)?;
            let bufs = Bufs::new(self, dev, kernel)?;
            self.launch(dev, kernel, i, Dev::new(&y, &stream), &bufs)?;
            Ok(y)
        }

        fn launch(
            &self,
            dev: &CudaDevice,
            kernel: &Kernel,
            i: usize,
            y: Dev<bf16>,
            bufs: &Bufs,
        ) -> Result<()> {
            let stream = dev.cuda_stream();
            let x = Dev::new(&self.x, &stream);
            let blas = dev.cublas_handle();
            let wb = Dev::new(&self.wbf[i % self.wbf.len()], &stream);
            let dense = Dense {
                w: wb,
                n: self.n,
                k: self.k,
            };
            let buf = W4Buffers {
                ws: bufs.ws.as_ref().map(|b| Dev::new(b, &stream)),
                xp: bufs.xp.as_ref().map(|b| Dev::new(b, &stream)),
                wtmp: bufs.wtmp.as_ref().map(|b| Dev::new(b, &stream)),
            };
            let w4 = &self.w4[i % self.w4.len()];
            let m = self.m;
            let done: candle_core::Result<()> = match kernel {
                Kernel::BfGemv => gemv_bf16(dev, &dense, x, y, m),
                Kernel::BfCublas => gemm_bf16(&blas, x, wb, y, m, self.n, self.k),
                // what Gemm::dense runs
                Kernel::BfOurs if m <= DENSE_GEMV_MAX_ROWS => gemv_bf16(dev, &dense, x, y, m),
                Kernel::BfOurs => gemm_bf16(&blas, x, wb, y, m, self.n, self.k),
                Kernel::W4(route) => w4.forward(dev, &blas, &stream, x, y, m, &buf, *route),
            };
            Ok(done?)
        }
    }

    /// The scratch one kernel needs.
    struct Bufs {
        ws: Option<CudaSlice<f32>>,
        xp: Option<CudaSlice<bf16>>,
        wtmp: Option<CudaSlice<bf16>>,
    }

    impl Bufs {
        fn new(c: &Case, dev: &CudaDevice, kernel: &Kernel) -> Result<Self> {
            let stream = dev.cuda_stream();
            let need = match kernel {
                Kernel::W4(route) => {
                    let w = &c.w4[0];
                    w.needs(
                        route.unwrap_or_else(|| w.route(c.m)),
                        c.m,
                        sm_count_of(&stream)?,
                    )
                }
                _ => Default::default(),
            };
            let f = |n: usize| {
                (n > 0)
                    .then(|| stream.alloc_zeros::<f32>(n).map_err(cuda_err))
                    .transpose()
            };
            let b = |n: usize| {
                (n > 0)
                    .then(|| stream.alloc_zeros::<bf16>(n).map_err(cuda_err))
                    .transpose()
            };
            Ok(Self {
                ws: f(need.ws)?,
                xp: b(need.xp)?,
                wtmp: b(need.wtmp)?,
            })
        }
    }

    enum Kernel {
        BfGemv,
        BfCublas,
        BfOurs,
        /// a W4A16 route (None: the default for the row count)
        W4(Option<W4Route>),
    }

    fn name(k: &Kernel) -> String {
        match k {
            Kernel::BfGemv => "bf16 gemv".into(),
            Kernel::BfCublas => "bf16 cublas".into(),
            Kernel::BfOurs => "bf16 ours".into(),
            Kernel::W4(None) => "w4 auto".into(),
            Kernel::W4(Some(W4Route::Gemv)) => "w4 gemv".into(),
            Kernel::W4(Some(W4Route::Dequant)) => "w4 dequant+cublas".into(),
            Kernel::W4(Some(W4Route::Gemm(None))) => "w4 gemm".into(),
            Kernel::W4(Some(W4Route::Gemm(Some(p)))) if p.splits == 1 => {
                format!("w4 gemm {} unsplit", p.tile.name())
            }
            Kernel::W4(Some(W4Route::Gemm(Some(p)))) => {
                format!("w4 gemm {} split {}", p.tile.name(), p.splits)
            }
        }
    }

    /// Median µs per product (and max − min) over `repeats` replays of a graph of `iters`
    /// launches rotating over the weight copies.
    fn time(c: &Case, dev: &CudaDevice, kernel: &Kernel, repeats: usize) -> Result<(f64, f64)> {
        let stream = dev.cuda_stream();
        let y = stream.alloc_zeros::<bf16>(c.m * c.n).map_err(cuda_err)?;
        let bufs = Bufs::new(c, dev, kernel)?;
        let yd = Dev::new(&y, &stream);
        // eager once: loads the module, opts into shared memory, warms cuBLAS's heuristics
        c.launch(dev, kernel, 0, yd, &bufs)?;
        stream.synchronize().map_err(cuda_err)?;
        let flops = 2.0 * (c.m * c.n * c.k) as f64;
        let iters = ((2e11 / flops) as usize).clamp(4, 64);
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda_err)?;
        let launched = (0..iters).try_for_each(|i| c.launch(dev, kernel, i, yd, &bufs));
        let graph = stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .map_err(cuda_err);
        launched?;
        let graph = graph?.ok_or_else(|| {
            candle_core::Error::Msg("CUDA graph capture produced no graph".into())
        })?;
        graph.launch().map_err(cuda_err)?;
        stream.synchronize().map_err(cuda_err)?;
        let mut v = vec![];
        for _ in 0..repeats {
            let t0 = std::time::Instant::now();
            graph.launch().map_err(cuda_err)?;
            stream.synchronize().map_err(cuda_err)?;
            v.push(1e6 * t0.elapsed().as_secs_f64() / iters as f64);
        }
        v.sort_by(f64::total_cmp);
        Ok((v[v.len() / 2], v[v.len() - 1] - v[0]))
    }

    /// Checks (and with `repeats`, times) `kernel` on `c`, recording rows.
    fn point(
        r: &mut Results,
        dev: &CudaDevice,
        c: &Case,
        kernel: &Kernel,
        repeats: Option<usize>,
    ) -> Result<W4Point> {
        let y = c.run(dev, kernel, 0)?;
        let (rel_err, max_err) = errs(&cuda_tensor(y, dev, (c.m, c.n)), &c.reference)?;
        let check = Check {
            what: String::new(),
            kernel_err: rel_err,
            bf16_err: c.bf16_err,
            top1: 1.0,
        };
        let (us, spread) = match repeats {
            Some(rp) => time(c, dev, kernel, rp)?,
            None => (f64::NAN, f64::NAN),
        };
        let p = W4Point {
            shape: c.name.clone(),
            m: c.m,
            n: c.n,
            k: c.k,
            kernel: name(kernel),
            us,
            max_err,
            rel_err,
            bf16_rel_err: c.bf16_err,
            pass: check.passes(),
        };
        let v = Variant::new(
            "w4a16-gemm",
            p.kernel.clone(),
            json!({"shape": p.shape, "m": p.m, "n": p.n, "k": p.k, "group": c.kind.group,
                   "asymmetric": c.kind.asym, "act_order": c.kind.act_order}),
        );
        let at = format!("{} m={}: {}", p.shape, p.m, p.kernel);
        if repeats.is_some() {
            r.add(&v, &format!("w4_us {at}"), us, Some(spread), "µs");
        }
        r.add(&v, &format!("w4_max_err {at}"), max_err, None, "");
        r.add(&v, &format!("w4_rel_err {at}"), rel_err, None, "");
        r.add(
            &v,
            &format!("w4_pass {at}"),
            p.pass as u8 as f64,
            None,
            "bool",
        );
        eprintln!(
            "w4 {at}: {us:.2} µs, max err {max_err:.2e}, rel {rel_err:.2e} (bf16 {:.2e}) → {}",
            c.bf16_err,
            if p.pass { "ok" } else { "FAIL" }
        );
        Ok(p)
    }

    /// The tiles worth trying at m rows (all up to 256; the large ones beyond).
    /// The tiles timed at m rows: every one this GPU runs up to 256 rows, beyond only the large
    /// ones.
    fn tiles(on: &[W4Tile], m: usize) -> Vec<W4Tile> {
        let large = |t: &W4Tile| {
            matches!(
                t,
                W4Tile::M64
                    | W4Tile::L128
                    | W4Tile::Wg128x64
                    | W4Tile::Wg128x128
                    | W4Tile::Wg256x128
            )
        };
        on.iter()
            .copied()
            .filter(|t| m <= 256 || large(t))
            .collect()
    }

    pub(super) fn sweep(
        r: &mut Results,
        dev: &CudaDevice,
        shapes: &[(&str, usize, usize)],
        ms: &[usize],
        repeats: usize,
    ) -> Result<Vec<W4Point>> {
        let stream = dev.cuda_stream();
        let sms = sm_count_of(&stream)?;
        let (on, wgmma) = (tiles_on(dev)?, wgmma_on(&stream)?);
        let sym128 = Kind {
            group: 128,
            asym: false,
            act_order: false,
        };
        let mut out = vec![];
        // EXAONE_W4_MS=16,64: only these of the row counts (kernel experiments), no extra cases
        let only: Option<Vec<usize>> = std::env::var("EXAONE_W4_MS")
            .ok()
            .map(|v| v.split(',').filter_map(|m| m.trim().parse().ok()).collect());
        let ms: Vec<usize> = ms
            .iter()
            .copied()
            .filter(|m| only.as_ref().is_none_or(|o| o.contains(m)))
            .collect();
        for (si, &(shape, n, k)) in shapes.iter().enumerate() {
            // enough int4 copies that they overflow L2 (≥ 256 MiB in all), at most 32
            // (EXAONE_W4_COPIES overrides, e.g. 1 to time L2-resident weights)
            let copies = std::env::var("EXAONE_W4_COPIES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(((256usize << 20) / (n * k / 2)).clamp(1, 64));
            let w = Weight::new(dev, &stream, shape, (n, k), sym128, copies, si as u64)?;
            for &m in &ms {
                let c = w.rows(dev, m, 1000 + m as u64)?;
                let mut ks = vec![Kernel::BfOurs, Kernel::BfCublas, Kernel::W4(None)];
                if m <= 16 {
                    ks.push(Kernel::BfGemv);
                    ks.push(Kernel::W4(Some(W4Route::Gemv)));
                }
                if m >= 16 {
                    ks.push(Kernel::W4(Some(W4Route::Dequant)));
                }
                // EXAONE_W4_TUNE=1: every tile at 1, 2, 4, 8 and 16 splits too (for the plan)
                let tune = std::env::var_os("EXAONE_W4_TUNE").is_some();
                for t in tiles(&on, m) {
                    let p = plan_with(m, n, k, sms, Some(t), wgmma);
                    ks.push(Kernel::W4(Some(W4Route::Gemm(Some(p)))));
                    let extra: &[usize] = if tune { &[1, 2, 4, 8, 16] } else { &[1] };
                    let splits_ok =
                        |s: &&usize| **s != p.splits && (**s == 1 || t.max_splits() > 1);
                    for &splits in extra.iter().filter(splits_ok) {
                        let q = W4Plan { tile: t, splits };
                        ks.push(Kernel::W4(Some(W4Route::Gemm(Some(q)))));
                    }
                }
                let first = out.len();
                for kern in &ks {
                    out.push(point(r, dev, &c, kern, Some(repeats))?);
                }
                let us = |name: &str| {
                    out[first..]
                        .iter()
                        .find(|p| p.kernel == name)
                        .map_or(f64::NAN, |p| p.us)
                };
                let speedup = us("bf16 ours") / us("w4 auto");
                let v = Variant::new(
                    "w4a16-gemm",
                    "w4 auto vs bf16 ours",
                    json!({"shape": shape, "m": m, "n": n, "k": k}),
                );
                r.add(&v, &format!("w4_speedup {shape} m={m}"), speedup, None, "×");
                eprintln!("w4 {shape} m={m}: w4 auto is {speedup:.2}× bf16 ours");
            }
        }
        // correctness the shapes do not reach (untimed)
        let kinds = if only.is_some() {
            &[][..]
        } else {
            &[
                ("asym g128", (2048, 2048), 128, true, false),
                ("act-order g128", (2048, 2048), 128, false, true),
                ("act-order asym g128", (3072, 2048), 128, true, true),
                ("channel", (2048, 2048), 2048, false, false),
                ("asym channel k2064", (200, 2064), 2064, true, false),
                ("asym g16 k2064", (200, 2064), 16, true, false),
                ("g32 odd n", (999, 1024), 32, false, false),
                ("g64 n=8 tail", (72, 512), 64, true, false),
            ][..]
        };
        for (i, &(label, (n, k), group, asym, act_order)) in kinds.iter().enumerate() {
            let kind = Kind {
                group,
                asym,
                act_order,
            };
            let w = Weight::new(dev, &stream, label, (n, k), kind, 1, 100 + i as u64)?;
            for m in [1, 3, 17, 100, 300] {
                let c = w.rows(dev, m, 2000 + m as u64)?;
                let mut ks = vec![Kernel::W4(None)];
                for &t in &on {
                    let p = plan_with(m, n, k, sms, Some(t), wgmma);
                    ks.push(Kernel::W4(Some(W4Route::Gemm(Some(p)))));
                    let one = W4Plan { tile: t, splits: 1 };
                    ks.push(Kernel::W4(Some(W4Route::Gemm(Some(one)))));
                }
                for kern in &ks {
                    out.push(point(r, dev, &c, kern, None)?);
                }
            }
        }
        let failed = out.iter().filter(|p| !p.pass).count();
        eprintln!("w4 sweep: {} points, {failed} fail", out.len());
        Ok(out)
    }
}

#[cfg(all(test, feature = "cuda"))]
mod gpu {
    use super::*;

    /// On a GPU machine (ignored elsewhere): the lib's test binary with `--ignored
    /// w4_sweep_on_gpu --nocapture`; `W4_FULL=1` for every shape and row count of the issue.
    #[test]
    #[ignore]
    fn w4_sweep_on_gpu() {
        let dev = Device::new_cuda(0).expect("a CUDA device");
        let mut r = Results::new("w4_sweep", "cuda", "random");
        let full = std::env::var("W4_FULL").is_ok();
        let ms: &[usize] = if full { &W4_MS } else { &[1, 16, 64, 256] };
        let pts = w4_sweep(&mut r, &dev, &W4_SHAPES, ms, 5).expect("sweep");
        let bad: Vec<String> = pts
            .iter()
            .filter(|p| !p.pass)
            .map(|p| format!("{} m={} {}", p.shape, p.m, p.kernel))
            .collect();
        assert!(bad.is_empty(), "failing: {bad:?}");
    }
}
