//! The study report's verdict: the paired comparison with the base, the generation-scored
//! pass, where SpeedNorm came from, the recommendation and the ties it names.

use std::fmt::Write as _;

use super::{fmt, with_ci, TIE_RULE};
use crate::record::Results;

/// Where SpeedNorm came from, as the report says it.
pub(super) fn speed_source(r: &Results) -> &'static str {
    if r.rows.iter().any(|x| x.metric == "l4_speed_norm") {
        "the variant's layers and scheme carried onto EXAONE-4.0-1.2B and projected on an NVIDIA L4 serving the evaluation's workload; see the paragraph under Results"
    } else {
        "from the predicted speed-up in weight bytes per decoded token at batch 1"
    }
}

/// The paragraph that says how the speed term was projected (only where it was).
pub(super) fn l4_paragraph(md: &mut String, r: &Results) {
    let Some(t) = r.get("original", "l4_secs_per_token") else {
        return;
    };
    let g = |m: &str| r.get("original", m).unwrap_or(f64::NAN);
    let how = if g("l4_eff_measured") == 1.0 {
        "carried from the copy bandwidth and GEMM rates measured on this run's GPU as fractions of its datasheet peaks"
    } else {
        "assumed (no GPU in this run)"
    };
    let _ = writeln!(
        md,
        "**SpeedNorm is projected, not timed.** The evaluation serves EXAONE-4.0-1.2B with vLLM on an NVIDIA L4, every prompt at once; there batched GEMMs, KV traffic and prefill set the time per generated token as much as weight bytes do, so batch-1 bytes (the predicted speed-up column) rank the variants wrongly. Each variant's shape — its share of the base's layers (the `l4_layers` row: that share of the 1.2B's 30) and its Linears' scheme — is carried onto EXAONE-4.0-1.2B and costed step by step (`study::l4_speed`, `eval::projection`) over the {} steps the crate's scheduler plans for {} multiple-choice prompts of the shipped text handed over at once, {} new tokens each, with vLLM's default limits, on the L4's datasheet (300 GB/s; dense 121 TFLOPS bf16, 242.5 TOPS int8 and TFLOPS fp8) at bandwidth × {:.3}, bf16 and fp8 GEMMs × {:.3}, int8 GEMMs × {:.3}, {how}, plus 200 µs per step. The bf16 1.2B projects to {:.1} µs per token; SpeedNorm = (T_base − T) ÷ T_base. Nothing is fitted to the leaderboard: `reports/serve_bench` sets the same projection beside the public results and says where it misses them (there the physics gives W8A8 less than half the speed term its public score implies, and cannot explain FP8's loss).\n",
        g("l4_steps"),
        g("l4_requests"),
        g("l4_new_tokens"),
        g("l4_eff_bandwidth"),
        g("l4_eff_bf16"),
        g("l4_eff_int8"),
        t * 1e6,
    );
    sensitivity_table(md, r);
}

