//! The report of a compression study, drawn from its results table alone: what was run, one
//! row per variant, the paired comparison with the base, charts, a recommendation per objective
//! (the Score's naming every variant tied with the best), and how noisy each figure is.

use std::fmt::Write as _;
use std::path::Path;

use super::chart::{Bar, BarChart, Chart, Frame, Point, ScatterChart};
use super::{environment_md, random_weights, seeds_of};
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::record::Results;

mod verdict;
use verdict::{gen_mc_table, l4_paragraph, paired_table, recommend, speed_source, ties};

/// How to render: `redact_timings` replaces every time-derived figure (for snapshot tests).
#[derive(Clone, Debug, Default)]
pub struct ReportOptions {
    pub title: String,
    pub command: String,
    pub notes: Vec<String>,
    pub redact_timings: bool,
    /// the weights are random (a shape-only checkpoint): speed and size are real, every
    /// quality figure is noise, and no quality-based recommendation is made
    pub quality_meaningless: bool,
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

/// `value [lo, hi]` from a metric's `{metric}_lo`/`_hi` rows (its 95% interval), or the value
/// alone where the interval was not recorded (older results).
fn with_ci(r: &Results, v: &str, metric: &str, digits: usize) -> String {
    let lo = r.get(v, &format!("{metric}_lo"));
    let hi = r.get(v, &format!("{metric}_hi"));
    match (r.get(v, metric), lo, hi) {
        (Some(x), Some(lo), Some(hi)) if x.is_finite() => {
            format!("{x:.digits$} [{lo:.digits$}, {hi:.digits$}]")
        }
        (x, ..) => fmt(x, digits),
    }
}

/// The half-width of the wider side of a metric's 95% interval (an error bar drawn both ways
/// then covers the whole interval); None where no interval was recorded.
fn err_bar(r: &Results, v: &str, metric: &str) -> Option<f64> {
    let x = r.get(v, metric)?;
    let lo = r.get(v, &format!("{metric}_lo"))?;
    let hi = r.get(v, &format!("{metric}_hi"))?;
    Some((x - lo).max(hi - x))
}

/// The rule `eval::paired::recommend` breaks ties by (its `TIE_RULE`; a test keeps the two the
/// same: the report draws results and does not import the evaluation).
pub const TIE_RULE: &str = "among variants whose 95% score interval overlaps the best's, pick the one with the highest lower bound of PerfNorm (accuracy is what a submission cannot buy back with speed); then the higher score, then the name in alphabetical order";

fn timed(o: &ReportOptions, s: String) -> String {
    if o.redact_timings {
        "[timing]".into()
    } else {
        s
    }
}

/// Whether the quality figures mean nothing: the study said so (`--random-weights`), or the
/// model is named as a random-weight checkpoint.
fn meaningless(r: &Results, o: &ReportOptions) -> bool {
    o.quality_meaningless || random_weights(r)
}

/// A parameter count as a reader says it: `8.59 M`, `1.28 B`.
pub fn fmt_parameters(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else {
        format!("{:.1} k", n / 1e3)
    }
}

/// `8591872` as `8,591,872`.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// The base model's size, from the `parameters` and `layers` the suite recorded (the original's,
/// else the first variant's).
fn model_size(r: &Results) -> String {
    let base = r
        .variants()
        .into_iter()
        .filter(|v| r.get(v, "parameters").is_some())
        .min_by_key(|v| v != "original");
    match base {
        Some(v) => {
            let n = r.get(&v, "parameters").unwrap_or(f64::NAN);
            let layers = r
                .get(&v, "layers")
                .map(|l| format!(", {l:.0} layers"))
                .unwrap_or_default();
            format!(
                "{} parameters ({}){layers}",
                fmt_parameters(n),
                thousands(n)
            )
        }
        None => "not recorded".into(),
    }
}

/// The markdown text of the report.
pub fn markdown(r: &Results, o: &ReportOptions) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", o.title);
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| command | `{}` |", super::by_role(&o.command));
    let _ = writeln!(md, "| model | `{}` |", super::path_by_role(&r.model));
    let _ = writeln!(
        md,
        "| model size | {}{} |",
        model_size(r),
        if meaningless(r, o) {
            "; **random weights: accuracy is meaningless**"
        } else {
            ""
        }
    );
    let _ = writeln!(md, "| device | {} |", r.device);
    let _ = writeln!(
        md,
        "| commit | {} |",
        if o.redact_timings {
            "[commit]".to_string()
        } else {
            r.commit.clone()
        }
    );
    let _ = writeln!(
        md,
        "| when | {} |",
        if o.redact_timings {
            "[timestamp]".to_string()
        } else {
            r.timestamp.clone()
        }
    );
    let _ = writeln!(md, "| results | `results.parquet` (long format, one row per variant × metric; `results.csv` the same) |\n");
    if meaningless(r, o) {
        let _ = writeln!(md, "> **Random weights: the quality columns (perplexity, KL, top-1, MC accuracy, PerfNorm, Score) mean nothing here.** Speed, size and bytes per token are real.\n");
    }
    for n in &o.notes {
        let _ = writeln!(md, "> {n}\n");
    }
    let commit = if o.redact_timings {
        "[commit]"
    } else {
        r.commit.as_str()
    };
    md += &environment_md(
        &r.env,
        commit,
        &r.device,
        &seeds_of(
            &r.env,
            &o.command,
            "`--seed` not given: the command's default",
        ),
    );
    let _ = writeln!(md, "## Results\n");
    let on_l4 = r.rows.iter().any(|x| x.metric == "l4_speed_norm");
    let _ = writeln!(
        md,
        "| variant | method | layers | size (MiB) | weight bytes/token (MB) | test ppl (± s.e.) | KL to base (nats, mean ± s.e.) | KL p99 | top-1 agree | MC acc | decode ms/token (median [min–max]) | predicted speed-up (bytes) | {}PerfNorm [95%] | SpeedNorm | Score [95%] |",
        if on_l4 { "T on L4, 1.2B (µs/token) | " } else { "" }
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|{}---|---|---|",
        if on_l4 { "---|" } else { "" }
    );
    for v in r.variants() {
        let g = |m: &str| r.get(&v, m);
        let ppl = g("test_ppl");
        let ppl_se = r.spread(&v, "test_ppl");
        let dec = g("decode_ms_per_token");
        let dec_s = timed(
            o,
            match (dec, r.spread(&v, "decode_ms_per_token")) {
                (Some(d), Some(s)) => format!(
                    "{d:.3} [{:.3}–{:.3}]",
                    g("decode_ms_min").unwrap_or(d),
                    g("decode_ms_min").unwrap_or(d) + s
                ),
                (Some(d), None) => format!("{d:.3}"),
                _ => "–".into(),
            },
        );
        let _ = writeln!(
            md,
            "| {v} | {} | {} | {} | {} | {} ± {} | {} ± {} | {} | {} | {} | {} | {} | {}{} | {} | {} |",
            r.method_of(&v),
            fmt(g("layers"), 0),
            fmt(g("size_mib"), 2),
            fmt(g("weight_mb_per_token"), 2),
            fmt(ppl, 3),
            fmt(ppl_se, 3),
            fmt(g("kl_mean"), 4),
            fmt(r.spread(&v, "kl_mean"), 4),
            fmt(g("kl_p99"), 3),
            fmt(g("top1"), 3),
            fmt(g("mc_acc"), 3),
            dec_s,
            fmt(g("predicted_speedup"), 2),
            if on_l4 {
                format!("{} | ", fmt(g("l4_secs_per_token").map(|t| t * 1e6), 1))
            } else {
                String::new()
            },
            with_ci(r, &v, "perf_norm", 3),
            // SpeedNorm is a model (the L4 projection, else weight bytes), not a timing
            fmt(g("speed_norm"), 3),
            with_ci(r, &v, "score", 3),
        );
    }
    let _ = writeln!(md);
    l4_paragraph(&mut md, r);
    paired_table(&mut md, r);
    gen_mc_table(&mut md, r);
    if r.rows.iter().any(|x| x.metric == "legacy_similarity") {
        let _ = writeln!(md, "Legacy measures (the reference pipeline's): greedy answers to fixed chat prompts compared with the base model's answers. Kept for comparison only: an empty answer from both sides counts as a perfect match, which is how the reference table reported 1.0 for broken models.\n");
        let _ = writeln!(
            md,
            "| variant | similarity to base answers | exact match | empty answers |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for v in r.variants() {
            let g = |m: &str| r.get(&v, m);
            let _ = writeln!(
                md,
                "| {v} | {} | {} | {} |",
                fmt(g("legacy_similarity"), 3),
                fmt(g("legacy_exact_match"), 2),
                fmt(g("legacy_empty_answers"), 2)
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "![quality vs size](quality_vs_size.png)\n");
    let _ = writeln!(md, "![quality vs time per token](quality_vs_time.png)\n");
    let _ = writeln!(md, "![perplexity per variant](perplexity.png)\n");
    if r.rows.iter().any(|x| x.metric == "score") {
        let _ = writeln!(md, "![Score per variant](score.png)\n");
    }
    if r.rows
        .iter()
        .any(|x| x.metric.starts_with("drop_one_kl_layer_"))
    {
        let _ = writeln!(md, "![drop-one KL per layer](layer_importance.png)\n");
    }
    if r.rows
        .iter()
        .any(|x| x.metric.starts_with("block_influence_layer_"))
    {
        let _ = writeln!(md, "![Block Influence per layer](block_influence.png)\n");
    }
    let _ = writeln!(md, "## Recommendation\n");
    if meaningless(r, o) {
        let _ = writeln!(
            md,
            "- None: with random weights only the speed and size columns can be compared."
        );
    } else {
        for line in recommend(r) {
            let _ = writeln!(md, "- {line}");
        }
        if let Some(cmd) = rebuild_command(r) {
            let _ = writeln!(md, "- the recommended variant's checkpoint is kept with its recipe; rebuild it from the base, bit for bit on this device, with `{cmd}`");
        }
        if let Some(t) = ties(r) {
            let _ = writeln!(md, "\n{t}");
        }
    }
    kept_table(&mut md, r);
    let _ = writeln!(md, "\n## How noisy these figures are\n");
    let _ = writeln!(md, "- Perplexity: ± is the standard error of the mean NLL over scoring windows, shown on the perplexity scale. It is the spread of one model's figure; two variants are compared by the paired ratio instead (same tokens, so the text's difficulty cancels): `ppl_ratio` and PerfNorm carry the 95% interval of the mean per-token log-ratio, with scoring windows as clusters of correlated tokens.");
    let _ = writeln!(md, "- KL: mean over every scored position against the base model's next-token distribution, ± the standard error over sequences (the interval in the paired table is ±1.96 of it); p99 is the 99th percentile per position.");
    let _ = writeln!(md, "- MC accuracy: log-likelihood choice on the shipped multiple-choice items; its binomial standard error is in the parquet (`spread`). The difference to the base is paired on the same items (its SE from the discordant items, McNemar's exact and mid-p tests). A small model sits near chance, so PerfNorm here uses perplexity (base ppl / variant ppl) unless stated otherwise.");
    let _ = writeln!(md, "- Score: its 95% interval is PerfNorm's (paired, above) halved; SpeedNorm ({}) has no sampling error. A variant is named the winner only when its interval overlaps no other's; otherwise the Ties paragraph names every variant not shown apart from the best.", speed_source(r));
    let on_runtime = r.rows.iter().any(|x| x.metric == "decode_on_engine");
    if on_runtime {
        let _ = writeln!(md, "- Time per token: median of repeated timed decodes after warm-up on the device named above; the bracket is [min–max]. Each written checkpoint is timed as it runs on the CUDA runtime: W4A16 and W8A8 Linears on their compressed kernels (packed int4 GEMV, int8 tensor cores), decode on the runtime's engines (the decode engine with CUDA-graph replay for bf16 and W4A16, the serving engine's batch-1 steps for W8A8 and FP8; the `decode_on_engine` row says where one ran). On a small model the fixed per-step costs dominate, and batch-1 decoding is not the evaluation's regime: the Score ranks variants by SpeedNorm ({}).", speed_source(r));
    } else {
        let _ = writeln!(md, "- Time per token: median of repeated timed decodes after warm-up on the device named above; the bracket is [min–max] of those repeats, which run back to back: it does not hold how the machine's speed drifts over the study (on a shared CPU, identical models measured minutes apart can differ by more than their brackets). Quantized variants run here with dequantized weights (a quality emulation), so their measured time is the dense model's: this column ranks nothing, and the Score ranks variants by SpeedNorm ({}).", speed_source(r));
    }
    let _ = writeln!(md, "- {REPRODUCIBILITY}");
    let _ = writeln!(md, "- The competition server itself scored identical submissions up to ±0.1 apart: the intervals above hold this run's measurement noise only, so treat Score differences below 0.1 as unproven on the server even where they are clear here.");
    md
}

/// The metric of the rows that say where a study kept a variant's checkpoint (the study's
/// `variants::KEPT_METRIC`; a test keeps the two the same).
pub const KEPT_METRIC: &str = "kept_checkpoint";

/// The kept checkpoints: (variant, its params: `checkpoint`, `recipe`, `rebuild`).
fn kept(r: &Results) -> Vec<(String, serde_json::Value)> {
    r.rows
        .iter()
        .filter(|x| x.metric == KEPT_METRIC)
        .map(|x| {
            let p = serde_json::from_str(&x.params).unwrap_or(serde_json::Value::Null);
            (x.variant.clone(), p)
        })
        .collect()
}

/// The command that rebuilds the recommended variant (the Score's pick) from the base, paths
/// named by role; None unless the study kept it.
pub fn rebuild_command(r: &Results) -> Option<String> {
    let (_, p) = kept(r)
        .into_iter()
        .find(|(v, _)| r.get(v, "verdict_pick") == Some(1.0))?;
    p["rebuild"].as_str().map(super::by_role)
}

/// The section listing the kept checkpoints and their recipes.
fn kept_table(md: &mut String, r: &Results) {
    let k = kept(r);
    if k.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n## Checkpoints kept\n");
    let _ = writeln!(md, "Each directory holds the checkpoint as measured and its `recipe.json` (the steps with every parameter, the data's and the base's hashes); `exaone-compress apply --recipe DIR/recipe.json` rebuilds it from the base.\n");
    let _ = writeln!(md, "| variant | directory | recipe (steps) |");
    let _ = writeln!(md, "|---|---|---|");
    for (v, p) in &k {
        let path = |key: &str| super::path_by_role(p[key].as_str().unwrap_or("?"));
        let _ = writeln!(
            md,
            "| {v} | `{}` | `{}`: {} |",
            path("checkpoint"),
            path("recipe"),
            r.method_of(v)
        );
    }
}

/// What the report says about rerunning the study (tests/report_snapshot.rs compares numbers
/// at the cross-machine tolerance stated here).
pub const REPRODUCIBILITY: &str = "Reproducibility: every figure but the timings comes out the same bit for bit when the same build runs the same command again on the same machine, whatever the number of threads (seeds fixed; every sum in an order that does not depend on how work is split: checked on 1, 2 and 3 threads). Another CPU may run other matrix-product kernels (AVX2 or AVX-512, another blocking), which add in another order: perplexity, KL, top-1 and Score then move in their last digits (well under 1%), and a quantized variant's KL may move by a few per cent of itself — one weight at a rounding boundary goes the other way, and GPTQ carries that on to later columns (e.g. a KL of 0.0341 read 0.0333 elsewhere). Sizes, bytes per token and layer counts do not move; a multiple-choice item right or wrong moves only where a variant's options were a near tie, which on 40 items moved a quantized variant's accuracy by up to 2 items (0.05) between two CPUs (Intel and AMD, 2026-12-03) — read accuracy differences of a few items as noise here, as the paired table's intervals also say.";

/// The report's charts, by file name: quality against size and against bytes per token, the
/// perplexity per variant (an axis near the data: 0 is no perplexity), the Score per variant with
/// its 95% interval as error bars, and the per-layer scores where the study recorded them. With
/// random weights each carries the caveat.
pub fn charts(r: &Results, o: &ReportOptions) -> Vec<(&'static str, Chart)> {
    let caveat = meaningless(r, o)
        .then(|| "Random weights: perplexity and KL meaningless; size and speed only".to_string());
    let frame = |title: &str| Frame::new(title).with_caveat(caveat.clone());
    let pts = |x_metric: &str, x_scale: f64| -> Vec<Point> {
        r.variants()
            .into_iter()
            .filter_map(|v| {
                Some(Point {
                    label: v.clone(),
                    x: r.get(&v, x_metric)? * x_scale,
                    y: r.get(&v, "test_ppl")?,
                    y_err: r.spread(&v, "test_ppl"),
                })
            })
            .collect()
    };
    let mut out: Vec<(&'static str, Chart)> = vec![
        (
            "quality_vs_size.png",
            ScatterChart {
                frame: frame("Quality vs size"),
                x_label: "size on disk (MiB)".into(),
                y_label: "test perplexity".into(),
                points: pts("size_mib", 1.0),
            }
            .into(),
        ),
        // the time the Score uses where the study projected it (batch-1 bytes rank the variants
        // wrongly for the evaluation's batched serving), else the bytes, said as such
        if r.get("original", "l4_secs_per_token").is_some() {
            (
                "quality_vs_time.png",
                ScatterChart {
                    frame: frame("Quality vs projected time per token on the evaluation's L4"),
                    x_label: "projected time per generated token, 256 prompts at once (µs)".into(),
                    y_label: "test perplexity".into(),
                    points: pts("l4_secs_per_token", 1e6),
                }
                .into(),
            )
        } else {
            (
                "quality_vs_time.png",
                ScatterChart {
                    frame: frame("Quality vs weight bytes read per decoded token (batch 1)"),
                    x_label: "weight bytes read per decoded token (MB)".into(),
                    y_label: "test perplexity".into(),
                    points: pts("weight_mb_per_token", 1.0),
                }
                .into(),
            )
        },
        (
            "perplexity.png",
            BarChart {
                frame: frame("Test perplexity per variant (± standard error)"),
                category_label: String::new(),
                value_label: "test perplexity".into(),
                bars: r
                    .variants()
                    .into_iter()
                    .filter_map(|v| {
                        let p = r.get(&v, "test_ppl")?;
                        Some(Bar::new(v.clone(), p, r.spread(&v, "test_ppl")))
                    })
                    .collect(),
                zero_meaningful: false,
                horizontal: true,
            }
            .into(),
        ),
    ];
    let scores: Vec<Bar> = r
        .variants()
        .into_iter()
        .filter_map(|v| {
            Some(Bar::new(
                v.clone(),
                r.get(&v, "score")?,
                err_bar(r, &v, "score"),
            ))
        })
        .collect();
    if !scores.is_empty() {
        out.push((
            "score.png",
            BarChart {
                frame: frame(
                    "Score proxy per variant (0.5·PerfNorm + 0.5·SpeedNorm; the base is 0.5)",
                )
                .with_note(
                    "error bars: the 95% interval (the wider side where it is not symmetric)",
                ),
                category_label: String::new(),
                value_label: "Score".into(),
                bars: scores,
                zero_meaningful: false,
                horizontal: true,
            }
            .into(),
        ));
    }
    let per_layer = |prefix: &str| -> Vec<Bar> {
        r.rows
            .iter()
            .filter_map(|x| {
                x.metric
                    .strip_prefix(prefix)
                    .map(|i| Bar::new(i, x.value, None))
            })
            .collect()
    };
    for (file, prefix, title, label) in [
        (
            "layer_importance.png",
            "drop_one_kl_layer_",
            "KL to the full model when one layer is dropped",
            "KL (nats/token)",
        ),
        (
            "block_influence.png",
            "block_influence_layer_",
            "Block Influence per layer (1 − cos(h_in, h_out))",
            "Block Influence",
        ),
    ] {
        let bars = per_layer(prefix);
        if !bars.is_empty() {
            out.push((
                file,
                BarChart {
                    frame: frame(title),
                    category_label: "layer".into(),
                    value_label: label.into(),
                    bars,
                    zero_meaningful: true,
                    horizontal: false,
                }
                .into(),
            ));
        }
    }
    out
}

/// Writes README.md and the charts into `dir`.
pub fn write(dir: &Path, r: &Results, o: &ReportOptions) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (file, chart) in charts(r, o) {
        let path = dir.join(file);
        chart.png(&path).map_err(|e| Error::Chart {
            path: path.clone(),
            msg: e.to_string(),
        })?;
    }
    write_atomic(&dir.join("README.md"), markdown(r, o).as_bytes())?;
    Ok(())
}
