//! The verdict's library parts: paired statistics against hand-computed and brute-force values,
//! the Score proxy and recommendation rule, and the L4 speed projection's rankings and
//! monotonicity on a 1.2B-shaped config.

use exaone_compress::eval::paired::{
    kl_mean, mcnemar, paired_accuracy, paired_mean, ppl_ratio, ppl_ratio_by_sequence, recommend,
    score, speed_norm, Candidate, Estimate, Z95,
};
use exaone_compress::eval::projection::{
    compare_with_public, parse_scheme_word, project, step_time, GpuSpec, Projection, Roofline,
    StepLoad, StepTrace, VariantCost,
};
use exaone_compress::serve::{Chunk, SchedulerConfig, Step};
use exaone_compress::{Error, Exaone4Config};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

macro_rules! assert_close {
    ($a:expr, $b:expr, $tol:expr) => {{
        let (a, b) = ($a as f64, $b as f64);
        assert!(close(a, b, $tol), "{} = {a}, expected {b}", stringify!($a));
    }};
}

fn invalid<T: std::fmt::Debug>(r: Result<T, Error>, needle: &str) {
    match r {
        Err(Error::Invalid(msg)) => assert!(msg.contains(needle), "{msg:?} lacks {needle:?}"),
        other => panic!("expected Error::Invalid containing {needle:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------- paired accuracy

/// n11 = 4, b = 3 (base only), c = 1 (variant only), n00 = 2.
fn small_table() -> (Vec<bool>, Vec<bool>) {
    let cells = [
        (true, true, 4),
        (true, false, 3),
        (false, true, 1),
        (false, false, 2),
    ];
    let mut base = vec![];
    let mut var = vec![];
    for (b, v, k) in cells {
        base.extend(std::iter::repeat_n(b, k));
        var.extend(std::iter::repeat_n(v, k));
    }
    (base, var)
}

#[test]
fn paired_accuracy_matches_a_hand_computed_table() {
    let (base, var) = small_table();
    let a = paired_accuracy(&base, &var).unwrap();
    assert_eq!(
        (a.n, a.both_right, a.base_only, a.variant_only, a.both_wrong),
        (10, 4, 3, 1, 2)
    );
    assert_close!(a.base_acc, 0.7, 1e-12);
    assert_close!(a.variant_acc, 0.5, 1e-12);
    // d = three −1, one +1, six 0: mean −0.2; Σ(d − d̄)² = 4 − 10·0.04 = 3.6; var 0.4; SE √0.04
    assert_close!(a.diff.value, -0.2, 1e-12);
    assert_close!(a.diff.se, 0.2, 1e-12);
    assert_close!(a.diff.lo, -0.2 - Z95 * 0.2, 1e-12);
    assert_close!(a.diff.hi, -0.2 + Z95 * 0.2, 1e-12);
    // PerfNorm R = 5/7; z = (v − R·b)/0.7 per item; SE = sd(z)/√n
    let r = 0.5 / 0.7;
    let z: Vec<f64> = base
        .iter()
        .zip(&var)
        .map(|(&b, &v)| (v as u8 as f64 - r * b as u8 as f64) / 0.7)
        .collect();
    let zm = z.iter().sum::<f64>() / 10.0;
    assert!(zm.abs() < 1e-12, "z has mean 0 by construction");
    let se = (z.iter().map(|x| (x - zm).powi(2)).sum::<f64>() / 9.0 / 10.0).sqrt();
    assert_close!(a.perf_norm.value, r, 1e-12);
    assert_close!(a.perf_norm.se, se, 1e-12);
    assert_close!(a.perf_norm.se, 0.254_535, 1e-5);
}

fn correlated_pairs(n: usize, seed: u64) -> (Vec<bool>, Vec<bool>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let base: Vec<bool> = (0..n).map(|_| rng.random_bool(0.6)).collect();
    // the variant mostly agrees, flipping 15% of items
    let var = base
        .iter()
        .map(|&b| if rng.random_bool(0.15) { !b } else { b })
        .collect();
    (base, var)
}

#[test]
fn paired_se_matches_the_per_item_formula_and_a_bootstrap() {
    let (base, var) = correlated_pairs(400, 7);
    let a = paired_accuracy(&base, &var).unwrap();
    // brute force: the sample SE of the per-item differences
    let d: Vec<f64> = base
        .iter()
        .zip(&var)
        .map(|(&b, &v)| v as u8 as f64 - b as u8 as f64)
        .collect();
    let n = d.len() as f64;
    let m = d.iter().sum::<f64>() / n;
    let se = (d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt();
    assert_close!(a.diff.value, m, 1e-12);
    assert_close!(a.diff.se, se, 1e-12);
    // bootstrap over items: the spread of resampled differences and ratios
    let mut rng = StdRng::seed_from_u64(11);
    let (mut diffs, mut ratios) = (vec![], vec![]);
    for _ in 0..4000 {
        let (mut sb, mut sv) = (0.0, 0.0);
        for _ in 0..base.len() {
            let i = rng.random_range(0..base.len());
            sb += base[i] as u8 as f64;
            sv += var[i] as u8 as f64;
        }
        diffs.push((sv - sb) / n);
        ratios.push(sv / sb);
    }
    let sd = |x: &[f64]| {
        let m = x.iter().sum::<f64>() / x.len() as f64;
        (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
    };
    assert_close!(a.diff.se, sd(&diffs), 0.08);
    assert_close!(a.perf_norm.se, sd(&ratios), 0.08);
    // the unpaired SE (two independent proportions) is much larger: pairing is what helps
    let unpaired =
        (a.base_acc * (1.0 - a.base_acc) / n + a.variant_acc * (1.0 - a.variant_acc) / n).sqrt();
    assert!(
        a.diff.se < 0.75 * unpaired,
        "paired {} vs unpaired {unpaired}",
        a.diff.se
    );
}

#[test]
fn paired_mean_on_zero_one_scores_equals_paired_accuracy() {
    let (base, var) = correlated_pairs(200, 3);
    let a = paired_accuracy(&base, &var).unwrap();
    let f = |x: &[bool]| x.iter().map(|&b| b as u8 as f64).collect::<Vec<f64>>();
    let m = paired_mean(&f(&base), &f(&var)).unwrap();
    assert_close!(m.diff.value, a.diff.value, 1e-12);
    assert_close!(m.diff.se, a.diff.se, 1e-12);
    assert_close!(m.ratio.value, a.perf_norm.value, 1e-12);
    assert_close!(m.ratio.se, a.perf_norm.se, 1e-10);
}

#[test]
fn mcnemar_p_values_on_known_tables() {
    // b = 10, c = 2: P(X ≤ 2 | n = 12) = (1 + 12 + 66)/4096
    let t = mcnemar(10, 2);
    assert_close!(t.exact, 2.0 * 79.0 / 4096.0, 1e-12);
    assert_close!(t.mid_p, 2.0 * 79.0 / 4096.0 - 66.0 / 4096.0, 1e-12);
    assert_eq!(mcnemar(2, 10), t, "symmetric in b and c");
    // b = 0, c = 5: exact 2/32, mid-p 1/32
    let t = mcnemar(0, 5);
    assert_close!(t.exact, 0.0625, 1e-12);
    assert_close!(t.mid_p, 0.03125, 1e-12);
    // balanced or no discordance: no evidence at all
    for (b, c) in [(0, 0), (7, 7), (500, 500)] {
        let t = mcnemar(b, c);
        assert_close!(t.exact, 1.0, 1e-12);
        assert_close!(t.mid_p, 1.0, 1e-9);
    }
    // large n stays finite and tiny where it should be
    let t = mcnemar(2000, 1000);
    assert!(t.exact > 0.0 && t.exact < 1e-30 && t.mid_p <= t.exact);
    let (base, var) = small_table();
    assert_eq!(paired_accuracy(&base, &var).unwrap().mcnemar, mcnemar(3, 1));
}

// ---------------------------------------------------------------- perplexity and KL

#[test]
fn ppl_ratio_is_exact_for_identical_and_shifted_nlls() {
    let base = [2.0f64, 3.5, 0.25, 1.0, 4.0];
    let same = ppl_ratio(&base, &base).unwrap();
    assert_eq!(same.ratio.value, 1.0);
    assert_eq!(
        (same.ln_ratio.se, same.ratio.lo, same.ratio.hi),
        (0.0, 1.0, 1.0)
    );
    assert_eq!(same.perf_norm.value, 1.0);
    assert_close!(same.base_ppl, (10.75f64 / 5.0).exp(), 1e-12);
    // every token 0.1 nats worse: ratio exactly e^0.1 with no spread
    let worse: Vec<f64> = base.iter().map(|x| x + 0.1).collect();
    let r = ppl_ratio(&base, &worse).unwrap();
    assert_close!(r.ln_ratio.value, 0.1, 1e-12);
    assert!(r.ln_ratio.se < 1e-12);
    assert_close!(r.ratio.value, 0.1f64.exp(), 1e-12);
    assert_close!(r.perf_norm.value, (-0.1f64).exp(), 1e-12);
    // f32 input works the same
    let b32 = [1.0f32, 2.0];
    let v32 = [1.1f32, 2.3];
    let r = ppl_ratio(&b32, &v32).unwrap();
    // d = (0.1, 0.3): mean 0.2, sd √0.02, SE 0.1
    assert_close!(r.ln_ratio.value, 0.2, 1e-6);
    assert_close!(r.ln_ratio.se, 0.1, 1e-5);
    assert_close!(r.ratio.lo, (0.2 - Z95 * 0.1f64).exp(), 1e-5);
    assert_close!(r.perf_norm.hi, (-0.2 + Z95 * 0.1f64).exp(), 1e-5);
    assert!(r.perf_norm.lo < r.perf_norm.value && r.perf_norm.value < r.perf_norm.hi);
}

#[test]
fn ppl_ratio_by_sequence_uses_sequences_as_clusters() {
    let base = vec![
        vec![1.0, 2.0, 3.0],
        vec![0.5, 0.5, 0.5],
        vec![2.0, 2.0, 1.0],
    ];
    let var = vec![
        vec![1.3, 2.0, 3.3],
        vec![0.5, 0.6, 0.4],
        vec![2.5, 2.4, 1.3],
    ];
    let r = ppl_ratio_by_sequence(&base, &var).unwrap();
    // per-sequence mean differences 0.2, 0.0, 0.4: equal lengths, so the SE is theirs
    let means = [0.2, 0.0, 0.4];
    let m = 0.2;
    let se = (means.iter().map(|x: &f64| (x - m).powi(2)).sum::<f64>() / 2.0 / 3.0).sqrt();
    assert_close!(r.ln_ratio.value, m, 1e-12);
    assert_close!(r.ln_ratio.se, se, 1e-12);
    assert_eq!(r.tokens, 9);
    // the same point estimate as the token-level ratio
    let flat = |x: &Vec<Vec<f64>>| x.concat();
    let t = ppl_ratio(&flat(&base), &flat(&var)).unwrap();
    assert_close!(t.ln_ratio.value, r.ln_ratio.value, 1e-12);
}

#[test]
fn kl_mean_and_its_standard_error() {
    let e = kl_mean(&[0.1f32, 0.3]).unwrap();
    assert_close!(e.value, 0.2, 1e-6);
    assert_close!(e.se, 0.1, 1e-5);
    let e = kl_mean(&[0.0f64, 0.0, -1e-7]).unwrap();
    assert!(e.value.abs() < 1e-6, "tiny rounding negatives are kept");
    invalid(kl_mean(&[0.1, -0.5]), "negative");
    invalid(kl_mean(&[0.1, f64::NAN]), "finite");
    invalid(kl_mean::<f64>(&[0.1]), "at least 2");
}

#[test]
fn bad_input_is_an_error_never_a_panic() {
    invalid(paired_accuracy(&[true, false], &[true]), "same items");
    invalid(paired_accuracy(&[], &[]), "at least 2");
    invalid(paired_accuracy(&[false, false], &[true, false]), "PerfNorm");
    invalid(ppl_ratio(&[1.0, 2.0], &[1.0]), "same items");
    invalid(ppl_ratio::<f64>(&[], &[]), "at least 2");
    invalid(ppl_ratio(&[1.0, f64::NAN], &[1.0, 2.0]), "finite");
    invalid(ppl_ratio(&[1.0, 2.0], &[f64::INFINITY, 2.0]), "finite");
    invalid(
        ppl_ratio_by_sequence(&[vec![1.0]], &[vec![1.0]]),
        "at least 2",
    );
    invalid(
        ppl_ratio_by_sequence(&[vec![1.0], vec![1.0, 2.0]], &[vec![1.0], vec![1.0]]),
        "sequence 1",
    );
    invalid(
        ppl_ratio_by_sequence(&[vec![], vec![1.0]], &[vec![], vec![1.0]]),
        "sequence 0",
    );
    invalid(paired_mean(&[0.0, 0.0], &[1.0, 0.0]), "ratio");
    invalid(paired_mean(&[f64::NAN, 0.0], &[1.0, 0.0]), "finite");
    invalid(Estimate::wald(f64::NAN, 0.1), "finite");
    invalid(Estimate::wald(1.0, -0.1), ">= 0");
    let t = |v, se| Estimate::wald(v, se).unwrap();
    invalid(speed_norm(t(0.0, 0.0), t(1.0, 0.0)), "> 0");
    invalid(speed_norm(t(1.0, 0.0), t(-1.0, 0.0)), "> 0");
    let broken = Estimate {
        value: 0.5,
        se: 0.1,
        lo: 0.6,
        hi: 0.7,
    };
    invalid(score(broken, t(0.0, 0.0)), "PerfNorm");
    invalid(recommend(&[]), "no candidates");
}

// ---------------------------------------------------------------- score and recommendation

#[test]
fn speed_norm_and_score_propagate_standard_errors() {
    let t = |v, se| Estimate::wald(v, se).unwrap();
    let s = speed_norm(t(1.0, 0.0), t(0.8, 0.0)).unwrap();
    assert_close!(s.value, 0.2, 1e-12);
    assert_eq!(s.se, 0.0);
    // independent timings: SE = r·√((se_v/T_v)² + (se_b/T_b)²)
    let s = speed_norm(t(2.0, 0.02), t(1.5, 0.03)).unwrap();
    let r: f64 = 0.75;
    assert_close!(s.value, 0.25, 1e-12);
    assert_close!(
        s.se,
        r * ((0.03f64 / 1.5).powi(2) + (0.01f64).powi(2)).sqrt(),
        1e-12
    );
    // the base against itself, timing known exactly: 0.5
    let base = score(Estimate::exact(1.0).unwrap(), Estimate::exact(0.0).unwrap()).unwrap();
    assert_eq!((base.value, base.lo, base.hi), (0.5, 0.5, 0.5));
    let sc = score(t(0.9, 0.05), Estimate::exact(0.2).unwrap()).unwrap();
    assert_close!(sc.value, 0.55, 1e-12);
    assert_close!(sc.se, 0.025, 1e-12);
    assert_close!(sc.lo, 0.55 - 0.5 * Z95 * 0.05, 1e-12);
    // a skewed PerfNorm interval (from a perplexity ratio) keeps its skew in the score
    let skew = Estimate {
        value: 0.9,
        se: 0.05,
        lo: 0.8,
        hi: 0.95,
    };
    let sc = score(skew, t(0.2, 0.02)).unwrap();
    assert!(sc.value - sc.lo > sc.hi - sc.value);
}

fn cand(name: &str, s: (f64, f64, f64), perf_lo: f64) -> Candidate {
    Candidate {
        name: name.into(),
        score: Estimate {
            value: s.0,
            se: (s.2 - s.1) / (2.0 * Z95),
            lo: s.1,
            hi: s.2,
        },
        perf_norm: Estimate {
            value: perf_lo + 0.02,
            se: 0.01,
            lo: perf_lo,
            hi: perf_lo + 0.04,
        },
    }
}

#[test]
fn recommend_declares_a_winner_only_beyond_its_interval() {
    let clear = recommend(&[
        cand("base", (0.5, 0.49, 0.51), 1.0),
        cand("w8a8", (0.62, 0.60, 0.64), 0.97),
    ])
    .unwrap();
    assert_eq!(
        (clear.best.as_str(), clear.pick.as_str(), clear.clear),
        ("w8a8", "w8a8", true)
    );
    assert!(clear.tied.is_empty() && clear.text.contains("more than its interval"));

    // w8a8 scores highest, but w8a8-keep's interval overlaps it and keeps more accuracy
    let r = recommend(&[
        cand("w4a16", (0.57, 0.55, 0.585), 0.90),
        cand("w8a8", (0.62, 0.58, 0.66), 0.93),
        cand("w8a8-keep", (0.60, 0.57, 0.63), 0.97),
        cand("base", (0.5, 0.49, 0.51), 1.0),
    ])
    .unwrap();
    assert_eq!(r.best, "w8a8");
    assert_eq!(r.tied, vec!["w8a8-keep".to_string(), "w4a16".to_string()]);
    assert_eq!(
        r.pick, "w8a8-keep",
        "highest PerfNorm lower bound among the tied"
    );
    assert!(!r.clear);
    assert!(
        r.text.contains("no winner by score") && r.text.contains("w8a8-keep"),
        "{}",
        r.text
    );
    assert!(r.rule.contains("PerfNorm"));
    // base is outside every interval of the top: never tied, never picked
    assert!(!r.tied.contains(&"base".to_string()));
    invalid(
        recommend(&[
            cand("a", (0.5, 0.4, 0.6), 1.0),
            cand("a", (0.5, 0.4, 0.6), 1.0),
        ]),
        "unique",
    );
}

#[test]
fn recommend_never_picks_inside_an_interval_on_random_candidates() {
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..500 {
        let k = rng.random_range(1..6);
        let cs: Vec<Candidate> = (0..k)
            .map(|i| {
                let v = rng.random_range(0.4..0.7);
                let h = rng.random_range(0.0..0.05);
                cand(
                    &format!("v{i}"),
                    (v, v - h, v + h),
                    rng.random_range(0.8..1.0),
                )
            })
            .collect();
        let r = recommend(&cs).unwrap();
        let get = |n: &str| cs.iter().find(|c| c.name == n).unwrap();
        let best = get(&r.best);
        assert!(cs.iter().all(|c| c.score.value <= best.score.value));
        for c in cs.iter().filter(|c| c.name != r.best) {
            let overlaps = c.score.lo <= best.score.hi && best.score.lo <= c.score.hi;
            assert_eq!(overlaps, r.tied.contains(&c.name), "{c:?} vs best {best:?}");
        }
        assert_eq!(r.clear, r.tied.is_empty());
        if r.clear {
            assert!(cs
                .iter()
                .filter(|c| c.name != r.best)
                .all(|c| c.score.hi < best.score.lo));
            assert_eq!(r.pick, r.best);
        } else {
            assert!(r.pick == r.best || r.tied.contains(&r.pick));
            let lo = get(&r.pick).perf_norm.lo;
            assert!(r
                .tied
                .iter()
                .chain([&r.best])
                .all(|n| get(n).perf_norm.lo <= lo));
        }
    }
}

// after the helpers and macros above, which it uses
#[path = "verdict/projection.rs"]
mod projection;
