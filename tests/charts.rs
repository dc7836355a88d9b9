//! Charts draw on a machine with no fonts installed (the font is compiled in), and what they draw
//! is readable: one slot per bar, no overlapping labels, axes that show the differences (near the
//! data where 0 means nothing, logarithmic across decades), the random-weights caveat on the image.

use exaone_compress::record::{Results, Variant};
use exaone_compress::report::chart::{
    bars, hbars, line_chart, log_ticks, padded_range, pareto_front, scatter_pareto, Bar, BarChart,
    Chart, Drawn, Frame, Point, Role, Series, ValueAxis, CAVEAT_COLOR,
};
use exaone_compress::report::layout::{place_labels, Rect};
use exaone_compress::report::study::ReportOptions;
use exaone_compress::report::{runtime, study};
use serde_json::json;

fn is_png(p: &std::path::Path) -> bool {
    std::fs::read(p)
        .map(|b| b.len() > 1000 && b.starts_with(b"\x89PNG"))
        .unwrap_or(false)
}

#[test]
fn every_chart_kind_draws_a_png() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    line_chart(
        &d.join("l.png"),
        "loss",
        "tokens",
        "nats",
        &[Series {
            name: "train".into(),
            points: vec![(0.0, 3.0), (1.0, 2.0)],
        }],
        false,
    )
    .unwrap();
    let pts = vec![
        Point {
            label: "a".into(),
            x: 1.0,
            y: 3.0,
            y_err: Some(0.1),
        },
        Point {
            label: "b".into(),
            x: 2.0,
            y: 2.0,
            y_err: None,
        },
        Point {
            label: "c".into(),
            x: 3.0,
            y: 2.5,
            y_err: None,
        },
    ];
    scatter_pareto(&d.join("s.png"), "q vs size", "MiB", "ppl", &pts).unwrap();
    bars(
        &d.join("b.png"),
        "kl",
        "layer",
        "nats",
        &[("0".into(), 1.0), ("1".into(), 0.5)],
    )
    .unwrap();
    hbars(
        &d.join("h.png"),
        "ppl",
        "perplexity",
        &[
            (
                "distilled+pruned+quantized (a long name)".into(),
                40.0,
                Some(3.0),
            ),
            ("original".into(), 36.0, None),
        ],
    )
    .unwrap();
    for f in ["l.png", "s.png", "b.png", "h.png"] {
        assert!(is_png(&d.join(f)), "{f}");
    }
    // c is dominated by b (larger and worse): the front is a, b
    assert_eq!(pareto_front(&pts), vec![0, 1]);
}

/// Pixel (x, y) of an RGB buffer `w` wide.
fn px(buf: &[u8], w: u32, x: i32, y: i32) -> (u8, u8, u8) {
    let i = (y as usize * w as usize + x as usize) * 3;
    (buf[i], buf[i + 1], buf[i + 2])
}

fn layer_bars(n: usize) -> Chart {
    BarChart {
        frame: Frame::new("KL to the full model when one layer is dropped"),
        category_label: "layer".into(),
        value_label: "KL (nats/token)".into(),
        bars: (0..n)
            .map(|i| Bar::new(i.to_string(), 6.8 / (1.0 + i as f64), None))
            .collect(),
        zero_meaningful: true,
        horizontal: false,
    }
    .into()
}

#[test]
fn a_bar_chart_has_one_slot_per_bar_and_no_empty_one() {
    for n in [1, 10, 30] {
        let layers = [(format!("layers{n}.png"), layer_bars(n))];
        let layers: Vec<(&str, Chart)> = layers
            .iter()
            .map(|(f, c)| (f.as_str(), c.clone()))
            .collect();
        let c = chart(&layers, layers[0].0);
        let (w, _) = c.size();
        let (buf, d) = c.rgb().unwrap();
        assert_eq!(d.marks.len(), n);
        let slot = d.plot.width() as f64 / n as f64;
        let (first, last) = (d.marks[0], d.marks[n - 1]);
        let (gap_left, gap_right) = (first.x0 - d.plot.x0, d.plot.x1 - last.x1);
        // the slots fill the axis: the last bar ends as far from the right edge as the first
        // starts from the left one (an empty trailing slot would add a whole slot on the right)
        assert!(
            (gap_left - gap_right).abs() <= 2 && (gap_right as f64) < slot / 2.0,
            "n {n}: gaps {gap_left} / {gap_right}, slot {slot:.1}"
        );
        // and the pixels agree: bar colour reaches the last slot
        let y = d.plot.y1 - 3;
        let rightmost = (d.plot.x0..d.plot.x1)
            .filter(|&x| {
                let (r, g, b) = px(&buf, w, x, y);
                b > 180 && r < 150 && g < 170
            })
            .max()
            .unwrap();
        assert!(
            (d.plot.x1 - rightmost) as f64 <= slot / 2.0,
            "n {n}: last bar pixel at {rightmost}, plot ends at {}",
            d.plot.x1
        );
        // numeric labels never touch: thinned when they would
        let labels = d.texts_of(Role::Category);
        assert!(!labels.is_empty());
        for (i, a) in labels.iter().enumerate() {
            for b in &labels[i + 1..] {
                assert!(!a.rect.overlaps(&b.rect), "{a:?} / {b:?}");
            }
        }
    }
}

