//! What a new user's trial found: a NaN in an embedding row that `package`'s test prompt never
//! reads, a user's extra `*.safetensors` that `--overwrite` deleted, model outputs written inside
//! the input model, layer rankings by NaN scores, a report given an empty command line, an
//! ignore list that leaves nothing to quantize, a submission zip named otherwise.

use super::*;

/// `fixture`'s copy with a NaN in the last row of the embedding (no test prompt reads it).
fn nan_embedding_row() -> tempfile::TempDir {
    let d = copy_fixture("full_tied");
    edit_tensors(d.path(), |ts| {
        let w = ts.get_mut("model.embed_tokens.weight").unwrap();
        let (rows, cols) = (w.shape[0], w.shape[1]);
        let size = w.data.len() / (rows * cols);
        let nan = match w.dtype {
            safetensors::Dtype::BF16 => half::bf16::NAN.to_le_bytes().to_vec(),
            _ => f32::NAN.to_le_bytes().to_vec(),
        };
        let at = (rows - 1) * cols * size + 3 * size;
        w.data[at..at + size].copy_from_slice(&nan);
    });
    d
}

#[test]
fn package_names_a_nan_weight_wherever_it_is() {
    let d = nan_embedding_row();
    let rows = read_tensors(d.path())["model.embed_tokens.weight"].shape[0];
    let zip = tempfile::tempdir().unwrap();
    let err = fails(
        &format!(
            "package --model {} --out {}",
            s(d.path()),
            s(&zip.path().join("submit.zip"))
        ),
        &[
            "model.embed_tokens.weight",
            &format!("NaN at [{}, 3]", rows - 1),
        ],
    );
    assert!(err.contains("1 non-finite value"), "{err}");
    assert!(!zip.path().join("submit.zip").exists());
}

#[test]
fn measured_drop_rules_refuse_nan_scores() {
    // the default model: the rules calibrate with its tokenizer
    let d = tempfile::tempdir().unwrap();
    copy_dir(&exaone_compress::default_model_dir(), d.path());
    edit_tensors(d.path(), |ts| {
        let w = ts.get_mut("model.layers.1.mlp.down_proj.weight").unwrap();
        let nan = match w.dtype {
            safetensors::Dtype::BF16 => half::bf16::NAN.to_le_bytes().to_vec(),
            _ => f32::NAN.to_le_bytes().to_vec(),
        };
        w.data[..nan.len()].copy_from_slice(&nan);
    });
    let tmp = tempfile::tempdir().unwrap();
    for rule in ["kl:1", "bi:1"] {
        let out = tmp.path().join(rule.replace(':', "_"));
        fails(
            &format!(
                "prune --model {} --rule {rule} --out {}",
                s(d.path()),
                s(&out)
            ),
            &["not finite", "cannot be ranked"],
        );
        assert!(!out.exists(), "{rule}");
    }
}

#[test]
fn overwrite_keeps_a_users_other_weights_file() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture("full_tied");
    let out = tmp.path().join("q");
    succeeds(&format!(
        "quantize --model {} --scheme w8a8 --method rtn --out {}",
        s(&m),
        s(&out)
    ));
    let kept = out.join("model.orig.safetensors");
    std::fs::copy(out.join("model.safetensors"), &kept).unwrap();
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    fails(
        &format!(
            "quantize --model {} --scheme fp8 --method rtn --out {} --overwrite",
            s(&m),
            s(&out)
        ),
        &["model.orig.safetensors"],
    );
    assert!(kept.is_file());
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    no_leftovers(tmp.path());
}

#[test]
fn no_command_writes_a_model_inside_its_input() {
    let d = copy_fixture("full_tied");
    let m = d.path();
    let sub = m.join("sub");
    for cmd in [
        format!("prune --model {} --drop 1 --out {}", s(m), s(&sub)),
        format!(
            "quantize --model {} --scheme w8a8 --method rtn --out {}",
            s(m),
            s(&sub)
        ),
        format!("dequant --model {} --out {}", s(m), s(&sub)),
        format!(
            "distill --model {} --student {} --steps 1 --out {}",
            s(m),
            s(m),
            s(&sub)
        ),
    ] {
        fails(&cmd, &["lies inside the input directory"]);
        assert!(!sub.exists(), "`{cmd}` wrote into its input");
        no_leftovers(m);
    }
}

#[test]
fn a_report_needs_the_command_line_that_made_it() {
    let tmp = tempfile::tempdir().unwrap();
    for blank in ["", "  "] {
        let o = Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
            .args(["report", "--results", s(tmp.path()), "--command", blank])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--command") && err.contains("not an empty one"),
            "{err}"
        );
    }
}

#[test]
fn a_quantization_config_that_does_not_describe_the_tensors_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, edit) in [
        ("packed", json!({"format": "pack-quantized"})),
        ("none", Value::Null),
    ] {
        let d = quantized(tmp.path(), name, Scheme::w8a8_int8());
        edit_config(&d, |v| match &edit {
            Value::Null => {
                v.as_object_mut().unwrap().remove("quantization_config");
            }
            e => v["quantization_config"]["format"] = e["format"].clone(),
        });
        let want = ["does not describe the tensors"];
        fails(
            &format!("generate --model {} --ids 1,2 --max-new-tokens 1", s(&d)),
            &want,
        );
        let out = tmp.path().join(format!("{name}-dense"));
        fails(
            &format!("dequant --model {} --out {}", s(&d), s(&out)),
            &want,
        );
        assert!(!out.exists());
    }
}

#[test]
fn an_ignore_list_of_every_linear_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let m = fixture("full_tied");
    for ignore in ["model.layers.*", "model.layers"] {
        fails(
            &format!(
                "quantize --model {} --scheme w8a8 --method rtn --ignore {ignore} --out {}",
                s(&m),
                s(&out)
            ),
            &["matches all", "nothing would be quantized"],
        );
        assert!(!out.exists());
    }
}

#[test]
fn package_writes_only_what_is_named_a_zip() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture("full_tied");
    for name in ["submit.tar", "submit", "zip"] {
        let out = tmp.path().join(name);
        let cmd = format!("package --model {} --out {}", s(&m), s(&out));
        fails(&cmd, &["--out", "ending in .zip"]);
        assert!(!out.exists());
    }
}
