//! Damaged inputs and hostile destinations: every command fails with exit status 1 and a message
//! naming the file, tensor or flag and the rule broken — never a panic (101) or an abort — and
//! leaves no output and no temporary behind; nothing the user owns is replaced without
//! `--overwrite`. Plus a seeded fuzz of safetensors headers and compressed-tensors parameters.

#[path = "bad_inputs/clobber.rs"]
mod clobber;
mod common;
#[path = "bad_inputs/flags.rs"]
mod flags;
#[path = "bad_inputs/fuzz.rs"]
mod fuzz;
#[path = "bad_inputs/nonfinite_and_inside.rs"]
mod nonfinite_and_inside;

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

/// Runs the CLI on a command line (split at whitespace: the paths here have none).
fn run(cmd: &str) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
        .args(cmd.split_whitespace())
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
fn fails(cmd: &str, want: &[&str]) -> String {
    let o = run(cmd);
    assert_eq!(
        o.code, 1,
        "`{cmd}` should fail with 1:\n{}\n{}",
        o.stdout, o.stderr
    );
    for w in want {
        assert!(
            o.stderr.contains(w),
            "`{cmd}`: no mention of {w:?}:\n{}",
            o.stderr
        );
    }
    o.stderr
}

fn succeeds(cmd: &str) -> Out {
    let o = run(cmd);
    assert_eq!(o.code, 0, "`{cmd}` failed:\n{}", o.stderr);
    o
}

/// Asserts `dir` holds nothing a run leaves behind (temporaries, asides).
fn no_leftovers(dir: &Path) {
    let bad: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
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
    let raw = |v: safetensors::tensor::TensorView| RawTensor {
        dtype: v.dtype(),
        shape: v.shape().to_vec(),
        data: v.data().to_vec(),
    };
    st.tensors().into_iter().map(|(n, v)| (n, raw(v))).collect()
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
    let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    RawTensor {
        dtype: safetensors::Dtype::I64,
        shape: vec![v.len()],
        data,
    }
}

