//! The study's verdict, paired with the base: every variant's perplexity, KL and task accuracy
//! compared with the base's on the same tokens and items (`eval::paired`), recorded as rows with
//! their standard errors and 95% intervals, and the Score recommendation by [`recommend`], which
//! names every variant whose interval overlaps the best's and never declares a winner by less
//! than its interval.
//!
//! The rows it adds (existing metric names keep their meaning; intervals are 95%):
//!
//! | metric | value | spread |
//! |---|---|---|
//! | `ppl_ratio`, `ppl_ratio_lo`, `ppl_ratio_hi` | PPL(variant)/PPL(base) and its interval | SE (delta method) |
//! | `ppl_ln_ratio` | mean per-token `nll_v − nll_b` (nats) | SE, scoring windows as clusters |
//! | `perf_norm_lo`, `perf_norm_hi` | the interval of PerfNorm = PPL(base)/PPL(variant) | – |
//! | `kl_mean_lo`, `kl_mean_hi` | the interval of the mean KL, sequences as clusters | – |
//! | `mc_acc_diff`, `mc_acc_diff_lo`, `mc_acc_diff_hi` | MC accuracy − the base's | paired SE |
//! | `mc_base_only`, `mc_variant_only` | discordant items (base right only, variant right only) | – |
//! | `mc_mcnemar_p`, `mc_mcnemar_mid_p` | McNemar's exact and mid-p two-sided p-values | – |
//! | `mc_perf_norm`, `mc_perf_norm_lo`, `mc_perf_norm_hi` | accuracy ratio (when the base got any item right) | SE |
//! | `genmc_*` | the same six for the generation-scored items (`genmc_acc_diff`, …) | as above |
//! | `perf_norm`, `score` (spread added), `score_lo`, `score_hi` | as before, with SE and interval | SE |
//! | `verdict_best`, `verdict_tied`, `verdict_pick` | 1 for the best score, those tied with it, the pick; else 0 | – |

use crate::eval::paired::{
    accuracy_difference, kl_mean_by_sequence, paired_accuracy, ppl_ratio, ppl_ratio_by_sequence,
    recommend, score, Candidate, Estimate, PplRatio, Recommendation,
};
use crate::record::{Results, Variant};

/// What a model scored token by token and item by item on a suite: what pairs it with the base.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerToken {
    /// per-token NLL (nats) of the perplexity text, window by window
    pub nll: Vec<Vec<f32>>,
    /// the multiple-choice items it got right (summed log-likelihood); empty without items
    pub mc_right: Vec<bool>,
    /// the items it answered right in the generation-scored pass; empty without that pass
    pub gen_right: Vec<bool>,
}

/// The perplexity ratio of a variant to the base from per-token NLLs at the same positions,
/// grouped by scoring window: with two windows or more the SE treats windows as clusters
/// ([`ppl_ratio_by_sequence`]), with one it falls back to tokens ([`ppl_ratio`]). The ratio is
/// the same either way: `exp(mean(nll_v − nll_b))` over every token.
pub fn ppl_paired(base: &[Vec<f32>], variant: &[Vec<f32>]) -> crate::Result<PplRatio> {
    if base.len() >= 2 {
        ppl_ratio_by_sequence(base, variant)
    } else {
        ppl_ratio(&base.concat(), &variant.concat())
    }
}

/// Adds an estimate as `{metric}` (value ± SE, when `with_value`), `{metric}_lo`, `{metric}_hi`.
fn add_estimate(r: &mut Results, v: &Variant, metric: &str, e: &Estimate, unit: &str, value: bool) {
    if value {
        r.add(v, metric, e.value, Some(e.se), unit);
    }
    r.add(v, &format!("{metric}_lo"), e.lo, None, unit);
    r.add(v, &format!("{metric}_hi"), e.hi, None, unit);
}

/// Adds `variant`'s paired rows against `base`: `ours` and `base` scored on the same tokens and
/// items, `kl` the per-token KL(base ‖ variant) by sequence. A comparison the data cannot support
/// (too few tokens, items or sequences; a non-finite NLL) is left out with a line on stderr: one
/// broken variant does not end a study.
pub fn add_paired(
    results: &mut Results,
    variant: &Variant,
    base: &PerToken,
    ours: &PerToken,
    kl: &[Vec<f32>],
) {
    let skip = |what: &str, e: crate::Error| {
        eprintln!("{}: no paired {what}: {e}", variant.name);
    };
    match ppl_paired(&base.nll, &ours.nll) {
        Ok(p) => {
            add_estimate(results, variant, "ppl_ratio", &p.ratio, "×", true);
            let ln = p.ln_ratio;
            results.add(variant, "ppl_ln_ratio", ln.value, Some(ln.se), "nats");
            add_estimate(results, variant, "perf_norm", &p.perf_norm, "", false);
        }
        Err(e) => skip("perplexity ratio", e),
    }
    match kl_mean_by_sequence(kl) {
        Ok(k) => add_estimate(results, variant, "kl_mean", &k, "nats", false),
        Err(e) => skip("KL interval", e),
    }
    for (m, b, o) in [
        ("mc", &base.mc_right, &ours.mc_right),
        ("genmc", &base.gen_right, &ours.gen_right),
    ] {
        // a column not measured on one side (a skipped generation pass) is not compared
        if b.is_empty() || o.is_empty() {
            continue;
        }
        match accuracy_difference(b, o) {
            Ok(a) => {
                add_estimate(
                    results,
                    variant,
                    &format!("{m}_acc_diff"),
                    &a.diff,
                    "",
                    true,
                );
                let items =
                    |r: &mut Results, k: &str, n: usize| r.add(variant, k, n as f64, None, "items");
                items(results, &format!("{m}_base_only"), a.base_only);
                items(results, &format!("{m}_variant_only"), a.variant_only);
                results.add(
                    variant,
                    &format!("{m}_mcnemar_p"),
                    a.mcnemar.exact,
                    None,
                    "",
                );
                let mid = a.mcnemar.mid_p;
                results.add(variant, &format!("{m}_mcnemar_mid_p"), mid, None, "");
                // the accuracy ratio only where the base got something right
                if a.base_acc > 0.0 {
                    if let Ok(p) = paired_accuracy(b, o) {
                        let k = format!("{m}_perf_norm");
                        add_estimate(results, variant, &k, &p.perf_norm, "", true);
                    }
                }
            }
            Err(e) => skip(&format!("task accuracy ({m})"), e),
        }
    }
}

