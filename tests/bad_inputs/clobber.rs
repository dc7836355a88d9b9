//! Outputs never replace what the user owns; stale temporaries are cleaned; `package` checks
//! contents.

use super::*;

#[test]
fn outputs_never_replace_what_the_user_owns() {
    let tmp = tempfile::tempdir().unwrap();
    let model = copy_dir(
        &exaone_compress::default_model_dir(),
        &tmp.path().join("model"),
    );
    let st = std::fs::read(model.join("model.safetensors")).unwrap();
    let pkg = format!("package --model {}", s(&model));
    // package into the model directory, or onto one of its files: refused, even with --overwrite
    for (out, why) in [
        ("model.safetensors", "ending in .zip"),
        ("submit.zip", "inside the input directory"),
    ] {
        let cmd = format!("{pkg} --out {} --overwrite", s(&model.join(out)));
        fails(&cmd, &[why]);
    }
    assert_eq!(std::fs::read(model.join("model.safetensors")).unwrap(), st);
    assert!(!model.join("submit.zip").exists());
    // an existing --out is kept without --overwrite, replaced with it
    let zip = tmp.path().join("submit.zip");
    std::fs::write(&zip, "precious").unwrap();
    fails(
        &format!("{pkg} --out {}", s(&zip)),
        &["already exists", "--overwrite"],
    );
    assert_eq!(std::fs::read_to_string(&zip).unwrap(), "precious");
    succeeds(&format!("{pkg} --out {} --overwrite", s(&zip)));
    let z = zip::ZipArchive::new(std::fs::File::open(&zip).unwrap()).unwrap();
    assert!(z.len() >= 5);
    // --out below a file
    let below = zip.join("x.zip");
    fails(&format!("{pkg} --out {}", s(&below)), &["not a directory"]);
    // logits onto an existing file
    let npy = tmp.path().join("l.npy");
    std::fs::write(&npy, "precious").unwrap();
    let logits = format!("logits --model {} --ids 1,2,3 --out {}", s(&model), s(&npy));
    fails(&logits, &["already exists"]);
    assert_eq!(std::fs::read_to_string(&npy).unwrap(), "precious");
    succeeds(&format!("{logits} --overwrite"));
    let l = candle_core::Tensor::read_npy(&npy).unwrap();
    assert_eq!(l.dims(), &[3, 4096]);
    // model outputs: an existing directory is kept; --overwrite never replaces a directory that
    // is not a model, nor the input itself, nor a directory holding the input
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let deq = format!("dequant --model {}", s(&model));
    for extra in ["", "--overwrite"] {
        fails(&format!("{deq} --out {} {extra}", s(&mine)), &[s(&mine)]);
        assert_eq!(
            std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
            "keep me"
        );
    }
    fails(
        &format!("{deq} --out {} --overwrite", s(&model)),
        &["input"],
    );
    // an empty directory made for the output is filled without --overwrite: nothing to lose
    // ... and keeps the permissions the user gave it
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;
    #[cfg(unix)]
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o750)).unwrap();
    succeeds(&format!("{deq} --out {}", s(&empty)));
    assert!(empty.join("config.json").is_file());
    #[cfg(unix)]
    assert_eq!(
        std::fs::metadata(&empty).unwrap().permissions().mode() & 0o777,
        0o750
    );
    fails(&format!("{deq} --out {}", s(&empty)), &["already exists"]);
    // a model directory holding the user's notes or folders: --overwrite would lose them
    std::fs::write(empty.join("NOTES.md"), "mine").unwrap();
    std::fs::create_dir(empty.join("runs")).unwrap();
    fails(
        &format!("{deq} --out {} --overwrite", s(&empty)),
        &["NOTES.md, runs/", "even with --overwrite"],
    );
    assert_eq!(
        std::fs::read_to_string(empty.join("NOTES.md")).unwrap(),
        "mine"
    );
    std::fs::remove_file(empty.join("NOTES.md")).unwrap();
    std::fs::remove_dir(empty.join("runs")).unwrap();
    succeeds(&format!("{deq} --out {} --overwrite", s(&empty)));
    let prune = format!("prune --model {} --drop 1", s(&model));
    let cmd = format!("{prune} --out {} --overwrite", s(tmp.path()));
    fails(&cmd, &["contains the input"]);
    assert_eq!(std::fs::read(model.join("model.safetensors")).unwrap(), st);
    // quantize notices an existing --out before quantizing; one --overwrite would not replace
    // either is said so, not "pass --overwrite"
    let t0 = std::time::Instant::now();
    let q = format!(
        "quantize --model {} --scheme w4a16 --method gptq",
        s(&model)
    );
    let e = fails(
        &format!("{q} --out {}", s(&mine)),
        &["not a model directory", "even with --overwrite"],
    );
    assert!(!e.contains("pass --overwrite"), "{e}");
    assert!(t0.elapsed().as_secs_f64() < 20.0);
    no_leftovers(tmp.path());
}