#[test]
fn vertical_bars_with_long_labels_become_rows() {
    let c = BarChart {
        frame: Frame::new("t"),
        category_label: String::new(),
        value_label: "v".into(),
        bars: (0..12)
            .map(|i| {
                Bar::new(
                    format!("distilled+pruned+quantized {i}"),
                    1.0 + i as f64,
                    None,
                )
            })
            .collect(),
        zero_meaningful: true,
        horizontal: false,
    };
    assert!(c.drawn_horizontally());
    let (_, d) = Chart::from(c).rgb().unwrap();
    let labels = d.texts_of(Role::Category);
    assert_eq!(labels.len(), 12);
    for (i, a) in labels.iter().enumerate() {
        assert!(a.rect.x1 <= d.plot.x0, "left of the plot: {a:?}");
        for b in &labels[i + 1..] {
            assert!(!a.rect.overlaps(&b.rect), "{a:?} / {b:?}");
        }
    }
}

#[test]
fn the_value_axis_goes_logarithmic_across_a_decade_and_a_half() {
    let plan = |v: &[f64]| {
        let pts: Vec<(f64, Option<f64>)> = v.iter().map(|&x| (x, None)).collect();
        ValueAxis::plan(&pts, true)
    };
    assert!(plan(&[1.0, 100.0]).log);
    assert!(plan(&[27.0, 650.0, 9000.0]).log);
    assert!(plan(&[0.013, 0.81]).log);
    assert!(!plan(&[1.0, 29.0]).log);
    assert!(!plan(&[0.38, 6.8]).log);
    // 0 cannot be on a log axis: linear from 0
    let z = plan(&[0.0, 1000.0]);
    assert!(!z.log && z.min == 0.0);
    assert!(plan(&[1.0, 100.0])
        .describe("tokens/s")
        .contains("log scale"));
}

#[test]
fn perplexity_axis_starts_near_the_data() {
    let a = ValueAxis::plan(&[(36.764, Some(3.207)), (37.597, Some(3.274))], false);
    assert!(!a.log && a.min > 0.0, "{a:?}");
    assert!(a.min > 30.0, "{a:?}");
    assert!(a
        .describe("test perplexity")
        .contains("axis does not start at 0"));
    // where 0 is meaningful the same values start at 0
    let z = ValueAxis::plan(&[(36.764, Some(3.207)), (37.597, Some(3.274))], true);
    assert_eq!(z.min, 0.0);
    assert_eq!(z.describe("x"), "x");
}

/// A quantize-like study: the W4A16 variants share a size, the W8A8/FP8 ones another, and
/// `distilled` sits exactly on `original`.
fn quantize_like(model: &str) -> Results {
    let mut r = Results::new("quantize", "cpu (F32)", model);
    for (name, size, mb, ppl, se) in [
        ("original", 16.52, 17.18, 36.764, 3.207),
        ("RTN W4A16", 5.87, 6.00, 37.597, 3.274),
        ("GPTQ W4A16", 5.87, 6.00, 37.566, 3.285),
        ("AWQ W4A16 (no clip)", 5.87, 6.00, 37.920, 3.312),
        ("AWQ W4A16", 5.87, 6.00, 37.502, 3.285),
        ("W8A8 (min-max)", 9.39, 9.70, 36.829, 3.211),
        ("W8A8 GPTQ", 9.39, 9.70, 36.807, 3.209),
        ("FP8 dynamic", 9.39, 9.70, 36.949, 3.224),
        ("distilled", 16.52, 17.18, 36.764, 3.207),
    ] {
        let v = Variant::new(name, "m", json!({}));
        r.add(&v, "parameters", 8.59e6, None, "");
        r.add(&v, "size_mib", size, None, "MiB");
        r.add(&v, "weight_mb_per_token", mb, None, "MB");
        r.add(&v, "test_ppl", ppl, Some(se), "");
    }
    for (i, kl) in [6.8, 2.4, 1.1, 0.7, 0.6, 0.45, 0.62, 0.5, 0.38, 0.5]
        .iter()
        .enumerate()
    {
        r.add(
            &Variant::original(),
            &format!("drop_one_kl_layer_{i}"),
            *kl,
            None,
            "nats",
        );
    }
    r
}

