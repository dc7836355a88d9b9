//! The study report on the default model, pinned by an insta snapshot: its structure and every
//! deterministic number (timings, commit and date redacted). A mini study (original, a layer
//! drop, RTN W4A16, W8A8) keeps it fast on two cores.

use candle_core::{DType, Device};
use exaone_compress::checkpoint::{compressed_tensors::save_quantized, save_model, WriteOptions};
use exaone_compress::compress::calibration::samples;
use exaone_compress::compress::quant::apply::quantize_rtn;
use exaone_compress::compress::quant::Scheme;
use exaone_compress::data::{read_documents, split_path, TokenStream};
use exaone_compress::eval::suite::{add_scores, dir_bytes, weight_bytes_per_token, Suite};
use exaone_compress::eval::tasks::load_kmmlu;
use exaone_compress::model::Tokenizer;
use exaone_compress::record::Results;
use exaone_compress::report::study::{markdown, ReportOptions};
use exaone_compress::{default_model_dir, Exaone4};
use serde_json::json;

#[test]
fn mini_study_report_snapshot() {
    let dir = default_model_dir();
    let base = Exaone4::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
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
    let suite = Suite {
        tokenizer: tok,
        test,
        ppl_window: 256,
        kl_sequences: samples(&val, 4, 128, 1).unwrap(),
        mc_items: mc,
        speed_prompt: 0,
        speed_new_tokens: 0,
        speed_warmup: 0,
        speed_repeats: 0,
        batch: 4,
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Results::new("mini", "cpu (F32)", "data/default-model");
    let dense = |m: &Exaone4, name: &str| {
        let out = tmp.path().join(name);
        save_model(m, &out, Some(DType::BF16), &WriteOptions::default()).unwrap();
        (dir_bytes(&out), weight_bytes_per_token(m, &|_| None))
    };
    let (b, w) = dense(&base, "original");
    suite
        .evaluate(&mut r, "original", "none", &json!({}), &base, &base, b, w)
        .unwrap();
    let pruned = base
        .with_layers(
            &(0..base.layers.len())
                .filter(|&i| i != base.layers.len() / 2)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let (b, w) = dense(&pruned, "pruned");
    suite
        .evaluate(
            &mut r,
            "pruned",
            "drop[middle]",
            &json!({}),
            &base,
            &pruned,
            b,
            w,
        )
        .unwrap();
    for (name, scheme) in [
        ("RTN W4A16", Scheme::w4a16(128, true)),
        ("W8A8", Scheme::w8a8_int8()),
    ] {
        let q = quantize_rtn(&base, &scheme, &|_| false).unwrap();
        let out = tmp.path().join(name.replace(' ', "_"));
        save_quantized(&q, &out, &WriteOptions::default()).unwrap();
        let bits = scheme.weights.num_bits;
        let g = if bits == 4 { 128 } else { 2048 };
        let w = weight_bytes_per_token(&q.model, &|p| {
            q.linears.contains_key(p).then_some((bits, g))
        });
        suite
            .evaluate(
                &mut r,
                name,
                &format!("rtn {}", scheme.name()),
                &json!({}),
                &base,
                &q.model,
                dir_bytes(&out),
                w,
            )
            .unwrap();
    }
    add_scores(&mut r, "original");
    // the study's own sanity: compression costs quality, never improves KL from zero
    assert_eq!(r.get("original", "kl_mean").map(|k| k < 1e-6), Some(true));
    assert!(r.get("RTN W4A16", "kl_mean").unwrap() > r.get("W8A8", "kl_mean").unwrap());
    let opts = ReportOptions {
        title: "Mini study".into(),
        command: "cargo test --release --test report_snapshot".into(),
        notes: vec![],
        redact_timings: true,
    };
    insta::assert_snapshot!(markdown(&r, &opts));
    // the parquet round-trips
    r.save(tmp.path()).unwrap();
    let back = Results::load(&tmp.path().join("results.parquet")).unwrap();
    assert_eq!(back.rows.len(), r.rows.len());
    assert_eq!(back.get("W8A8", "test_ppl"), r.get("W8A8", "test_ppl"));
}
