//! Damaged inputs and hostile destinations: every command fails with exit status 1 and a message
//! naming the file, tensor or flag and the rule broken — never a panic (101) or an abort — and
//! leaves no output and no temporary behind; nothing the user owns is replaced without
//! `--overwrite`. Plus a seeded fuzz of safetensors headers and compressed-tensors parameters.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use common::{copy_fixture, fixture};
use exaone_compress::checkpoint::{RawTensor, WriteOptions};
use exaone_compress::compress::quant::{apply, Scheme};
use exaone_compress::Checkpoint;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
        .args(args)
        .output()
        .unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the CLI and asserts exit status 1 and that stderr holds every one of `want`.
fn fails(args: &[&str], want: &[&str]) -> String {
    let o = run(args);
    assert_eq!(
        o.code, 1,
        "{args:?} should fail with status 1:\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    for w in want {
        assert!(
            o.stderr.contains(w),
            "{args:?}: the message should mention {w:?}:\n{}",
            o.stderr
        );
    }
    o.stderr
}

fn succeeds(args: &[&str]) -> Out {
    let o = run(args);
    assert_eq!(o.code, 0, "{args:?} failed:\n{}", o.stderr);
    o
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// Asserts `dir` holds nothing a run leaves behind (temporaries, asides).
fn no_leftovers(dir: &Path) {
    let bad: Vec<String> = names(dir)
        .into_iter()
        .filter(|n| n.contains(".partial-") || n.contains(".old-") || n.starts_with(".tmp"))
        .collect();
    assert!(bad.is_empty(), "leftovers in {}: {bad:?}", dir.display());
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

/// Every tensor of `dir/model.safetensors` as stored.
fn read_tensors(dir: &Path) -> BTreeMap<String, RawTensor> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                RawTensor {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                },
            )
        })
        .collect()
}

fn write_tensors(dir: &Path, ts: &BTreeMap<String, RawTensor>) {
    safetensors::serialize_to_file(ts.iter(), None, &dir.join("model.safetensors")).unwrap();
}

fn edit_tensors(dir: &Path, f: impl FnOnce(&mut BTreeMap<String, RawTensor>)) {
    let mut ts = read_tensors(dir);
    f(&mut ts);
    write_tensors(dir, &ts);
}