/// How the projection's efficiencies move each variant's SpeedNorm and the best point Score
/// (`study::l4_speed`'s sensitivity rows), where they were recorded.
fn sensitivity_table(md: &mut String, r: &Results) {
    let Some(sets) = r.get("original", "l4_sens_sets") else {
        return;
    };
    let g = |m: &str| r.get("original", m).unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "**How much the L4's efficiencies matter.** They are an input here, not a measurement of the L4, and they move the ranking: int8 tensor cores speed the compute-bound prefill steps, int4 weights only the bytes. So the projection was repeated at {sets:.0} sets — the one above and every combination of bandwidth, bf16/fp8 GEMMs and int8 GEMMs at three fractions of peak each ({:.2}–{:.2}, {:.2}–{:.2} and {:.2}–{:.2}) —; per variant, its SpeedNorm over those sets and the share of sets in which its point Score (½·PerfNorm + ½·SpeedNorm) is the best:\n",
        g("l4_sens_bandwidth_lo"),
        g("l4_sens_bandwidth_hi"),
        g("l4_sens_gemm_lo"),
        g("l4_sens_gemm_hi"),
        g("l4_sens_gemm_lo"),
        g("l4_sens_gemm_hi"),
    );
    let _ = writeln!(
        md,
        "| variant | SpeedNorm (above) | SpeedNorm over the sets | best point Score in |\n|---|---|---|---|"
    );
    let mut leaders = vec![];
    for v in r.variants() {
        let (Some(lo), Some(hi)) = (r.get(&v, "l4_speed_norm_lo"), r.get(&v, "l4_speed_norm_hi"))
        else {
            continue;
        };
        let share = r.get(&v, "l4_best_share").unwrap_or(0.0);
        if share > 0.0 {
            leaders.push(format!("{v} in {:.0}%", 100.0 * share));
        }
        let _ = writeln!(
            md,
            "| {v} | {} | {lo:.3} to {hi:.3} | {:.0}% of the sets |",
            fmt(r.get(&v, "l4_speed_norm"), 3),
            100.0 * share
        );
    }
    let verdict = match leaders.len() {
        0 => "No variant has a perplexity to score.".to_string(),
        1 => format!(
            "The best point Score does not depend on the efficiencies: {}.",
            leaders[0]
        ),
        _ => format!(
            "The best point Score depends on the efficiencies: {}. Read the recommendation below with that in mind.",
            leaders.join(", ")
        ),
    };
    let _ = writeln!(md, "\n{verdict}\n");
}

