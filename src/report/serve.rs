//! The serving benchmark's report: T and throughput per variant and concurrency beside HF
//! transformers' batched `generate` on the same requests, how far the steps are from their
//! roofline, batch-1 decoding on the same path, the long-context run, the projection of the
//! same steps on an NVIDIA L4 beside the public results (`l4`), the engine's numerical check,
//! and the bars of the serving issue.

use std::fmt::Write as _;
use std::path::Path;

mod l4;

use super::chart::{Bar, BarChart, Chart, Frame, LegendAt, LineChart, Series};
use super::{environment_md, random_weights, seeds_of, RANDOM_WEIGHTS_CAVEAT};
use crate::error::Result;
use crate::fs::write_atomic;
use crate::record::Results;

const LABELS: [&str; 4] = ["bf16", "w4a16", "w8a8", "fp8"];

fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x == 0.0 {
        "0".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else if x.abs() >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.3e}")
    }
}

/// The concurrency limits measured for `tag` (e.g. `mc`), ascending.
fn concurrencies(r: &Results, tag: &str) -> Vec<usize> {
    let prefix = format!("serve_{tag}_c");
    let mut c: Vec<usize> = r
        .rows
        .iter()
        .filter_map(|x| x.metric.strip_prefix(&prefix))
        .filter_map(|s| s.strip_suffix("_tokens_per_sec"))
        .filter_map(|s| s.parse().ok())
        .collect();
    c.sort_unstable();
    c.dedup();
    c
}

/// The variants that were run (the L4 projection adds rows for schemes that were not).
fn present(r: &Results) -> Vec<&'static str> {
    LABELS
        .into_iter()
        .filter(|l| {
            r.rows
                .iter()
                .any(|x| x.variant == *l && x.metric.starts_with("serve_"))
        })
        .collect()
}

/// The report's charts, by file name: throughput against concurrency per variant (log axis:
/// HF's point sits a decade below) and T per variant at the highest concurrency; random-weight
/// runs carry the caveat on the image.
pub fn charts(r: &Results) -> Vec<(&'static str, Chart)> {
    let caveat = random_weights(r).then(|| RANDOM_WEIGHTS_CAVEAT.to_string());
    let cs = concurrencies(r, "mc");
    let Some(&top) = cs.last() else {
        return vec![];
    };
    let mut series: Vec<Series> = present(r)
        .into_iter()
        .map(|v| Series {
            name: v.to_string(),
            points: cs
                .iter()
                .filter_map(|&c| {
                    r.get(v, &format!("serve_mc_c{c}_tokens_per_sec"))
                        .map(|t| (c as f64, t))
                })
                .collect(),
        })
        .collect();
    if let Some(t) = r.get("hf", "serve_mc_tokens_per_sec") {
        // one batch of every request: a reference level, drawn across the concurrencies
        series.push(Series {
            name: "HF transformers generate (one batch of all requests)".into(),
            points: cs.iter().map(|&c| (c as f64, t)).collect(),
        });
    }
    let bars: Vec<Bar> = present(r)
        .into_iter()
        .filter_map(|v| {
            let m = format!("serve_mc_c{top}_secs_per_token");
            r.get(v, &m).map(|t| {
                let one_run = r.get(v, &format!("serve_mc_c{top}_timed_runs")) == Some(1.0);
                let s = r.get(v, &format!("{m}_spread")).filter(|_| !one_run);
                Bar::new(format!("{v} (c={top})"), t * 1e6, s.map(|s| s * 5e5))
            })
        })
        .collect();
    // HF's figure, an order of magnitude above ours, would flatten the differences between
    // the schemes on a shared axis: said in a note instead (and in the table)
    let hf_note = r.get("hf", "serve_mc_secs_per_token").map(|t| {
        format!(
            "HF transformers generate: {:.0} µs per token (off this chart's scale)",
            t * 1e6
        )
    });
    let l4 = l4::chart(r, caveat.clone());
    let mut charts = vec![
        (
            "throughput.png",
            LineChart {
                frame: Frame::new("Serving throughput vs concurrency (generated tokens/s)")
                    .with_caveat(caveat.clone()),
                x_label: "max_num_seqs".into(),
                y_label: "tokens/s (log scale)".into(),
                series,
                log_y: true,
                legend: LegendAt::MiddleRight,
            }
            .into(),
        ),
        (
            "t_per_token.png",
            BarChart {
                frame: hf_note.into_iter().fold(
                    Frame::new("T: generation time per generated token (µs, ± half spread)")
                        .with_caveat(caveat),
                    Frame::with_note,
                ),
                category_label: String::new(),
                value_label: "µs per token".into(),
                bars,
                zero_meaningful: true,
                horizontal: true,
            }
            .into(),
        ),
    ];
    charts.extend(l4.map(|c| ("l4_projection.png", c)));
    charts
}