fn i64s(v: &[i64]) -> RawTensor {
    RawTensor {
        dtype: safetensors::Dtype::I64,
        shape: vec![v.len()],
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn i32s(shape: Vec<usize>, v: &[i32]) -> RawTensor {
    RawTensor {
        dtype: safetensors::Dtype::I32,
        shape,
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The full_tied fixture quantized (RTN) with `scheme`, written to `parent/name`.
fn quantized(parent: &Path, name: &str, scheme: Scheme) -> PathBuf {
    let m =
        exaone_compress::checkpoint::load_model(&fixture("full_tied"), DType::F32, &Device::Cpu)
            .unwrap();
    let q = apply::quantize_rtn(&m, &scheme, &|_| false).unwrap();
    let out = parent.join(name);
    apply::save_quantized(&q, &out, &WriteOptions::default()).unwrap();
    out
}

/// A fresh copy of a quantized checkpoint directory.
fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to.to_path_buf()
}

const Q: &str = "model.layers.1.self_attn.q_proj";

#[test]
fn quantize_group_zero_and_bad_flags_fail_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let m = fixture("full_tied");
    for (extra, want) in [
        (vec!["--scheme", "w4a16", "--group", "0"], "--group 0"),
        (vec!["--scheme", "w4a17"], "unknown scheme"),
        (
            vec!["--scheme", "w4a16", "--method", "magic"],
            "unknown method",
        ),
        (
            vec!["--scheme", "w4a16", "--method", "gptq", "--calib-len", "0"],
            "--calib-len 0",
        ),
        (
            vec![
                "--scheme",
                "w4a16",
                "--method",
                "gptq",
                "--calib-samples",
                "0",
            ],
            "--calib-samples 0",
        ),
        // no tokenizer.json: the default model's tokenizer has ids the fixture's vocab lacks
        (vec!["--scheme", "w4a16", "--method", "gptq"], "vocab_size"),
    ] {
        let mut args = vec!["quantize", "--model", s(&m), "--out", s(&out)];
        args.extend(extra);
        fails(&args, &[want]);
        assert!(!out.exists());
    }
    no_leftovers(tmp.path());
}

#[test]
fn damaged_compressed_tensors_are_named_not_panicked_on() {
    let tmp = tempfile::tempdir().unwrap();
    let sym = quantized(tmp.path(), "sym", Scheme::w4a16(32, true));
    let asym = quantized(tmp.path(), "asym", Scheme::w4a16(32, false));
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, &PathBuf, Damage, Vec<&str>)> = vec![
        (
            "1-element weight_shape",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    t.insert(format!("{Q}.weight_shape"), i64s(&[128]));
                })
            }),
            vec!["weight_shape", "[2]"],
        ),
        (
            "negative weight_shape",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    t.insert(format!("{Q}.weight_shape"), i64s(&[128, -128]));
                })
            }),
            vec!["weight_shape", "positive"],
        ),
        (
            "huge weight_shape",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    t.insert(format!("{Q}.weight_shape"), i64s(&[128, 1 << 40]));
                })
            }),
            vec!["weight_packed"],
        ),
        (
            "g_idx out of range",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    let v: Vec<i32> = (0..128).map(|c| if c == 5 { 4 } else { c / 32 }).collect();
                    t.insert(format!("{Q}.weight_g_idx"), i32s(vec![128], &v));
                })
            }),
            vec!["weight_g_idx", "entry 5 is 4", "0..4"],
        ),
        (
            "negative g_idx",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    let v: Vec<i32> = (0..128).map(|c| if c == 0 { -1 } else { c / 32 }).collect();
                    t.insert(format!("{Q}.weight_g_idx"), i32s(vec![128], &v));
                })
            }),
            vec!["weight_g_idx", "-1"],
        ),
        (
            "short g_idx",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    t.insert(format!("{Q}.weight_g_idx"), i32s(vec![3], &[0, 1, 2]));
                })
            }),
            vec!["weight_g_idx", "[3]"],
        ),
        (
            "weight_scale with 0 rows",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    t.get_mut(&format!("{Q}.weight_scale")).unwrap().shape = vec![0, 4];
                    t.get_mut(&format!("{Q}.weight_scale"))
                        .unwrap()
                        .data
                        .clear();
                })
            }),
            vec!["weight_scale", "at least one row"],
        ),
        (
            "weight_scale with 0 groups",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    t.get_mut(&format!("{Q}.weight_scale")).unwrap().shape = vec![128, 0];
                    t.get_mut(&format!("{Q}.weight_scale"))
                        .unwrap()
                        .data
                        .clear();
                })
            }),
            vec!["weight_scale", "one group"],
        ),
        (
            "1-D weight_scale",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    let sc = t.get_mut(&format!("{Q}.weight_scale")).unwrap();
                    sc.shape = vec![sc.shape.iter().product()];
                })
            }),
            vec!["weight_scale", "expected [out_features, groups]"],
        ),
        (
            "NaN scale",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    let sc = t.get_mut(&format!("{Q}.weight_scale")).unwrap();
                    sc.data[2..4].copy_from_slice(&half::bf16::NAN.to_le_bytes());
                })
            }),
            vec!["weight_scale", "finite"],
        ),
        (
            "short weight_zero_point",
            &asym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    t.insert(format!("{Q}.weight_zero_point"), i32s(vec![1, 4], &[0; 4]));
                })
            }),
            vec!["weight_zero_point", "[1, 4]"],
        ),
        (
            "weight_packed stored as float",
            &sym,
            Box::new(|d| {
                edit_tensors(d, |t| {
                    t.get_mut(&format!("{Q}.weight_packed")).unwrap().dtype =
                        safetensors::Dtype::F32;
                })
            }),
            vec!["weight_packed", "int32"],
        ),
        (
            "num_bits not a number",
            &sym,
            Box::new(|d| {
                edit_config(d, |v| {
                    v["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] =
                        json!("four");
                })
            }),
            vec!["num_bits", "\"four\""],
        ),
        (
            "group_size 0",
            &sym,
            Box::new(|d| {
                edit_config(d, |v| {
                    v["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] =
                        json!(0);
                })
            }),
            vec!["group_size", "0"],
        ),
        (
            "8-bit packed",
            &sym,
            Box::new(|d| {
                edit_config(d, |v| {
                    v["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] =
                        json!(8);
                })
            }),
            vec!["num_bits", "8"],
        ),
    ];
    for (i, (what, src, damage, want)) in cases.iter().enumerate() {
        let d = copy_dir(src, &tmp.path().join(format!("case{i}")));
        damage(&d);
        let out = tmp.path().join(format!("dense{i}"));
        let e = fails(&["dequant", "--model", s(&d), "--out", s(&out)], want);
        assert!(!out.exists(), "{what}: {e}");
        fails(
            &[
                "generate",
                "--model",
                s(&d),
                "--ids",
                "1,2,3",
                "--max-new-tokens",
                "2",
            ],
            want,
        );
        let zip = tmp.path().join(format!("z{i}.zip"));
        let o = run(&["package", "--model", s(&d), "--out", s(&zip)]);
        assert_eq!(o.code, 1, "{what}: package must refuse:\n{}", o.stderr);
        assert!(!zip.exists(), "{what}");
    }
    no_leftovers(tmp.path());
}

#[test]
fn config_values_that_give_garbage_are_refused() {
    let tmp = copy_fixture("full_tied");
    let d = tmp.path();
    let orig = std::fs::read_to_string(d.join("config.json")).unwrap();
    for (key, value, want) in [
        ("rope_theta", json!(0.0), "rope_theta"),
        ("rope_theta", json!(-10000.0), "rope_theta"),
        ("rms_norm_eps", json!(-1e-6), "rms_norm_eps"),
        ("vocab_size", json!(0), "vocab_size"),
        (
            "max_position_embeddings",
            json!(0),
            "max_position_embeddings",
        ),
        ("eos_token_id", json!(512), "eos_token_id"),
        ("pad_token_id", json!(70000), "pad_token_id"),
        ("hidden_size", json!(1u64 << 62), "too large"),
    ] {
        std::fs::write(d.join("config.json"), &orig).unwrap();
        edit_config(d, |v| v[key] = value.clone());
        fails(&["info", "--model", s(d)], &[key, "config.json"]);
        fails(
            &[
                "generate",
                "--model",
                s(d),
                "--ids",
                "1,2",
                "--max-new-tokens",
                "1",
            ],
            &[want],
        );
    }
    std::fs::write(d.join("config.json"), &orig).unwrap();
    edit_config(d, |v| {
        v["rope_scaling"]["low_freq_factor"] = json!(0.0);
    });
    fails(
        &["info", "--model", s(d)],
        &["rope_scaling.low_freq_factor"],
    );
}

#[test]
fn info_counts_parameters_of_a_huge_vocabulary_exactly() {
    let tmp = copy_fixture("full_tied");
    let vocab: u128 = 1 << 40;
    edit_config(tmp.path(), |v| v["vocab_size"] = json!(vocab as u64));
    let o = succeeds(&["info", "--json", "--model", s(tmp.path())]);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    // the fixture's count minus its 512-row embedding plus the new one
    let want = 484_320u128 - 512 * 128 + vocab * 128;
    assert_eq!(v["parameters"].as_u64().unwrap() as u128, want);
}

#[test]
fn rtn_refuses_nan_and_infinite_weights() {
    for bad in [f32::NAN, f32::INFINITY] {
        let tmp = copy_fixture("full_tied");
        edit_tensors(tmp.path(), |t| {
            let w = t.get_mut("model.layers.0.mlp.up_proj.weight").unwrap();
            w.data[40..44].copy_from_slice(&bad.to_le_bytes());
        });
        let out = tmp.path().join("q");
        fails(
            &[
                "quantize",
                "--model",
                s(tmp.path()),
                "--scheme",
                "w4a16",
                "--out",
                s(&out),
            ],
            &["RTN", if bad.is_nan() { "NaN" } else { "inf" }],
        );
        assert!(!out.exists());
        no_leftovers(tmp.path());
    }
}

#[test]
fn generation_flags_are_range_checked_and_the_context_caps_new_tokens() {
    let m = fixture("full_tied");
    for (flag, value) in [
        ("--temperature", "-1"),
        ("--temperature", "0"),
        ("--temperature", "NaN"),
        ("--top-p", "-0.5"),
        ("--top-p", "2"),
        ("--top-p", "0"),
    ] {
        fails(
            &[
                "generate",
                "--model",
                s(&m),
                "--ids",
                "1,2",
                &format!("{flag}={value}"),
            ],
            &[flag, value],
        );
    }
    // ids outside the vocabulary, for generate and logits
    fails(
        &["generate", "--model", s(&m), "--ids", "1,512"],
        &["--ids", "512", "vocab_size 512"],
    );
    let tmp = copy_fixture("full_tied");
    let npy = tmp.path().join("l.npy");
    fails(
        &[
            "logits",
            "--model",
            s(&m),
            "--ids",
            "3,9999",
            "--out",
            s(&npy),
        ],
        &["--ids", "9999"],
    );
    assert!(!npy.exists());
    // a huge --max-new-tokens is capped at the context, also at u64::MAX (no wrap-around)
    edit_config(tmp.path(), |v| v["max_position_embeddings"] = json!(12));
    for n in ["100000000", "18446744073709551615"] {
        let o = succeeds(&[
            "generate",
            "--model",
            s(tmp.path()),
            "--ids",
            "5,6,7",
            "--greedy",
            "--max-new-tokens",
            n,
            "--min-new-tokens",
            "100",
            "--print-ids",
        ]);
        assert!(o.stderr.contains("capped at 9"), "{}", o.stderr);
        let ids: Vec<u32> = serde_json::from_str(o.stdout.lines().last().unwrap()).unwrap();
        assert_eq!(ids.len(), 9);
    }
    // a prompt longer than the context is refused
    fails(
        &[
            "generate",
            "--model",
            s(tmp.path()),
            "--ids",
            "1,2,3,4,5,6,7,8,9,10,11,12,13",
        ],
        &["max_position_embeddings 12"],
    );
}

#[test]
fn speed_with_zero_repeats_is_an_error() {
    let m =
        exaone_compress::checkpoint::load_model(&fixture("full_tied"), DType::F32, &Device::Cpu)
            .unwrap();
    let e = exaone_compress::eval::speed::measure(&m, 4, 2, 0, 0).unwrap_err();
    assert!(e.to_string().contains("repeats"), "{e}");
    assert!(exaone_compress::eval::speed::measure(&m, 0, 2, 0, 1).is_err());
}

#[test]
fn outputs_never_replace_what_the_user_owns() {
    let tmp = tempfile::tempdir().unwrap();
    let model = copy_dir(
        &exaone_compress::default_model_dir(),
        &tmp.path().join("model"),
    );
    let st = std::fs::read(model.join("model.safetensors")).unwrap();
    // package into the model directory, or onto one of its files: refused, even with --overwrite
    for out in ["model.safetensors", "submit.zip"] {
        fails(
            &[
                "package",
                "--model",
                s(&model),
                "--out",
                s(&model.join(out)),
                "--overwrite",
            ],
            &["inside the input directory"],
        );
    }
    assert_eq!(std::fs::read(model.join("model.safetensors")).unwrap(), st);
    assert!(!model.join("submit.zip").exists());
    // an existing --out is kept without --overwrite, replaced with it
    let zip = tmp.path().join("submit.zip");
    std::fs::write(&zip, "precious").unwrap();
    fails(
        &["package", "--model", s(&model), "--out", s(&zip)],
        &["already exists", "--overwrite"],
    );
    assert_eq!(std::fs::read_to_string(&zip).unwrap(), "precious");
    succeeds(&[
        "package",
        "--model",
        s(&model),
        "--out",
        s(&zip),
        "--overwrite",
    ]);
    let z = zip::ZipArchive::new(std::fs::File::open(&zip).unwrap()).unwrap();
    assert!(z.len() >= 5);
    // --out below a file
    let below = zip.join("x.zip");
    fails(
        &["package", "--model", s(&model), "--out", s(&below)],
        &["not a directory"],
    );
    // logits onto an existing file
    let npy = tmp.path().join("l.npy");
    std::fs::write(&npy, "precious").unwrap();
    let ids = [
        "logits",
        "--model",
        s(&model),
        "--ids",
        "1,2,3",
        "--out",
        s(&npy),
    ];
    fails(&ids, &["already exists"]);
    assert_eq!(std::fs::read_to_string(&npy).unwrap(), "precious");
    let mut with = ids.to_vec();
    with.push("--overwrite");
    succeeds(&with);
    let l = candle_core::Tensor::read_npy(&npy).unwrap();
    assert_eq!(l.dims(), &[3, 4096]);
    // model outputs: an existing directory is kept; --overwrite never replaces a directory that
    // is not a model, nor the input itself
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    for extra in [vec![], vec!["--overwrite"]] {
        let mut a = vec!["dequant", "--model", s(&model), "--out", s(&mine)];
        a.extend(extra);
        fails(&a, &[s(&mine)]);
        assert_eq!(
            std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
            "keep me"
        );
    }
    fails(
        &[
            "dequant",
            "--model",
            s(&model),
            "--out",
            s(&model),
            "--overwrite",
        ],
        &["input"],
    );
    fails(
        &[
            "prune",
            "--model",
            s(&model),
            "--drop",
            "1",
            "--out",
            s(tmp.path()),
            "--overwrite",
        ],
        &["contains the input"],
    );
    assert_eq!(std::fs::read(model.join("model.safetensors")).unwrap(), st);
    // quantize notices an existing --out before quantizing
    let t0 = std::time::Instant::now();
    fails(
        &[
            "quantize",
            "--model",
            s(&model),
            "--scheme",
            "w4a16",
            "--method",
            "gptq",
            "--out",
            s(&mine),
        ],
        &["already exists"],
    );
    assert!(t0.elapsed().as_secs_f64() < 20.0);
    no_leftovers(tmp.path());
}

#[test]
fn stale_temporaries_of_killed_runs_are_cleaned_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("full_tied");
    // a pid above Linux's maximum (2^22) can never be alive
    let dead = tmp.path().join(".out.partial-99999999-abc123");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("model.safetensors"), vec![0u8; 1000]).unwrap();
    let legacy = tmp.path().join(".out.partial-Xy12Zq");
    std::fs::create_dir(&legacy).unwrap();
    let npy_tmp = tmp.path().join(".l.npy.partial-99999999-zzz");
    std::fs::write(&npy_tmp, "half").unwrap();
    let out = tmp.path().join("out");
    let o = succeeds(&["dequant", "--model", s(&model), "--out", s(&out)]);
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
    succeeds(&[
        "logits",
        "--model",
        s(&model),
        "--ids",
        "1,2",
        "--out",
        s(&npy),
    ]);
    assert!(!npy_tmp.exists());
    // an overwrite killed after moving the old output aside: the next run puts it back first
    std::fs::rename(&out, tmp.path().join(".out.old-99999999-q1w2e3")).unwrap();
    let o = fails(
        &["dequant", "--model", s(&model), "--out", s(&out)],
        &["already exists"],
    );
    assert!(o.contains("restored"), "{o}");
    assert!(out.join("config.json").exists());
    no_leftovers(tmp.path());
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
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
                .args(["dequant", "--model", s(&m), "--out", s(&dest)])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_eq!(runs.iter().filter(|o| o.status.success()).count(), 1);
    assert!(runs.iter().all(|o| o.status.code() != Some(101)));
    no_leftovers(t);
}

