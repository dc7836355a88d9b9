//! Paired statistics: every variant compared with the base on the same items and the same token
//! positions, so the item-to-item (or token-to-token) difficulty cancels and the uncertainty left
//! is that of the *difference*, which is far smaller than the spread of either figure alone.
//!
//! - [`paired_accuracy`]: accuracy difference on the same items, its paired standard error from
//!   the discordant counts, McNemar's exact and mid-p tests, and PerfNorm (the accuracy ratio)
//!   with its interval; [`accuracy_difference`] the same less PerfNorm (defined when the base
//!   got nothing right).
//! - [`ppl_ratio`] / [`ppl_ratio_by_sequence`]: the perplexity ratio from per-token NLLs on the
//!   same positions, with the standard error of the mean log-ratio — the figure llama.cpp's
//!   perplexity tool prints in its KL-divergence mode as "Mean ln(PPL(Q)/PPL(base))" with its
//!   uncertainty — and PerfNorm = PPL(base)/PPL(variant).
//! - [`kl_mean`] / [`kl_mean_by_sequence`]: the mean of per-token KL values with its standard
//!   error (tokens, or sequences as clusters).
//! - [`speed_norm`], [`score`], [`recommend`]: the competition's Score proxy
//!   `0.5·PerfNorm + 0.5·SpeedNorm` with an interval, and a recommendation that never declares a
//!   winner by less than its interval.
//!
//! Every interval is a 95% interval ([`Z95`] standard errors). Bad input (different lengths,
//! too few items, NaN or infinite values) is an [`Error::Invalid`] naming the rule broken.

use serde::Serialize;

use crate::error::{Error, Result};

/// The 97.5% quantile of the standard normal: a two-sided 95% interval is `value ± Z95·se`.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A figure with its standard error and 95% interval `[lo, hi]`. For a figure obtained through a
/// monotone transform (the perplexity ratio is `exp` of a mean) the interval is the transformed
/// interval, so it need not be symmetric about `value`; `se` is then the delta-method SE.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub se: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Estimate {
    /// `value ± Z95·se` (the Wald interval). `se` must be finite and ≥ 0, `value` finite.
    pub fn wald(value: f64, se: f64) -> Result<Self> {
        if !value.is_finite() || !se.is_finite() || se < 0.0 {
            return Err(Error::Invalid(format!(
                "estimate {value} ± {se}: the value must be finite and the standard error finite and >= 0"
            )));
        }
        Ok(Self {
            value,
            se,
            lo: value - Z95 * se,
            hi: value + Z95 * se,
        })
    }

    /// A figure known without sampling error (SE 0, the interval a point), e.g. the base's own
    /// SpeedNorm of 0 or a speed figure that comes with no SE.
    pub fn exact(value: f64) -> Result<Self> {
        Self::wald(value, 0.0)
    }

    /// Whether the two 95% intervals share at least one point.
    pub fn overlaps(&self, other: &Estimate) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }

    fn check(&self, what: &str) -> Result<()> {
        let ok = [self.value, self.se, self.lo, self.hi]
            .iter()
            .all(|x| x.is_finite())
            && self.se >= 0.0
            && self.lo <= self.value
            && self.value <= self.hi;
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{what}: {self:?} is not a valid estimate (finite, se >= 0, lo <= value <= hi)"
            )))
        }
    }
}

fn same_len(what: &str, a: usize, b: usize, min: usize) -> Result<()> {
    if a != b {
        return Err(Error::Invalid(format!(
            "{what}: base has {a} values, variant {b}: a paired comparison needs the same items in the same order"
        )));
    }
    if a < min {
        return Err(Error::Invalid(format!(
            "{what}: {a} values, at least {min} needed for a standard error"
        )));
    }
    Ok(())
}

fn finite<T: Copy + Into<f64>>(what: &str, side: &str, xs: &[T]) -> Result<Vec<f64>> {
    let v: Vec<f64> = xs.iter().map(|&x| x.into()).collect();
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::Invalid(format!(
            "{what}: {side} value {x} at position {i}: every value must be finite"
        )));
    }
    Ok(v)
}

