//! The study's verdict respects its noise: the paired rows a study records agree with
//! `eval::paired`, the Score carries an interval, and the report names every variant tied with
//! the best — a single winner only when no interval overlaps the best's.

use candle_core::{DType, Device};
use exaone_compress::compress::calibration::samples;
use exaone_compress::data::{read_documents, split_path, TokenStream};
use exaone_compress::default_model_dir;
use exaone_compress::eval::paired::{
    accuracy_difference, kl_mean, kl_mean_by_sequence, mcnemar, paired_accuracy, ppl_ratio,
    ppl_ratio_by_sequence, TIE_RULE,
};
use exaone_compress::eval::tasks::load_kmmlu;
use exaone_compress::model::Tokenizer;
use exaone_compress::record::{Results, Variant};
use exaone_compress::report::chart::Chart;
use exaone_compress::report::study::{charts, markdown, ReportOptions};
use exaone_compress::study::suite::{Stored, Suite};
use exaone_compress::study::verdict::{add_paired, add_scores, ppl_paired, PerToken};
use exaone_compress::Error;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

/// Per-token NLLs in windows of the given lengths, uniform in [1, 5).
fn windows(seed: u64, lens: &[usize]) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    lens.iter()
        .map(|&n| (0..n).map(|_| rng.random_range(1.0..5.0)).collect())
        .collect()
}

#[test]
fn the_study_ratio_is_the_paired_ratio() {
    let base = windows(1, &[511, 256, 256, 100]);
    let mut rng = StdRng::seed_from_u64(2);
    let variant: Vec<Vec<f32>> = base
        .iter()
        .map(|w| w.iter().map(|x| x + rng.random_range(-0.2..0.3)).collect())
        .collect();
    let p = ppl_paired(&base, &variant).unwrap();
    let flat = ppl_ratio(&base.concat(), &variant.concat()).unwrap();
    // the same ratio as the token-level comparison, to rounding of the sums
    assert!(rel_close(p.ratio.value, flat.ratio.value, 1e-12), "{p:?}");
    assert!(rel_close(p.perf_norm.value, flat.perf_norm.value, 1e-12));
    assert_eq!(p.tokens, flat.tokens);
    // … with windows as clusters for the SE
    let by_seq = ppl_ratio_by_sequence(&base, &variant).unwrap();
    assert_eq!(p, by_seq);
    assert!(p.ln_ratio.se > 0.0 && p.ln_ratio.se != flat.ln_ratio.se);
    // one window: no clusters to speak of, the token-level comparison
    let one = ppl_paired(&base[..1], &variant[..1]).unwrap();
    assert_eq!(one, ppl_ratio(&base[0], &variant[0]).unwrap());
    // identical NLLs: ratio 1, no spread
    let same = ppl_paired(&base, &base).unwrap();
    assert_eq!((same.ratio.value, same.ratio.se), (1.0, 0.0));
}

#[test]
fn kl_by_sequence_and_accuracy_difference() {
    let kl = windows(3, &[64, 64, 64, 64, 64]);
    let k = kl_mean_by_sequence(&kl).unwrap();
    assert!(rel_close(
        k.value,
        kl_mean(&kl.concat()).unwrap().value,
        1e-12
    ));
    // equal lengths: the SE of the per-sequence means (what `divergence` reports as kl_stderr)
    let means: Vec<f64> = kl
        .iter()
        .map(|s| s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64)
        .collect();
    let m = means.iter().sum::<f64>() / 5.0;
    let se = (means.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 4.0 / 5.0).sqrt();
    assert!(rel_close(k.se, se, 1e-10), "{} vs {se}", k.se);
    match kl_mean_by_sequence(&[vec![0.1f32, -0.5], vec![0.2]]) {
        Err(Error::Invalid(m)) => assert!(m.contains("negative"), "{m}"),
        other => panic!("{other:?}"),
    }
    // a base with nothing right: the difference and McNemar still, PerfNorm not
    let (base, var) = ([false; 6], [true, false, true, false, false, false]);
    let d = accuracy_difference(&base, &var).unwrap();
    assert_eq!((d.base_only, d.variant_only), (0, 2));
    assert!(rel_close(d.diff.value, 2.0 / 6.0, 1e-12));
    assert_eq!(d.mcnemar, mcnemar(0, 2));
    assert!(paired_accuracy(&base, &var).is_err());
    // where both are defined they agree
    let base = [true, true, false, true, false, true, true, false];
    let var = [true, false, false, true, true, false, true, false];
    let (a, p) = (
        accuracy_difference(&base, &var).unwrap(),
        paired_accuracy(&base, &var).unwrap(),
    );
    assert_eq!((a.diff, a.mcnemar, a.n), (p.diff, p.mcnemar, p.n));
}

