//! The projection set beside target.md's public results: projected Scores, the pairs ordered
//! alike and not, Kendall's τ-b.

use serde::Serialize;

use super::{invalid, Projection};
use crate::error::Result;

/// target.md's reported Scores as `(kind, method, lo, hi)`, for the four schemes modelled here.
pub const PUBLIC_RESULTS: [(&str, &str, f64, f64); 4] = [
    ("bf16", "unchanged base", 0.5, 0.5),
    ("w8a8", "W8A8 int8 per channel, dynamic", 0.62, 0.633),
    ("w4a16", "GPTQ W4A16 (organisers' sample)", 0.57, 0.57),
    ("fp8", "FP8 (no speed-up on L4)", 0.49, 0.49),
];

/// Two scores closer than this are "level" in either ranking (identical submissions scored up to
/// ±0.1 apart on the server, so finer public differences mean little).
pub const LEVEL: f64 = 0.02;

/// One variant beside its public result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComparedRow {
    pub name: String,
    pub speed_norm: f64,
    /// the PerfNorm assumed for the projected score (1 unless given)
    pub perf_norm: f64,
    /// `0.5·perf_norm + 0.5·speed_norm`
    pub score: f64,
    pub public_lo: f64,
    pub public_hi: f64,
}

/// The projection set beside target.md's public results, for a report to print.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PublicComparison {
    pub rows: Vec<ComparedRow>,
    /// e.g. "w4a16 (0.612) > w8a8 (0.598) ≈ fp8 (0.590) > bf16 (0.500)"; public alike
    pub projected_order: String,
    pub public_order: String,
    /// pairs ordered alike, e.g. "w8a8 > bf16"
    pub agree: Vec<String>,
    /// pairs ordered differently, e.g. "fp8 vs bf16: projected fp8 > bf16, public fp8 ≈ bf16"
    pub disagree: Vec<String>,
    /// Kendall's τ-b between projected scores and the public results' midpoints, differences
    /// under [`LEVEL`] counting as ties (NaN where either side is all ties)
    pub kendall_tau_b: f64,
    pub text: String,
}

/// Kendall's τ-b of two paired lists, differences under `level` counting as ties: `(C − D) ÷
/// √((n₀ − n₁)(n₀ − n₂))` over the `n₀` pairs, `n₁` and `n₂` the pairs tied in `x` and in `y`.
/// NaN where every pair is tied on one side (or fewer than two items).
pub fn kendall_tau_b(x: &[f64], y: &[f64], level: f64) -> f64 {
    let sign = |d: f64| match d {
        d if d == 0.0 || d.abs() < level => 0,
        d if d > 0.0 => 1,
        _ => -1,
    };
    let (mut c, mut d, mut tx, mut ty, mut n0) = (0i64, 0i64, 0i64, 0i64, 0i64);
    let n = x.len().min(y.len());
    for i in 0..n {
        for j in i + 1..n {
            n0 += 1;
            let (a, b) = (sign(x[i] - x[j]), sign(y[i] - y[j]));
            tx += (a == 0) as i64;
            ty += (b == 0) as i64;
            match a * b {
                1 => c += 1,
                -1 => d += 1,
                _ => {}
            }
        }
    }
    let den = (((n0 - tx) * (n0 - ty)) as f64).sqrt();
    if den > 0.0 {
        (c - d) as f64 / den
    } else {
        f64::NAN
    }
}

fn order(rows: &[ComparedRow], key: impl Fn(&ComparedRow) -> (f64, String)) -> String {
    let mut items: Vec<_> = rows.iter().map(|r| (&r.name, key(r))).collect();
    items.sort_by(|(a, x), (b, y)| y.0.total_cmp(&x.0).then_with(|| a.cmp(b)));
    let mut s = format!("{} ({})", items[0].0, items[0].1 .1);
    for w in items.windows(2) {
        let rel = ["≈", ">"][(w[0].1 .0 - w[1].1 .0 >= LEVEL) as usize];
        s += &format!(" {rel} {} ({})", w[1].0, w[1].1 .1);
    }
    s
}