/// Mean and standard error of the mean, `sd/√n` with the sample (n − 1) variance.
fn mean_and_se(d: &[f64]) -> (f64, f64) {
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let ss = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
    (mean, (ss / ((n - 1.0) * n)).sqrt())
}

/// McNemar's test of "the two systems are equally often right" from the discordant counts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct McNemar {
    /// exact two-sided p: `min(1, 2·P(X ≤ min(b, c)))`, X ~ Binomial(b + c, ½)
    pub exact: f64,
    /// mid-p: the exact p less `P(X = min(b, c))` (Fagerland, Lydersen & Laake 2013), which
    /// keeps close to the nominal level where the exact test is conservative
    pub mid_p: f64,
}

/// McNemar's exact (binomial) test and its mid-p variant for discordant counts `b` (base right,
/// variant wrong) and `c` (base wrong, variant right). McNemar (1947): under the null hypothesis
/// each discordant item is equally likely to fall either way, so `b | b + c ~ Binomial(b + c, ½)`.
/// With no discordant item both p-values are 1.
pub fn mcnemar(b: usize, c: usize) -> McNemar {
    let n = b + c;
    let k = b.min(c);
    if n == 0 {
        return McNemar {
            exact: 1.0,
            mid_p: 1.0,
        };
    }
    // pmf(j) = C(n, j)/2^n, built in logs term by term: exact for any n, no gamma function
    let mut ln_pmf = -(n as f64) * std::f64::consts::LN_2;
    let mut tail = 0.0;
    let mut at_k = 0.0;
    for j in 0..=k {
        let p = ln_pmf.exp();
        tail += p;
        at_k = p;
        ln_pmf += ((n - j) as f64).ln() - ((j + 1) as f64).ln();
    }
    McNemar {
        exact: (2.0 * tail).min(1.0),
        mid_p: (2.0 * tail - at_k).min(1.0),
    }
}

/// The part of [`paired_accuracy`] that is defined whatever the base scored: the 2×2 table, the
/// accuracy difference with its paired SE, and McNemar's test — but no PerfNorm, which a base
/// with no item right leaves undefined (a small model near chance on a few items).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccuracyDiff {
    pub n: usize,
    pub base_acc: f64,
    pub variant_acc: f64,
    pub both_right: usize,
    /// `b`: items the base got right and the variant wrong
    pub base_only: usize,
    /// `c`: items the variant got right and the base wrong
    pub variant_only: usize,
    pub both_wrong: usize,
    /// `variant_acc − base_acc = (c − b)/n`, its paired SE and 95% interval (Wald)
    pub diff: Estimate,
    pub mcnemar: McNemar,
}

/// [`paired_accuracy`] less PerfNorm (the same figures): errors only on different lengths or
/// fewer than 2 items.
pub fn accuracy_difference(base: &[bool], variant: &[bool]) -> Result<AccuracyDiff> {
    table("accuracy difference", base, variant)
}

fn table(what: &str, base: &[bool], variant: &[bool]) -> Result<AccuracyDiff> {
    same_len(what, base.len(), variant.len(), 2)?;
    let (mut n11, mut n10, mut n01, mut n00) = (0usize, 0usize, 0usize, 0usize);
    for (&b, &v) in base.iter().zip(variant) {
        match (b, v) {
            (true, true) => n11 += 1,
            (true, false) => n10 += 1,
            (false, true) => n01 += 1,
            (false, false) => n00 += 1,
        }
    }
    let n = base.len();
    let nf = n as f64;
    let (b, c) = (n10 as f64, n01 as f64);
    let diff = (c - b) / nf;
    let ss = ((b + c) - (c - b).powi(2) / nf).max(0.0);
    Ok(AccuracyDiff {
        n,
        base_acc: (n11 + n10) as f64 / nf,
        variant_acc: (n11 + n01) as f64 / nf,
        both_right: n11,
        base_only: n10,
        variant_only: n01,
        both_wrong: n00,
        diff: Estimate::wald(diff, (ss / (nf * (nf - 1.0))).sqrt())?,
        mcnemar: mcnemar(n10, n01),
    })
}