/// A study of synthetic variants: (name, mean NLL shift over the base, weight MB per token;
/// the base reads 100). Every variant's NLLs are the base's plus its shift plus the same
/// centred noise, so each PerfNorm is exp(−shift) and every interval has the same width.
fn study(
    variants: &[(&str, f32, f64)],
) -> (Results, Option<exaone_compress::eval::Recommendation>) {
    let base_nll = windows(5, &[64; 8]);
    let mut rng = StdRng::seed_from_u64(6);
    let mut noise: Vec<f32> = (0..512).map(|_| rng.random_range(-0.4..0.4)).collect();
    let mean = noise.iter().sum::<f32>() / 512.0;
    noise.iter_mut().for_each(|x| *x -= mean);
    let base = PerToken {
        nll: base_nll.clone(),
        mc_right: vec![true, true, false, true, false, true],
        gen_right: vec![true, false, true, true],
    };
    let mut r = Results::new("t", "cpu (F32)", "data/default-model");
    let first = [("original", 0.0f32, 100.0f64)];
    for &(name, shift, mb) in first.iter().chain(variants) {
        let v = match name {
            "original" => Variant::original(),
            _ => Variant::new(name, "m", json!({})),
        };
        let nll: Vec<Vec<f32>> = if name == "original" {
            base_nll.clone()
        } else {
            base_nll
                .iter()
                .zip(noise.chunks(64))
                .map(|(w, n)| w.iter().zip(n).map(|(x, e)| x + shift + e).collect())
                .collect()
        };
        let mean = nll.concat().iter().map(|&x| x as f64).sum::<f64>() / 512.0;
        r.add(&v, "test_ppl", mean.exp(), None, "");
        r.add(&v, "weight_mb_per_token", mb, None, "MB");
        let kl: Vec<Vec<f32>> = (0..4)
            .map(|i| vec![shift.abs() + 0.01 * i as f32; 16])
            .collect();
        // every variant but the base gains item 4
        let mut mc_right = base.mc_right.clone();
        mc_right[4] = name != "original";
        // and loses generation-scored item 0
        let mut gen_right = base.gen_right.clone();
        gen_right[0] = name == "original";
        let ours = PerToken {
            nll,
            mc_right,
            gen_right,
        };
        add_paired(&mut r, &v, &base, &ours, &kl);
    }
    let rec = add_scores(&mut r, "original");
    (r, rec)
}

fn options() -> ReportOptions {
    ReportOptions {
        title: "t".into(),
        ..ReportOptions::default()
    }
}

fn ties_paragraph(md: &str) -> &str {
    let at = md.find("**Ties.**").expect("a Ties paragraph");
    md[at..].lines().next().unwrap()
}

#[test]
fn overlapping_intervals_are_named_as_a_tie() {
    // B: the higher Score (0.755) by a lower PerfNorm (0.961) and fewer bytes; A: PerfNorm 1.0,
    // Score 0.750. Their intervals (±0.01) overlap: no winner by Score.
    let (r, rec) = study(&[("A", 0.0, 50.0), ("B", 0.04, 45.0)]);
    let rec = rec.unwrap();
    assert_eq!(
        (
            rec.best.as_str(),
            rec.tied.clone(),
            rec.pick.as_str(),
            rec.clear
        ),
        ("B", vec!["A".to_string()], "A", false),
        "{rec:?}"
    );
    let (a_hi, b_lo) = (
        r.get("A", "score_hi").unwrap(),
        r.get("B", "score_lo").unwrap(),
    );
    assert!(
        b_lo <= a_hi,
        "the intervals overlap: B from {b_lo}, A up to {a_hi}"
    );
    for (v, best, tied, pick) in [
        ("A", 0.0, 1.0, 1.0),
        ("B", 1.0, 0.0, 0.0),
        ("original", 0.0, 0.0, 0.0),
    ] {
        assert_eq!(r.get(v, "verdict_best"), Some(best), "{v}");
        assert_eq!(r.get(v, "verdict_tied"), Some(tied), "{v}");
        assert_eq!(r.get(v, "verdict_pick"), Some(pick), "{v}");
    }
    let md = markdown(&r, &options());
    let t = ties_paragraph(&md);
    assert!(t.contains("**B** (Score 0.755 ["), "{t}");
    assert!(t.contains("overlaps that of A (Score 0.750 ["), "{t}");
    assert!(
        t.contains("no winner by Score") && t.contains("the tie rule's: **A**"),
        "{t}"
    );
    assert!(t.contains(TIE_RULE), "{t}");
    assert!(!t.contains("original"), "the base is apart from both: {t}");
    assert!(!md.contains("wins by more than its interval"), "{md}");
    assert!(
        md.contains("competition proxy") && md.contains(": **A**, Score 0.750 ["),
        "{md}"
    );
    assert!(
        md.contains("the tie rule's pick among 2 variants whose intervals overlap the best's"),
        "{md}"
    );
}

