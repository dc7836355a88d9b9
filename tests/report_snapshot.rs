//! The study report on the default model, pinned by an insta snapshot: its structure and every
//! deterministic number (timings, commit and date redacted). A mini study (original, a layer
//! drop, RTN W4A16, W8A8) keeps it fast on two cores.

use candle_core::{DType, Device};
use exaone_compress::compress::calibration::samples;
use exaone_compress::compress::quant::apply::quantize_rtn;
use exaone_compress::compress::quant::Scheme;
use exaone_compress::data::{read_documents, split_path, TokenStream};
use exaone_compress::default_model_dir;
use exaone_compress::eval::tasks::load_kmmlu;
use exaone_compress::model::Tokenizer;
use exaone_compress::record::{Results, Variant};
use exaone_compress::report::study::{markdown, ReportOptions};
use exaone_compress::study::suite::{add_scores, SaveTo, Suite, LEGACY_PROMPTS};
use serde_json::json;

#[test]
fn mini_study_report_snapshot() {
    let dir = default_model_dir();
    let base = exaone_compress::checkpoint::load_model(&dir, DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let eos = tok.token_id("[|endofturn|]").unwrap();
    let stream = |s: &str| {
        TokenStream::from_lines(&tok, &read_documents(&split_path(s)).unwrap(), Some(eos)).unwrap()
    };
    let mut test = stream("test");
    test.ids.truncate(1024);
    let val = stream("val");
    let mut mc = load_kmmlu(
        &exaone_compress::data::data_dir().join("benchmarks/kmmlu_criminal_law_test.json"),
        "kmmlu",
    )
    .unwrap();
    mc.truncate(8);
    let mut suite = Suite::new(tok, test, samples(&val, 4, 128, 1).unwrap());
    suite.ppl_window = 256;
    suite.mc_items = mc;
    suite.batch = 4;
    suite.legacy_prompts = LEGACY_PROMPTS[..2].iter().map(|s| s.to_string()).collect();
    suite.legacy_new_tokens = 8;
    let tmp = tempfile::tempdir().unwrap();
    let save = SaveTo {
        dir: tmp.path(),
        side_files_from: None,
        remove_after: false,
        overwrite: false,
    };
    let mut r = Results::new("mini", "cpu (F32)", "data/default-model");
    suite
        .measure(&mut r, &Variant::original(), &base, &base, None, &save)
        .unwrap();
    let pruned = base
        .with_layers(
            &(0..base.layers.len())
                .filter(|&i| i != base.layers.len() / 2)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    suite
        .measure(
            &mut r,
            &Variant::new("pruned", "drop[middle]", json!({})),
            &base,
            &pruned,
            None,
            &save,
        )
        .unwrap();
    for (name, scheme) in [
        ("RTN W4A16", Scheme::w4a16(128, true)),
        ("W8A8", Scheme::w8a8_int8()),
    ] {
        let q = quantize_rtn(&base, &scheme, &|_| false).unwrap();
        let v = Variant::new(name, format!("rtn {}", scheme.name()), json!({}));
        suite
            .measure(&mut r, &v, &base, &q.model, Some(&q), &save)
            .unwrap();
    }
    // the checkpoints were written where they were measured
    assert!(tmp.path().join("RTN_W4A16/config.json").exists());
    add_scores(&mut r, "original");
    // the study's own sanity: compression costs quality, never improves KL from zero
    assert_eq!(r.get("original", "kl_mean").map(|k| k < 1e-6), Some(true));
    assert!(r.get("RTN W4A16", "kl_mean").unwrap() > r.get("W8A8", "kl_mean").unwrap());
    let opts = ReportOptions {
        title: "Mini study".into(),
        command: "cargo test --release --test report_snapshot".into(),
        notes: vec![],
        redact_timings: true,
        quality_meaningless: false,
    };
    insta::assert_snapshot!(markdown(&r, &opts));
    // the parquet round-trips
    r.save(tmp.path()).unwrap();
    let back = Results::load(&tmp.path().join("results.parquet")).unwrap();
    assert_eq!(back.rows.len(), r.rows.len());
    assert_eq!(back.get("W8A8", "test_ppl"), r.get("W8A8", "test_ppl"));
}