#[test]
fn stale_temporaries_of_killed_runs_are_cleaned_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    // a pid above Linux's maximum (2^22) can never be alive
    let dead = tmp.path().join(".out.partial-99999999-abc123");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("model.safetensors"), vec![0u8; 1000]).unwrap();
    let legacy = tmp.path().join(".out.partial-Xy12Zq");
    std::fs::create_dir(&legacy).unwrap();
    let npy_tmp = tmp.path().join(".l.npy.partial-99999999-zzz");
    std::fs::write(&npy_tmp, "half").unwrap();
    let out = tmp.path().join("out");
    let deq = format!(
        "dequant --model {} --out {}",
        s(&fixture("full_tied")),
        s(&out)
    );
    let o = succeeds(&deq);
    assert!(!dead.exists(), "{}", o.stderr);
    assert!(
        o.stderr.contains("removed") && o.stderr.contains("99999999"),
        "{}",
        o.stderr
    );
    // one without a pid is reported, not removed
    assert!(
        legacy.exists() && o.stderr.contains(".out.partial-Xy12Zq"),
        "{}",
        o.stderr
    );
    std::fs::remove_dir(&legacy).unwrap();
    let npy = tmp.path().join("l.npy");
    succeeds(&format!(
        "logits --model {} --ids 1,2 --out {}",
        s(&fixture("full_tied")),
        s(&npy)
    ));
    assert!(!npy_tmp.exists());
    // an overwrite killed after moving the old output aside: the next run puts it back first
    std::fs::rename(&out, tmp.path().join(".out.old-99999999-q1w2e3")).unwrap();
    let e = fails(&deq, &["already exists"]);
    assert!(e.contains("restored"), "{e}");
    assert!(out.join("config.json").exists());
    no_leftovers(tmp.path());
    // a live pid that started at another time is a reused pid (a container's pid 1, say): the
    // temporary is stale all the same
    let me = std::process::id();
    let reused = tmp.path().join(format!(".out.partial-{me}.1-r3u5e"));
    std::fs::create_dir(&reused).unwrap();
    let o = run(&format!("{deq} --overwrite"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!reused.exists(), "{}", o.stderr);
    // what was written is readable as any new file would be (the temporaries were private)
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            .unwrap_or(0o022);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o777 & !umask);
        assert_eq!(mode(&out.join("model.safetensors")), 0o666 & !umask);
        assert_eq!(mode(&npy), 0o666 & !umask);
    }
}

#[test]
fn the_no_replace_move_never_touches_what_appeared_meanwhile() {
    use exaone_compress::fs::{move_into_place, rename_noreplace, write_new, OutputKind};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // another process created the destination after our checks: our move fails, theirs stays
    let ours = t.join(".out.partial-1-x");
    std::fs::create_dir(&ours).unwrap();
    std::fs::write(ours.join("config.json"), "{}").unwrap();
    let out = t.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("theirs"), "keep").unwrap();
    let e = move_into_place(&ours, &out, OutputKind::ModelDir, false).unwrap_err();
    assert!(e.to_string().contains("appeared"), "{e}");
    assert_eq!(std::fs::read_to_string(out.join("theirs")).unwrap(), "keep");
    assert!(!ours.exists());
    // files: no replace
    std::fs::write(t.join("a"), "a").unwrap();
    std::fs::write(t.join("b"), "b").unwrap();
    let e = rename_noreplace(&t.join("a"), &t.join("b")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read_to_string(t.join("b")).unwrap(), "b");
    let e = write_new(&t.join("b"), b"new").unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read_to_string(t.join("b")).unwrap(), "b");
    write_new(&t.join("c"), b"c").unwrap();
    assert_eq!(std::fs::read_to_string(t.join("c")).unwrap(), "c");
    // two runs to one destination: exactly one succeeds
    let m = fixture("full_tied");
    let dest = t.join("both");
    let spawn = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_exaone-compress"));
        c.args(["dequant", "--model", s(&m), "--out", s(&dest)]);
        c.stderr(std::process::Stdio::null()).spawn().unwrap()
    };
    let both = [spawn(), spawn()];
    let codes: Vec<i32> = both
        .map(|mut c| c.wait().unwrap().code().unwrap_or(-1))
        .to_vec();
    assert!(
        codes == [0, 1] || codes == [1, 0],
        "exactly one run may write: {codes:?}"
    );
    no_leftovers(t);
}