/// Writes README.md and the charts for the results of `serve_bench`.
pub fn write(r: &Results, out: &Path, command: &str) -> Result<()> {
    super::draw_charts(out, charts(r))?;
    let env = environment_md(
        &r.env,
        &r.commit,
        &r.device,
        &seeds_of(&r.env, command, "workload seed 0 (`--seed`)"),
    );
    let md = markdown(r, command);
    let md = match md.find("\n## Multiple-choice workload") {
        Some(i) => format!("{}\n{env}{}", &md[..i], &md[i..]),
        None => format!("{md}\n{env}"),
    };
    write_atomic(&out.join("README.md"), md.as_bytes())?;
    Ok(())
}

/// A bar's line: `value` against `goal` (`ge`: higher is better).
fn bar(md: &mut String, what: &str, value: Option<f64>, goal: f64, ge: bool, unit: &str) {
    let Some(v) = value else {
        let _ = writeln!(
            md,
            "| {what} | not measured | {} {goal}{unit} | – |",
            if ge { "≥" } else { "≤" }
        );
        return;
    };
    let met = if ge { v >= goal } else { v <= goal };
    let verdict = if met {
        "met".to_string()
    } else if ge {
        format!("missed by {:.0}%", 100.0 * (1.0 - v / goal))
    } else {
        format!("missed by {:.0}%", 100.0 * (v / goal - 1.0))
    };
    let _ = writeln!(
        md,
        "| {what} | {}{unit} | {} {goal}{unit} | {verdict} |",
        fmt(v),
        if ge { "≥" } else { "≤" }
    );
}

