//! Causal attention on the CPU in one pass per query row: the scores of the keys a query sees
//! (no masked ones), their softmax, and the weighted sum of values, without materialising a
//! score matrix. candle's ops computed every [t, L] score of every head, scaled, masked and
//! normalised them in separate passes over memory, and multiplied the masked half too: in a
//! forward of the default model over 8 × 512 tokens that was over half the time.
//!
//! Each output row (one batch row, one position, every head) is one task, computed in a fixed
//! order, so the result does not depend on the number of threads. The query heads that share a
//! KV head are computed together, each key and value read once for the group. On x86-64 with
//! AVX2 and FMA (checked at run time) the same code is compiled for those instructions;
//! elsewhere it runs with separate multiplies and adds, so the last bits differ between the two.

use crate::model::cpu_exp::exp_minus_max;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether [`causal_attention`] runs for these inputs: f32 on the CPU.
pub fn available(device: &candle_core::Device, dtype: DType) -> bool {
    device.is_cpu() && dtype == DType::F32
}

/// softmax(q kᵀ / √d) v with a causal mask aligned to the last query (query i of t sees keys
/// j ≤ i + L − t), for q [b, h, t, d] and k/v [b, kvh, L, d] (any strides but a contiguous d),
/// f32 on the CPU; GQA when kvh < h. Returns [b, t, h·d].
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    d_contiguous(q)?.apply_op3_no_bwd(&d_contiguous(k)?, &d_contiguous(v)?, &CausalAttention)
}

/// `x` itself where its last dimension is contiguous (what the op reads), else a copy.
pub(super) fn d_contiguous(x: &Tensor) -> Result<Tensor> {
    match x.stride().last() {
        Some(1) => Ok(x.clone()),
        _ => x.contiguous(),
    }
}

pub(super) struct CausalAttention;

/// A rank-4 f32 input read through its layout: the data from its start offset and the strides
/// of its first three dimensions (the last is contiguous).
struct View<'a> {
    data: &'a [f32],
    dims: [usize; 4],
    stride: [usize; 3],
}

impl<'a> View<'a> {
    fn new(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<Self> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("causal attention: {what} must be f32");
        };
        let (dims, st) = (l.dims(), l.stride());
        if dims.len() != 4 || st[3] != 1 {
            candle_core::bail!("causal attention: {what} must be rank 4 with a contiguous last dimension, got {dims:?} / {st:?}");
        }
        Ok(Self {
            data: &v[l.start_offset()..],
            dims: [dims[0], dims[1], dims[2], dims[3]],
            stride: [st[0], st[1], st[2]],
        })
    }

    /// The d values at (i, j, k).
    fn row(&self, i: usize, j: usize, k: usize) -> &[f32] {
        let o = i * self.stride[0] + j * self.stride[1] + k * self.stride[2];
        &self.data[o..o + self.dims[3]]
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention-cpu"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            View::new(qs, ql, "q")?,
            View::new(ks, kl, "k")?,
            View::new(vs, vl, "v")?,
        );
        let [b, h, t, d] = q.dims;
        let [kb, kvh, l, kd] = k.dims;
        if kb != b || kd != d || v.dims != k.dims || kvh == 0 || h % kvh != 0 || l < t {
            candle_core::bail!(
                "causal attention: q {:?}, k {:?}, v {:?} do not fit (b, h, t, d) and (b, kvh, L ≥ t, d) with h a multiple of kvh",
                q.dims,
                k.dims,
                v.dims
            );
        }
        let mut out = vec![0f32; b * t * h * d];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), Shape::from((b, t, h * d))));
        }
        let dims = Dims {
            g: h / kvh,
            kvh,
            t,
            l,
            lp: l.next_multiple_of(LANES),
            d,
            scale: 1.0 / (d as f32).sqrt(),
        };
        // the keys transposed, [b, kvh, d, L rounded up to the lanes] (zeros after L), so that a
        // query's scores come LANES keys at a time without a horizontal sum
        let mut kt = vec![0f32; b * kvh * d * dims.lp];
        kt.par_chunks_mut(d * dims.lp)
            .enumerate()
            .for_each(|(bh, kt)| {
                for j in 0..l {
                    for (dd, &x) in k.row(bh / kvh, bh % kvh, j).iter().enumerate() {
                        kt[dd * dims.lp + j] = x;
                    }
                }
            });
        let x = Inputs {
            s: dims,
            q,
            kt: &kt,
            v,
        };
        let fma = fma_available();
        out.par_chunks_mut(h * d)
            .enumerate()
            .for_each_init(Vec::new, |scores, (row, o)| {
                let (bi, i) = (row / t, row % t);
                #[cfg(target_arch = "x86_64")]
                if fma {
                    // SAFETY: the CPU has AVX2 and FMA (checked at run time just above)
                    return unsafe { row_fma(&x, (bi, i), scores, o) };
                }
                let _ = fma; // off x86-64 there is no FMA path
                attend_row::<false>(&x, (bi, i), scores, o)
            });
        Ok((CpuStorage::F32(out), Shape::from((b, t, h * d))))
    }
}