#[test]
fn package_checks_contents_not_just_names() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    copy_dir(&exaone_compress::default_model_dir(), &base);
    type Damage = Box<dyn Fn(&Path)>;
    let cfg = |key: &'static str, v: Value| -> Damage {
        Box::new(move |d| edit_config(d, |c| c[key] = v.clone()))
    };
    let tensor = |name: &'static str, f: fn(&mut RawTensor)| -> Damage {
        Box::new(move |d| edit_tensors(d, |t| f(t.get_mut(name).unwrap())))
    };
    let halve_rows = |w: &mut RawTensor| {
        let n = w.data.len() / 2;
        w.data.truncate(n);
        w.shape[0] /= 2;
    };
    let nan_first = |w: &mut RawTensor| {
        let nan = match w.dtype {
            safetensors::Dtype::BF16 => half::bf16::NAN.to_le_bytes().to_vec(),
            _ => f32::NAN.to_le_bytes().to_vec(),
        };
        w.data[..nan.len()].copy_from_slice(&nan);
    };
    // finite weights whose products overflow: only the test prompt's logits show it
    let huge = |w: &mut RawTensor| {
        let big = match w.dtype {
            safetensors::Dtype::BF16 => half::bf16::MAX.to_le_bytes().to_vec(),
            _ => f32::MAX.to_le_bytes().to_vec(),
        };
        for c in w.data.chunks_mut(big.len()) {
            c.copy_from_slice(&big);
        }
    };
    let quant = json!({
        "quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": "four",
            "type": "int", "symmetric": true, "strategy": "group", "group_size": 128}}}});
    let template = |text: &'static str| -> Damage {
        Box::new(move |d| std::fs::write(d.join("chat_template.jinja"), text).unwrap())
    };
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "a context too short for the evaluation's prompts",
            cfg("max_position_embeddings", json!(1024)),
            "max_position_embeddings = 1024",
        ),
        (
            "a special token that is not text",
            Box::new(|d: &Path| {
                let p = d.join("tokenizer_config.json");
                let mut v: Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                v["eos_token"] = json!(5);
                std::fs::write(&p, v.to_string()).unwrap();
            }),
            "`eos_token` is 5",
        ),
        (
            "a chat template that does not parse",
            template("{% if %}[|endofturn|]"),
            "syntax error",
        ),
        (
            "a chat template that raises on a system turn",
            template("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}[|{{ m.role }}|]{{ m.content }}[|endofturn|]{% endfor %}{% if add_generation_prompt %}[|assistant|]{% endif %}"),
            "no system",
        ),
        (
            "a chat template without a generation prompt",
            template("{% for m in messages %}[|{{ m.role }}|]{{ m.content }}[|endofturn|]{% endfor %}"),
            "no generation prompt",
        ),
        (
            "q_proj shape contradicts the config",
            tensor("model.layers.3.self_attn.q_proj.weight", halve_rows),
            "model.layers.3.self_attn.q_proj.weight",
        ),
        (
            "head_dim contradicts the weights",
            cfg("head_dim", json!(32)),
            "q_proj",
        ),
        (
            "vocab_size contradicts the weights",
            cfg("vocab_size", json!(5000)),
            "embed_tokens",
        ),
        (
            "truncated tokenizer.json",
            Box::new(|d| {
                let t = std::fs::read(d.join("tokenizer.json")).unwrap();
                std::fs::write(d.join("tokenizer.json"), &t[..t.len() / 2]).unwrap();
            }),
            "tokenizer",
        ),
        (
            "tokenizer larger than the vocabulary",
            Box::new(|d| {
                edit_config(d, |v| v["vocab_size"] = json!(4000));
                edit_tensors(d, |t| {
                    let e = t.get_mut("model.embed_tokens.weight").unwrap();
                    let row = e.data.len() / e.shape[0];
                    e.data.truncate(4000 * row);
                    e.shape[0] = 4000;
                })
            }),
            "token ids up to 4095",
        ),
        (
            "NaN in a norm",
            tensor("model.layers.2.post_attention_layernorm.weight", nan_first),
            "`model.layers.2.post_attention_layernorm.weight` holds NaN at [0]",
        ),
        (
            "a norm that overflows",
            tensor("model.layers.2.post_attention_layernorm.weight", huge),
            "non-finite logits",
        ),
        (
            "a tensor vLLM does not know",
            Box::new(|d| {
                edit_tensors(d, |t| {
                    t.insert("model.extra.weight".into(), i64s(&[1, 2]));
                })
            }),
            "model.extra.weight",
        ),
        (
            "num_bits not a number",
            cfg("quantization_config", quant),
            "num_bits",
        ),
        ("rope_theta 0", cfg("rope_theta", json!(0.0)), "rope_theta"),
        (
            "a stray weights file beside model.safetensors (vLLM would load both)",
            Box::new(|d| {
                std::fs::copy(d.join("model.safetensors"), d.join("old-dense.safetensors"))
                    .unwrap();
            }),
            "old-dense.safetensors: a weights file",
        ),
        (
            "generation_config temperature",
            Box::new(|d| {
                std::fs::write(
                    d.join("generation_config.json"),
                    r#"{"do_sample": true, "temperature": -1, "eos_token_id": 14}"#,
                )
                .unwrap()
            }),
            "temperature -1",
        ),
    ];
    for (i, (what, damage, want)) in cases.iter().enumerate() {
        let d = copy_dir(&base, &tmp.path().join(format!("case{i}")));
        damage(&d);
        let zip = tmp.path().join(format!("submit{i}.zip"));
        let e = fails(
            &format!("package --model {} --out {}", s(&d), s(&zip)),
            &[want],
        );
        assert!(!zip.exists(), "{what}: {e}");
        let o = run(&format!("package --model {} --check", s(&d)));
        assert_eq!(o.code, 1, "{what}");
        assert!(o.stdout.contains(want), "{what}: {}", o.stdout);
    }
    // the undamaged copy packages
    let ok = tmp.path().join("ok.zip");
    succeeds(&format!("package --model {} --out {}", s(&base), s(&ok)));
    no_leftovers(tmp.path());
}

