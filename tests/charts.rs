//! Charts draw on a machine with no fonts installed (the font is compiled in) and produce PNGs.

use exaone_compress::report::chart::{
    bars, hbars, line_chart, pareto_front, scatter_pareto, Point, Series,
};

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