/// What every row reads: the sizes, the queries, the transposed keys ([b, kvh, d, lp]), the
/// values.
struct Inputs<'a> {
    s: Dims,
    q: View<'a>,
    kt: &'a [f32],
    v: View<'a>,
}

/// What every row shares: query heads per KV head, KV heads, queries, keys (and rounded up to
/// the lanes), head size, 1/√d.
struct Dims {
    g: usize,
    kvh: usize,
    t: usize,
    l: usize,
    lp: usize,
    d: usize,
    scale: f32,
}

/// Whether this CPU has AVX2 and FMA (the fast rows here and in `cpu_attention_grad`).
pub(super) fn fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`attend_row`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_fma(x: &Inputs, at: (usize, usize), scores: &mut Vec<f32>, out: &mut [f32]) {
    attend_row::<true>(x, at, scores, out)
}

/// a · b + c, fused where `FMA` (compiled for it), else rounded twice.
#[inline(always)]
pub(super) fn mul_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Keys per score block and values per accumulator: one 256-bit register of f32.
const LANES: usize = 8;

/// Query heads computed together (each key and value read once for them).
const GROUP: usize = 4;

/// One output row: position `i` of batch row `bi` (`at`), every head. `scores` is scratch.
#[inline(always)]
fn attend_row<const FMA: bool>(
    x: &Inputs,
    (bi, i): (usize, usize),
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (s, q, v) = (&x.s, &x.q, &x.v);
    let (g, d) = (s.g, s.d);
    // keys 0..=i + L − t, scored in blocks of LANES (the padding's scores are never read)
    let n = i + s.l - s.t + 1;
    let np = n.next_multiple_of(LANES);
    scores.clear();
    scores.resize(g * np, 0.0);
    for kh in 0..s.kvh {
        let kt = &x.kt[(bi * s.kvh + kh) * d * s.lp..][..d * s.lp];
        let mut gi = 0;
        while gi < g {
            let head = kh * g + gi;
            let sc = &mut scores[gi * np..];
            let o = &mut out[head * d..];
            if g - gi >= GROUP {
                let qs: [&[f32]; GROUP] = std::array::from_fn(|x| q.row(bi, head + x, i));
                scores_of::<FMA, GROUP>(&qs, kt, s, np, sc);
                softmax_rows(sc, np, n, GROUP);
                weighted_values::<FMA, GROUP>(sc, np, n, |j| v.row(bi, kh, j), d, o);
                gi += GROUP;
            } else {
                scores_of::<FMA, 1>(&[q.row(bi, head, i)], kt, s, np, sc);
                softmax_rows(sc, np, n, 1);
                weighted_values::<FMA, 1>(sc, np, n, |j| v.row(bi, kh, j), d, o);
                gi += 1;
            }
        }
    }
}