#[test]
fn package_checks_contents_not_just_names() {
    let tmp = tempfile::tempdir().unwrap();
    let base = copy_dir(
        &exaone_compress::default_model_dir(),
        &tmp.path().join("base"),
    );
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "q_proj shape contradicts the config",
            Box::new(|d| {
                edit_tensors(d, |t| {
                    let w = t.get_mut("model.layers.3.self_attn.q_proj.weight").unwrap();
                    let n = w.data.len() / 2;
                    w.data.truncate(n);
                    w.shape[0] /= 2;
                })
            }),
            "model.layers.3.self_attn.q_proj.weight",
        ),
        (
            "head_dim contradicts the weights",
            Box::new(|d| edit_config(d, |v| v["head_dim"] = json!(32))),
            "q_proj",
        ),
        (
            "vocab_size contradicts the weights",
            Box::new(|d| edit_config(d, |v| v["vocab_size"] = json!(5000))),
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
            Box::new(|d| {
                edit_tensors(d, |t| {
                    let w = t
                        .get_mut("model.layers.2.post_attention_layernorm.weight")
                        .unwrap();
                    let nan = match w.dtype {
                        safetensors::Dtype::BF16 => half::bf16::NAN.to_le_bytes().to_vec(),
                        _ => f32::NAN.to_le_bytes().to_vec(),
                    };
                    w.data[..nan.len()].copy_from_slice(&nan);
                })
            }),
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
            Box::new(|d| {
                edit_config(d, |v| {
                    v["quantization_config"] = json!({
                    "quant_method": "compressed-tensors", "format": "pack-quantized",
                    "ignore": ["lm_head"],
                    "config_groups": {"group_0": {"targets": ["Linear"],
                        "weights": {"num_bits": "four", "type": "int", "symmetric": true,
                                    "strategy": "group", "group_size": 128}}}});
                })
            }),
            "num_bits",
        ),
    ];
    for (i, (what, damage, want)) in cases.iter().enumerate() {
        let d = copy_dir(&base, &tmp.path().join(format!("case{i}")));
        damage(&d);
        let zip = tmp.path().join(format!("submit{i}.zip"));
        let e = fails(&["package", "--model", s(&d), "--out", s(&zip)], &[want]);
        assert!(!zip.exists(), "{what}: {e}");
        let o = run(&["package", "--model", s(&d), "--check"]);
        assert_eq!(o.code, 1, "{what}");
        assert!(o.stdout.contains(want), "{what}: {}", o.stdout);
    }
    // the undamaged copy packages
    succeeds(&[
        "package",
        "--model",
        s(&base),
        "--out",
        s(&tmp.path().join("ok.zip")),
    ]);
    no_leftovers(tmp.path());
}

