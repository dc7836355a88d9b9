//! Studies keep what matters: variants made by recipes, results and report saved after each
//! variant, the kept checkpoints each with a recipe that `apply` turns back into the same
//! checkpoint bit for bit (the report's rebuild command), and `--resume` measuring only what
//! changed.

use std::path::Path;

use clap::Parser;
use exaone_compress::compress::prune::DropRule;
use exaone_compress::compress::recipe::{
    ApplyOptions, Check, Ctx, DistillStep, ModelRef, PruneStep, QuantizeStep, Quantizer, Recipe,
    SchemeName, Step,
};
use exaone_compress::record::{Results, Variant};
use exaone_compress::study::{Keep, Study, StudyArgs};
use exaone_compress::Checkpoint;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    study: StudyArgs,
}

fn study(out: &Path, extra: &[&str]) -> Study {
    let small = [
        "test",
        "--out",
        out.to_str().unwrap(),
        "--eval-tokens",
        "256",
        "--kl-sequences",
        "2",
        "--mc-items",
        "2",
        "--speed-repeats",
        "0",
        "--calib-samples",
        "2",
        "--calib-len",
        "32",
    ];
    let a = Args::try_parse_from(small.iter().chain(extra)).unwrap();
    Study::load("keep_test", a.study).unwrap()
}

fn rtn(scheme: SchemeName) -> Step {
    Step::Quantize(QuantizeStep {
        scheme,
        group: scheme.grouped().then_some(128),
        ignore: vec![],
        quantizer: Quantizer::Rtn {},
    })
}

/// prune → distill (one step) → RTN W4A16, and RTN W8A8
fn variants(s: &Study, w8_group: SchemeName) -> Vec<(&'static str, Vec<Step>)> {
    let mut kd = DistillStep::new(ModelRef::of(&s.dir).unwrap(), 1, None);
    kd.seq_len = 32;
    let prune = Step::Prune(PruneStep::new(&DropRule::Explicit(vec![8])));
    vec![
        (
            "chain",
            vec![prune, Step::Distill(kd), rtn(SchemeName::W4a16)],
        ),
        ("w8", vec![rtn(w8_group)]),
    ]
}

/// Every tensor of two checkpoints the same, bit for bit.
fn same_tensors(a: &Path, b: &Path) {
    let (ca, cb) = (Checkpoint::open(a).unwrap(), Checkpoint::open(b).unwrap());
    let names: Vec<&String> = ca.names().collect();
    assert_eq!(names, cb.names().collect::<Vec<_>>());
    for n in names {
        assert_eq!(ca.info(n).unwrap().shape, cb.info(n).unwrap().shape, "{n}");
        assert!(ca.bytes(n).unwrap() == cb.bytes(n).unwrap(), "{n} differs");
    }
}

