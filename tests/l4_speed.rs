//! The studies' speed term: each variant's shape carried onto EXAONE-4.0-1.2B and projected on
//! the L4 over the evaluation's workload, and the Score built on it rather than on batch-1 bytes.

use exaone_compress::eval::projection::Efficiencies;
use exaone_compress::model::Exaone4Config;
use exaone_compress::record::{Results, Variant};
use exaone_compress::study::l4_speed::{scheme_word_of, L4Speed};
use exaone_compress::study::verdict::add_scores;
use serde_json::json;

#[test]
fn the_evaluation_model_is_exaone_4_0_1_2b() {
    let c = Exaone4Config::exaone_4_0_1_2b();
    // ../shared/spec/exaone4.md: checked by instantiating the config in transformers
    assert_eq!(c.num_parameters(), 1_279_391_488);
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.head_dim),
        (30, 2048, 64)
    );
}

/// A results table with a base and three variants: the rows the suite and the projection read.
fn results(speed: &L4Speed) -> Results {
    let mut r = Results::new("l4", "cpu", "test");
    for (name, method, layers, mb, ppl) in [
        ("original", "none", 10.0, 17.0, 30.0),
        ("pruned", "drop[8] (drop:8)", 9.0, 15.5, 31.0),
        ("W8A8", "rtn W8A8-int8", 10.0, 9.0, 30.1),
        ("W4A16", "gptq W4A16-g128-sym", 10.0, 5.0, 30.3),
    ] {
        let v = Variant::new(name, method, json!({}));
        r.add(&v, "layers", layers, None, "");
        r.add(&v, "weight_mb_per_token", mb, None, "MB");
        r.add(&v, "test_ppl", ppl, Some(0.3), "");
    }
    speed.add_rows(&mut r, "original").unwrap();
    r
}

#[test]
fn the_speed_term_is_the_l4_projection_of_the_variant_shape() {
    let speed = L4Speed::new(Efficiencies::assumed("test")).unwrap();
    let mut r = results(&speed);
    let g = |r: &Results, v: &str, m: &str| r.get(v, m).unwrap_or_else(|| panic!("{v} {m}"));
    // the share of layers carried onto the 1.2B's 30
    assert_eq!(g(&r, "original", "l4_layers"), 30.0);
    assert_eq!(g(&r, "pruned", "l4_layers"), 27.0);
    assert_eq!(g(&r, "original", "l4_speed_norm"), 0.0);
    // each variant is what the projection of its 1.2B says
    for (v, layers, word) in [
        ("pruned", 27, "bf16"),
        ("W8A8", 30, "w8a8"),
        ("W4A16", 30, "w4a16"),
    ] {
        let p = speed.project(v, layers, word).unwrap();
        assert_eq!(g(&r, v, "l4_speed_norm"), p.speed_norm, "{v}");
        assert_eq!(g(&r, v, "l4_secs_per_token"), p.secs_per_token, "{v}");
        assert!(p.speed_norm > 0.0, "{v}: {}", p.speed_norm);
    }
    // batched serving: W4A16's 3.4× fewer bytes buy far less than the batch-1 byte ratio says
    let w4 = g(&r, "W4A16", "l4_speed_norm");
    assert!(w4 < 1.0 - 5.0 / 17.0, "{w4}");
    // the Score uses the projection, not the bytes
    add_scores(&mut r, "original");
    for v in ["pruned", "W8A8", "W4A16"] {
        assert_eq!(g(&r, v, "speed_norm"), g(&r, v, "l4_speed_norm"), "{v}");
    }
    // projecting again replaces the rows rather than adding to them
    speed.add_rows(&mut r, "original").unwrap();
    let n = r
        .rows
        .iter()
        .filter(|x| x.metric == "l4_speed_norm")
        .count();
    assert_eq!(n, 4);
}

#[test]
fn without_the_projection_the_score_falls_back_to_bytes() {
    let speed = L4Speed::new(Efficiencies::assumed("test")).unwrap();
    let mut r = results(&speed);
    let l4 = exaone_compress::study::l4_speed::L4_SPEED_METRICS;
    r.rows.retain(|x| !l4.contains(&x.metric.as_str()));
    add_scores(&mut r, "original");
    let s = r.get("W4A16", "speed_norm").unwrap();
    assert!((s - (1.0 - 5.0 / 17.0)).abs() < 1e-12, "{s}");
    assert_eq!(scheme_word_of("rtn FP8-dynamic"), "fp8");
}

#[test]
fn the_sensitivity_rows_span_the_efficiency_grid() {
    let speed = L4Speed::new(Efficiencies::assumed("test")).unwrap();
    let r = results(&speed);
    let g = |v: &str, m: &str| r.get(v, m).unwrap_or_else(|| panic!("{v} {m}"));
    let sets = speed.sensitivity_sets();
    assert_eq!(g("original", "l4_sens_sets"), sets.len() as f64);
    assert_eq!(sets.len(), 1 + 27, "the set used, then 3 × 3 × 3");
    let mut shares = 0.0;
    for v in ["original", "pruned", "W8A8", "W4A16"] {
        let (lo, s, hi) = (
            g(v, "l4_speed_norm_lo"),
            g(v, "l4_speed_norm"),
            g(v, "l4_speed_norm_hi"),
        );
        // the set used is one of the sets: its SpeedNorm lies in the range
        assert!(lo <= s && s <= hi, "{v}: {lo} {s} {hi}");
        shares += g(v, "l4_best_share");
    }
    // the base is its own yardstick everywhere; a quantized variant's speed moves with the GPU
    assert_eq!(
        (
            g("original", "l4_speed_norm_lo"),
            g("original", "l4_speed_norm_hi")
        ),
        (0.0, 0.0)
    );
    assert!(g("W4A16", "l4_speed_norm_hi") > g("W4A16", "l4_speed_norm_lo") + 0.01);
    // every set has exactly one best point Score
    assert!((shares - 1.0).abs() < 1e-12, "{shares}");
}