/// Loads `dir` through the library the way every command does; must return, never panic.
fn load_never_panics(dir: &Path, what: &str) {
    let r = std::panic::catch_unwind(|| {
        let Ok(ck) = Checkpoint::open(dir) else {
            return;
        };
        let _ = ck.load_model(DType::F32, &Device::Cpu);
        let names: Vec<String> = ck.names().cloned().collect();
        for n in &names {
            let _ = ck.raw(n, &Device::Cpu);
            if let Some(p) = n.strip_suffix(".weight_scale") {
                let _ = ck.dequantized(p);
            }
        }
    });
    assert!(r.is_ok(), "panicked on {what}");
}

#[test]
fn randomized_damage_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let tmp = tempfile::tempdir().unwrap();
    // 1. safetensors headers: truncation, bit flips, shape / offset / dtype edits
    let dense = copy_fixture("full_tied");
    let orig = std::fs::read(dense.path().join("model.safetensors")).unwrap();
    let hlen = u64::from_le_bytes(orig[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&orig[8..8 + hlen]).unwrap();
    let tensor_names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let values = [
        0u64,
        1,
        2,
        7,
        127,
        128,
        1 << 31,
        1 << 40,
        u64::MAX / 2,
        u64::MAX,
    ];
    for it in 0..150 {
        let bytes = match rng.random_range(0..4) {
            0 => orig[..rng.random_range(0..orig.len())].to_vec(),
            1 => {
                let mut b = orig.clone();
                for _ in 0..rng.random_range(1..4) {
                    let k = rng.random_range(0..8 + hlen);
                    b[k] ^= 1 << rng.random_range(0..8);
                }
                b
            }
            _ => {
                let mut h = header.clone();
                let n = &tensor_names[rng.random_range(0..tensor_names.len())];
                let t = &mut h[n.as_str()];
                match rng.random_range(0..4) {
                    0 => {
                        let dims = t["shape"].as_array().unwrap().len();
                        let k = rng.random_range(0..dims.max(1));
                        t["shape"][k] = json!(values[rng.random_range(0..values.len())]);
                    }
                    1 => {
                        let k = rng.random_range(0..2);
                        t["data_offsets"][k] = json!(values[rng.random_range(0..values.len())]);
                    }
                    2 => {
                        let d = ["I8", "U8", "F64", "BOOL", "I64", "F8_E5M2", "F16"];
                        t["dtype"] = json!(d[rng.random_range(0..d.len())]);
                    }
                    _ => {
                        t["shape"] = json!([]);
                    }
                }
                let text = h.to_string();
                let mut b = (text.len() as u64).to_le_bytes().to_vec();
                b.extend_from_slice(text.as_bytes());
                b.extend_from_slice(&orig[8 + hlen..]);
                b
            }
        };
        let d = tmp.path().join("dense");
        copy_dir(dense.path(), &d);
        std::fs::write(d.join("model.safetensors"), &bytes).unwrap();
        load_never_panics(&d, &format!("header damage {it}"));
    }
    // 2. compressed-tensors parameters: values, shapes and dtypes of the auxiliary tensors
    let sym = quantized(tmp.path(), "qs", Scheme::w4a16(32, true));
    let asym = quantized(tmp.path(), "qa", Scheme::w4a16(32, false));
    let w8 = quantized(tmp.path(), "q8", Scheme::w8a8_int8());
    let srcs = [read_tensors(&sym), read_tensors(&asym), read_tensors(&w8)];
    let dirs = [&sym, &asym, &w8];
    let dtypes = [
        safetensors::Dtype::I32,
        safetensors::Dtype::I64,
        safetensors::Dtype::BF16,
        safetensors::Dtype::F32,
        safetensors::Dtype::U8,
        safetensors::Dtype::I8,
    ];
    for it in 0..150 {
        let k = rng.random_range(0..3);
        let mut ts = srcs[k].clone();
        let layer = rng.random_range(0..3);
        let lin = ["self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"][rng.random_range(0..3)];
        let pre = format!("model.layers.{layer}.{lin}");
        let suffix = [
            "weight_scale",
            "weight_packed",
            "weight_shape",
            "weight_zero_point",
            "weight_g_idx",
            "weight",
        ][rng.random_range(0..6)];
        let name = format!("{pre}.{suffix}");
        let mut t = ts.get(&name).cloned().unwrap_or(RawTensor {
            dtype: safetensors::Dtype::I32,
            shape: vec![128],
            data: vec![0; 512],
        });
        match rng.random_range(0..5) {
            0 => {
                ts.remove(&name);
            }
            1 => {
                // random values, same shape
                rng.fill(&mut t.data[..]);
                ts.insert(name, t);
            }
            2 => {
                // a new small shape, random contents
                let dims = rng.random_range(0..3);
                t.shape = (0..dims).map(|_| rng.random_range(0..300)).collect();
                let n: usize = t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
                t.data = vec![0; n];
                rng.fill(&mut t.data[..]);
                ts.insert(name, t);
            }
            3 => {
                // another dtype, contents resized
                t.dtype = dtypes[rng.random_range(0..dtypes.len())];
                let n: usize = t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
                t.data.resize(n, 0x7f);
                ts.insert(name, t);
            }
            _ => {
                // single extreme values (shape entries, group indices, scales)
                let v =
                    [i64::MIN, -1, 0, 1, 4, 127, 128, 1 << 33, i64::MAX][rng.random_range(0..9)];
                let w = t.dtype.bitsize() / 8;
                if t.data.len() >= w && w > 0 {
                    let at = rng.random_range(0..t.data.len() / w) * w;
                    t.data[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
                }
                ts.insert(name, t);
            }
        }
        let d = copy_dir(dirs[k], &tmp.path().join("ct"));
        write_tensors(&d, &ts);
        load_never_panics(
            &d,
            &format!("compressed-tensors damage {it} ({pre}.{suffix})"),
        );
        if it % 30 == 0 {
            // the CLI on the same damage: status 0 or 1, never 101
            let o = run(&[
                "generate",
                "--model",
                s(&d),
                "--ids",
                "1,2",
                "--max-new-tokens",
                "1",
            ]);
            assert!(
                o.code == 0 || o.code == 1,
                "status {}: {}",
                o.code,
                o.stderr
            );
        }
    }
}
