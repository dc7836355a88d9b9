//! The studies' and benchmarks' flags: contradictions, counts and words refused when the
//! command line is read, before any work.

use super::*;

#[test]
fn study_flags_that_contradict_each_other_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let study = |bin: &str, args: &[&str]| {
        let o = Command::new(bin).args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let ec = env!("CARGO_BIN_EXE_eight_cases");
    let e = study(ec, &["--resume", "--overwrite", "--out", s(&out)]);
    assert!(e.contains("cannot be used with"), "{e}");
    let ck = tmp.path().join("ck");
    let e = study(
        ec,
        &["--checkpoints", s(&ck), "--keep", "none", "--out", s(&out)],
    );
    assert!(e.contains("--keep none"), "{e}");
    assert!(!ck.exists());
    let model = exaone_compress::default_model_dir();
    let v = format!("a={}", s(&model));
    let cmp = env!("CARGO_BIN_EXE_compare");
    let e = study(cmp, &["--variant", &v, "--variant", &v, "--out", s(&out)]);
    assert!(e.contains("the name \"a\" is taken"), "{e}");
    let base = format!("original={}", s(&model));
    let e = study(cmp, &["--variant", &base, "--out", s(&out)]);
    assert!(e.contains("is taken"), "{e}");
    let missing = format!("a={}", s(&tmp.path().join("nowhere")));
    let e = study(cmp, &["--variant", &missing, "--out", s(&out)]);
    assert!(e.contains("nowhere"), "{e}");
    let e = study(ec, &["--drop-layers", "0", "--out", s(&out)]);
    assert!(e.contains("--drop-layers"), "{e}");
    let e = study(ec, &["--drop-layers", "99", "--out", s(&out)]);
    assert!(e.contains("drop at most"), "{e}");
    // the benchmarks' counts and points, refused when read (one panicked, one became 1x512)
    let br = env!("CARGO_BIN_EXE_bench_runtime");
    for (flag, v) in [
        ("--repeats", "0"),
        ("--prefill", "8x"),
        ("--prompt-len", "0"),
    ] {
        let e = study(br, &[flag, v, "--out", s(&out)]);
        assert!(e.contains(flag) && e.contains("at least 1"), "{e}");
    }
    // the studies' counts and words, refused when read, before the model loads
    for (flag, v, want) in [
        ("--calib-samples", "0", "at least 1"),
        ("--calib-len", "0", "at least 1"),
        ("--kl-sequences", "0", "at least 1"),
        ("--eval-tokens", "1", "at least 2"),
        ("--device", "gpu", "allowed: cpu, cuda"),
        ("--dtype", "f8", "allowed: auto, f32"),
    ] {
        // clap's "invalid value", not the study's own error after loading the model
        let e = study(ec, &[flag, v, "--out", s(&out)]);
        assert!(e.contains(flag) && e.contains(want), "{e}");
        assert!(e.contains("invalid value"), "{e}");
    }
    for bin in [br, env!("CARGO_BIN_EXE_serve_bench")] {
        let e = study(bin, &["--device", "tpu", "--out", s(&out)]);
        assert!(e.contains("--device") && e.contains("allowed"), "{e}");
    }
    // the GEMM sweep's parts: each only with --gemm-sweep, one at a time, and off CUDA an error
    let e = study(br, &["--w8a8-only", "--out", s(&out)]);
    assert!(e.contains("--gemm-sweep"), "{e}");
    for other in ["--w4-only", "--checks-only"] {
        let e = study(
            br,
            &["--gemm-sweep", "--w8a8-only", other, "--out", s(&out)],
        );
        assert!(e.contains("cannot be used with"), "{e}");
    }
    let e = study(br, &["--gemm-sweep", "--w8a8-only", "--out", s(&out)]);
    assert!(e.contains("needs a CUDA build and --device cuda"), "{e}");
    // and their reports never replace what is at --out without --overwrite
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("README.md"), "precious").unwrap();
    let sb = env!("CARGO_BIN_EXE_serve_bench");
    for bin in [br, sb] {
        let o = Command::new(bin)
            .args(["--out", s(&mine)])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(e.contains("not a report"), "{e}");
    }
    assert_eq!(
        std::fs::read_to_string(mine.join("README.md")).unwrap(),
        "precious"
    );
    let wl = mine.join("README.md");
    let e = study(sb, &["--write-workload", s(&wl)]);
    assert!(e.contains("already exists") || e.contains("exists"), "{e}");
    assert_eq!(std::fs::read_to_string(&wl).unwrap(), "precious");
    // nor the answers an earlier run wrote, and a folder for answers needs answers to write
    let answers = mine.join("gen_mc-bf16.jsonl");
    std::fs::write(&answers, "earlier").unwrap();
    for (extra, want) in [(None, "--gen-mc N"), (Some("4"), "--overwrite")] {
        let mut args = vec!["--out", s(&out), "--gen-mc-samples", s(&mine)];
        args.extend(extra.map(|n| ["--gen-mc", n]).iter().flatten());
        let e = study(sb, &args);
        assert!(e.contains("--gen-mc-samples") && e.contains(want), "{e}");
    }
    assert_eq!(std::fs::read_to_string(&answers).unwrap(), "earlier");
}