#[test]
fn a_study_keeps_its_variants_with_recipes_that_rebuild_them_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("study");
    let mut s = study(&out, &["--keep", "all"]);
    assert_eq!(s.keep, Keep::All);
    let base = s.base.share();
    // rows about the base recorded before it is measured, as eight_cases records its drop-one KL
    s.record_per_layer("drop_one_kl", &[0.25, 0.5], "nats");
    s.measure(&Variant::original(), &base).unwrap();
    // saved after each variant: results and a report marked partial
    let r = Results::load(&out.join("results.parquet")).unwrap();
    assert_eq!(r.variants(), ["original"]);
    let md = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(md.contains("(partial)") && md.contains("--resume"), "{md}");
    for (name, steps) in variants(&s, SchemeName::W8a8) {
        s.measure_recipe(name, steps).unwrap();
        let r = Results::load(&out.join("results.parquet")).unwrap();
        assert!(r.get(name, "test_ppl").is_some(), "{name} saved");
    }
    s.finish("Keep test", vec![], &[]).unwrap();
    let r = Results::load(&out.join("results.parquet")).unwrap();
    let md = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(!md.contains("(partial)"));
    assert!(md.contains("## Checkpoints kept"), "{md}");
    let dir = out.join("checkpoints/chain");
    let recipe_path = dir.join("recipe.json");
    assert!(recipe_path.is_file() && out.join("checkpoints/w8/recipe.json").is_file());
    // what was measured is what was kept: the recorded result is the kept directory
    let id = exaone_compress::compress::recipe::ModelId::of(&dir).unwrap();
    let v = r.variant("chain").unwrap();
    assert_eq!(v.params["result"]["weights_hash"], id.weights_hash.as_str());
    assert!(
        v.method.contains("kd[norms]") && v.method.contains("rtn W4A16"),
        "{}",
        v.method
    );
    // the recommended variant's rebuild command, beside the recommendation
    let pick = r
        .variants()
        .into_iter()
        .find(|v| r.get(v, "verdict_pick") == Some(1.0))
        .unwrap();
    let cmd = exaone_compress::report::study::rebuild_command(&r).unwrap();
    assert!(
        cmd.starts_with("exaone-compress apply --recipe ")
            && cmd.contains(&format!("checkpoints/{pick}/recipe.json"))
            // the base is the shipped default model, `apply`'s default: no `--model`, whose
            // `data/…` role would hold only in the repository
            && cmd.ends_with(" --out DIR")
            && !cmd.contains("--model"),
        "{cmd}"
    );
    assert!(md.contains(&format!("`{cmd}`")), "{md}");
    // the results are committed with the report: they name no path of this machine
    let cwd = std::env::current_dir().unwrap().display().to_string();
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(!csv.contains(&format!("{cwd}/")), "{cwd} in results.csv");
    // the recipe, applied by the library, rebuilds the kept checkpoint bit for bit
    let recipe = Recipe::read(&recipe_path).unwrap();
    let mut ctx = Ctx::new("cpu", Check::Record).unwrap();
    let rebuilt = tmp.path().join("rebuilt");
    let done = recipe
        .apply(&s_dir(), &rebuilt, &mut ctx, &ApplyOptions::default())
        .unwrap();
    assert_eq!(done.bit_exact, Some(true));
    same_tensors(&dir, &rebuilt);

    // --resume: nothing changed, nothing measured again; a changed recipe is measured again
    let mut s = study(&out, &["--resume", "--keep", "none"]);
    let base = s.base.share();
    s.record_per_layer("drop_one_kl", &[0.25, 0.5], "nats");
    s.measure(&Variant::original(), &base).unwrap();
    let vs = variants(&s, SchemeName::Fp8);
    s.measure_recipe(vs[0].0, vs[0].1.clone()).unwrap();
    s.measure_recipe(vs[1].0, vs[1].1.clone()).unwrap();
    let built: Vec<&str> = s
        .stages_run()
        .filter(|w| w.starts_with("build ") || w.starts_with("measure "))
        .collect();
    // the base resumed too, though rows recorded before its measurement lack its hashes
    assert_eq!(built, ["build w8", "measure w8"]);
    s.finish("Keep test", vec![], &[]).unwrap();
    let again = Results::load(&out.join("results.parquet")).unwrap();
    for m in ["test_ppl", "kl_mean", "score"] {
        assert_eq!(again.get("chain", m), r.get("chain", m), "{m}");
    }
    // each of the base's rows once: the carried-over measurement and the per-layer rows
    // recorded again
    let base_rows = |r: &Results| r.rows.iter().filter(|x| x.variant == "original").count();
    assert_eq!(base_rows(&again), base_rows(&r));
    assert_eq!(again.get("original", "drop_one_kl_layer_1"), Some(0.5));
    assert!(again.method_of("w8").contains("FP8"));
    // --keep none: what an earlier run kept stays (it may be what the user meant to submit)
    // until a run with --overwrite that keeps something else
    assert!(out
        .join("checkpoints")
        .join("chain")
        .join("recipe.json")
        .is_file());
    let mut s = study(&out, &["--overwrite", "--keep", "none"]);
    let base = s.base.share();
    s.measure(&Variant::original(), &base).unwrap();
    s.finish("Keep test", vec![], &[]).unwrap();
    assert!(!out.join("checkpoints").exists());
}

fn s_dir() -> std::path::PathBuf {
    exaone_compress::default_model_dir()
}