/// The report's markdown, from the results alone.
pub fn markdown(r: &Results, command: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Serving-regime speed ({})\n", r.experiment);
    let _ = writeln!(
        md,
        "Device: {} · model: {} · commit {} · {}\n\nCommand: `{}`\n",
        r.device,
        super::path_by_role(&r.model),
        r.commit,
        r.timestamp,
        super::by_role(command)
    );
    md.push_str("The evaluation hands every prompt to vLLM at once; its speed term is T = generation time ÷ generated tokens over the whole workload. Here the same: the workload runs through a vLLM-v1-style scheduler (continuous batching, chunked prefill under an 8192-token budget, a paged KV pool of 16-token blocks sized from the memory share) on the CUDA serving engine (one packed forward per step, paged attention, decode-only steps replayed as CUDA graphs). Each point: one untimed warm-up run, then the median of the timed runs (spread: max − min of T). Random weights: the outputs mean nothing, but with stop ids off every request generates exactly its token budget, so the work is that of the evaluation's shape.\n\n");
    let cs = concurrencies(r, "mc");
    md.push_str("## Multiple-choice workload\n\n| variant | max_num_seqs | tokens/s | T (s/token) [spread] | steps | mean batch | prefill share | time ÷ roofline | decode step ÷ roofline (mean) |\n|---|---|---|---|---|---|---|---|---|\n");
    for v in present(r) {
        for &c in &cs {
            let g = |m: &str| r.get(v, &format!("serve_mc_c{c}_{m}")).unwrap_or(f64::NAN);
            let _ = writeln!(
                md,
                "| {v} | {c} | {} | {} [{}] | {} | {} | {:.2} | {} | {} |",
                fmt(g("tokens_per_sec")),
                fmt(g("secs_per_token")),
                if g("timed_runs") == 1.0 {
                    "one run".to_string()
                } else {
                    fmt(g("secs_per_token_spread"))
                },
                fmt(g("steps")),
                fmt(g("mean_batch")),
                g("prefill_share"),
                fmt(g("roofline_ratio")),
                fmt(g("decode_roofline_ratio_mean")),
            );
        }
    }
    if let Some(t) = r.get("hf", "serve_mc_tokens_per_sec") {
        let _ = writeln!(
            md,
            "| HF transformers `generate` (left-padded, all requests in one batch{}) | – | {} | {} | – | – | – | – | – |",
            r.get("hf", "serve_mc_batch").map(|b| format!(" of {b:.0}")).unwrap_or_default(),
            fmt(t),
            fmt(r.get("hf", "serve_mc_secs_per_token").unwrap_or(f64::NAN)),
        );
    }
    md.push_str("\n![throughput](throughput.png)\n\n![T per token](t_per_token.png)\n\n");
    md.push_str("Roofline of a step: max(bytes it must read ÷ the measured copy bandwidth, FLOPs ÷ the measured dense GEMM rate at the variant's precision); bytes = weights once + the KV entries attention reads, FLOPs = 2 per weight per token + lm_head per sampled row + attention (`serve::roofline`).\n");
    md.push_str(&l4::markdown(r).unwrap_or_default());
    md.push_str("\n## Other runs\n\n| variant | what | figure |\n|---|---|---|\n");
    for v in present(r) {
        if let Some(b1) = r.get(v, "serve_b1_step_ms") {
            let s = r.spread(v, "serve_b1_step_ms").unwrap_or(f64::NAN);
            let _ = writeln!(md, "| {v} | batch-1 decode step, same path (median ms [max − min] over the repeats) | {b1:.3} [{s:.3}] |");
        }
        let long_rows = || {
            r.rows
                .iter()
                .filter(move |x| x.variant == v && x.metric.starts_with("serve_long_"))
        };
        // the run's own request count (the flag --long-requests), not a fixed figure
        let long_requests = long_rows()
            .find(|x| x.metric.ends_with("_requests"))
            .map_or("?".to_string(), |x| format!("{:.0}", x.value));
        for row in long_rows() {
            if [
                "requests",
                "errors",
                "preemptions",
                "tokens_per_sec",
                "secs_per_token",
                "peak_kv_blocks",
                "kv_blocks",
                "prefill_share",
            ]
            .iter()
            .any(|m| row.metric.ends_with(&format!("_{m}")))
            {
                let _ = writeln!(
                    md,
                    "| {v} | long context ({long_requests} × 2k–8k prompts, 64 new tokens): {} | {} |",
                    row.metric,
                    fmt(row.value)
                );
            }
        }
    }
    let profiles: Vec<(&str, String)> = present(r)
        .into_iter()
        .flat_map(|v| {
            let mut bs: Vec<String> = r
                .rows
                .iter()
                .filter(|x| x.variant == v)
                .filter_map(|x| x.metric.strip_prefix("serve_profile_b"))
                .filter_map(|m| m.split_once(':').map(|(b, _)| b.to_string()))
                .collect();
            bs.dedup();
            bs.into_iter().map(move |b| (v, b))
        })
        .collect();
    if !profiles.is_empty() {
        md.push_str("\n## Where a decoding step's time goes\n\nOne eager step (no graph: each launch timed by events, so the total exceeds a replayed step by the launch gaps) of every sequence decoding at context 512, device ms summed over layers.\n\n| variant | batch | part | ms | share |\n|---|---|---|---|---|\n");
        for (v, b) in &profiles {
            let prefix = format!("serve_profile_b{b}: ");
            let total = r.get(v, &format!("{prefix}total")).unwrap_or(f64::NAN);
            for row in r
                .rows
                .iter()
                .filter(|x| x.variant == *v && x.metric.starts_with(&prefix))
            {
                let part = &row.metric[prefix.len()..];
                let _ = writeln!(
                    md,
                    "| {v} | {b} | {part} | {:.3} | {:.0}% |",
                    row.value,
                    100.0 * row.value / total
                );
            }
        }
    }
    if present(r).iter().any(|v| r.get(v, "genmc_items").is_some()) {
        md.push_str("\n## Generation-scored multiple choice\n\nThe shipped Korean items (KMMLU criminal law, then NSMC sentiment) asked through the model's chat template, all at once on the same engine, the answer read by `eval::generated::extract_choice` (no answer counts wrong). On random weights the accuracy means nothing; the time is the point.\n\n| variant | items | accuracy | without an answer | wall time (s) | T (s/token) | answer length (tokens) |\n|---|---|---|---|---|---|---|\n");
        for v in present(r) {
            let g = |m: &str| r.get(v, m).unwrap_or(f64::NAN);
            if r.get(v, "genmc_items").is_some() {
                let _ = writeln!(
                    md,
                    "| {v} | {} | {:.3} | {} | {:.2} | {} | {:.1} |",
                    fmt(g("genmc_items")),
                    g("genmc_accuracy"),
                    fmt(g("genmc_no_answer")),
                    g("genmc_secs"),
                    fmt(g("genmc_secs_per_token")),
                    g("genmc_output_len_mean")
                );
            }
        }
    }
    md.push_str("\n## Numerical check\n\n| check | engine rel. error | bf16 forward rel. error | top-1 agreement |\n|---|---|---|---|\n");
    for row in r.rows.iter().filter(|x| x.variant == "checks") {
        if let Some(what) = row.metric.strip_prefix("kernel_rel_err: ") {
            let g = |p: &str| r.get("checks", &format!("{p}: {what}")).unwrap_or(f64::NAN);
            let _ = writeln!(
                md,
                "| {what} | {:.2e} | {:.2e} | {:.3} |",
                row.value,
                g("bf16_rel_err"),
                g("top1")
            );
        }
    }
    md.push_str("\nPass: the engine's error against the f32 forward is at most twice the plain bf16 forward's own error (`runtime::Check::passes`).\n\n## Bars\n\n| bar | measured | goal | verdict |\n|---|---|---|---|\n");
    let top = cs.last().copied().unwrap_or(256);
    let bf = |m: &str| r.get("bf16", &format!("serve_mc_c{top}_{m}"));
    let hf = r.get("hf", "serve_mc_tokens_per_sec");
    bar(
        &mut md,
        &format!("bf16 throughput at max_num_seqs {top} ÷ HF generate"),
        bf("tokens_per_sec").zip(hf).map(|(a, b)| a / b),
        10.0,
        true,
        "×",
    );
    bar(
        &mut md,
        "decode step time ÷ its roofline (mean, bf16)",
        bf("decode_roofline_ratio_mean"),
        2.0,
        false,
        "×",
    );
    bar(
        &mut md,
        "batch-1 decode step (bf16, ms)",
        r.get("bf16", "serve_b1_step_ms"),
        1.7,
        false,
        " ms",
    );
    let long_err = r
        .rows
        .iter()
        .find(|x| {
            x.variant == "bf16"
                && x.metric.starts_with("serve_long_")
                && x.metric.ends_with("_errors")
        })
        .map(|x| x.value);
    bar(
        &mut md,
        "long-context requests refused or failed",
        long_err,
        0.0,
        false,
        "",
    );
    let w8 = r.get("w8a8", &format!("serve_mc_c{top}_tokens_per_sec"));
    bar(
        &mut md,
        "W8A8 serving throughput ÷ bf16",
        w8.zip(bf("tokens_per_sec")).map(|(a, b)| a / b),
        1.3,
        true,
        "×",
    );
    reading(&mut md, r, top);
    md
}