pub(super) fn recommend(r: &Results) -> Vec<String> {
    // only variants that compress something: same-size variants (distillation alone) are not options
    let vs: Vec<String> = r
        .variants()
        .into_iter()
        .filter(|v| {
            v != "original"
                && r.get(v, "weight_mb_per_token")
                    < r.get("original", "weight_mb_per_token").map(|b| b / 1.01)
        })
        .collect();
    let mut out = vec![];
    let best = |key: &dyn Fn(&String) -> Option<f64>| -> Option<String> {
        vs.iter()
            .filter_map(|v| key(v).filter(|x| x.is_finite()).map(|k| (v.clone(), k)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|x| x.0)
    };
    if let Some(v) = best(&|v| r.get(v, "kl_mean")) {
        out.push(format!("quality-first: **{v}** — the lowest KL to the base ({:.4} nats/token), test ppl {:.3}.", r.get(&v, "kl_mean").unwrap_or(f64::NAN), r.get(&v, "test_ppl").unwrap_or(f64::NAN)));
    }
    let base_ppl = r.get("original", "test_ppl").unwrap_or(f64::NAN);
    // within 10% of the base's perplexity, `metric` (smaller first)
    let near_base = |v: &String, metric: &dyn Fn(&String) -> Option<f64>| {
        let ok = r.get(v, "test_ppl").is_some_and(|p| p <= base_ppl * 1.10);
        ok.then(|| metric(v)).flatten()
    };
    if let Some(v) = best(&|v| near_base(v, &|v| r.get(v, "speed_norm").map(|s| -s))) {
        out.push(format!(
            "speed-first (within 10% of the base's perplexity): **{v}** — SpeedNorm {:.3} ({}).",
            r.get(&v, "speed_norm").unwrap_or(f64::NAN),
            speed_source(r)
        ));
    }
    // sizes within 1% of the smallest are the same size for a user: the lowest KL among them
    let smallest = vs
        .iter()
        .filter_map(|v| near_base(v, &|v| r.get(v, "size_mib")))
        .filter(|x| x.is_finite())
        .min_by(f64::total_cmp);
    let as_small = |v: &String| {
        near_base(v, &|v| r.get(v, "size_mib"))
            .zip(smallest)
            .is_some_and(|(s, m)| s <= m * 1.01)
    };
    if let Some(v) = best(&|v| as_small(v).then(|| r.get(v, "kl_mean")).flatten()) {
        out.push(format!(
            "size-first (within 10% of the base's perplexity): **{v}** — {:.2} MiB on disk, the lowest KL to the base ({:.4}) among the variants within 1% of the smallest size.",
            r.get(&v, "size_mib").unwrap_or(f64::NAN),
            r.get(&v, "kl_mean").unwrap_or(f64::NAN)
        ));
    }
    let proxy = "competition proxy (0.5·PerfNorm + 0.5·SpeedNorm)";
    let flagged = |m: &str| -> Vec<String> {
        r.variants()
            .into_iter()
            .filter(|v| r.get(v, m) == Some(1.0))
            .collect()
    };
    match flagged("verdict_pick").first() {
        Some(v) => {
            let tied = flagged("verdict_tied");
            let how = if tied.is_empty() {
                "a winner by more than its 95% interval".to_string()
            } else {
                format!(
                    "the tie rule's pick among {} variants whose intervals overlap the best's (see Ties), not a winner by Score",
                    tied.len() + 1
                )
            };
            // the interval is PerfNorm's alone: say when the speed term's assumptions decide
            let speed = match r.get(v, "l4_best_share") {
                Some(s) if s < 1.0 => format!(
                    " Its speed term is a projection on assumed L4 efficiencies: its point Score is the best in {:.0}% of the efficiency sets above, so the pick is not proven for the L4.",
                    100.0 * s
                ),
                _ => String::new(),
            };
            out.push(format!(
                "{proxy}: **{v}**, Score {} — {how}.{speed}",
                with_ci(r, v, "score", 3)
            ));
        }
        // results without the verdict (older files): the best point estimate, said to be one
        None => {
            if let Some(v) = best(&|v| r.get(v, "score").map(|s| -s)) {
                out.push(format!("{proxy}: **{v}**, Score {:.3} (a point estimate: these results carry no interval).", r.get(&v, "score").unwrap_or(f64::NAN)));
            }
        }
    }
    out
}

/// The paragraph naming every variant tied with the best Score (95% intervals overlap) and the
/// rule that picks among them, from the `verdict_*` rows the study recorded.
pub(super) fn ties(r: &Results) -> Option<String> {
    let vs = r.variants();
    let best = vs.iter().find(|v| r.get(v, "verdict_best") == Some(1.0))?;
    let pick = vs.iter().find(|v| r.get(v, "verdict_pick") == Some(1.0))?;
    let named = |v: &str, b: &str| format!("{b}{v}{b} (Score {})", with_ci(r, v, "score", 3));
    let mut tied: Vec<&String> = vs
        .iter()
        .filter(|v| r.get(v, "verdict_tied") == Some(1.0))
        .collect();
    tied.sort_by(|a, b| {
        let s = |v: &str| r.get(v, "score").unwrap_or(f64::NAN);
        s(b).total_cmp(&s(a)).then_with(|| a.cmp(b))
    });
    let head = if tied.is_empty() {
        format!(
            "**Ties.** None: {} has the highest Score and its 95% interval overlaps no other variant's, so it wins by more than its interval.",
            named(best, "**")
        )
    } else {
        let names: Vec<String> = tied.iter().map(|v| named(v, "")).collect();
        format!(
            "**Ties.** {} has the highest Score, but its 95% interval overlaps that of {}: no winner by Score. The pick among them is the tie rule's: **{pick}** (PerfNorm lower bound {}).",
            named(best, "**"),
            names.join(", "),
            fmt(r.get(pick, "perf_norm_lo"), 3)
        )
    };
    Some(format!(
        "{head} Tie rule: {TIE_RULE}. The intervals hold this run's sampling noise only (which tokens and items were scored); they do not hold the evaluation server's own spread."
    ))
}

/// The paired comparison with the base, one row per variant (only where the study recorded it).
pub(super) fn paired_table(md: &mut String, r: &Results) {
    if !r.rows.iter().any(|x| x.metric == "ppl_ratio") {
        return;
    }
    let _ = writeln!(
        md,
        "### Paired with the base
"
    );
    let _ = writeln!(md, "Every variant against the base on the same tokens and items, with 95% intervals: the perplexity ratio from the per-token NLL log-ratio (scoring windows as clusters), PerfNorm = its inverse, KL with sequences as clusters, the MC accuracy difference with its paired standard error and McNemar's two-sided tests on the discordant items, and the Score with PerfNorm's interval (SpeedNorm, a model, carries none).\n");
    let _ = writeln!(md, "| variant | ppl ratio to base [95%] | PerfNorm [95%] | KL mean [95%] | MC acc − base (± s.e.) | MC discordant (base only / variant only) | McNemar p (exact / mid-p) | Score [95%] |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for v in r.variants() {
        let g = |m: &str| r.get(&v, m);
        let count = |m: &str| fmt(g(m), 0);
        let _ = writeln!(
            md,
            "| {v} | {} | {} | {} | {} ± {} | {} / {} | {} / {} | {} |",
            with_ci(r, &v, "ppl_ratio", 4),
            with_ci(r, &v, "perf_norm", 4),
            with_ci(r, &v, "kl_mean", 4),
            fmt(g("mc_acc_diff"), 3),
            fmt(r.spread(&v, "mc_acc_diff"), 3),
            count("mc_base_only"),
            count("mc_variant_only"),
            fmt(g("mc_mcnemar_p"), 3),
            fmt(g("mc_mcnemar_mid_p"), 3),
            with_ci(r, &v, "score", 3),
        );
    }
    let _ = writeln!(md);
}

/// The generation-scored multiple choice, beside the log-likelihood column (only where the study
/// recorded it).
pub(super) fn gen_mc_table(md: &mut String, r: &Results) {
    if !r.rows.iter().any(|x| x.metric == "genmc_acc") {
        return;
    }
    let _ = writeln!(
        md,
        "### Generation-scored multiple choice
"
    );
    let _ = writeln!(md, "As the evaluation scores accuracy: each question rendered through the model's chat template (thinking off), answered greedily by the serving runner with every item at once, the choice read from the text (`eval::generated::extract_choice`: an explicit answer marker, else an opening letter, else the one option letter standing alone, else the one option text found; no answer counts as wrong). Each variant's answers are in `gen_mc/<variant>.jsonl` beside this report. The log-likelihood MC column of the table above scores other items (KMMLU and BIG-bench options ranked by likelihood) and has less noise, but it is not what the evaluation measures.\n");
    let base_silent = r
        .variants()
        .first()
        .and_then(|v| r.get(v, "genmc_no_answer"));
    if let Some(share) = base_silent.filter(|s| *s >= 0.5) {
        let skipped = r
            .variants()
            .iter()
            .any(|v| r.get(v, "genmc_acc").is_none() && r.get(v, "test_ppl").is_some());
        let rest = if skipped {
            " The other variants' passes were skipped where the base answered nothing: a column the base cannot score ranks nothing."
        } else {
            ""
        };
        let _ = writeln!(md, "The base itself gives no extractable answer to {:.0}% of the items: a model this small does not follow the question format, so this column cannot tell the variants apart here (on EXAONE-4.0-1.2B it is the evaluation's measure).{rest}\n", 100.0 * share);
    }
    let _ = writeln!(md, "| variant | accuracy (± s.e.) | no answer | answer length (tokens) | accuracy − base [95%] | discordant (base only / variant only) | McNemar p (exact) |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for v in r.variants() {
        let g = |m: &str| r.get(&v, m);
        if g("genmc_acc").is_none() {
            continue;
        }
        let _ = writeln!(
            md,
            "| {v} | {} ± {} | {} | {} | {} | {} / {} | {} |",
            fmt(g("genmc_acc"), 3),
            fmt(r.spread(&v, "genmc_acc"), 3),
            fmt(g("genmc_no_answer"), 2),
            fmt(g("genmc_output_len_mean"), 1),
            with_ci(r, &v, "genmc_acc_diff", 3),
            fmt(g("genmc_base_only"), 0),
            fmt(g("genmc_variant_only"), 0),
            fmt(g("genmc_mcnemar_p"), 3),
        );
    }
    let _ = writeln!(md);
}