/// [`head_scores`], with AVX2 intrinsics where `FMA` (the same operations in the same order:
/// the same figures; the portable form's accumulators stayed on the stack, 2× slower).
#[inline(always)]
fn scores_of<const FMA: bool, const G: usize>(
    qs: &[&[f32]; G],
    kt: &[f32],
    s: &Dims,
    np: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA is true only where the CPU has AVX2 and FMA (`fma_available`)
        return unsafe { head_scores_avx2::<G>(qs, kt, s, np, out) };
    }
    head_scores::<FMA, G>(qs, kt, s, np, out)
}

/// [`head_scores`] with AVX2 and FMA intrinsics.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_scores_avx2<const G: usize>(
    qs: &[&[f32]; G],
    kt: &[f32],
    s: &Dims,
    np: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(qs.iter().all(|q| q.len() >= s.d) && kt.len() >= s.d * s.lp && s.lp >= np);
    assert!(out.len() >= G * np);
    let scale = _mm256_set1_ps(s.scale);
    for jc in (0..np).step_by(LANES) {
        let mut acc = [_mm256_setzero_ps(); G];
        for dd in 0..s.d {
            // SAFETY: dd < d and jc + LANES ≤ np ≤ lp, so the LANES keys lie inside kt
            // (asserted above); qs[gg] holds d values
            let kv = _mm256_loadu_ps(kt.as_ptr().add(dd * s.lp + jc));
            for (a, qr) in acc.iter_mut().zip(qs) {
                *a = _mm256_fmadd_ps(_mm256_set1_ps(*qr.get_unchecked(dd)), kv, *a);
            }
        }
        for (gg, a) in acc.iter().enumerate() {
            // SAFETY: gg · np + jc + LANES ≤ G · np ≤ out.len() (asserted above)
            _mm256_storeu_ps(out.as_mut_ptr().add(gg * np + jc), _mm256_mul_ps(*a, scale));
        }
    }
}

/// The scaled scores of `G` queries against keys `0..np` (rows of `np` in `out`), from the
/// transposed keys `kt` [d, lp]: LANES keys at a time, summed over d in order.
#[inline(always)]
fn head_scores<const FMA: bool, const G: usize>(
    qs: &[&[f32]; G],
    kt: &[f32],
    s: &Dims,
    np: usize,
    out: &mut [f32],
) {
    for jc in (0..np).step_by(LANES) {
        let mut acc = [[0f32; LANES]; G];
        for dd in 0..s.d {
            let kv: &[f32; LANES] = kt[dd * s.lp + jc..][..LANES]
                .try_into()
                .expect("LANES keys");
            for (a, qr) in acc.iter_mut().zip(qs) {
                let x = qr[dd];
                for l in 0..LANES {
                    a[l] = mul_add::<FMA>(x, kv[l], a[l]);
                }
            }
        }
        for (gg, a) in acc.iter().enumerate() {
            for l in 0..LANES {
                out[gg * np + jc + l] = a[l] * s.scale;
            }
        }
    }
}