/// What the profiles say: where the largest batch's decoding step goes, and each variant's
/// Linears against bf16's.
fn reading(md: &mut String, r: &Results, top: usize) {
    let part = |v: &str, what: &str| r.get(v, &format!("serve_profile_b{top}: {what}"));
    let Some(total) = part("bf16", "total") else {
        return;
    };
    let gemms = |v: &str| -> Option<f64> {
        let prefix = format!("serve_profile_b{top}: ");
        let rows: Vec<f64> = r
            .rows
            .iter()
            .filter(|x| x.variant == v && x.metric.starts_with(&prefix))
            .filter(|x| x.metric.contains("GEMM") || x.metric.ends_with("lm_head"))
            .map(|x| x.value)
            .collect();
        (!rows.is_empty()).then(|| rows.iter().sum())
    };
    md.push_str("\n## Reading\n\n");
    if let Some(att) = part("bf16", "attention: single tokens") {
        let _ = writeln!(
            md,
            "- At batch {top} the bf16 decoding step spends {:.0}% of its device time ({att:.2} of {total:.2} ms, eager) in single-token attention over the paged pool: that kernel, not the weights, sets the step's distance from its roofline.",
            100.0 * att / total
        );
    }
    if let Some(g) = gemms("bf16") {
        for v in ["w4a16", "w8a8", "fp8"] {
            if let Some(q) = gemms(v) {
                let _ = writeln!(
                    md,
                    "- {v}: its Linears (and lm_head) take {q:.2} ms of the step against bf16's {g:.2} ms ({:.2}×): {}",
                    q / g,
                    match (q < g, v) {
                        (true, _) => "faster, so it gains where the Linears dominate.",
                        (false, "w4a16") => "no faster at this batch: its products (the int4 GEMM, or dequantization and cuBLAS) take longer than cuBLAS bf16's at this row count (the GEMM sweep of `bench_runtime --gemm-sweep` has the kernels shape by shape).",
                        (false, _) => "no faster at this batch: its GEMMs (and the activation quantizer before each) take longer than cuBLAS bf16's at this row count (the GEMM sweep of `bench_runtime --gemm-sweep` has the kernels shape by shape).",
                    }
                );
            }
        }
    }
}
