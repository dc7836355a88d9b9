//! Recipes: every checkpoint the CLI writes carries a recipe.json with every parameter, and
//! `apply` rebuilds the checkpoint from it bit for bit; a recipe that was tampered with, or a
//! different base model, fails with a message that says so; `apply` never replaces what is at
//! --out without --overwrite; `distill` writes a loadable student with its recipe.

use std::path::{Path, PathBuf};
use std::process::Command;

use exaone_compress::compress::recipe::{
    hash_bytes, ignore_matches, parse_rule, rule_word, ModelId,
};
use exaone_compress::Checkpoint;
use serde_json::Value;

#[path = "recipe/prune_stored.rs"]
mod prune_stored;

struct Out {
    ok: bool,
    stderr: String,
}

fn cli_in(dir: Option<&Path>, args: &[&str]) -> Out {
    let mut c = Command::new(env!("CARGO_BIN_EXE_exaone-compress"));
    c.args(args).env("RUST_BACKTRACE", "0");
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let o = c.output().unwrap();
    Out {
        ok: o.status.success(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn cli(args: &[&str]) -> Out {
    cli_in(None, args)
}

fn succeeds(args: &[&str]) -> String {
    let o = cli(args);
    assert!(o.ok, "{args:?} failed:\n{}", o.stderr);
    o.stderr
}

/// Fails with exit status 1 and every `want` in the message.
fn fails(args: &[&str], want: &[&str]) -> String {
    let o = cli(args);
    assert!(!o.ok, "{args:?} should fail:\n{}", o.stderr);
    for w in want {
        assert!(o.stderr.contains(w), "{args:?}: no {w:?} in:\n{}", o.stderr);
    }
    o.stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn recipe(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("recipe.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every tensor of two checkpoints the same, bit for bit (names, dtypes, shapes, bytes), and
/// the configs equal.
fn same_checkpoint(a: &Path, b: &Path) {
    let (ca, cb) = (Checkpoint::open(a).unwrap(), Checkpoint::open(b).unwrap());
    let names: Vec<&String> = ca.names().collect();
    assert_eq!(names, cb.names().collect::<Vec<_>>());
    assert!(names.len() > 10);
    for n in names {
        let (ia, ib) = (ca.info(n).unwrap(), cb.info(n).unwrap());
        assert_eq!(format!("{:?}", ia.dtype), format!("{:?}", ib.dtype), "{n}");
        assert_eq!(ia.shape, ib.shape, "{n}");
        assert!(ca.bytes(n).unwrap() == cb.bytes(n).unwrap(), "{n} differs");
    }
    let cfg = |d: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap()
    };
    assert_eq!(cfg(a), cfg(b));
}

/// A recipe names no path of this machine: no absolute path anywhere in it.
fn no_absolute_paths(r: &Value, tmp: &Path) {
    let text = r.to_string();
    assert!(!text.contains(s(tmp)), "{text}");
    assert!(!text.contains(env!("CARGO_MANIFEST_DIR")), "{text}");
    assert!(!text.contains("\"path\":\"/"), "{text}");
}

fn default_model() -> PathBuf {
    exaone_compress::default_model_dir()
}

#[test]
fn quantize_then_apply_rebuilds_every_tensor_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = ModelId::of(&default_model()).unwrap();
    let train = std::fs::read(exaone_compress::data::split_path("train")).unwrap();
    // RTN
    let rtn = t.join("rtn");
    succeeds(&[
        "quantize",
        "--scheme",
        "w4a16-asym",
        "--group",
        "64",
        "--out",
        s(&rtn),
    ]);
    let r = recipe(&rtn);
    assert_eq!(r["format"], "exaone-compress recipe 1");
    assert_eq!(r["tool"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(!r["tool"]["commit"].as_str().unwrap().is_empty());
    assert_eq!(r["base"]["model"]["role"], "default-model");
    assert_eq!(r["base"]["weights_hash"], base.weights_hash.as_str());
    assert_eq!(r["base"]["config_hash"], base.config_hash.as_str());
    assert_eq!(
        (r["device"].as_str(), r["dtype"].as_str()),
        (Some("cpu"), Some("f32"))
    );
    let step = &r["steps"][0];
    assert_eq!(step["step"], "quantize");
    assert_eq!(step["scheme"], "w4a16-asym");
    assert_eq!(step["group"], 64);
    assert_eq!(step["quantizer"], serde_json::json!({"method": "rtn"}));
    assert_eq!(
        r["result"]["weights_hash"],
        ModelId::of(&rtn).unwrap().weights_hash.as_str()
    );
    no_absolute_paths(&r, t);
    // GPTQ with every setting given, on a calibration file named relative to the working
    // directory
    let calib = t.join("calib.txt");
    let lines: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "line {i}: the quick brown fox jumps over the lazy dog, {}",
                i * 7
            )
        })
        .collect();
    std::fs::write(&calib, lines.join("\n")).unwrap();
    let gptq = t.join("gptq");
    let args = [
        "quantize",
        "--scheme",
        "w4a16",
        "--method",
        "gptq",
        "--damp",
        "0.02",
        "--block",
        "64",
        "--max-damp-retries",
        "2",
        "--actorder",
        "static",
        "--calib",
        "calib.txt",
        "--calib-samples",
        "6",
        "--calib-len",
        "48",
        "--calib-seed",
        "3",
        "--ignore",
        "model.layers.9.mlp.down_proj",
        "--out",
        "gptq",
    ];
    let o = cli_in(Some(t), &args);
    assert!(o.ok, "{}", o.stderr);
    let r = recipe(&gptq);
    let q = &r["steps"][0]["quantizer"];
    assert_eq!(q["method"], "gptq");
    assert_eq!(
        (
            q["damp"].as_f64(),
            q["block"].as_u64(),
            q["max_damp_retries"].as_u64()
        ),
        (Some(0.02), Some(64), Some(2))
    );
    assert_eq!(q["actorder"], "static");
    let c = &q["calibration"];
    assert_eq!(c["data"]["path"], "calib.txt");
    assert_eq!(
        c["data_hash"],
        hash_bytes(lines.join("\n").as_bytes()).as_str()
    );
    assert_eq!(
        (c["samples"].as_u64(), c["len"].as_u64(), c["seed"].as_u64()),
        (Some(6), Some(48), Some(3))
    );
    assert!(c["tokens_hash"].as_str().unwrap().starts_with("xxh64:"));
    assert_eq!(r["steps"][0]["ignore"][0], "model.layers.9.mlp.down_proj");
    no_absolute_paths(&r, t);
    let ck = Checkpoint::open(&gptq).unwrap();
    assert!(ck.contains("model.layers.9.mlp.down_proj.weight"));
    assert!(ck.contains("model.layers.9.mlp.up_proj.weight_packed"));
    // apply: the same tensors, and a recipe that says so
    for (made, again, cwd) in [
        (&rtn, t.join("rtn2"), None),
        (&gptq, t.join("gptq2"), Some(t)),
    ] {
        let rfile = made.join("recipe.json");
        let o = cli_in(cwd, &["apply", "--recipe", s(&rfile), "--out", s(&again)]);
        assert!(o.ok, "{}", o.stderr);
        assert!(
            o.stderr.contains("the recorded variant, bit for bit"),
            "{}",
            o.stderr
        );
        same_checkpoint(made, &again);
        let (a, b) = (recipe(made), recipe(&again));
        assert_eq!(a["steps"], b["steps"]);
        assert_eq!(a["result"], b["result"]);
    }
    // the default settings, as the study has always used them, land in the recipe
    let g = t.join("gptq-default");
    succeeds(&[
        "quantize",
        "--scheme",
        "w8a8",
        "--method",
        "gptq",
        "--calib-samples",
        "4",
        "--calib-len",
        "32",
        "--out",
        s(&g),
    ]);
    let q = &recipe(&g)["steps"][0];
    assert_eq!(q["group"], Value::Null);
    assert_eq!(q["quantizer"]["damp"], 0.01);
    assert_eq!(q["quantizer"]["block"], 128);
    assert_eq!(q["quantizer"]["actorder"], "none");
    assert_eq!(q["quantizer"]["calibration"]["data"]["role"], "train");
    assert_eq!(
        q["quantizer"]["calibration"]["data_hash"],
        hash_bytes(&train).as_str()
    );
}

#[test]
fn a_tampered_recipe_or_another_base_fails_clearly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let made = t.join("q");
    succeeds(&["quantize", "--scheme", "w4a16", "--out", s(&made)]);
    let text = std::fs::read_to_string(made.join("recipe.json")).unwrap();
    let out = t.join("again");
    let edited = |name: &str, f: &dyn Fn(&mut Value)| -> PathBuf {
        let mut v: Value = serde_json::from_str(&text).unwrap();
        f(&mut v);
        let p = t.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        p
    };
    let apply = |r: &Path| ["apply", "--recipe", s(r), "--out", s(&out)].map(String::from);
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (
            edited("group.json", &|v| v["steps"][0]["group"] = 64.into()),
            vec!["changed after it was written", "checksum"],
        ),
        (
            edited("step.json", &|v| v["steps"][0]["step"] = "sharpen".into()),
            vec!["unknown variant `sharpen`", "prune", "quantize"],
        ),
        (
            edited("missing.json", &|v| {
                v["steps"][0].as_object_mut().unwrap().remove("ignore");
            }),
            vec!["missing field `ignore`"],
        ),
        (
            edited("unknown.json", &|v| v["steps"][0]["colour"] = "red".into()),
            vec!["unknown field `colour`"],
        ),
        (
            edited("group0.json", &|v| {
                v["steps"][0]["group"] = 0.into();
                v.as_object_mut().unwrap().remove("checksum");
            }),
            vec!["group 0: must be at least 1"],
        ),
        (
            edited("dtype.json", &|v| {
                v["dtype"] = "f8".into();
                v.as_object_mut().unwrap().remove("checksum");
            }),
            vec!["dtype \"f8\"", "f32, bf16 or f16"],
        ),
        (
            edited("method.json", &|v| {
                v["steps"][0]["quantizer"] = serde_json::json!({"method": "awq"});
                v.as_object_mut().unwrap().remove("checksum");
            }),
            vec!["missing field `grid`"],
        ),
        (
            edited("range.json", &|v| {
                v["steps"][0]["quantizer"] = serde_json::json!({"method": "gptq", "damp": 3.0,
                    "block": 128, "max_damp_retries": 4, "actorder": "none", "calibration": {
                    "data": {"role": "train"}, "data_hash": "", "samples": 1, "len": 8,
                    "chat": false, "seed": 0, "tokens_hash": ""}});
                v.as_object_mut().unwrap().remove("checksum");
            }),
            vec!["damp 3: must lie in 0..=1"],
        ),
        (
            edited("len.json", &|v| {
                let train = std::fs::read(exaone_compress::data::split_path("train")).unwrap();
                let hash = hash_bytes(&train).as_str().to_string();
                v["steps"][0]["quantizer"] = serde_json::json!({"method": "gptq", "damp": 0.01,
                    "block": 128, "max_damp_retries": 4, "actorder": "none", "calibration": {
                    "data": {"role": "train"}, "data_hash": hash, "samples": 2, "len": 1 << 24,
                    "chat": false, "seed": 0, "tokens_hash": ""}});
                v.as_object_mut().unwrap().remove("checksum");
            }),
            // the recipe's fields, not flags `apply` does not have
            vec!["the recipe's calibration samples × len: 2 samples of 16777216 tokens"],
        ),
    ];
    for (r, want) in &cases {
        let a = apply(r);
        fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), want);
        assert!(!out.exists());
    }
    // another base model: its hashes differ from the recipe's
    let pruned = t.join("pruned");
    succeeds(&["prune", "--drop", "2", "--out", s(&pruned)]);
    let rfile = made.join("recipe.json");
    let e = fails(
        &[
            "apply",
            "--recipe",
            s(&rfile),
            "--model",
            s(&pruned),
            "--out",
            s(&out),
        ],
        &["is not the recipe's", "--allow-mismatch"],
    );
    assert!(
        e.contains(&ModelId::of(&pruned).unwrap().weights_hash),
        "{e}"
    );
    assert!(!out.exists());
    // ... unless the user accepts it: then the result is a new variant, recorded as such
    let e = succeeds(&[
        "apply",
        "--recipe",
        s(&rfile),
        "--model",
        s(&pruned),
        "--allow-mismatch",
        "--out",
        s(&out),
    ]);
    assert!(
        e.contains("warning") && e.contains("NOT the recorded variant"),
        "{e}"
    );
    let r = recipe(&out);
    assert_eq!(
        r["base"]["weights_hash"],
        ModelId::of(&pruned).unwrap().weights_hash.as_str()
    );
    // data that changed since: its hash no longer matches
    let calib = t.join("calib.txt");
    std::fs::write(
        &calib,
        "one line of calibration text, repeated. ".repeat(400),
    )
    .unwrap();
    let g = t.join("g");
    succeeds(&[
        "quantize",
        "--scheme",
        "w4a16",
        "--method",
        "gptq",
        "--calib",
        s(&calib),
        "--calib-samples",
        "2",
        "--calib-len",
        "16",
        "--out",
        s(&g),
    ]);
    std::fs::write(&calib, "other text entirely, repeated. ".repeat(400)).unwrap();
    let g2 = t.join("g2");
    fails(
        &[
            "apply",
            "--recipe",
            s(&g.join("recipe.json")),
            "--out",
            s(&g2),
        ],
        &["calibration data", "hashes to", "--allow-mismatch"],
    );
    assert!(!g2.exists());
    // an edit made on purpose (the checksum deleted) applies, as a new variant
    let on_purpose = edited("on-purpose.json", &|v| {
        v["steps"][0]["group"] = 7.into();
        v.as_object_mut().unwrap().remove("checksum");
    });
    let o2 = t.join("g7");
    let err = succeeds(&["apply", "--recipe", s(&on_purpose), "--out", s(&o2)]);
    // said before the work, as `quantize --group 7` says it
    assert!(
        err.contains("step 1: group 7: vLLM serves W4A16 with its Marlin kernel"),
        "{err}"
    );
    assert_eq!(recipe(&o2)["steps"][0]["group"], 7);
    assert_ne!(recipe(&o2)["result"], recipe(&made)["result"]);
}

