//! The scripted CLI interface: `info`, `generate`, `logits` on the HF-written fixtures.

mod common;

use std::process::Command;

use candle_core::Tensor;
use common::{fixture, reference, rel_err};

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn info_reports_the_architecture() {
    let dir = fixture("full_tied");
    let (ok, out, err) = cli(&["info", "--model", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("architecture: Exaone4ForCausalLM"), "{out}");
    assert!(out.contains("parameters: 484320"), "{out}");
    assert!(out.contains("tie_word_embeddings: true"), "{out}");
    assert!(out.contains("num_hidden_layers: 3"), "{out}");
    let (ok, out, _) = cli(&[
        "info",
        "--json",
        "--model",
        fixture("full_tied_bf16_sharded").to_str().unwrap(),
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["shards"], 4);
    assert_eq!(v["storage_dtype"], "bf16");
    assert_eq!(v["parameters"], 484320);
}

#[test]
fn generate_prints_hf_greedy_ids() {
    for name in ["full_tied", "hybrid_untied"] {
        let r = reference(name);
        let ids: Vec<String> = r.input_ids[..r.prompt_len]
            .iter()
            .map(|i| i.to_string())
            .collect();
        let (ok, out, err) = cli(&[
            "generate",
            "--model",
            fixture(name).to_str().unwrap(),
            "--ids",
            &ids.join(","),
            "--greedy",
            "--max-new-tokens",
            &r.max_new_tokens.to_string(),
            "--print-ids",
        ]);
        assert!(ok, "{err}");
        let last = out.lines().last().unwrap();
        let got: Vec<u32> = serde_json::from_str(last).unwrap();
        assert_eq!(got, r.greedy, "{name}");
    }
}

#[test]
fn logits_writes_the_hf_logits_as_npy() {
    let r = reference("hybrid_untied");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("l.npy");
    let ids: Vec<String> = r.input_ids.iter().map(|i| i.to_string()).collect();
    let (ok, _, err) = cli(&[
        "logits",
        "--model",
        fixture("hybrid_untied").to_str().unwrap(),
        "--ids",
        &ids.join(","),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let l = Tensor::read_npy(&out).unwrap();
    assert_eq!(l.dims(), &[r.input_ids.len(), 512]);
    assert!(rel_err(&l, &r.logits) < 1e-4);
}

#[test]
fn bad_input_fails_with_a_message() {
    let (ok, _, err) = cli(&["info", "--model", "/nonexistent/model"]);
    assert!(!ok && err.contains("/nonexistent/model"), "{err}");
    // the cause the message quotes is said once (anyhow's report would repeat it under
    // "Caused by"), and no backtrace unless RUST_LIB_BACKTRACE=1 asks
    assert_eq!(err.matches("no such directory").count(), 1, "{err}");
    assert!(
        !err.contains("Caused by") && !err.contains("anyhow::"),
        "{err}"
    );
    let (ok, _, err) = cli(&[
        "generate",
        "--model",
        fixture("full_tied").to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert!(!ok && err.contains("tokenizer.json"), "{err}");
}

/// Runs the CLI, returning the exit status and stderr.
fn status(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Flag errors exit with 1 like every other failure of this CLI (clap's own convention for a
/// usage or value-parser error is 2; `main` maps it to 1), before any work: nothing written.
fn refused(args: &[&str], want: &[&str]) {
    let (code, err) = status(args);
    assert_eq!(code, 1, "{args:?} should fail with 1:\n{err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: no mention of {w:?}:\n{err}");
    }
}

#[test]
fn bad_flag_values_name_the_flag_the_value_and_what_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let (m, o) = (fixture("full_tied"), out.to_str().unwrap().to_string());
    let m = m.to_str().unwrap();
    let q = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["quantize", "--model", m, "--out", &o]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            q(&["--scheme", "w4a17"]),
            vec![
                "--scheme w4a17",
                "unknown scheme",
                "w4a16, w4a16-asym, w8a8, fp8",
            ],
        ),
        (
            q(&["--scheme", "w4a16", "--method", "magic"]),
            vec!["unknown method", "rtn, gptq, awq"],
        ),
        (
            q(&[
                "--scheme",
                "w4a16",
                "--method",
                "gptq",
                "--actorder",
                "dynamic",
            ]),
            vec!["unknown actorder", "static, group"],
        ),
        (q(&["--scheme", "w4a16", "--group", "0"]), vec!["--group 0"]),
        (q(&["--scheme", "w4a16", "--group=-3"]), vec!["--group -3"]),
        (
            q(&["--scheme", "w4a16", "--method", "gptq", "--calib-len", "0"]),
            vec!["--calib-len 0", "at least 1"],
        ),
        (
            q(&[
                "--scheme",
                "w4a16",
                "--method",
                "gptq",
                "--calib-samples",
                "x",
            ]),
            vec!["--calib-samples x"],
        ),
        (
            q(&["--scheme", "w4a16", "--device", "tpu"]),
            vec!["--device tpu", "cpu, cuda"],
        ),
        (
            q(&["--scheme", "w4a16", "--device", "cuda:x"]),
            vec!["--device cuda:x"],
        ),
    ];
    for (args, want) in &cases {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        refused(&args, want);
        assert!(!out.exists());
    }
    let prune = |rule: &str| ["prune", "--model", m, "--rule", rule, "--out", &o].map(String::from);
    for (rule, want) in [
        (
            "middle:1",
            "unknown rule \"middle\" (allowed: uniform, first, last, bi, kl)",
        ),
        ("uniform", "expected KIND:N"),
        ("kl:two", "whole number"),
    ] {
        let a = prune(rule);
        refused(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>(), &[want]);
    }
    let gen = ["generate", "--model", m, "--ids", "1,2"];
    for (flag, value, want) in [
        ("--dtype", "f64", "auto, f32, bf16, f16"),
        ("--max-new-tokens", "0", "at least 1"),
        ("--temperature", "0", "> 0"),
        ("--top-p", "1.5", "(0, 1]"),
    ] {
        let mut a = gen.to_vec();
        a.extend([flag, value]);
        refused(&a, &[&format!("{flag} {value}"), want]);
    }
    let mut a = vec!["logits", "--model", m, "--ids", "1", "--out", &o];
    a.extend(["--dtype", "int8"]);
    refused(&a, &["--dtype int8", "unknown dtype"]);
}

#[test]
fn flags_that_do_not_go_together_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let o = out.to_str().unwrap();
    let m = fixture("full_tied");
    let m = m.to_str().unwrap();
    let q = ["quantize", "--model", m, "--out", o];
    for (extra, want) in [
        (
            &["--scheme", "w8a8", "--method", "awq"][..],
            &[
                "--method awq --scheme w8a8",
                "W4A16 only",
                "w4a16 or w4a16-asym",
            ][..],
        ),
        (&["--scheme", "fp8", "--method", "awq"], &["W4A16 only"]),
        (
            &["--scheme", "w4a16", "--actorder", "static"],
            &["--actorder with --method rtn", "--method gptq"],
        ),
        (
            &[
                "--scheme",
                "w4a16",
                "--method",
                "awq",
                "--actorder",
                "group",
            ],
            &["--actorder with --method awq"],
        ),
        (
            &[
                "--scheme",
                "w8a8",
                "--method",
                "gptq",
                "--actorder",
                "group",
            ],
            &["--actorder group with --scheme w8a8", "--actorder static"],
        ),
        (
            &["--scheme", "fp8", "--group", "64"],
            &["--group with --scheme fp8", "w4a16 and w4a16-asym"],
        ),
        (
            &["--scheme", "w4a16", "--calib-len", "64", "--calib-chat"],
            &["--calib-len, --calib-chat with --method rtn", "gptq or awq"],
        ),
        (
            &["--scheme", "w4a16", "--method", "rtn", "--calib", "x.jsonl"],
            &["--calib with --method rtn"],
        ),
    ] {
        let mut a = q.to_vec();
        a.extend(extra);
        refused(&a, want);
        assert!(!out.exists());
    }
    let p = ["prune", "--model", m, "--out", o];
    refused(
        &[&p[..], &["--drop", "1", "--rule", "first:1"]].concat(),
        &["'--drop <DROP>' cannot be used with '--rule <RULE>'"],
    );
    // neither: the message names both ways of choosing the layers
    refused(&p, &["--drop", "--rule"]);
    refused(&["generate", "--model", m], &["--prompt", "--ids"]);
    let gen = ["generate", "--model", m, "--ids", "1,2"];
    for (extra, want) in [
        (&["--chat"][..], "cannot be used with"),
        (
            &["--think"],
            "--think shapes the chat template's prompt: it needs --chat",
        ),
        (&["--system", "s"], "--system shapes"),
        (
            &["--greedy", "--temperature", "0.7"],
            "'--greedy' cannot be used with",
        ),
        (
            &["--greedy", "--top-p", "0.9"],
            "'--greedy' cannot be used with",
        ),
    ] {
        refused(&[&gen[..], extra].concat(), &[want]);
    }
}

#[test]
fn every_accepted_spelling_still_works() {
    let m = fixture("full_tied");
    let m = m.to_str().unwrap();
    for dtype in [
        "auto", "f32", "float32", "bf16", "bfloat16", "f16", "float16",
    ] {
        let (code, err) = status(&[
            "generate",
            "--model",
            m,
            "--ids",
            "1,2",
            "--max-new-tokens",
            "1",
            "--greedy",
            "--device",
            "cpu",
            "--dtype",
            dtype,
        ]);
        assert_eq!(code, 0, "--dtype {dtype}: {err}");
    }
    let (code, err) = status(&[
        "generate",
        "--model",
        m,
        "--ids",
        "1,2",
        "--max-new-tokens",
        "2",
        "--temperature",
        "0.7",
        "--top-p",
        "0.9",
        "--seed",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let tmp = tempfile::tempdir().unwrap();
    for (i, extra) in [
        &["--scheme", "w4a16"][..],
        &["--scheme", "w4a16-asym", "--method", "rtn", "--group", "64"],
        &["--scheme", "w8a8"],
        &["--scheme", "fp8", "--method", "rtn"],
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("q{i}"));
        let mut a = vec!["quantize", "--model", m, "--out", out.to_str().unwrap()];
        a.extend(*extra);
        let (code, err) = status(&a);
        assert_eq!(code, 0, "{a:?}: {err}");
    }
    for (i, how) in [
        ["--drop", "1"],
        ["--drop", "0,2"],
        ["--rule", "uniform:1"],
        ["--rule", "last:1"],
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("p{i}"));
        let mut a = vec!["prune", "--model", m, "--out", out.to_str().unwrap()];
        a.extend(how);
        let (code, err) = status(&a);
        assert_eq!(code, 0, "{a:?}: {err}");
    }
    // --help lists the accepted words and exits 0
    let o = Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
        .args(["quantize", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        help.contains("w4a16-asym") && help.contains("gptq") && help.contains("static"),
        "{help}"
    );
}

/// A model directory with the default model's tokenizer and config, its weights linked, and
/// the chat template given.
fn model_with_template(template: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = exaone_compress::default_model_dir();
    for f in std::fs::read_dir(&src).unwrap() {
        let p = f.unwrap().path();
        let to = tmp.path().join(p.file_name().unwrap());
        if std::fs::hard_link(&p, &to).is_err() {
            std::fs::copy(&p, &to).unwrap();
        }
    }
    std::fs::write(tmp.path().join("chat_template.jinja"), template).unwrap();
    tmp
}

#[test]
fn chat_prompts_and_chat_calibration_use_the_directorys_template() {
    let t = model_with_template(
        "{{ raise_exception('custom template: ' ~ messages|length ~ ' turns, thinking ' ~ enable_thinking) }}",
    );
    let d = t.path().to_str().unwrap();
    refused(
        &[
            "generate", "--model", d, "--prompt", "hi", "--chat", "--think", "--system", "s",
        ],
        &[
            "custom template: 2 turns, thinking True",
            "chat_template.jinja",
        ],
    );
    // without --chat the template is not used
    let (code, err) = status(&[
        "generate",
        "--model",
        d,
        "--prompt",
        "hi",
        "--max-new-tokens",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    // calibration conversations (JSONL "messages") and --calib-chat go through it too
    let calib = t.path().join("calib.jsonl");
    std::fs::write(
        &calib,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n",
    )
    .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().join("q");
    let q = [
        "quantize",
        "--model",
        d,
        "--scheme",
        "w4a16",
        "--method",
        "gptq",
        "--calib-samples",
        "1",
        "--calib-len",
        "8",
        "--out",
        out.to_str().unwrap(),
    ];
    refused(
        &[&q[..], &["--calib", calib.to_str().unwrap()]].concat(),
        &["custom template: 1 turns"],
    );
    refused(
        &[&q[..], &["--calib-chat"]].concat(),
        &["custom template: 1 turns"],
    );
    assert!(!out.exists());
}

#[test]
fn quantizer_distill_and_apply_settings_are_checked_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let o = out.to_str().unwrap();
    let m = fixture("full_tied");
    let m = m.to_str().unwrap();
    let q = ["quantize", "--model", m, "--out", o];
    for (extra, want) in [
        (
            &["--scheme", "w4a16", "--method", "gptq", "--damp", "2"][..],
            &["--damp 2", "must lie in 0..=1"][..],
        ),
        (
            &["--scheme", "w4a16", "--method", "gptq", "--damp", "nan"],
            &["--damp nan", "0..=1"],
        ),
        (
            &["--scheme", "w4a16", "--method", "gptq", "--block", "0"],
            &["--block 0", "1..=16384"],
        ),
        (
            &[
                "--scheme",
                "w4a16",
                "--method",
                "gptq",
                "--max-damp-retries",
                "11",
            ],
            &["--max-damp-retries 11", "0..=10"],
        ),
        (
            &["--scheme", "w4a16", "--method", "awq", "--awq-grid", "0"],
            &["--awq-grid 0", "1..=1000"],
        ),
        (
            &[
                "--scheme",
                "w4a16",
                "--method",
                "awq",
                "--clip-steps",
                "101",
            ],
            &["--clip-steps 101", "0..=100"],
        ),
        (
            &["--scheme", "w4a16", "--damp", "0.1"],
            &["--damp with --method rtn", "a GPTQ setting (--method gptq)"],
        ),
        (
            &[
                "--scheme", "w4a16", "--method", "awq", "--block", "64", "--damp", "0.1",
            ],
            &["--damp, --block with --method awq", "GPTQ settings"],
        ),
        (
            &["--scheme", "w4a16", "--method", "gptq", "--no-v-to-o"],
            &[
                "--no-v-to-o with --method gptq",
                "an AWQ setting (--method awq)",
            ],
        ),
        (
            &["--scheme", "w4a16", "--clip-rows", "8"],
            &["--clip-rows with --method rtn", "AWQ"],
        ),
        (
            &[
                "--scheme",
                "w4a16",
                "--method",
                "awq",
                "--clip-steps",
                "0",
                "--clip-rows",
                "8",
            ],
            &["--clip-rows with --clip-steps 0", "clipping is off"],
        ),
        (
            &["--scheme", "w4a16", "--calib-seed", "1"],
            &["--calib-seed with --method rtn"],
        ),
        (
            &["--scheme", "w4a16", "--ignore", "mlp.gate"],
            &[
                "--ignore \"mlp.gate\" names no Linear",
                "model.layers.*.mlp.down_proj",
            ],
        ),
        (
            &["--scheme", "w4a16", "--ignore", "self_attn.k_proj"],
            &["k_proj", "quantized alike"],
        ),
    ] {
        let mut a = q.to_vec();
        a.extend(extra);
        refused(&a, want);
        assert!(!out.exists());
    }
    let student = fixture("full_tied");
    let d = [
        "distill",
        "--model",
        m,
        "--student",
        student.to_str().unwrap(),
        "--out",
        o,
    ];
    for (flag, value, want) in [
        ("--lr", "0", "> 0"),
        ("--temperature", "0", "0.001..=100"),
        ("--batch", "0", "1..=4096"),
        ("--steps", "0", "1..=10000000"),
        (
            "--train",
            "heads",
            "norms, embedding, lm-head, all-layers, layer:N",
        ),
    ] {
        let mut a = d.to_vec();
        a.extend([flag, value]);
        refused(&a, &[&format!("{flag} {value}"), want]);
        assert!(!out.exists());
    }
    refused(&["apply", "--out", o], &["--recipe"]);
    let (code, err) = status(&["apply", "--recipe", "/nonexistent/recipe.json", "--out", o]);
    assert!(
        code == 1 && err.contains("/nonexistent/recipe.json"),
        "{err}"
    );
    // settings that go together are accepted, and the checkpoint carries its recipe
    let (code, err) = status(&[
        "quantize",
        "--model",
        m,
        "--scheme",
        "w4a16",
        "--group",
        "64",
        "--ignore",
        "model.layers.0.mlp.down_proj,model.layers.*.self_attn.o_proj",
        "--out",
        o,
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("recipe.json")).unwrap()).unwrap();
    assert_eq!(
        r["steps"][0]["ignore"][1],
        "model.layers.*.self_attn.o_proj"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
        .args(["quantize", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for f in [
        "--damp",
        "--block",
        "--awq-grid",
        "--clip-steps",
        "--ignore",
        "--calib-seed",
    ] {
        assert!(help.contains(f), "{f}: {help}");
    }
}

#[test]
fn report_redraws_a_benchmark_report_from_its_results_alone() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/serve_bench");
    std::fs::copy(
        src.join("results.parquet"),
        dir.path().join("results.parquet"),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, out, err) = cli(&[
        "report",
        "--results",
        d,
        "--command",
        "bash scripts/gpu/serve_bench.sh",
    ]);
    assert!(ok, "{out}{err}");
    let md = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(
        md.contains("# Serving-regime speed")
            && md.contains("Command: `bash scripts/gpu/serve_bench.sh`")
    );
    assert!(
        dir.path().join("throughput.png").exists() && dir.path().join("t_per_token.png").exists()
    );
    // a study's results are refused with the reason, and nothing is written
    let other = tempfile::tempdir().unwrap();
    let study =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/baseline/results.parquet");
    std::fs::copy(study, other.path().join("results.parquet")).unwrap();
    let (ok, _, err) = cli(&[
        "report",
        "--results",
        other.path().to_str().unwrap(),
        "--command",
        "x",
    ]);
    assert!(
        !ok && err.contains("redraws bench_runtime and serve_bench"),
        "{err}"
    );
    assert!(!other.path().join("README.md").exists());
}