/// Runs the `baseline` study binary with `args`.
fn baseline(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_baseline"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_study_never_replaces_another_report_and_keeps_what_it_measured() {
    use exaone_compress::record::Results;
    let tmp = tempfile::tempdir().unwrap();
    // another experiment's report: refused before any work, kept as it was
    let other = tmp.path().join("other");
    let mut r = Results::new("prune", "cpu", "m");
    r.add(
        &exaone_compress::record::Variant::original(),
        "x",
        1.0,
        None,
        "",
    );
    r.save(&other).unwrap();
    let before = std::fs::read(other.join("results.parquet")).unwrap();
    let o = baseline(&["--out", s(&other)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("experiment `prune`") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(other.join("results.parquet")).unwrap(),
        before
    );
    // a directory of the user's files that is no report: refused even with --overwrite
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "precious").unwrap();
    let o = baseline(&["--out", s(&mine), "--overwrite"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a report"));
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "precious"
    );
    // a small study to a new directory: the report, and no partial results left behind
    let out = tmp.path().join("new");
    let small = [
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
    let o = baseline(&[&["--out", s(&out)][..], &small[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = Results::load(&out.join("results.parquet")).unwrap();
    assert_eq!(r.experiment, "baseline");
    assert!(r.get("original", "test_ppl").is_some());
    assert!(!out.join("results.partial.parquet").exists());
    // rerun onto its own report: refused without --overwrite (--out given), replaced with it
    assert_eq!(
        baseline(&[&["--out", s(&out)][..], &small[..]].concat())
            .status
            .code(),
        Some(1)
    );
    let o = baseline(&[&["--out", s(&out), "--overwrite"][..], &small[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    no_leftovers(&out);
    no_leftovers(tmp.path());
    // a model inside the report (or its checkpoints) would go with what the study replaces
    let inside = copy_dir(
        &exaone_compress::default_model_dir(),
        &out.join("checkpoints/m"),
    );
    let o = baseline(&["--out", s(&out), "--overwrite", "--model", s(&inside)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("lies inside --checkpoints"), "{err}");
    assert!(inside.join("model.safetensors").exists());
}

#[test]
fn a_study_killed_by_a_signal_leaves_its_scratch_where_the_next_run_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let args = [
        "--out",
        s(&out),
        "--eval-tokens",
        "256",
        "--speed-repeats",
        "0",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_baseline"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let scratch = || {
        std::fs::read_dir(tmp.path()).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .find(|n| n.starts_with(".report.partial-"))
        })
    };
    let t0 = std::time::Instant::now();
    while scratch().is_none() && t0.elapsed().as_secs() < 60 {
        assert!(child.try_wait().unwrap().is_none(), "the study ended first");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = scratch().expect("the study's scratch beside its report");
    let pid = child.id();
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(tmp.path().join(&left).exists());
    // as a run killed while writing its README.md inside the report folder leaves it
    std::fs::create_dir_all(&out).unwrap();
    let half = out.join(format!(".README.md.partial-{pid}-x"));
    std::fs::write(&half, "half a report").unwrap();
    // what the killed run left is no report of the user's: no --overwrite needed
    let o = baseline(&[&args[..], &["--mc-items", "2", "--kl-sequences", "2"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("removed") && err.contains(&left), "{err}");
    assert!(
        err.contains(".README.md.partial-") && !half.exists(),
        "{err}"
    );
    no_leftovers(tmp.path());
    no_leftovers(&out);
}

#[test]
fn package_refuses_quantized_tensors_that_no_quantization_config_describes() {
    let tmp = tempfile::tempdir().unwrap();
    let q = quantized(tmp.path(), "q", Scheme::w4a16(128, true));
    edit_config(&q, |c| {
        c.as_object_mut().unwrap().remove("quantization_config");
    });
    let out = tmp.path().join("s.zip");
    fails(
        &format!("package --model {} --out {}", s(&q), s(&out)),
        &["weight_packed", "no quantization_config"],
    );
    assert!(!out.exists());
}

#[test]
fn package_refuses_int4_groups_vllm_cannot_serve() {
    let tmp = tempfile::tempdir().unwrap();
    // the fixtures' Linears have 256 input columns: groups of 3 neither divide them nor are
    // among Marlin's sizes
    let q = quantized(tmp.path(), "q", Scheme::w4a16(3, true));
    let out = tmp.path().join("s.zip");
    fails(
        &format!("package --model {} --out {}", s(&q), s(&out)),
        &["group size 3", "Marlin"],
    );
    assert!(!out.exists());
}

#[test]
fn package_check_writes_nothing_so_takes_no_output_flags() {
    let m = fixture("full_tied");
    for extra in ["--out x.zip", "--overwrite"] {
        let cmd = format!("package --model {} --check {extra}", s(&m));
        fails(&cmd, &["--check", extra.split(' ').next().unwrap()]);
    }
    // a model directory that is not there is one problem, not one per file it lacks
    let o = run("package --model /nonexistent-model-dir --check");
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.stdout);
    assert!(o.stdout.contains("no such directory"), "{}", o.stdout);
    // a directory without config.json: said once
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&format!("package --model {} --check", s(tmp.path())));
    let said = |l: &&str| l.contains(" config.json") || l.contains("/config.json");
    assert_eq!(o.stdout.lines().filter(said).count(), 1, "{}", o.stdout);
}

#[test]
fn package_names_what_it_zips_beyond_the_model_and_a_recipe_of_other_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let m = copy_dir(&exaone_compress::default_model_dir(), &tmp.path().join("m"));
    std::fs::write(m.join("my_api_key.txt"), "secret").unwrap();
    // a recipe recorded for another checkpoint (a quantized one), copied here by hand
    let q = tmp.path().join("q");
    succeeds(&format!(
        "quantize --model {} --scheme w8a8 --method rtn --out {}",
        s(&m),
        s(&q)
    ));
    std::fs::copy(q.join("recipe.json"), m.join("recipe.json")).unwrap();
    let o = run(&format!("package --model {} --check", s(&m)));
    assert_eq!(o.code, 0, "{}", o.stderr);
    for want in [
        "my_api_key.txt is zipped too",
        "recorded for another checkpoint",
    ] {
        assert!(o.stderr.contains(want), "{want}: {}", o.stderr);
    }
    // its own recipe: no note about it
    let o = run(&format!("package --model {} --check", s(&q)));
    assert!(!o.stderr.contains("recipe"), "{}", o.stderr);
    // an unreadable recipe is said, and the zip is still written (vLLM does not read it)
    std::fs::write(m.join("recipe.json"), "{}").unwrap();
    let zip = tmp.path().join("s.zip");
    let o = succeeds(&format!("package --model {} --out {}", s(&m), s(&zip)));
    assert!(o.stderr.contains("cannot rebuild"), "{}", o.stderr);
    assert!(zip.is_file());
}

#[test]
fn a_model_with_nan_weights_has_no_kl_not_zero() {
    use exaone_compress::eval::divergence;
    let tmp = tempfile::tempdir().unwrap();
    let base = exaone_compress::default_model_dir();
    let broken = copy_dir(&base, &tmp.path().join("broken"));
    edit_tensors(&broken, |t| {
        let w = t.get_mut("model.norm.weight").unwrap();
        let nan = match w.dtype {
            safetensors::Dtype::BF16 => half::bf16::NAN.to_le_bytes().to_vec(),
            _ => f32::NAN.to_le_bytes().to_vec(),
        };
        w.data[..nan.len()].copy_from_slice(&nan);
    });
    let load =
        |d: &Path| exaone_compress::checkpoint::load_model(d, DType::F32, &Device::Cpu).unwrap();
    let seqs = vec![vec![1u32, 2, 3, 4], vec![5, 6, 7, 8]];
    let d = divergence(&load(&base), &load(&broken), &seqs, 2, None).unwrap();
    assert!(
        d.kl_mean.is_nan() && d.kl_p99.is_nan() && d.top1.is_nan(),
        "{d:?}"
    );
    // its multiple-choice items are wrong, whichever option is the label (not option 0's share)
    let tok = exaone_compress::model::Tokenizer::from_dir(&base).unwrap();
    let items: Vec<_> = (0..3)
        .map(|label| exaone_compress::eval::McItem {
            task: "t".into(),
            prompt: "Question: 1 + 1 = ? Answer:".into(),
            choices: vec![" 1".into(), " 2".into(), " 3".into()],
            label,
        })
        .collect();
    let mc = exaone_compress::eval::multiple_choice(&load(&broken), &tok, &items).unwrap();
    assert_eq!((mc.acc, mc.acc_norm), (0.0, 0.0), "{mc:?}");
    let mc = exaone_compress::eval::multiple_choice(&load(&base), &tok, &items).unwrap();
    assert!(
        (mc.acc - 1.0 / 3.0).abs() < 1e-9,
        "one label of three is the base's pick: {mc:?}"
    );
    // the same model: a finite 0
    let same = divergence(&load(&base), &load(&base), &seqs, 2, None).unwrap();
    assert!(same.kl_mean.abs() < 1e-6 && same.top1 == 1.0, "{same:?}");
}

#[test]
fn results_are_saved_as_a_pair_or_not_at_all() {
    use exaone_compress::record::{Results, Variant};
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Results::new("prune", "cpu", "m");
    r.add(&Variant::original(), "x", 1.0, None, "");
    r.save(tmp.path()).unwrap();
    let old = std::fs::read(tmp.path().join("results.parquet")).unwrap();
    // the CSV's destination cannot be replaced: the parquet beside it must stay the old one
    std::fs::remove_file(tmp.path().join("results.csv")).unwrap();
    std::fs::create_dir(tmp.path().join("results.csv")).unwrap();
    r.add(&Variant::original(), "y", 2.0, None, "");
    let err = r.save(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("results.csv"), "{err}");
    assert_eq!(
        std::fs::read(tmp.path().join("results.parquet")).unwrap(),
        old
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect();
    assert!(left.is_empty(), "temporaries left: {left:?}");
}