#[test]
fn apply_leaves_an_existing_out_untouched_without_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let made = t.join("q");
    succeeds(&["quantize", "--scheme", "w8a8", "--out", s(&made)]);
    let rfile = made.join("recipe.json");
    // a directory of the user's, and a model directory
    let mine = t.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let model = t.join("model");
    succeeds(&["quantize", "--scheme", "fp8", "--out", s(&model)]);
    let before: Vec<(PathBuf, Vec<u8>)> = [&mine, &model]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    // a model directory: kept unless --overwrite; the user's directory: kept even with it,
    // and said so without --overwrite too
    fails(
        &["apply", "--recipe", s(&rfile), "--out", s(&model)],
        &["already exists", "--overwrite"],
    );
    for extra in [None, Some("--overwrite")] {
        let mut a = vec!["apply", "--recipe", s(&rfile), "--out", s(&mine)];
        a.extend(extra);
        fails(&a, &["not a model directory", "even with --overwrite"]);
    }
    for (p, b) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{}", p.display());
    }
    // a model directory is replaced with --overwrite, and by the recipe's variant
    succeeds(&[
        "apply",
        "--recipe",
        s(&rfile),
        "--out",
        s(&model),
        "--overwrite",
    ]);
    same_checkpoint(&made, &model);
    // the checkpoint's directory stands for its recipe.json
    let again = t.join("again");
    succeeds(&["apply", "--recipe", s(&made), "--out", s(&again)]);
    same_checkpoint(&made, &again);
    // nothing left behind by any of it
    let stray: Vec<String> = std::fs::read_dir(t)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn a_student_that_is_its_teacher_is_written_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let base = exaone_compress::default_model_dir();
    let out = tmp.path().join("self");
    let e = succeeds(&[
        "distill",
        "--student",
        s(&base),
        "--steps",
        "3",
        "--batch",
        "1",
        "--seq-len",
        "16",
        "--out",
        s(&out),
    ]);
    assert!(e.contains("the student is its teacher"), "{e}");
    let id = |d: &std::path::Path| exaone_compress::compress::recipe::ModelId::of(d).unwrap();
    assert_eq!(id(&out).weights_hash, id(&base).weights_hash);
}