fn options(random: bool) -> ReportOptions {
    ReportOptions {
        title: "t".into(),
        quality_meaningless: random,
        ..ReportOptions::default()
    }
}

fn chart<'a>(charts: &'a [(&str, Chart)], file: &str) -> &'a Chart {
    let c = &charts.iter().find(|c| c.0 == file).unwrap().1;
    // CHARTS_OUT=dir keeps the charts the tests look at, for a human to look at too
    if let Some(dir) = std::env::var_os("CHARTS_OUT") {
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir).unwrap();
        let tag = c.frame().caveat.as_ref().map(|_| "caveat-").unwrap_or("");
        c.png(&dir.join(format!("{tag}{file}"))).unwrap();
    }
    c
}

#[test]
fn clustered_point_labels_do_not_overlap() {
    let r = quantize_like("data/default-model");
    let charts = study::charts(&r, &options(false));
    for file in ["quality_vs_size.png", "quality_vs_time.png"] {
        let (_, d) = chart(&charts, file).rgb().unwrap();
        let labels = d.texts_of(Role::PointLabel);
        assert_eq!(labels.len(), 9, "{file}");
        for (i, a) in labels.iter().enumerate() {
            assert!(
                d.plot.contains(&a.rect),
                "{file}: {a:?} outside {:?}",
                d.plot
            );
            for b in &labels[i + 1..] {
                assert!(!a.rect.overlaps(&b.rect), "{file}: {a:?} / {b:?}");
            }
            for m in &d.marks {
                assert!(!a.rect.overlaps(m), "{file}: {a:?} covers a point {m:?}");
            }
        }
    }
}

#[test]
fn log_axes_get_ticks_between_powers_of_ten() {
    // a serving throughput range: plotters' own ticks were the one power of ten inside it
    assert_eq!(
        log_ticks(1800.0, 45000.0),
        [2000.0, 5000.0, 10000.0, 20000.0]
    );
    assert_eq!(log_ticks(6500.0, 9500.0), [7000.0, 8000.0, 9000.0]);
    assert!(log_ticks(0.0, 10.0).is_empty());
}

#[test]
fn a_scatter_axis_around_one_value_is_wide_enough_to_tick() {
    // one point (the baseline report): every tick read "16.5213" on a 2e-9-wide axis
    let r = padded_range(16.5213, 16.5213, 0.15);
    assert!(r.end - r.start > 1.0 && r.contains(&16.5213), "{r:?}");
    let r = padded_range(30.0, 40.0, 0.1);
    assert_eq!((r.start, r.end), (29.0, 41.0));
}

#[test]
fn place_labels_separates_coincident_points() {
    let anchors = vec![(300, 200); 6];
    let sizes = vec![(90, 15); 6];
    let marks = vec![Rect::new(295, 195, 305, 205)];
    let area = Rect::new(0, 0, 800, 500);
    // a line leaving the point to the right, as the Pareto front does
    let front = [((300, 200), (700, 210))];
    let placed = place_labels(&anchors, &sizes, area, &marks, &front);
    for (i, a) in placed.iter().enumerate() {
        assert!(area.contains(a) && !a.overlaps(&marks[0]));
        assert!(!a.crossed_by(front[0].0, front[0].1), "{a:?}");
        for b in &placed[i + 1..] {
            assert!(!a.overlaps(b), "{a:?} / {b:?}");
        }
    }
}

#[test]
fn perplexity_chart_shows_the_differences() {
    let r = quantize_like("data/default-model");
    let charts = study::charts(&r, &options(false));
    let (_, d) = chart(&charts, "perplexity.png").rgb().unwrap();
    let axis = d.value_axis.unwrap();
    assert!(axis.min > 0.0 && !axis.log, "{axis:?}");
    // original 36.76 vs RTN W4A16 37.60: dots at least 30 px apart on a 1000 px chart
    let (o, q) = (d.marks[0], d.marks[1]);
    assert!(q.x0 - o.x0 >= 30, "{o:?} / {q:?}");
    // the KL bars start at 0 (0 means "no change")
    let (_, k) = chart(&charts, "layer_importance.png").rgb().unwrap();
    assert_eq!(k.value_axis.unwrap().min, 0.0);
}