#[test]
fn a_single_winner_only_when_no_interval_overlaps() {
    // C: Score 0.895, far above A's 0.750
    let (r, rec) = study(&[("A", 0.0, 50.0), ("C", 0.01, 20.0)]);
    let rec = rec.unwrap();
    assert_eq!(
        (rec.best.as_str(), rec.pick.as_str(), rec.clear),
        ("C", "C", true)
    );
    assert!(rec.tied.is_empty());
    let md = markdown(&r, &options());
    let t = ties_paragraph(&md);
    assert!(t.starts_with("**Ties.** None: **C** (Score 0.895 ["), "{t}");
    assert!(
        t.contains("wins by more than its interval") && t.contains(TIE_RULE),
        "{t}"
    );
    assert!(!t.contains("A (Score"), "{t}");
    assert!(
        md.contains(": **C**, Score 0.895 [")
            && md.contains("a winner by more than its 95% interval")
    );
    // the tables carry the intervals
    let score = |v: &str| {
        format!(
            "{:.3} [{:.3}, {:.3}]",
            r.get(v, "score").unwrap(),
            r.get(v, "score_lo").unwrap(),
            r.get(v, "score_hi").unwrap()
        )
    };
    assert!(md.contains(&format!("| {} |", score("C"))), "{md}");
    assert!(md.contains("### Paired with the base"), "{md}");
    assert!(
        md.contains("| 0.500 [0.500, 0.500] |"),
        "the base scores 0.5 exactly: {md}"
    );
    // the Score chart draws each interval as an error bar covering its wider side
    let all = charts(&r, &options());
    let chart = &all
        .iter()
        .find(|c| c.0 == "score.png")
        .expect("a score chart")
        .1;
    let Chart::Bars(c) = chart else {
        panic!("the score chart is not bars")
    };
    for b in &c.bars {
        let (s, lo, hi) = (
            r.get(&b.label, "score").unwrap(),
            r.get(&b.label, "score_lo").unwrap(),
            r.get(&b.label, "score_hi").unwrap(),
        );
        assert_eq!(b.err, Some((s - lo).max(hi - s)), "{}", b.label);
    }
    chart.rgb().unwrap();
}

#[test]
fn the_rows_are_the_paired_statistics() {
    let (r, _) = study(&[("A", 0.05, 50.0)]);
    let base = windows(5, &[64; 8]);
    let p = ppl_paired(&base, &base).unwrap();
    assert_eq!(r.get("original", "ppl_ratio"), Some(p.ratio.value));
    // A against the base, recomputed from the rows' inputs
    let ratio = r.get("A", "test_ppl").unwrap() / r.get("original", "test_ppl").unwrap();
    assert!(rel_close(r.get("A", "ppl_ratio").unwrap(), ratio, 1e-9));
    let (lo, hi) = (
        r.get("A", "perf_norm_lo").unwrap(),
        r.get("A", "perf_norm_hi").unwrap(),
    );
    let pn = r.get("A", "perf_norm").unwrap();
    assert!(
        lo < pn && pn < hi && rel_close(pn, (-0.05f64).exp(), 1e-6),
        "{lo} {pn} {hi}"
    );
    assert!(r.spread("A", "perf_norm").unwrap() > 0.0);
    // Score's interval is PerfNorm's halved (SpeedNorm exact)
    let s = r.get("A", "score").unwrap();
    assert!(rel_close(
        s - r.get("A", "score_lo").unwrap(),
        0.5 * (pn - lo),
        1e-9
    ));
    // MC: base right on 4 of 6; A loses none and gains item 4 → b = 0, c = 1
    assert_eq!(r.get("A", "mc_base_only"), Some(0.0));
    assert_eq!(r.get("A", "mc_variant_only"), Some(1.0));
    assert_eq!(r.get("A", "mc_mcnemar_p"), Some(mcnemar(0, 1).exact));
    assert_eq!(r.get("A", "mc_mcnemar_mid_p"), Some(mcnemar(0, 1).mid_p));
    assert!(rel_close(
        r.get("A", "mc_acc_diff").unwrap(),
        1.0 / 6.0,
        1e-12
    ));
    assert!(r.get("A", "mc_perf_norm").is_some());
    // generation-scored items paired the same way: base right on 3 of 4, A loses item 0
    assert_eq!(r.get("A", "genmc_base_only"), Some(1.0));
    assert_eq!(r.get("A", "genmc_variant_only"), Some(0.0));
    assert_eq!(r.get("A", "genmc_mcnemar_p"), Some(mcnemar(1, 0).exact));
    assert!(rel_close(
        r.get("A", "genmc_acc_diff").unwrap(),
        -0.25,
        1e-12
    ));
    assert!(r.get("A", "genmc_acc_diff_lo").unwrap() < -0.25);
}