/// Base and variant scored right/wrong on the same items: the table, difference and McNemar
/// test of [`AccuracyDiff`] (its fields read through, `p.diff`, `p.base_only`, …) and PerfNorm.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairedAccuracy {
    #[serde(flatten)]
    pub table: AccuracyDiff,
    /// PerfNorm = `variant_acc / base_acc`, its SE and 95% interval (Wald, ratio estimator)
    pub perf_norm: Estimate,
}

impl std::ops::Deref for PairedAccuracy {
    type Target = AccuracyDiff;
    fn deref(&self) -> &AccuracyDiff {
        &self.table
    }
}

/// Compares per-item correctness of base and variant on the same items (same order).
///
/// With `d_i = variant_i − base_i ∈ {−1, 0, 1}` the difference is the mean of the `d_i`,
/// `(c − b)/n`, and its standard error is that of a sample mean, computed from the discordant
/// counts alone (only they have `d_i ≠ 0`):
///
/// ```text
/// SE = sqrt( ((b + c) − (c − b)²/n) / (n·(n − 1)) )
/// ```
///
/// (the McNemar/Agresti paired-proportions SE `sqrt((b + c) − (c − b)²/n)/n` with the sample
/// variance's `n − 1`). PerfNorm `R = variant_acc/base_acc` gets the ratio estimator's
/// linearised SE: `z_i = (variant_i − R·base_i)/base_acc`, SE = `sd(z)/√n`, which accounts for
/// the pairing through the covariance of the two columns.
///
/// With no discordant item the SE is 0 and both p-values 1: the sample shows no difference.
/// Errors: different lengths, fewer than 2 items, or a base that got no item right (PerfNorm
/// undefined).
pub fn paired_accuracy(base: &[bool], variant: &[bool]) -> Result<PairedAccuracy> {
    let what = "paired accuracy";
    let t = table(what, base, variant)?;
    let nf = t.n as f64;
    let (b, c) = (t.base_only as f64, t.variant_only as f64);
    if t.base_acc == 0.0 {
        return Err(Error::Invalid(format!(
            "{what}: the base got none of the {} items right, so PerfNorm (variant/base accuracy) is undefined",
            t.n
        )));
    }
    let r = t.variant_acc / t.base_acc;
    // Σ (v − R·b)² over the four cells; mean of z is 0 by construction
    let ssz = (t.both_right as f64 * (1.0 - r).powi(2) + b * r * r + c) / (t.base_acc * t.base_acc);
    let perf_norm = Estimate::wald(r, (ssz / (nf * (nf - 1.0))).sqrt())?;
    Ok(PairedAccuracy {
        table: t,
        perf_norm,
    })
}

/// Base and variant scored on the same items with a continuous per-item score (F1, a judge's
/// mark): the means, their paired difference and the ratio (PerfNorm for such a task).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairedMean {
    pub n: usize,
    pub base_mean: f64,
    pub variant_mean: f64,
    /// `mean(variant_i − base_i)`, SE `sd(d)/√n`, Wald interval
    pub diff: Estimate,
    /// `variant_mean / base_mean`, ratio-estimator SE as in [`paired_accuracy`]
    pub ratio: Estimate,
}