/// PerfNorm as an estimate from a variant's rows: the value the `perf_norm` row holds (base ppl ÷
/// variant ppl) with the interval of the paired log-ratio (`perf_norm_lo`/`_hi`) and its SE
/// (delta method, from `ppl_ln_ratio`). None where the paired rows are missing.
fn perf_norm_of(r: &Results, v: &str, value: f64) -> Option<Estimate> {
    let (lo, hi) = (r.get(v, "perf_norm_lo")?, r.get(v, "perf_norm_hi")?);
    let se_ln = r.spread(v, "ppl_ln_ratio")?;
    // the point is the same ratio computed another way: keep it inside its interval
    Some(Estimate {
        value,
        se: value * se_ln,
        lo: lo.min(value),
        hi: hi.max(value),
    })
}

/// Adds PerfNorm, SpeedNorm and Score for every variant against `base_variant`, each with its
/// spread and interval where the paired rows allow, and the recommendation among every variant
/// with a Score interval ([`recommend`]; its outcome as `verdict_*` rows). PerfNorm = base ppl /
/// variant ppl (a perplexity proxy for accuracy), SpeedNorm = the L4 projection's
/// (`l4_speed_norm` rows, [`super::l4_speed`]) where the base has one, else from batch-1 weight
/// bytes (`1 − variant ÷ base`); either is a model, not a sample: no SE. Score = ½·PerfNorm +
/// ½·SpeedNorm. Returns the recommendation (None when fewer than one variant has an interval).
pub fn add_scores(results: &mut Results, base_variant: &str) -> Option<Recommendation> {
    let (Some(bp), Some(bb)) = (
        results.get(base_variant, "test_ppl"),
        results.get(base_variant, "weight_mb_per_token"),
    ) else {
        return None;
    };
    let on_l4 = results.get(base_variant, "l4_speed_norm").is_some();
    let mut candidates = vec![];
    let mut methods = vec![];
    for v in results.variants() {
        let (Some(p), Some(b)) = (
            results.get(&v, "test_ppl"),
            results.get(&v, "weight_mb_per_token"),
        ) else {
            continue;
        };
        let perf = bp / p;
        let speedup = bb / b;
        let speed = match (on_l4, results.get(&v, "l4_speed_norm")) {
            (true, Some(s)) => s,
            (true, None) => continue,
            (false, _) => (1.0 - 1.0 / speedup).max(-1.0),
        };
        let perf_e = perf_norm_of(results, &v, perf);
        let score_e = perf_e.and_then(|pe| score(pe, Estimate::exact(speed).ok()?).ok());
        // score rows carry the variant's name and method, not its parameters
        let row = Variant::new(v.clone(), results.method_of(&v), serde_json::json!({}));
        results.add(&row, "predicted_speedup", speedup, None, "×");
        results.add(&row, "perf_norm", perf, perf_e.map(|e| e.se), "");
        results.add(&row, "speed_norm", speed, None, "");
        let s = 0.5 * perf + 0.5 * speed;
        results.add(&row, "score", s, score_e.map(|e| e.se), "");
        if let (Some(pe), Some(se)) = (perf_e, score_e) {
            // the row's value is the point; the interval is the paired one about it
            results.add(&row, "score_lo", se.lo.min(s), None, "");
            results.add(&row, "score_hi", se.hi.max(s), None, "");
            candidates.push(Candidate {
                name: v.clone(),
                score: Estimate {
                    value: s,
                    se: se.se,
                    lo: se.lo.min(s),
                    hi: se.hi.max(s),
                },
                perf_norm: pe,
            });
            methods.push(row);
        }
    }
    let rec = recommend(&candidates).ok()?;
    for row in &methods {
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        let n = &row.name;
        results.add(row, "verdict_best", flag(&rec.best == n), None, "bool");
        results.add(
            row,
            "verdict_tied",
            flag(rec.tied.contains(n)),
            None,
            "bool",
        );
        results.add(row, "verdict_pick", flag(&rec.pick == n), None, "bool");
    }
    Some(rec)
}
