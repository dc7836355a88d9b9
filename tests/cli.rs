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
    let (ok, _, err) = cli(&[
        "generate",
        "--model",
        fixture("full_tied").to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert!(!ok && err.contains("tokenizer.json"), "{err}");
}