/// The paired comparison of per-item scores (`paired_accuracy` on booleans is this with 0/1,
/// plus McNemar). Errors as [`paired_accuracy`], and on a non-finite score or a base mean of 0.
pub fn paired_mean<T: Copy + Into<f64>>(base: &[T], variant: &[T]) -> Result<PairedMean> {
    let what = "paired mean";
    same_len(what, base.len(), variant.len(), 2)?;
    let b = finite(what, "base", base)?;
    let v = finite(what, "variant", variant)?;
    let d: Vec<f64> = v.iter().zip(&b).map(|(v, b)| v - b).collect();
    let (md, se) = mean_and_se(&d);
    let nf = b.len() as f64;
    let (mb, mv) = (b.iter().sum::<f64>() / nf, v.iter().sum::<f64>() / nf);
    if mb == 0.0 {
        return Err(Error::Invalid(format!(
            "{what}: the base's mean score is 0, so the ratio is undefined"
        )));
    }
    let r = mv / mb;
    let z: Vec<f64> = v.iter().zip(&b).map(|(v, b)| (v - r * b) / mb).collect();
    let (_, se_r) = mean_and_se(&z);
    Ok(PairedMean {
        n: b.len(),
        base_mean: mb,
        variant_mean: mv,
        diff: Estimate::wald(md, se)?,
        ratio: Estimate::wald(r, se_r)?,
    })
}

/// Perplexity of base and variant on the same token positions, and their ratio.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PplRatio {
    pub tokens: usize,
    pub base_ppl: f64,
    pub variant_ppl: f64,
    /// `ln(PPL(variant)/PPL(base)) = mean(nll_v − nll_b)`, its SE and Wald interval
    pub ln_ratio: Estimate,
    /// `PPL(variant)/PPL(base) = exp(ln_ratio)`; interval `exp` of the log interval
    pub ratio: Estimate,
    /// PerfNorm-style `PPL(base)/PPL(variant) = exp(−ln_ratio)`; interval likewise
    pub perf_norm: Estimate,
}

fn ppl_from(tokens: usize, mb: f64, mv: f64, ln: Estimate) -> Result<PplRatio> {
    let e = |v: f64, lo: f64, hi: f64, se: f64| -> Result<Estimate> {
        let est = Estimate {
            value: v.exp(),
            se: v.exp() * se,
            lo: lo.exp(),
            hi: hi.exp(),
        };
        est.check("perplexity ratio")?;
        Ok(est)
    };
    Ok(PplRatio {
        tokens,
        base_ppl: mb.exp(),
        variant_ppl: mv.exp(),
        ratio: e(ln.value, ln.lo, ln.hi, ln.se)?,
        perf_norm: e(-ln.value, -ln.hi, -ln.lo, ln.se)?,
        ln_ratio: ln,
    })
}

/// The perplexity ratio from per-token NLLs (natural log) at the same positions, treating tokens
/// as the sampling unit, as llama.cpp's perplexity tool does in its KL-divergence mode ("Mean
/// ln(PPL(Q)/PPL(base))" ± its uncertainty, which it assembles from the two NLL variances and
/// their covariance — the same number as the SE of the mean paired difference used here):
///
/// ```text
/// d_t = nll_v(t) − nll_b(t);   ln ratio = mean(d);   SE = sd(d)/√n   (sample sd, n − 1)
/// ratio = exp(mean d) ∈ [exp(mean d − Z95·SE), exp(mean d + Z95·SE)]
/// PerfNorm = 1/ratio ∈ [exp(−mean d − Z95·SE), exp(−mean d + Z95·SE)]
/// ```
///
/// Neighbouring tokens of a text are correlated, so the token-level SE is optimistic; where the
/// NLLs come in sequences, [`ppl_ratio_by_sequence`] gives the SE with sequences as clusters.
/// Identical NLLs give ratio 1 with SE 0. Errors: different lengths, fewer than 2 tokens,
/// non-finite values.
pub fn ppl_ratio<T: Copy + Into<f64>>(base_nll: &[T], variant_nll: &[T]) -> Result<PplRatio> {
    let what = "perplexity ratio";
    same_len(what, base_nll.len(), variant_nll.len(), 2)?;
    let b = finite(what, "base NLL", base_nll)?;
    let v = finite(what, "variant NLL", variant_nll)?;
    let d: Vec<f64> = v.iter().zip(&b).map(|(v, b)| v - b).collect();
    let (md, se) = mean_and_se(&d);
    let nf = b.len() as f64;
    ppl_from(
        b.len(),
        b.iter().sum::<f64>() / nf,
        v.iter().sum::<f64>() / nf,
        Estimate::wald(md, se)?,
    )
}

