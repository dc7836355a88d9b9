//! The serving report's "L4 projection" section, drawn from the `l4_*` rows the serving study
//! records (`study::serving`'s L4 projection): projected T and SpeedNorm per scheme on an NVIDIA
//! L4 beside target.md's public results, how many pairs they order alike, the bar, and — where
//! the physics disagrees with the public order — why, in figures.

use std::fmt::Write as _;

use super::fmt;
use crate::record::Results;
use crate::report::chart::{Bar, BarChart, Chart, Frame};

/// The rows' variant for the projection itself (`study::serving::L4_VARIANT`).
const ME: &str = "l4_projection";
/// The schemes projected, the base first (`study::serving::L4_SCHEMES`).
const SCHEMES: [&str; 4] = ["bf16", "w4a16", "w8a8", "fp8"];

/// The projected workloads' tags (`mc_c256`, `long_c256`, …), in the order recorded.
fn tags(r: &Results) -> Vec<String> {
    r.rows
        .iter()
        .filter(|x| x.variant == ME)
        .filter_map(|x| x.metric.strip_prefix("l4_"))
        .filter_map(|m| m.strip_suffix("_prefill_steps"))
        .map(str::to_string)
        .collect()
}

/// The tag the section is about: the multiple-choice run at the highest concurrency (the
/// evaluation's 256 running sequences where measured), else the first.
pub fn main_tag(r: &Results) -> Option<String> {
    let ts = tags(r);
    let conc = |t: &String| t.strip_prefix("mc_c").and_then(|c| c.parse::<usize>().ok());
    ts.iter()
        .filter_map(|t| conc(t).map(|c| (c, t)))
        .max()
        .map(|(_, t)| t.clone())
        .or_else(|| ts.first().cloned())
}

/// A parameter of the projection's rows: the first row that carries `key` (its device rows,
/// recorded first, carry other parameters).
fn param(r: &Results, key: &str) -> Option<String> {
    r.rows.iter().filter(|x| x.variant == ME).find_map(|row| {
        let v: serde_json::Value = serde_json::from_str(&row.params).ok()?;
        v.get(key)?.as_str().map(str::to_string)
    })
}

/// Bytes as printed: GB, or MB under 0.1 GB.
fn size(bytes: f64) -> String {
    if bytes.abs() < 1e8 {
        format!("{:.1} MB", bytes / 1e6)
    } else {
        format!("{:.2} GB", bytes / 1e9)
    }
}

