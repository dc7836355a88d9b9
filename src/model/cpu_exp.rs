//! exp(x − m) over a row of f32, the inner loop of every CPU softmax in the crate (attention
//! forward and backward, the training softmax, the distillation loss). `f32::exp` is a call
//! into libm per element, which a profile of the main study put at 7% of its time; here the
//! row is done eight values per instruction where the CPU has AVX2 and FMA, and by a loop the
//! compiler vectorizes for the target elsewhere.
//!
//! The method is Cephes' `expf`: n = round(x · log₂e), r = x − n · ln 2 in two parts (exact
//! products), a degree-7 polynomial for exp(r) on |r| ≤ ln 2 / 2, scaled by 2ⁿ through the
//! exponent bits. Within 2 ulp of the exact value over the range (tested against f64 below);
//! arguments below −87.3 give about 1e-38 rather than a denormal or zero (a softmax term that
//! small is 1e-38 of the row's largest), NaN stays NaN.

/// exp(x − max) for every x of `row`, in place, the row's max taken first (a softmax's
/// numerators); returns the max and the sum as [`exp_shifted`] sums.
pub fn exp_minus_max(row: &mut [f32]) -> (f32, f32) {
    let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    (m, exp_shifted(row, m))
}

/// exp(x − m) for every x of `row`, in place; returns their sum (in eight lanes, then the
/// lanes in order, then the tail: the same order on every call for a row of that length).
pub fn exp_shifted(row: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked above)
        return unsafe { exp_shifted_fma(row, m) };
    }
    exp_shifted_with::<false>(row, m)
}

/// [`exp_shifted_with`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_fma(row: &mut [f32], m: f32) -> f32 {
    exp_shifted_with::<true>(row, m)
}

const LANES: usize = 8;

#[inline(always)]
fn exp_shifted_with<const FMA: bool>(row: &mut [f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c.iter_mut()) {
            *x = exp_one::<FMA>(*x - m);
            *a += *x;
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for x in chunks.into_remainder() {
        *x = exp_one::<FMA>(*x - m);
        sum += *x;
    }
    sum
}

/// a · b + c, fused where `FMA` (compiled for it), else rounded twice.
#[inline(always)]
fn mad<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// exp(x): branch-free, so that a loop of it vectorizes.
#[inline(always)]
fn exp_one<const FMA: bool>(x: f32) -> f32 {
    // n stays within −126..=127, where 2ⁿ's exponent bits are those of a normal number
    const HI: f32 = 88.0;
    const LO: f32 = -87.0;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = C1 + C2, C1 with few mantissa bits so n · C1 is exact
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding it rounds to an integer (to nearest even) and leaves that integer in
    // the low mantissa bits
    const MAGIC: f32 = 12_582_912.0;
    const P: [f32; 6] = [
        1.987_569_2e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5, // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    ];
    // comparisons, not f32::max/min: those would turn a NaN into the bound
    let x = if x > HI { HI } else { x };
    let x = if x < LO { LO } else { x };
    let t = mad::<FMA>(x, LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = mad::<FMA>(-n, C2, mad::<FMA>(-n, C1, x));
    let mut p = P[0];
    for c in &P[1..] {
        p = mad::<FMA>(p, r, *c);
    }
    let y = mad::<FMA>(p, r * r, r) + 1.0;
    // 2ⁿ: n + 127 in the exponent field (t's low bits hold n, offset by MAGIC's 0x4B40_0000)
    let pow2 = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    y * pow2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, exact: f64) -> f64 {
        let e = exact as f32;
        let ulp = (f32::from_bits(e.to_bits() + 1) - e) as f64;
        (a as f64 - exact).abs() / ulp
    }

    /// Both builds within 2 ulp of f64's exp over the normal range, 1 at 0, the tails and NaN
    /// as documented, and the sum the values' sum.
    #[test]
    fn within_two_ulp_of_f64() {
        let xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + 175.0 * i as f32 / 200_000.0)
            .filter(|x| (-87.0..=88.0).contains(x))
            .chain([0.0, -0.0, 1.0, -1.0, 1e-8, -1e-8, 0.5, -0.5])
            .collect();
        for fma in [false, true] {
            if fma && !(cfg!(target_arch = "x86_64") && is_fma()) {
                continue;
            }
            let mut row = xs.clone();
            run(fma, &mut row, 0.0);
            let mut worst = 0f64;
            for (&x, &y) in xs.iter().zip(&row) {
                worst = worst.max(ulps(y, (x as f64).exp()));
            }
            assert!(worst <= 2.0, "fma {fma}: {worst} ulp");
            // a softmax row's sum: 1,003 scores (eight-lane blocks and a tail of three)
            let mut row: Vec<f32> = (0..1003)
                .map(|i| -((i * 37 % 1003) as f32) / 50.0)
                .collect();
            let sum = run(fma, &mut row, 0.0);
            let direct: f64 = row.iter().map(|&y| y as f64).sum();
            assert!(
                ((sum as f64) - direct).abs() <= 1e-6 * direct,
                "{sum} vs {direct}"
            );
            let mut edge = vec![0.0, -200.0, f32::NEG_INFINITY, f32::NAN, 100.0];
            run(fma, &mut edge, 0.0);
            assert_eq!(edge[0], 1.0);
            assert!(edge[1] > 0.0 && edge[1] < 2e-38);
            assert!(edge[2] > 0.0 && edge[2] < 2e-38);
            assert!(edge[3].is_nan());
            assert!(edge[4].is_finite() && edge[4] > 1.6e38);
        }
    }

    /// The shift is applied before the exponential: exp(x − m), the row's max giving 1.
    #[test]
    fn shifts_by_m() {
        let mut row = vec![3.0f32, 1.0, 2.0];
        let sum = exp_shifted(&mut row, 3.0);
        assert_eq!(row[0], 1.0);
        for (y, want) in row.iter().zip([0f64, -2.0, -1.0]) {
            assert!(ulps(*y, want.exp()) <= 2.0);
        }
        assert!((sum - row.iter().sum::<f32>()).abs() <= 1e-6);
    }

    fn is_fma() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    fn run(fma: bool, row: &mut [f32], m: f32) -> f32 {
        if fma {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: called only where is_fma()
            return unsafe { exp_shifted_fma(row, m) };
        }
        exp_shifted_with::<false>(row, m)
    }
}