#[test]
fn what_the_data_cannot_support_is_left_out() {
    let base = PerToken {
        nll: windows(7, &[32, 32]),
        mc_right: vec![false; 4],
        gen_right: vec![],
    };
    let mut bad = base.clone();
    bad.nll[1][3] = f32::NAN;
    bad.mc_right = vec![true, false, false, false];
    let mut r = Results::new("t", "cpu (F32)", "m");
    let v = Variant::new("broken", "m", json!({}));
    add_paired(&mut r, &v, &base, &bad, &[vec![0.1; 4]]);
    // a NaN NLL: no ratio; one KL sequence: no clustered interval; a base with nothing right:
    // the difference but no accuracy ratio
    for m in ["ppl_ratio", "perf_norm_lo", "kl_mean_lo", "mc_perf_norm"] {
        assert!(r.get("broken", m).is_none(), "{m}");
    }
    assert_eq!(r.get("broken", "mc_variant_only"), Some(1.0));
    // results with no paired rows (older files): the point Score, no verdict, no Ties
    let mut old = Results::new("t", "cpu (F32)", "m");
    for (name, ppl, mb) in [("original", 30.0, 100.0), ("q", 31.0, 40.0)] {
        let v = Variant::new(name, "m", json!({}));
        old.add(&v, "test_ppl", ppl, Some(1.0), "");
        old.add(&v, "weight_mb_per_token", mb, None, "MB");
    }
    assert!(add_scores(&mut old, "original").is_none());
    assert!(old.get("q", "score").is_some() && old.get("q", "score_lo").is_none());
    assert!(old.get("q", "verdict_pick").is_none());
    let md = markdown(&old, &options());
    assert!(
        md.contains("(a point estimate: these results carry no interval)"),
        "{md}"
    );
    assert!(!md.contains("**Ties.**") && !md.contains("### Paired with the base"));
}

/// The report states the rule `recommend` applies (it cannot import it: report sits below eval).
#[test]
fn the_report_states_the_rule_recommend_applies() {
    assert_eq!(exaone_compress::report::study::TIE_RULE, TIE_RULE);
}