/// [`ppl_ratio`] over sequences (each pair of the same length), with a cluster-robust SE: the
/// ratio is still the token mean `Σ D_s / N` (`D_s` a sequence's summed NLL difference, `N` all
/// tokens), but its SE treats the `S` sequences as the independent units:
///
/// ```text
/// SE = sqrt( S/(S − 1) · Σ_s (D_s − n_s·mean d)² ) / N
/// ```
///
/// For sequences of equal length this is the SE of the mean of per-sequence mean differences.
/// Errors: different counts or lengths, fewer than 2 sequences, an empty sequence, non-finite.
pub fn ppl_ratio_by_sequence<S, T>(base_nll: &[S], variant_nll: &[S]) -> Result<PplRatio>
where
    S: AsRef<[T]>,
    T: Copy + Into<f64>,
{
    let what = "perplexity ratio by sequence";
    same_len(what, base_nll.len(), variant_nll.len(), 2)?;
    let (mut sums, mut lens) = (vec![], vec![]);
    let (mut sb, mut sv) = (0.0, 0.0);
    for (i, (bs, vs)) in base_nll.iter().zip(variant_nll).enumerate() {
        let at = format!("{what}, sequence {i}");
        let (bs, vs) = (bs.as_ref(), vs.as_ref());
        same_len(&at, bs.len(), vs.len(), 1)?;
        let b = finite(&at, "base NLL", bs)?;
        let v = finite(&at, "variant NLL", vs)?;
        sb += b.iter().sum::<f64>();
        sv += v.iter().sum::<f64>();
        sums.push(v.iter().zip(&b).map(|(v, b)| v - b).sum::<f64>());
        lens.push(b.len() as f64);
    }
    let n: f64 = lens.iter().sum();
    let s = sums.len() as f64;
    let md = sums.iter().sum::<f64>() / n;
    let ss: f64 = sums
        .iter()
        .zip(&lens)
        .map(|(d, l)| (d - l * md).powi(2))
        .sum();
    let se = (s / (s - 1.0) * ss).sqrt() / n;
    ppl_from(n as usize, sb / n, sv / n, Estimate::wald(md, se)?)
}

/// Mean of per-token KL(base ‖ variant) values and its standard error `sd/√n` (sample sd), a
/// Wald interval. Values must be finite; KL is ≥ 0, and values below −1e-3 (beyond what float
/// rounding of a near-zero KL produces) are refused as a sign of swapped or unnormalised inputs.
/// Tiny negative values are kept so the mean stays unbiased.
pub fn kl_mean<T: Copy + Into<f64>>(kl: &[T]) -> Result<Estimate> {
    let what = "KL mean";
    if kl.len() < 2 {
        return Err(Error::Invalid(format!(
            "{what}: {} values, at least 2 needed for a standard error",
            kl.len()
        )));
    }
    let v = finite(what, "KL", kl)?;
    if let Some((i, x)) = v.iter().enumerate().find(|(_, &x)| x < -1e-3) {
        return Err(Error::Invalid(format!(
            "{what}: value {x} at position {i} is negative: a KL divergence is >= 0"
        )));
    }
    let (m, se) = mean_and_se(&v);
    Estimate::wald(m, se)
}