/// The base, the base distilled towards itself (which writes it unchanged: eight_cases'
/// "distilled") and RTN `w8` of `scheme`, measured and finished in a study at `out` with `extra`
/// flags; the stages measured must be `measured`, and the report notes the self-distilled
/// variant's weights as the base's.
fn same_weights_study(out: &Path, extra: &[&str], scheme: SchemeName, measured: &[&str]) {
    let mut s = study(out, extra);
    let base = s.base.share();
    s.measure(&Variant::original(), &base).unwrap();
    let mut kd = DistillStep::new(ModelRef::of(&s.dir).unwrap(), 1, None);
    kd.seq_len = 32;
    s.measure_recipe("self-distilled", vec![Step::Distill(kd)])
        .unwrap();
    s.measure_recipe("w8", vec![rtn(scheme)]).unwrap();
    let got: Vec<&str> = s
        .stages_run()
        .filter(|w| w.starts_with("measure "))
        .collect();
    assert_eq!(got, measured);
    let notes = s.report_options("t", vec![]).notes;
    assert!(
        notes.iter().any(|n| n.starts_with("self-distilled: its recipe wrote the same weights as original")),
        "{notes:?}"
    );
    s.finish("Same weights test", vec![], &[]).unwrap();
}

#[test]
fn a_variant_with_the_base_s_weights_is_not_measured_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("study");
    // a different model is measured as usual
    same_weights_study(
        &out,
        &["--keep", "none"],
        SchemeName::W8a8,
        &["measure original", "measure w8"],
    );
    let r = Results::load(&out.join("results.parquet")).unwrap();
    for m in [
        "test_ppl",
        "kl_mean",
        "layers",
        "weight_mb_per_token",
        "score",
    ] {
        assert!(r.get("original", m).is_some(), "{m}");
        assert_eq!(r.get("self-distilled", m), r.get("original", m), "{m}");
    }
    assert!(r.get("self-distilled", "size_mib").is_some());
    // its rows are its own variant's: the recipe's method and parameters
    let v = r.variant("self-distilled").unwrap();
    assert!(v.method.contains("kd"), "{}", v.method);
    assert!(v.params["result"]["weights_hash"].is_string());
    assert_ne!(r.get("w8", "test_ppl"), r.get("original", "test_ppl"));

    // --resume with w8's recipe changed: the carried self-distilled keeps its note, and w8, the
    // first variant this run measures, gets a generation pass only if the base answered any
    // item (the base's per-item results, not carried over, are measured before w8's pass)
    let base_silent = r.get("original", "genmc_no_answer") == Some(1.0);
    assert_eq!(r.get("w8", "genmc_acc").is_some(), !base_silent);
    same_weights_study(
        &out,
        &["--keep", "none", "--resume"],
        SchemeName::Fp8,
        &["measure w8"],
    );
    let again = Results::load(&out.join("results.parquet")).unwrap();
    assert!(again.method_of("w8").contains("FP8"));
    assert_eq!(again.get("w8", "genmc_acc").is_some(), !base_silent);
    let log = std::fs::read_to_string(out.join("log.txt")).unwrap();
    assert!(log.contains("resumed self-distilled"), "{log}");
}

#[test]
fn a_random_weight_study_recommends_and_so_keeps_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("study");
    let mut s = study(&out, &["--random-weights"]);
    assert_eq!(s.keep, Keep::Recommended);
    let base = s.base.share();
    s.measure(&Variant::original(), &base).unwrap();
    s.measure_recipe("w8", vec![rtn(SchemeName::W8a8)]).unwrap();
    s.finish("Random weights", vec![], &[]).unwrap();
    let r = Results::load(&out.join("results.parquet")).unwrap();
    let kept = exaone_compress::report::study::KEPT_METRIC;
    assert!(
        r.rows.iter().all(|x| x.metric != kept),
        "a checkpoint was kept"
    );
    let ck = out.join("checkpoints");
    assert!(!ck.exists() || std::fs::read_dir(&ck).unwrap().next().is_none());
    let md = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(md.contains("- None: with random weights"), "{md}");
    assert!(!md.contains("rebuild it from the base"), "{md}");
}