fn relation(a: &str, b: &str, d: f64) -> String {
    match d {
        d if d.abs() < LEVEL => format!("{a} ≈ {b}"),
        d if d > 0.0 => format!("{a} > {b}"),
        _ => format!("{b} > {a}"),
    }
}

/// Compares the projected ranking with target.md's public results: each projected variant whose
/// kind has a public result gets a projected score `0.5·PerfNorm + 0.5·SpeedNorm`, PerfNorm
/// taken from `perf_norm` by variant name or kind (1.0, accuracy kept, when absent), and every
/// pair of such variants is checked for the same order (a difference under [`LEVEL`] is level).
/// Errors: fewer than two projected variants with a public result, or a non-finite PerfNorm.
pub fn compare_with_public(
    projections: &[Projection],
    perf_norm: &[(&str, f64)],
) -> Result<PublicComparison> {
    let mut rows = vec![];
    for p in projections {
        let Some(&(_, _, lo, hi)) = PUBLIC_RESULTS.iter().find(|r| r.0 == p.kind) else {
            continue;
        };
        let given = perf_norm.iter().find(|(k, _)| *k == p.name || *k == p.kind);
        let pn = given.map_or(1.0, |x| x.1);
        if !pn.is_finite() {
            return Err(invalid(format!(
                "PerfNorm {pn} of `{}`: not finite",
                p.name
            )));
        }
        rows.push(ComparedRow {
            name: p.name.clone(),
            speed_norm: p.speed_norm,
            perf_norm: pn,
            score: 0.5 * pn + 0.5 * p.speed_norm,
            public_lo: lo,
            public_hi: hi,
        });
    }
    if rows.len() < 2 {
        return Err(invalid(format!(
            "public comparison: {} projected variant(s) of a kind with a public result (bf16, w8a8, w4a16, fp8): at least 2 needed to rank",
            rows.len()
        )));
    }
    let mid = |r: &ComparedRow| 0.5 * (r.public_lo + r.public_hi);
    let (mut agree, mut disagree) = (vec![], vec![]);
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            let proj = relation(&a.name, &b.name, a.score - b.score);
            let publ = relation(&a.name, &b.name, mid(a) - mid(b));
            if proj == publ {
                agree.push(proj);
            } else {
                let (x, y) = (&a.name, &b.name);
                disagree.push(format!("{x} vs {y}: projected {proj}, public {publ}"));
            }
        }
    }
    let shown = |r: &ComparedRow| match r.public_lo == r.public_hi {
        true => format!("≈{:.2}", r.public_lo),
        false => format!("{}–{}", r.public_lo, r.public_hi),
    };
    let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
    let mids: Vec<f64> = rows.iter().map(mid).collect();
    let kendall_tau_b = kendall_tau_b(&scores, &mids, LEVEL);
    let projected_order = order(&rows, |r| (r.score, format!("{:.3}", r.score)));
    let public_order = order(&rows, |r| (mid(r), shown(r)));
    let none = || "no pair".to_string();
    let mut text = format!(
        "The projection ranks them as {projected_order} (Score with PerfNorm {}); the public results rank them as {public_order}. It orders {} of {} pairs alike (Kendall's τ-b {}): agrees on {}; disagrees on {}.",
        if perf_norm.is_empty() { "assumed 1" } else { "as given, else 1" },
        agree.len(),
        agree.len() + disagree.len(),
        if kendall_tau_b.is_finite() { format!("{kendall_tau_b:.2}") } else { "undefined".into() },
        if agree.is_empty() { none() } else { agree.join("; ") },
        if disagree.is_empty() { none() } else { disagree.join("; ") },
    );
    // a public score s implies SpeedNorm >= 2s − 1 if PerfNorm <= 1 (accuracy at most kept)
    for r in &rows {
        let (n, s, min) = (&r.name, r.speed_norm, 2.0 * r.public_lo - 1.0);
        if s + 1e-9 < min {
            text += &format!(" Projected SpeedNorm of {n} ({s:.3}) is below the {min:.3} its public score implies if accuracy was at most kept.");
        }
    }
    Ok(PublicComparison {
        rows,
        projected_order,
        public_order,
        agree,
        disagree,
        kendall_tau_b,
        text,
    })
}
