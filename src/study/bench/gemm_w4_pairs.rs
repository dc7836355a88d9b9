//! The W4A16 GEMM on gate/up weights stored as pairs (`PackedInt4::load_gate_up`): its product
//! put back in the checkpoint's order, and its gated epilogue, must equal the plain GEMM's
//! product and that product followed by `silu_mul_rows` bit for bit (the same sums in the same
//! order, rounded the same way), on every tile, split and unsplit, symmetric and asymmetric,
//! at row counts across the tile edges.

use candle_core::Device;

use super::gemm_w4::W4Point;
use crate::Result;

/// The pair checks on `device` (CUDA; empty elsewhere), one [`W4Point`] per case and kernel
/// (`pairs <tile>[ unsplit]: product` or `…: gated`), `max_err` the number of values that
/// differ, `pass` when none does.
pub fn pair_checks(device: &Device) -> Result<Vec<W4Point>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        return cuda::run(dev);
    }
    let _ = device;
    Ok(vec![])
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda::CudaDevice;
    use half::bf16;

    use super::W4Point;
    use crate::runtime::int4::{sm_count_of, PackedInt4, W4Buffers, W4Route};
    use crate::runtime::launch::gemm_w4::{plan_with, tiles_on, workspace, W4Plan};
    use crate::runtime::launch::norm_rope::silu_mul_rows;
    use crate::runtime::launch::{cuda_err, wgmma_on, Dev};
    use crate::Result;

    fn lcg(state: &mut u64) -> u32 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 33) as u32
    }

    pub(super) fn run(dev: &CudaDevice) -> Result<Vec<W4Point>> {
        let stream = dev.cuda_stream();
        let blas = dev.cublas_handle();
        let sms = sm_count_of(&stream)?;
        let (on, wgmma) = (tiles_on(dev)?, wgmma_on(&stream)?);
        let mut out = vec![];
        // (pairs, k, group, asymmetric): the 1.2B's gate/up; a small one with K off the tiles
        let cases: [(usize, usize, usize, bool); 2] =
            [(4096, 2048, 128, false), (100, 2064, 16, true)];
        for (ci, &(pairs, k, group, asym)) in cases.iter().enumerate() {
            let n = 2 * pairs;
            let (words, groups) = (k.div_ceil(8), k.div_ceil(group));
            let mut st = 7 + ci as u64;
            let packed: Vec<u32> = (0..n * words).map(|_| lcg(&mut st)).collect();
            let scales: Vec<f32> = (0..n * groups)
                .map(|_| bf16::from_f32(0.004 + (lcg(&mut st) % 1000) as f32 * 1e-5).to_f32())
                .collect();
            let zeros: Vec<f32> = (0..n * groups)
                .map(|_| (lcg(&mut st) % 16) as f32 - 8.0)
                .collect();
            let z = asym.then_some(zeros.as_slice());
            let plain = PackedInt4::from_host(&packed, &scales, z, None, n, k, &stream)?;
            let paired =
                PackedInt4::from_host_pairs(&packed, &scales, z, None, n, k, pairs, &stream)?;
            for m in [1, 3, 16, 17, 100] {
                let x: Vec<bf16> = (0..m * k)
                    .map(|_| bf16::from_f32((lcg(&mut st) % 2001) as f32 / 1000.0 - 1.0))
                    .collect();
                let x = stream.clone_htod(&x).map_err(cuda_err)?;
                for &tile in &on {
                    let planned = plan_with(m, n, k, sms, Some(tile), wgmma);
                    let one = W4Plan { tile, splits: 1 };
                    for p in [planned, one] {
                        let ws_len = workspace(p, m, n).0.max(1);
                        let ws = stream.alloc_zeros::<f32>(ws_len).map_err(cuda_err)?;
                        let buf = W4Buffers {
                            ws: Some(Dev::new(&ws, &stream)),
                            ..W4Buffers::default()
                        };
                        let route = Some(W4Route::Gemm(Some(p)));
                        let alloc = |len| stream.alloc_zeros::<bf16>(len).map_err(cuda_err);
                        let (y0, y1, a0, a1) = (
                            alloc(m * n)?,
                            alloc(m * n)?,
                            alloc(m * pairs)?,
                            alloc(m * pairs)?,
                        );
                        let d = |b| Dev::new(b, &stream);
                        let xd = d(&x);
                        plain.forward(dev, &blas, &stream, xd, d(&y0), m, &buf, route)?;
                        silu_mul_rows(dev, d(&y0), d(&a0), m, pairs)?;
                        paired.forward(dev, &blas, &stream, xd, d(&y1), m, &buf, route)?;
                        let scratch = alloc(m * n)?;
                        paired.forward_gated(
                            dev,
                            &blas,
                            &stream,
                            xd,
                            d(&scratch),
                            d(&a1),
                            m,
                            &buf,
                            route,
                        )?;
                        let host = |b| stream.clone_dtoh(b).map_err(cuda_err);
                        let differ = |a: Vec<bf16>, b: Vec<bf16>| {
                            a.iter()
                                .zip(&b)
                                .filter(|(u, v)| u.to_bits() != v.to_bits())
                                .count()
                        };
                        let split = if p.splits > 1 { "" } else { " unsplit" };
                        for (what, bad) in [
                            ("product", differ(host(&y0)?, host(&y1)?)),
                            ("gated", differ(host(&a0)?, host(&a1)?)),
                        ] {
                            out.push(W4Point {
                                shape: format!(
                                    "pairs {pairs}x{k} g{group}{}",
                                    if asym { " asym" } else { "" }
                                ),
                                m,
                                n,
                                k,
                                kernel: format!("pairs {}{split}: {what}", tile.name()),
                                us: f64::NAN,
                                max_err: bad as f64,
                                rel_err: 0.0,
                                bf16_rel_err: 0.0,
                                pass: bad == 0,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