/// The public Score as printed: "≈0.57" or "0.62–0.633".
fn public(r: &Results, v: &str) -> String {
    match (r.get(v, "public_score_lo"), r.get(v, "public_score_hi")) {
        (Some(lo), Some(hi)) if lo == hi => format!("≈{lo:.2}"),
        (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
        _ => "–".into(),
    }
}

/// The section's markdown; None where the results hold no projection.
pub fn markdown(r: &Results) -> Option<String> {
    let tag = main_tag(r)?;
    let g = |v: &str, m: &str| r.get(v, &format!("l4_{tag}_{m}")).unwrap_or(f64::NAN);
    let me = |m: &str| r.get(ME, m).unwrap_or(f64::NAN);
    let mut md = String::from("\n## L4 projection\n\n");
    let _ = writeln!(
        md,
        "What the evaluation's GPU would take for the same steps: every timed run's measured steps (batch, KV read, prefill tokens and attention pairs per step) costed on the NVIDIA L4's datasheet — {:.0} GB/s, dense {:.0} TFLOPS bf16, {:.1} TOPS int8, {:.1} TFLOPS fp8 — at these kernel efficiencies: bandwidth × {:.3}, bf16 and fp8 GEMMs × {:.3}, int8 GEMMs × {:.3}, plus {:.0} µs per step (`eval::projection`). Where they come from: {}. The rule carries each measured rate as a fraction of the measuring device's datasheet peak to the same fraction of the L4's; the L4's power throttling at 72 W is not in it, so compute-bound steps are optimistic. A step's kernels (Linears, lm_head, attention) run in sequence, each at the slower of its bytes and its FLOPs. Every parameter is physical: nothing is fitted to the public scores. {}\n",
        me("l4_mem_bw") / 1e9,
        me("l4_bf16_flops") / 1e12,
        me("l4_int8_ops") / 1e12,
        me("l4_fp8_flops") / 1e12,
        me("l4_eff_bandwidth"),
        me("l4_eff_bf16"),
        me("l4_eff_int8"),
        me("l4_step_overhead_s") * 1e6,
        param(r, "efficiencies").unwrap_or_else(|| "not recorded".into()),
        if r.rows
            .iter()
            .any(|x| x.variant == "fp8" && x.metric.starts_with("serve_"))
        {
            "A scheme without a run of a workload is projected on the bf16 run's steps."
        } else {
            "FP8 was not run here: it is projected on the bf16 run's steps; a scheme without a run of a workload likewise."
        },
    );
    let mt = |m: &str| me(&format!("l4_{tag}_{m}"));
    let bf16_weights = r.get("bf16", "l4_weight_bytes").unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "Workload `{tag}`: {:.0} steps, {:.0} of them with prefill; the decode-only steps batch {:.0} sequences on average and read {} of KV each, against {} of bf16 weights.\n",
        mt("steps"),
        mt("prefill_steps"),
        mt("decode_batch_mean"),
        size(mt("decode_kv_bytes_mean")),
        size(bf16_weights),
    );
    md.push_str("| scheme | steps from | weights read per step (GB) | T on L4 (µs/token) | tokens/s | SpeedNorm | speed-up | time in prefill steps | time memory-bound | Score if accuracy kept | public Score (target.md) |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for v in SCHEMES {
        if r.get(v, &format!("l4_{tag}_secs_per_token")).is_none() {
            continue;
        }
        let own = if g(v, "own_trace") > 0.5 {
            "its run"
        } else {
            "bf16's run"
        };
        let _ = writeln!(
            md,
            "| {v} | {own} | {:.3} | {:.1} | {} | {:.3} | {:.3}× | {:.0}% | {:.0}% | {:.3} | {} |",
            r.get(v, "l4_weight_bytes").unwrap_or(f64::NAN) / 1e9,
            g(v, "secs_per_token") * 1e6,
            fmt(g(v, "tokens_per_sec")),
            g(v, "speed_norm"),
            g(v, "speedup"),
            100.0 * g(v, "prefill_share"),
            100.0 * g(v, "memory_bound_share"),
            g(v, "score"),
            public(r, v),
        );
    }
    let _ = writeln!(
        md,
        "\nSpeedNorm = (T_bf16 − T) ÷ T_bf16 (target.md); Score if accuracy kept = ½ + ½·SpeedNorm.\n"
    );
    let (agree, pairs) = (mt("pairs_agree"), mt("pairs"));
    let tau = mt("kendall_tau_b");
    let _ = writeln!(
        md,
        "**Ranking.** The projection orders {agree:.0} of {pairs:.0} pairs of schemes as the public results do (Kendall's τ-b {}; Scores closer than 0.02 count as level).",
        if tau.is_finite() { format!("{tau:.2}") } else { "undefined".into() },
    );
    let prefix = format!("l4_{tag}_pair: ");
    for row in r.rows.iter().filter(|x| x.variant == ME) {
        if let Some(p) = row.metric.strip_prefix(&prefix) {
            let mark = if row.value > 0.5 { "alike" } else { "unlike" };
            let _ = writeln!(md, "- {mark}: {p}");
        }
    }
    let met = mt("bar_met") > 0.5;
    let _ = writeln!(
        md,
        "\n**Bar** (W8A8 int8 > GPTQ W4A16 > base ≥ FP8 in SpeedNorm): {}.\n",
        if met { "met" } else { "not met" }
    );
    why(&mut md, r, &tag);
    others(&mut md, r, &tag);
    md.push_str("\n![L4 projection](l4_projection.png)\n");
    Some(md)
}