#[test]
fn distill_writes_a_loadable_student_with_a_recipe_that_rebuilds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pruned = t.join("pruned");
    succeeds(&["prune", "--drop", "4", "--out", s(&pruned)]);
    let student = t.join("student");
    let e = succeeds(&[
        "distill",
        "--student",
        s(&pruned),
        "--steps",
        "2",
        "--batch",
        "2",
        "--seq-len",
        "32",
        "--train",
        "norms,layer:3",
        "--lr",
        "0.02",
        "--seed",
        "11",
        "--out",
        s(&student),
    ]);
    assert!(e.contains("distilled [norms, layer:3] for 2 steps"), "{e}");
    let m = exaone_compress::checkpoint::load_model(
        &student,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(m.layers.len(), 9);
    let r = recipe(&student);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{r}");
    assert_eq!(
        (steps[0]["step"].as_str(), steps[0]["dropped"][0].as_u64()),
        (Some("prune"), Some(4))
    );
    let d = &steps[1];
    assert_eq!(d["step"], "distill");
    assert_eq!(d["teacher"]["model"]["role"], "default-model");
    assert_eq!(d["teacher"]["weights_hash"], r["base"]["weights_hash"]);
    assert_eq!(d["train"], serde_json::json!(["norms", "layer:3"]));
    assert_eq!(
        (
            d["steps"].as_u64(),
            d["batch"].as_u64(),
            d["seq_len"].as_u64(),
            d["seed"].as_u64()
        ),
        (Some(2), Some(2), Some(32), Some(11))
    );
    assert_eq!(
        (d["lr"].as_f64(), d["temperature"].as_f64()),
        (Some(0.02), Some(1.0))
    );
    // the student changed where it trained, and only there
    let (a, b) = (
        Checkpoint::open(&pruned).unwrap(),
        Checkpoint::open(&student).unwrap(),
    );
    let changed: Vec<&String> = a
        .names()
        .filter(|n| a.bytes(n).unwrap() != b.bytes(n).unwrap())
        .collect();
    assert!(
        changed.iter().any(|n| n.ends_with("norm.weight")),
        "{changed:?}"
    );
    assert!(
        changed.iter().any(|n| n.starts_with("model.layers.3.mlp")),
        "{changed:?}"
    );
    assert!(
        changed
            .iter()
            .all(|n| n.ends_with("norm.weight") || n.starts_with("model.layers.3.")),
        "{changed:?}"
    );
    // the chain prune → distill rebuilds from the base alone
    let again = t.join("again");
    let e = succeeds(&[
        "apply",
        "--recipe",
        s(&student.join("recipe.json")),
        "--out",
        s(&again),
    ]);
    assert!(e.contains("bit for bit"), "{e}");
    same_checkpoint(&student, &again);
    // a student layer that does not exist, and a warm-up longer than the run: refused first
    let x = t.join("x");
    fails(
        &[
            "distill",
            "--student",
            s(&pruned),
            "--train",
            "layer:9",
            "--out",
            s(&x),
        ],
        &["layer:9", "9 layers"],
    );
    fails(
        &[
            "distill",
            "--student",
            s(&pruned),
            "--steps",
            "5",
            "--warmup",
            "6",
            "--out",
            s(&x),
        ],
        &["--warmup 6 is more than --steps 5"],
    );
    fails(
        &[
            "distill",
            "--student",
            s(&pruned),
            "--seq-len",
            "1000000",
            "--out",
            s(&x),
        ],
        &["1000000 tokens exceed the student's context"],
    );
    fails(
        &[
            "distill",
            "--student",
            s(&pruned),
            "--train",
            "heads",
            "--out",
            s(&x),
        ],
        &[
            "--train heads",
            "norms, embedding, lm-head, all-layers, layer:N",
        ],
    );
    assert!(!x.exists());
}

#[test]
fn ignore_patterns_and_drop_rules_read_as_documented() {
    let n = "model.layers.3.mlp.up_proj";
    for p in [
        n,
        "model.layers.3",
        "mlp.up_proj",
        "up_proj",
        "model.layers.*.mlp.up_proj",
        "*up_proj",
        "**",
        "model.*.*.up_proj",
        "*.3.*j",
    ] {
        assert!(ignore_matches(p, n), "{p}");
    }
    for p in [
        "model.layers.30",
        "p_proj",
        "model.layers.3.mlp.up",
        "model.layers.*.self_attn.*",
        // many stars that cannot match: answered at once (a backtracking glob took exponential time)
        &format!("{}x", "*".repeat(40)),
    ] {
        assert!(!ignore_matches(p, n), "{p}");
    }
    for w in ["drop:3,7", "uniform:1", "first:2", "last:1", "bi:2", "kl:1"] {
        assert_eq!(rule_word(&parse_rule(w).unwrap()), w);
    }
    for w in ["drop", "kl:0", "middle:1", "kl:x"] {
        assert!(parse_rule(w).is_err(), "{w}");
    }
}