/// The default model and a suite on it: `test_tokens` of the test split in windows of 128, two
/// KL sequences of 32 validation tokens.
fn default_suite(test_tokens: usize) -> (exaone_compress::Exaone4, Suite) {
    let dir = default_model_dir();
    let base = exaone_compress::checkpoint::load_model(&dir, DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let eos = tok.token_id("[|endofturn|]").unwrap();
    let stream = |s: &str| {
        TokenStream::from_lines(&tok, &read_documents(&split_path(s)).unwrap(), Some(eos)).unwrap()
    };
    let mut test = stream("test");
    test.ids.truncate(test_tokens);
    let kl = samples(&stream("val"), 2, 32, 1).unwrap();
    let mut suite = Suite::new(tok, test, kl);
    suite.ppl_window = 128;
    (base, suite)
}

/// A suite measuring a variant before the base pairs it with the base measured once, on the
/// default model: the base copied under another name has ratio 1 with no spread and no
/// discordant item.
#[test]
fn a_variant_before_the_base_is_paired_with_the_base() {
    let (base, mut suite) = default_suite(300);
    let mut mc = load_kmmlu(
        &exaone_compress::data::data_dir().join("benchmarks/kmmlu_criminal_law_test.json"),
        "kmmlu",
    )
    .unwrap();
    mc.truncate(3);
    suite.mc_items = mc;
    let mut r = Results::new("t", "cpu (F32)", "data/default-model");
    let stored = Stored {
        size_bytes: 0,
        weight_bytes: 1.0,
        checkpoint: None,
    };
    let copy = Variant::new("copy", "none", json!({}));
    suite
        .evaluate(&mut r, &copy, &base, &base.share(), &stored)
        .unwrap();
    assert!(suite.base_per_token.get().is_some());
    assert_eq!(r.get("copy", "ppl_ratio"), Some(1.0));
    assert_eq!(r.spread("copy", "ppl_ratio"), Some(0.0));
    assert_eq!(r.get("copy", "mc_acc_diff"), Some(0.0));
    suite
        .evaluate(&mut r, &Variant::original(), &base, &base, &stored)
        .unwrap();
    assert_eq!(r.get("original", "ppl_ratio"), Some(1.0));
    // 300 tokens in windows of 128 advancing by 64: 127 + 64 + 64 + 44 tokens scored
    let kept = suite.base_per_token.get().unwrap();
    let lens: Vec<usize> = kept.nll.iter().map(Vec::len).collect();
    assert_eq!(lens, [127, 64, 64, 44]);
    assert_eq!(kept.mc_right.len(), 3);
}

/// The generation-scored pass of a variant is skipped when the base answered no item in the
/// extractable form (the default model never does: a column the base cannot score ranks
/// nothing), and the base's own pass is kept and recorded.
#[test]
fn a_generation_pass_the_base_cannot_answer_is_skipped_for_variants() {
    use exaone_compress::eval::generated::{template_and_stops, GenMcOptions};
    use exaone_compress::study::suite::GenMcSuite;
    let (base, mut suite) = default_suite(200);
    let (template, stop_ids) = template_and_stops(&default_model_dir(), &suite.tokenizer).unwrap();
    suite.gen_mc = Some(GenMcSuite {
        items: exaone_compress::study::serving::korean_mc_items(6).unwrap(),
        template,
        opts: GenMcOptions {
            max_new_tokens: 8,
            stop_ids,
        },
        samples: None,
    });
    let mut r = Results::new("t", "cpu (F32)", "data/default-model");
    let stored = Stored {
        size_bytes: 0,
        weight_bytes: 1.0,
        checkpoint: None,
    };
    suite
        .evaluate(&mut r, &Variant::original(), &base, &base, &stored)
        .unwrap();
    assert_eq!(suite.base_gen_answered.get(), Some(&0));
    assert_eq!(r.get("original", "genmc_no_answer"), Some(1.0));
    let pruned = base.with_layers(&[0, 1, 2, 3, 4, 5, 6, 7, 9]).unwrap();
    let v = Variant::new("pruned", "drop[8]", json!({}));
    suite.evaluate(&mut r, &v, &base, &pruned, &stored).unwrap();
    assert!(r.get("pruned", "test_ppl").is_some());
    assert_eq!(r.get("pruned", "genmc_acc"), None);
    assert_eq!(r.get("pruned", "genmc_acc_diff"), None);
    // the report says why the column is empty
    let md = markdown(&r, &options());
    assert!(
        md.contains("The other variants' passes were skipped"),
        "{md}"
    );
}

/// The legacy prompts are rendered with the suite's chat template (the base's own, where the
/// study sets it), not a format of ours: a template that raises is what the evaluation meets.
#[test]
fn legacy_prompts_are_rendered_with_the_suites_chat_template() {
    use exaone_compress::model::chat_template::ChatTemplate;
    let (base, mut suite) = default_suite(200);
    suite.legacy_prompts = vec!["안녕하세요".into()];
    suite.legacy_new_tokens = 4;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("chat_template.jinja"),
        "{{ raise_exception('the test template saw: ' ~ messages[0]['content']) }}",
    )
    .unwrap();
    suite.template = ChatTemplate::from_dir(tmp.path()).unwrap();
    let stored = Stored {
        size_bytes: 0,
        weight_bytes: 1.0,
        checkpoint: None,
    };
    let mut r = Results::new("t", "cpu (F32)", "data/default-model");
    let e = suite
        .evaluate(&mut r, &Variant::original(), &base, &base, &stored)
        .unwrap_err();
    assert!(
        e.to_string().contains("the test template saw: 안녕하세요"),
        "{e}"
    );
    // the default model's own template renders them
    let (own, _) = exaone_compress::eval::generated::template_and_stops(
        &default_model_dir(),
        &suite.tokenizer,
    )
    .unwrap();
    suite.template = own;
    let mut r = Results::new("t", "cpu (F32)", "data/default-model");
    suite
        .evaluate(&mut r, &Variant::original(), &base, &base, &stored)
        .unwrap();
    assert_eq!(r.get("original", "legacy_exact_match"), Some(1.0));
}