/// Whether the caveat is drawn: a caveat text inside the image with red pixels in its box.
fn caveat_drawn(buf: &[u8], d: &Drawn) -> Option<String> {
    let c = d.texts_of(Role::Caveat);
    let first = c.first()?;
    let r = first.rect;
    let red = (r.x0..r.x1)
        .flat_map(|x| (r.y0..r.y1).map(move |y| (x, y)))
        .filter(|&(x, y)| {
            let (pr, pg, pb) = px(buf, d.size.0, x, y);
            pr > 120 && pg < 90 && pb < 90 && pr as i32 - pg as i32 > 80
        })
        .count();
    assert!(red > 20, "caveat box {r:?} has {red} red pixels");
    let _ = CAVEAT_COLOR;
    Some(
        c.iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[test]
fn random_weight_charts_carry_the_caveat() {
    // a study told --random-weights
    let r = quantize_like("data/default-model");
    let random = study::charts(&r, &options(true));
    for (file, _) in &random {
        let (buf, d) = chart(&random, file).rgb().unwrap();
        let text = caveat_drawn(&buf, &d).unwrap_or_else(|| panic!("{file}: no caveat"));
        assert!(text.contains("Random weights"), "{file}: {text}");
    }
    // … and none without it
    for (file, c) in study::charts(&r, &options(false)) {
        let (buf, d) = c.rgb().unwrap();
        assert!(caveat_drawn(&buf, &d).is_none(), "{file}");
    }
    // a model named as a random checkpoint gets it without the flag
    let r = quantize_like(".gpu/random-1.2b");
    assert!(study::charts(&r, &options(false))
        .iter()
        .all(|(_, c)| c.frame().caveat.is_some()));
}

/// bench_runtime-like results: ours and HF at decode batch 1 and 16.
fn runtime_like(model: &str) -> Results {
    let mut r = Results::new("bench_runtime", "NVIDIA H200 (BF16)", model);
    for (v, b1, b16) in [
        ("hf", 36.9, 26.0),
        ("candle-bf16", 5.0, 5.4),
        ("engine-bf16", 1.39, 1.78),
        ("engine-w4a16", 1.23, 5.3),
    ] {
        let var = Variant::new(v, "m", json!({}));
        r.add(&var, "decode_ms_b1", b1, Some(0.01), "ms/step");
        r.add(&var, "decode_ms_b16", b16, Some(0.01), "ms/step");
        r.add(&var, "prefill_tok_s_8x2048", 1.1e5, Some(500.0), "tokens/s");
    }
    r
}

#[test]
fn runtime_decode_chart_is_logarithmic_and_flags_random_weights() {
    let r = runtime_like("/tmp/exaone12-random");
    let charts = runtime::charts(&r);
    let (buf, d) = chart(&charts, "decode.png").rgb().unwrap();
    // 27 tokens/s (HF, batch 1) beside 9000 (engine, batch 16): a log axis, every bar visible
    let axis = d.value_axis.unwrap();
    assert!(axis.log, "{axis:?}");
    assert!(d.marks.iter().all(|m| m.width() >= 10), "{:?}", d.marks);
    let text = caveat_drawn(&buf, &d).expect("caveat");
    assert!(text.contains("speed only"), "{text}");
    // prefill points all near 110 k tokens/s: linear from 0
    let (_, p) = chart(&charts, "prefill.png").rgb().unwrap();
    assert!(!p.value_axis.unwrap().log);
    // a trained model's runtime charts carry no caveat
    let r = runtime_like("data/default-model");
    assert!(runtime::charts(&r)
        .iter()
        .all(|(_, c)| c.frame().caveat.is_none()));
}

/// The committed reports' results, redrawn: every chart draws, and no two labels touch.
/// `CHARTS_OUT=dir` keeps the charts and READMEs for a look.
#[test]
fn committed_results_draw_readably() {
    let reports = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
    let mut n = 0;
    for e in std::fs::read_dir(&reports).unwrap() {
        let dir = e.unwrap().path();
        let parquet = dir.join("results.parquet");
        if !parquet.exists() {
            continue;
        }
        let r = Results::load(&parquet).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (charts, md) = if r.experiment == "bench_runtime" {
            (runtime::charts(&r), runtime::readme(&r, "bench_runtime"))
        } else {
            let o = options(false);
            (study::charts(&r, &o), study::markdown(&r, &o))
        };
        assert!(md.contains("## Environment"), "{name}");
        for (file, c) in &charts {
            let (_, d) = c.rgb().unwrap();
            let labels: Vec<_> = d
                .texts
                .iter()
                .filter(|t| matches!(t.role, Role::PointLabel | Role::Category))
                .collect();
            for (i, a) in labels.iter().enumerate() {
                for b in &labels[i + 1..] {
                    assert!(!a.rect.overlaps(&b.rect), "{name}/{file}: {a:?} / {b:?}");
                }
            }
            if let Some(out) = std::env::var_os("CHARTS_OUT") {
                let out = std::path::Path::new(&out).join(&name);
                std::fs::create_dir_all(&out).unwrap();
                c.png(&out.join(file)).unwrap();
                std::fs::write(out.join("README.md"), &md).unwrap();
            }
            n += 1;
        }
    }
    assert!(n > 0);
}