/// [`kl_mean`] over sequences (per-token KL values, each sequence its own vector), with the
/// sequences as clusters as in [`ppl_ratio_by_sequence`]: the token mean `Σ K_s / N` and
/// `SE = sqrt( S/(S − 1) · Σ_s (K_s − n_s·mean)² ) / N` (`K_s` a sequence's summed KL). For
/// sequences of equal length this is the SE of the mean of per-sequence means. Errors as
/// [`kl_mean`], and fewer than 2 sequences or an empty one.
pub fn kl_mean_by_sequence<S, T>(kl: &[S]) -> Result<Estimate>
where
    S: AsRef<[T]>,
    T: Copy + Into<f64>,
{
    let what = "KL mean by sequence";
    same_len(what, kl.len(), kl.len(), 2)?;
    let (mut sums, mut lens) = (vec![], vec![]);
    for (i, s) in kl.iter().enumerate() {
        let at = format!("{what}, sequence {i}");
        let s = s.as_ref();
        same_len(&at, s.len(), s.len(), 1)?;
        let v = finite(&at, "KL", s)?;
        if let Some((j, x)) = v.iter().enumerate().find(|(_, &x)| x < -1e-3) {
            return Err(Error::Invalid(format!(
                "{at}: value {x} at position {j} is negative: a KL divergence is >= 0"
            )));
        }
        sums.push(v.iter().sum::<f64>());
        lens.push(v.len() as f64);
    }
    let n: f64 = lens.iter().sum();
    let s = sums.len() as f64;
    let m = sums.iter().sum::<f64>() / n;
    let ss: f64 = sums
        .iter()
        .zip(&lens)
        .map(|(k, l)| (k - l * m).powi(2))
        .sum();
    Estimate::wald(m, (s / (s - 1.0) * ss).sqrt() / n)
}

/// SpeedNorm = `(T_base − T_variant)/T_base = 1 − T_variant/T_base` (target.md), T the time per
/// generated token, each with its SE (0 when none). The two timings are taken as independent
/// runs: `SE = (T_v/T_b)·sqrt((se_v/T_v)² + (se_b/T_b)²)` (delta method), Wald interval. Errors:
/// a time that is not finite and > 0.
pub fn speed_norm(t_base: Estimate, t_variant: Estimate) -> Result<Estimate> {
    t_base.check("SpeedNorm, base time per token")?;
    t_variant.check("SpeedNorm, variant time per token")?;
    for (side, t) in [("base", t_base.value), ("variant", t_variant.value)] {
        if t <= 0.0 {
            return Err(Error::Invalid(format!(
                "SpeedNorm: {side} time per token {t}: must be > 0"
            )));
        }
    }
    let r = t_variant.value / t_base.value;
    let rel =
        ((t_variant.se / t_variant.value).powi(2) + (t_base.se / t_base.value).powi(2)).sqrt();
    Estimate::wald(1.0 - r, r * rel)
}

/// The competition's Score proxy `0.5·PerfNorm + 0.5·SpeedNorm` (target.md), the two taken as
/// independent measurements: `SE = 0.5·sqrt(se_P² + se_S²)`. The interval keeps each side's
/// own half-widths, `lo = score − 0.5·sqrt((P − P.lo)² + (S − S.lo)²)` and likewise `hi`, which
/// is the Wald interval when both inputs are symmetric and keeps the skew of a perplexity-based
/// PerfNorm otherwise. A SpeedNorm without SE is `Estimate::exact`.
pub fn score(perf_norm: Estimate, speed_norm: Estimate) -> Result<Estimate> {
    perf_norm.check("score, PerfNorm")?;
    speed_norm.check("score, SpeedNorm")?;
    let (p, s) = (perf_norm, speed_norm);
    let value = 0.5 * (p.value + s.value);
    let lo = value - 0.5 * ((p.value - p.lo).powi(2) + (s.value - s.lo).powi(2)).sqrt();
    let hi = value + 0.5 * ((p.hi - p.value).powi(2) + (s.hi - s.value).powi(2)).sqrt();
    let est = Estimate {
        value,
        se: 0.5 * (p.se * p.se + s.se * s.se).sqrt(),
        lo,
        hi,
    };
    est.check("score")?;
    Ok(est)
}