/// Where the physics orders the schemes otherwise than the bar, why, in the rows' figures.
fn why(md: &mut String, r: &Results, tag: &str) {
    let sn = |v: &str| {
        r.get(v, &format!("l4_{tag}_speed_norm"))
            .unwrap_or(f64::NAN)
    };
    let mb = |v: &str| {
        r.get(v, &format!("l4_{tag}_memory_bound_share"))
            .unwrap_or(f64::NAN)
    };
    let b = |v: &str| r.get(v, "l4_weight_bytes").unwrap_or(f64::NAN);
    let gb = |v: &str| size(b(v));
    let kv = r
        .get(ME, &format!("l4_{tag}_decode_kv_bytes_mean"))
        .unwrap_or(f64::NAN);
    let saved = |v: &str| size(b("bf16") - b(v));
    let (w8, w4, f8) = (sn("w8a8"), sn("w4a16"), sn("fp8"));
    if kv.is_finite() {
        let _ = writeln!(
            md,
            "- Every scheme reads the same bf16 KV ({} per decode step), while quantizing the Linears saves {} of weights per step (W4A16) or {} (W8A8, FP8): the gains are bounded by that share of the bytes. W8A8 and FP8 also halve the time of compute-bound steps (prefill, and decode Linears at large batch) with twice bf16's tensor rate; W4A16 computes at bf16's.",
            size(kv),
            saved("w4a16"),
            saved("w8a8"),
        );
    }
    if w4 >= w8 {
        let _ = writeln!(
            md,
            "- W4A16 ≥ W8A8 ({w4:.3} vs {w8:.3}): {:.0}% of bf16's projected time is memory-bound, and there W4A16 reads {} of weights per step to W8A8's {}; W8A8's int8 rate helps only the compute-bound steps. The public order (W8A8 above W4A16) is also accuracy: target.md reports that W4A16 loses accuracy on a 1.2B model, so its ≈0.57 fits a SpeedNorm near the projection's with PerfNorm below 1.",
            100.0 * mb("bf16"),
            gb("w4a16"),
            gb("w8a8"),
        );
    }
    if w8.is_finite() && w8 <= 0.0 {
        let _ = writeln!(
            md,
            "- W8A8 no faster than bf16 ({w8:.3}): it saves {} of weights per step, but its activation quantization adds a pass over every Linear's input for every token, and the {} of KV a decode step reads is unchanged.",
            saved("w8a8"),
            size(kv),
        );
    }
    if f8 > 0.0 {
        let no_cores = r
            .get("fp8", &format!("l4_{tag}_speed_norm_no_fp8_cores"))
            .unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "- FP8 above the base ({f8:.3}, W8A8 {w8:.3}): on the L4's datasheet fp8 GEMMs run at the int8 rate and FP8 weights are W8A8's bytes, so the physics puts FP8 with W8A8. Even with fp8 GEMMs at the bf16 rate (no fp8 tensor cores) it projects {no_cores:.3}, since decode steps still read half the Linears' bytes. The public ≈0.49 (SpeedNorm ≤ −0.02 if accuracy is kept) needs a cost this physics does not contain — how vLLM 0.14.1 runs this FP8 checkpoint on sm_89 — or lost accuracy; the projection cannot tell which."
        );
    }
    if w8.is_finite() {
        let _ = writeln!(
            md,
            "- W8A8's public 0.62–0.633 implies SpeedNorm 0.24–0.27 if accuracy is kept; the projection gives {w8:.3}."
        );
    }
}

/// The other projected workloads, one line each.
fn others(md: &mut String, r: &Results, main: &str) {
    let rest: Vec<String> = tags(r).into_iter().filter(|t| t != main).collect();
    if rest.is_empty() {
        return;
    }
    md.push_str("\nOther workloads (SpeedNorm on the L4; bf16's projected T):\n\n| workload | bf16 T (µs/token) | w4a16 | w8a8 | fp8 | bar |\n|---|---|---|---|---|---|\n");
    for t in rest {
        let g = |v: &str, m: &str| r.get(v, &format!("l4_{t}_{m}")).unwrap_or(f64::NAN);
        let met = g(ME, "bar_met") > 0.5;
        let _ = writeln!(
            md,
            "| {t} | {:.1} | {:.3} | {:.3} | {:.3} | {} |",
            g("bf16", "secs_per_token") * 1e6,
            g("w4a16", "speed_norm"),
            g("w8a8", "speed_norm"),
            g("fp8", "speed_norm"),
            if met { "met" } else { "not met" }
        );
    }
}

/// Projected Score (accuracy kept) beside the public Score per scheme (bars ± half the public
/// range); None where the results hold no projection.
pub fn chart(r: &Results, caveat: Option<String>) -> Option<Chart> {
    let tag = main_tag(r)?;
    let mut bars = vec![];
    for v in SCHEMES {
        if let Some(s) = r.get(v, &format!("l4_{tag}_score")) {
            bars.push(Bar::new(format!("{v}: L4 projection"), s, None));
        }
        if let (Some(lo), Some(hi)) = (r.get(v, "public_score_lo"), r.get(v, "public_score_hi")) {
            let err = (hi > lo).then_some(0.5 * (hi - lo));
            bars.push(Bar::new(format!("{v}: public"), 0.5 * (lo + hi), err));
        }
    }
    Some(
        BarChart {
            frame: Frame::new(format!(
                "L4 projection ({tag}): Score if accuracy kept vs public Score"
            ))
            .with_caveat(caveat),
            category_label: String::new(),
            value_label: "Score = ½·PerfNorm + ½·SpeedNorm".into(),
            bars,
            zero_meaningful: false,
            horizontal: true,
        }
        .into(),
    )
}