fn i32s(shape: Vec<usize>, v: &[i32]) -> RawTensor {
    let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    RawTensor {
        dtype: safetensors::Dtype::I32,
        shape,
        data,
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
    let q = format!(
        "quantize --model {} --out {}",
        s(&fixture("full_tied")),
        s(&out)
    );
    for (extra, want) in [
        ("--scheme w4a16 --group 0", "--group 0"),
        ("--scheme w4a17", "unknown scheme"),
        ("--scheme w4a16 --method magic", "unknown method"),
        (
            "--scheme w4a16 --method gptq --calib-len 0",
            "--calib-len 0",
        ),
        (
            "--scheme w4a16 --method gptq --calib-samples 0",
            "--calib-samples 0",
        ),
        // no tokenizer.json: the default model's tokenizer has ids the fixture's vocab lacks
        ("--scheme w4a16 --method gptq", "vocab_size"),
        // the flag's file, said as such (not as a recipe's)
        (
            "--scheme w4a16 --method gptq --calib no-such-file.txt",
            "calibration data",
        ),
        ("--scheme w4a16 --ignore ,", "--ignore: an empty pattern"),
    ] {
        fails(&format!("{q} {extra}"), &[want]);
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
    let put = |name: String, t: RawTensor| -> Damage {
        Box::new(move |d| {
            edit_tensors(d, |ts| {
                ts.insert(name.clone(), t.clone());
            })
        })
    };
    let weights = |key: &'static str, v: Value| -> Damage {
        let set = move |c: &mut Value| {
            c["quantization_config"]["config_groups"]["group_0"]["weights"][key] = v.clone()
        };
        Box::new(move |d| edit_config(d, set.clone()))
    };
    let scale = |f: fn(&mut RawTensor)| -> Damage {
        Box::new(move |d| edit_tensors(d, |t| f(t.get_mut(&format!("{Q}.weight_scale")).unwrap())))
    };
    let g_idx = |at: i32, v: i32| -> Vec<i32> {
        (0..128).map(|c| if c == at { v } else { c / 32 }).collect()
    };
    let (shape, gi, zp) = (
        format!("{Q}.weight_shape"),
        format!("{Q}.weight_g_idx"),
        format!("{Q}.weight_zero_point"),
    );
    let cases: Vec<(&str, &PathBuf, Damage, Vec<&str>)> = vec![
        (
            "1-element weight_shape",
            &sym,
            put(shape.clone(), i64s(&[128])),
            vec!["weight_shape", "[2]"],
        ),
        (
            "negative weight_shape",
            &sym,
            put(shape.clone(), i64s(&[128, -128])),
            vec!["weight_shape", "positive"],
        ),
        (
            "huge weight_shape",
            &sym,
            put(shape.clone(), i64s(&[128, 1 << 40])),
            vec!["weight_packed"],
        ),
        (
            "g_idx out of range",
            &sym,
            put(gi.clone(), i32s(vec![128], &g_idx(5, 4))),
            vec!["weight_g_idx", "entry 5 is 4", "0..4"],
        ),
        (
            "negative g_idx",
            &sym,
            put(gi.clone(), i32s(vec![128], &g_idx(0, -1))),
            vec!["weight_g_idx", "-1"],
        ),
        (
            "short g_idx",
            &sym,
            put(gi.clone(), i32s(vec![3], &[0, 1, 2])),
            vec!["weight_g_idx", "[3]"],
        ),
        (
            "weight_scale with 0 rows",
            &sym,
            scale(|t| {
                t.shape = vec![0, 4];
                t.data.clear()
            }),
            vec!["weight_scale", "at least one row"],
        ),
        (
            "weight_scale with 0 groups",
            &sym,
            scale(|t| {
                t.shape = vec![128, 0];
                t.data.clear()
            }),
            vec!["weight_scale", "one group"],
        ),
        (
            "1-D weight_scale",
            &sym,
            scale(|t| t.shape = vec![t.shape.iter().product()]),
            vec!["weight_scale", "expected [out_features, groups]"],
        ),
        (
            "NaN scale",
            &sym,
            scale(|t| t.data[2..4].copy_from_slice(&half::bf16::NAN.to_le_bytes())),
            vec!["weight_scale", "finite"],
        ),
        (
            "negative scale",
            &sym,
            scale(|t| t.data[2..4].copy_from_slice(&half::bf16::from_f32(-1.0).to_le_bytes())),
            vec!["weight_scale", "-1 at [0, 1]", "not negative"],
        ),
        (
            "short weight_zero_point",
            &asym,
            put(zp.clone(), i32s(vec![1, 4], &[0; 4])),
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
            weights("num_bits", json!("four")),
            vec!["num_bits", "\"four\""],
        ),
        (
            "group_size 0",
            &sym,
            weights("group_size", json!(0)),
            vec!["group_size", "0"],
        ),
        (
            "8-bit packed",
            &sym,
            weights("num_bits", json!(8)),
            vec!["num_bits", "8"],
        ),
        (
            "unknown actorder",
            &sym,
            weights("actorder", json!("sideways")),
            vec!["actorder", "sideways"],
        ),
        (
            "symmetric not a bool",
            &sym,
            weights("symmetric", json!("yes")),
            vec!["symmetric"],
        ),
    ];
    for (i, (what, src, damage, want)) in cases.iter().enumerate() {
        let d = copy_dir(src, &tmp.path().join(format!("case{i}")));
        damage(&d);
        let out = tmp.path().join(format!("dense{i}"));
        let e = fails(
            &format!("dequant --model {} --out {}", s(&d), s(&out)),
            want,
        );
        assert!(!out.exists(), "{what}: {e}");
        let gen = format!("generate --model {} --ids 1,2,3 --max-new-tokens 2", s(&d));
        fails(&gen, want);
        let zip = tmp.path().join(format!("z{i}.zip"));
        let o = run(&format!("package --model {} --out {}", s(&d), s(&zip)));
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
        ("sliding_window", json!(0), "sliding_window"),
        ("hidden_size", json!(1u64 << 62), "too large"),
        // sized before any other check (an abort allocating the layer types, once)
        ("num_hidden_layers", json!(1u64 << 40), "num_hidden_layers"),
        ("num_hidden_layers", json!(0), "num_hidden_layers"),
        ("dtype", json!("float9"), "not a dtype"),
        ("dtype", json!(5), "not a dtype"),
        ("dtype", json!("int8"), "not a dtype"),
    ] {
        std::fs::write(d.join("config.json"), &orig).unwrap();
        edit_config(d, |v| v[key] = value.clone());
        fails(&format!("info --model {}", s(d)), &[key, "config.json"]);
        let gen = format!("generate --model {} --ids 1,2 --max-new-tokens 1", s(d));
        fails(&gen, &[want]);
    }
    std::fs::write(d.join("config.json"), &orig).unwrap();
    edit_config(d, |v| v["rope_scaling"]["low_freq_factor"] = json!(0.0));
    fails(
        &format!("info --model {}", s(d)),
        &["rope_scaling.low_freq_factor"],
    );
}

#[test]
fn info_counts_parameters_of_a_huge_vocabulary_exactly() {
    let tmp = copy_fixture("full_tied");
    let vocab: u128 = 1 << 40;
    edit_config(tmp.path(), |v| v["vocab_size"] = json!(vocab as u64));
    let o = succeeds(&format!("info --json --model {}", s(tmp.path())));
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
        let dest = tempfile::tempdir().unwrap();
        let out = dest.path().join("q");
        let cmd = format!(
            "quantize --model {} --scheme w4a16 --out {}",
            s(tmp.path()),
            s(&out)
        );
        let nan = if bad.is_nan() { "NaN" } else { "inf" };
        fails(&cmd, &["model.layers.0.mlp.up_proj.weight: RTN", nan]);
        assert!(!out.exists());
        no_leftovers(dest.path());
    }
}