/// One variant as [`recommend`] weighs it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub name: String,
    /// the Score proxy, from [`score`]
    pub score: Estimate,
    /// PerfNorm, which the tie-break reads (its lower bound)
    pub perf_norm: Estimate,
}

/// The tie-break rule, as [`Recommendation::rule`] states it.
pub const TIE_RULE: &str = "among variants whose 95% score interval overlaps the best's, pick the one with the highest lower bound of PerfNorm (accuracy is what a submission cannot buy back with speed); then the higher score, then the name in alphabetical order";

/// What [`recommend`] concludes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// the highest score point estimate
    pub best: String,
    /// every other variant whose 95% score interval overlaps `best`'s, by score, highest first
    pub tied: Vec<String>,
    /// the recommended variant: `best` when nothing is tied with it, else the tie-break's choice
    pub pick: String,
    /// true when `best`'s interval overlaps no other: a winner by more than its interval
    pub clear: bool,
    /// the tie-break rule ([`TIE_RULE`])
    pub rule: String,
    /// one paragraph for a report
    pub text: String,
}

/// Names the best candidate by score, lists every candidate whose 95% interval overlaps the
/// best's as tied with it, and breaks a tie by [`TIE_RULE`]. A winner is declared only when its
/// interval overlaps no other candidate's (`clear`); otherwise the text says the variants are
/// tied and that the pick is the tie-break's, not the score's. (Interval overlap is a
/// conservative criterion — two 95% intervals can overlap while the paired difference is
/// significant — so "tied" means "not shown apart", never "shown equal".)
///
/// Errors: no candidates, two with the same name, an estimate that is not finite or has
/// `lo > value` or `value > hi`.
pub fn recommend(candidates: &[Candidate]) -> Result<Recommendation> {
    if candidates.is_empty() {
        return Err(Error::Invalid(
            "recommend: no candidates: nothing to choose from".into(),
        ));
    }
    for (i, c) in candidates.iter().enumerate() {
        c.score.check(&format!("recommend, `{}` score", c.name))?;
        c.perf_norm
            .check(&format!("recommend, `{}` PerfNorm", c.name))?;
        if candidates[..i].iter().any(|o| o.name == c.name) {
            return Err(Error::Invalid(format!(
                "recommend: two candidates named `{}`: names must be unique",
                c.name
            )));
        }
    }
    let by_score = |a: &&Candidate, b: &&Candidate| {
        b.score
            .value
            .total_cmp(&a.score.value)
            .then_with(|| a.name.cmp(&b.name))
    };
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(by_score);
    let best = order[0];
    let tied: Vec<&Candidate> = order[1..]
        .iter()
        .copied()
        .filter(|c| c.score.overlaps(&best.score))
        .collect();
    let pick = std::iter::once(best)
        .chain(tied.iter().copied())
        .min_by(|a, b| {
            b.perf_norm
                .lo
                .total_cmp(&a.perf_norm.lo)
                .then_with(|| by_score(a, b))
        })
        .expect("best is always in the tie set");
    let fmt = |c: &Candidate| {
        format!(
            "{} ({:.3} [{:.3}, {:.3}])",
            c.name, c.score.value, c.score.lo, c.score.hi
        )
    };
    let text = if tied.is_empty() {
        format!(
            "{} has the highest score and its 95% interval overlaps no other variant's: it wins by more than its interval.",
            fmt(best)
        )
    } else {
        let names: Vec<String> = tied.iter().map(|c| fmt(c)).collect();
        format!(
            "{} has the highest score, but its 95% interval overlaps {}: no winner by score. Tie-break ({TIE_RULE}): {} (PerfNorm lower bound {:.3}).",
            fmt(best),
            names.join(", "),
            pick.name,
            pick.perf_norm.lo
        )
    };
    Ok(Recommendation {
        best: best.name.clone(),
        clear: tied.is_empty(),
        tied: tied.iter().map(|c| c.name.clone()).collect(),
        pick: pick.name.clone(),
        rule: TIE_RULE.to_string(),
        text,
    })
}