/// Softmax of the first `n` scores of each of `rows` rows of `np`, in place.
#[inline(always)]
fn softmax_rows(scores: &mut [f32], np: usize, n: usize, rows: usize) {
    for r in 0..rows {
        let row = &mut scores[r * np..r * np + n];
        let inv = 1.0 / exp_minus_max(row).1;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// out[gg] = Σ_j p[gg][j] · v_j for `G` heads (probabilities in rows of `np`), values in
/// blocks of two registers, then one, then one at a time; each sum over j in order.
#[inline(always)]
fn weighted_values<'a, const FMA: bool, const G: usize>(
    p: &[f32],
    np: usize,
    n: usize,
    v: impl Fn(usize) -> &'a [f32],
    d: usize,
    out: &mut [f32],
) {
    let mut dc = 0;
    while dc + 2 * LANES <= d {
        let mut acc = [[[0f32; LANES]; 2]; G];
        for j in 0..n {
            let vr = &v(j)[dc..dc + 2 * LANES];
            let (v0, v1): (&[f32; LANES], &[f32; LANES]) = (
                vr[..LANES].try_into().expect("LANES values"),
                vr[LANES..].try_into().expect("LANES values"),
            );
            for (gg, a) in acc.iter_mut().enumerate() {
                let pj = p[gg * np + j];
                for l in 0..LANES {
                    a[0][l] = mul_add::<FMA>(pj, v0[l], a[0][l]);
                    a[1][l] = mul_add::<FMA>(pj, v1[l], a[1][l]);
                }
            }
        }
        for (gg, a) in acc.iter().enumerate() {
            out[gg * d + dc..][..LANES].copy_from_slice(&a[0]);
            out[gg * d + dc + LANES..][..LANES].copy_from_slice(&a[1]);
        }
        dc += 2 * LANES;
    }
    while dc + LANES <= d {
        let mut acc = [[0f32; LANES]; G];
        for j in 0..n {
            let v0: &[f32; LANES] = v(j)[dc..dc + LANES].try_into().expect("LANES values");
            for (gg, a) in acc.iter_mut().enumerate() {
                let pj = p[gg * np + j];
                for l in 0..LANES {
                    a[l] = mul_add::<FMA>(pj, v0[l], a[l]);
                }
            }
        }
        for (gg, a) in acc.iter().enumerate() {
            out[gg * d + dc..][..LANES].copy_from_slice(a);
        }
        dc += LANES;
    }
    for x in dc..d {
        for gg in 0..G {
            let mut acc = 0f32;
            for j in 0..n {
                acc = mul_add::<FMA>(p[gg * np + j], v(j)[x], acc);
            }
            out[gg * d + x] = acc;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::layers::{attend, Mode};
    use candle_core::Device;

    /// The reference: candle's ops with an explicit causal mask aligned to the last query.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        attend(q, k, v, Some(&causal_mask(q, k)), Mode::Inference).unwrap()
    }

    /// The additive causal mask [b, 1, t, L] aligned to the last query, for q [b, h, t, d] and
    /// k [b, kvh, L, d].
    pub(in crate::runtime) fn causal_mask(q: &Tensor, k: &Tensor) -> Tensor {
        let (b, _, t, _) = q.dims4().unwrap();
        let l = k.dim(2).unwrap();
        let m: Vec<f32> = (0..b * t * l)
            .map(|x| {
                let (i, j) = ((x / l) % t, x % l);
                if j <= i + l - t {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        Tensor::from_vec(m, (b, 1, t, l), q.device()).unwrap()
    }

    /// Equal to the masked reference within rounding: GQA and not, queries behind a cache
    /// (L > t), a head size that is not a multiple of the lanes, a transposed (strided) q.
    #[test]
    fn equals_masked_reference() {
        let dev = Device::Cpu;
        for (b, h, kvh, t, l, d) in [
            (2, 4, 1, 13, 13, 64),
            (1, 4, 4, 7, 20, 24),
            (3, 6, 2, 1, 9, 20),
            (1, 2, 1, 33, 33, 5),
        ] {
            // q as the forward makes it: [b, t, h, d] transposed to [b, h, t, d]
            let q = Tensor::randn(0f32, 1.0, (b, t, h, d), &dev)
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, kvh, l, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, kvh, l, d), &dev).unwrap();
            let ours = causal_attention(&q, &k, &v).unwrap();
            let want = reference(&q, &k, &v);
            assert_eq!(ours.dims(), &[b, t, h * d]);
            let err = (ours - &want).unwrap().abs().unwrap().max_all().unwrap();
            let err = err.to_scalar::<f32>().unwrap();
            assert!(err < 1e-5, "{:?}: max error {err}", (b, h, kvh, t, l, d));
        }
    }

    /// The same figures whatever the number of threads (each row is one task in a fixed order).
    #[test]
    fn independent_of_thread_count() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 4, 40, 64), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 1, 40, 64), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 1, 40, 64), &dev).unwrap();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| causal_attention(&q, &k, &v).unwrap())
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn rejects_shapes_that_do_not_fit() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 3, 4, 8), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 4, 8), DType::F32, &dev).unwrap();
        assert!(causal_attention(&q, &k, &k).is_err());
        let k = Tensor::zeros((1, 1, 3, 8), DType::F32, &dev).unwrap();
        assert!(causal_attention(&q, &k, &k).is_err());
    }
}