#[test]
fn generation_flags_are_range_checked_and_the_context_caps_new_tokens() {
    let m = fixture("full_tied");
    let gen = format!("generate --model {} --ids 1,2", s(&m));
    for (flag, value) in [
        ("--temperature", "-1"),
        ("--temperature", "0"),
        ("--temperature", "NaN"),
        ("--top-p", "-0.5"),
        ("--top-p", "2"),
        ("--top-p", "0"),
    ] {
        fails(&format!("{gen} {flag}={value}"), &[flag, value]);
    }
    // ids outside the vocabulary, for generate and logits
    fails(&format!("{gen},512"), &["--ids", "512", "vocab_size 512"]);
    let tmp = copy_fixture("full_tied");
    let npy = tmp.path().join("l.npy");
    let cmd = format!("logits --model {} --ids 3,9999 --out {}", s(&m), s(&npy));
    fails(&cmd, &["--ids", "9999"]);
    assert!(!npy.exists());
    // a huge --max-new-tokens is capped at the context, also at u64::MAX (no wrap-around)
    edit_config(tmp.path(), |v| v["max_position_embeddings"] = json!(12));
    let gen = format!("generate --model {} --greedy --print-ids", s(tmp.path()));
    for n in ["100000000", "18446744073709551615"] {
        let o = succeeds(&format!(
            "{gen} --ids 5,6,7 --max-new-tokens {n} --min-new-tokens 100"
        ));
        // 9 positions run 9 tokens; the 10th new one is never run (as in vLLM)
        assert!(o.stderr.contains("capped at 10"), "{}", o.stderr);
        let ids: Vec<u32> = serde_json::from_str(o.stdout.lines().last().unwrap()).unwrap();
        assert_eq!(ids.len(), 10);
    }
    // a prompt longer than the context is refused
    let long = format!("{gen} --ids 1,2,3,4,5,6,7,8,9,10,11,12,13");
    fails(&long, &["max_position_embeddings 12"]);
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
fn shards_outside_the_model_directory_and_broken_generation_configs_are_named() {
    let dir = copy_fixture("full_tied_bf16_sharded");
    let index = dir.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    // a shard one level up: a copy of a real shard, so only the path is at fault
    let outside = dir
        .path()
        .parent()
        .unwrap()
        .join("model-00001-of-00004.safetensors");
    std::fs::copy(
        dir.path().join("model-00001-of-00004.safetensors"),
        &outside,
    )
    .unwrap();
    let bad = text.replace(
        "\"model-00001-of-00004.safetensors\"",
        "\"../model-00001-of-00004.safetensors\"",
    );
    assert_ne!(bad, text);
    std::fs::write(&index, bad).unwrap();
    let cmd = format!(
        "generate --model {} --ids 5,6 --max-new-tokens 2",
        s(dir.path())
    );
    fails(
        &cmd,
        &["weight_map", "not a file name inside the model directory"],
    );
    let _ = std::fs::remove_file(outside);
    // a generation_config.json that is not JSON is an error naming it, not silent greedy
    let dir = copy_fixture("full_tied");
    std::fs::write(dir.path().join("generation_config.json"), "{ not json").unwrap();
    let cmd = format!(
        "generate --model {} --ids 5,6 --max-new-tokens 2",
        s(dir.path())
    );
    fails(&cmd, &["generation_config.json", "invalid JSON"]);
}

#[test]
fn dequant_of_a_dense_model_checks_what_it_copies() {
    let tmp = tempfile::tempdir().unwrap();
    type Damage = fn(&mut BTreeMap<String, RawTensor>);
    let cases: [(&str, Damage, &str); 3] = [
        (
            "transposed",
            |t| {
                let w = t.get_mut("model.layers.0.mlp.up_proj.weight").unwrap();
                w.shape.reverse();
            },
            "has shape",
        ),
        (
            "missing",
            |t| {
                t.remove("model.layers.1.self_attn.o_proj.weight");
            },
            "o_proj.weight",
        ),
        (
            "bytes",
            |t| {
                let w = t.get_mut("model.norm.weight").unwrap();
                let n = w.data.len();
                w.dtype = safetensors::Dtype::U8;
                w.shape = vec![n];
            },
            "model.norm.weight",
        ),
    ];
    for (name, damage, want) in cases {
        let m = copy_dir(&fixture("full_tied"), &tmp.path().join(name));
        edit_tensors(&m, damage);
        let out = tmp.path().join(format!("{name}-out"));
        fails(
            &format!("dequant --model {} --out {}", s(&m), s(&out)),
            &[want],
        );
        assert!(!out.exists(), "{name}");
    }
    no_leftovers(tmp.path());
}

/// The study binaries refuse flags that contradict each other, and `compare` names it
/// measures twice (or as the base), before any work: nothing is written.
#[test]
fn errors_say_what_is_wrong_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let m = exaone_compress::default_model_dir();
    let out = tmp.path().join("o");
    let gptq = format!(
        "quantize --model {} --scheme w4a16 --method gptq --out {}",
        s(&m),
        s(&out)
    );
    // a directory or an empty file given as the calibration text
    fails(
        &format!("{gptq} --calib {}", s(tmp.path())),
        &["is a directory"],
    );
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    fails(
        &format!("{gptq} --calib {}", s(&empty)),
        &["empty.txt", "holds no text"],
    );
    // a learning rate out of range: one message for both ends
    for lr in ["0", "5"] {
        let cmd = format!("distill --student {} --out {} --lr {lr}", s(&m), s(&out));
        fails(&cmd, &["must be > 0 and at most 1"]);
    }
    // model.safetensors that is a directory
    let d = copy_dir(&m, &tmp.path().join("d"));
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::create_dir(d.join("model.safetensors")).unwrap();
    fails(
        &format!("info --model {}", s(&d)),
        &["is a directory, not a safetensors file"],
    );
    // CUDA asked of a CPU build: how to get one
    if !cfg!(feature = "cuda") {
        fails(
            &format!("info --model {} --device cuda", s(&m)),
            &["built for the CPU only", "--features cuda"],
        );
    }
    // an empty data override counts as unset (the default model is still found)
    let o = Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
        .args(["info"])
        .env("EXAONE_COMPRESS_DATA", "")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists());
}
