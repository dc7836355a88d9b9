//! Config parsing and validation, weight loading errors, and the atomic writer.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use common::{copy_fixture, fixture, reference, rel_err};
use exaone_compress::checkpoint::{save_model, write_model_dir, RawTensor, WriteOptions};
use exaone_compress::model::LayerType;
use exaone_compress::Error;
use exaone_compress::{Checkpoint, Exaone4Config};
use serde_json::{json, Value};

fn upstream_1_2b() -> Value {
    json!({
        "architectures": ["Exaone4ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
        "eos_token_id": 361, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
        "initializer_range": 0.02, "intermediate_size": 4096,
        "layer_types": vec!["full_attention"; 30], "max_position_embeddings": 65536,
        "model_type": "exaone4", "num_attention_heads": 32, "num_hidden_layers": 30,
        "num_key_value_heads": 8, "pad_token_id": 0, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 16.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 1000000.0, "sliding_window": null, "sliding_window_pattern": null,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.54.0",
        "use_cache": true, "vocab_size": 102400
    })
}

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
}

fn err_of(v: Value) -> String {
    Exaone4Config::from_value(v).unwrap_err().to_string()
}

#[test]
fn upstream_config_parses_with_the_published_parameter_count() {
    let c = Exaone4Config::from_value(upstream_1_2b()).unwrap();
    assert_eq!(c.num_parameters(), 1_279_391_488);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    assert!(c.tie_word_embeddings && c.rope_scaling.is_some());
    assert!((0..30).all(|i| c.layer_uses_rope(i) && c.layer_window(i).is_none()));
    // transformers 4.57 re-saves torch_dtype as dtype; 5.x moves rope into rope_parameters
    let mut v = upstream_1_2b();
    let o = v.as_object_mut().unwrap();
    o.remove("torch_dtype");
    o.insert("dtype".into(), "bfloat16".into());
    let rs = o.remove("rope_scaling").unwrap();
    let theta = o.remove("rope_theta").unwrap();
    let mut rp = rs.clone();
    rp["rope_theta"] = theta;
    o.insert("rope_parameters".into(), rp);
    let c5 = Exaone4Config::from_value(v).unwrap();
    assert_eq!(c5.rope_theta, 1e6);
    assert_eq!(c5.rope_scaling, c.rope_scaling);
    assert_eq!(c5.dtype.as_deref(), Some("bfloat16"));
}

#[test]
fn invalid_configs_name_the_field() {
    let e = err_of(with(
        upstream_1_2b(),
        "layer_types",
        json!(vec!["full_attention"; 29]),
    ));
    assert!(
        e.contains("layer_types") && e.contains("29") && e.contains("30"),
        "{e}"
    );
    let e = err_of(with(upstream_1_2b(), "model_type", json!("llama")));
    assert!(e.contains("model_type") && e.contains("llama"), "{e}");
    let e = err_of(with(
        upstream_1_2b(),
        "architectures",
        json!(["LlamaForCausalLM"]),
    ));
    assert!(e.contains("architectures"), "{e}");
    let mut v = upstream_1_2b();
    v.as_object_mut().unwrap().remove("hidden_size");
    let e = err_of(v);
    assert!(e.contains("hidden_size") && e.contains("missing"), "{e}");
    let e = err_of(with(upstream_1_2b(), "num_key_value_heads", json!(6)));
    assert!(e.contains("num_key_value_heads"), "{e}");
    let mut v = upstream_1_2b();
    v.as_object_mut().unwrap().remove("head_dim");
    v["num_attention_heads"] = json!(30);
    v["num_key_value_heads"] = json!(6);
    let e = err_of(v);
    assert!(e.contains("head_dim"), "{e}");
    let e = err_of(with(upstream_1_2b(), "hidden_act", json!("gelu")));
    assert!(e.contains("hidden_act"), "{e}");
    let e = err_of(with(upstream_1_2b(), "vocab_size", json!("big")));
    assert!(e.contains("vocab_size"), "{e}");
    let e = err_of(with(
        upstream_1_2b(),
        "rope_scaling",
        json!({"rope_type": "yarn", "factor": 4.0}),
    ));
    assert!(e.contains("rope_scaling") && e.contains("yarn"), "{e}");
    // transformers' own failure modes, reported up front
    let mut v = upstream_1_2b();
    v.as_object_mut().unwrap().remove("layer_types");
    let e = err_of(v);
    assert!(
        e.contains("layer_types") && e.contains("ZeroDivisionError"),
        "{e}"
    );
    let mut v = with(upstream_1_2b(), "sliding_window", json!(4096));
    v["sliding_window_pattern"] = json!("LLLG");
    v.as_object_mut().unwrap().remove("layer_types");
    let e = err_of(v);
    assert!(e.contains("sliding_window_pattern"), "{e}");
    let mut v = upstream_1_2b();
    v["layer_types"] = json!(vec!["sliding_attention"; 30]);
    let e = err_of(v);
    assert!(e.contains("sliding_window"), "{e}");
}

#[test]
fn hybrid_layer_types_and_nope() {
    let mut v = with(upstream_1_2b(), "sliding_window", json!(4096));
    v["layer_types"] = json!((0..30)
        .map(|i| if i % 4 == 3 {
            "full_attention"
        } else {
            "sliding_attention"
        })
        .collect::<Vec<_>>());
    let c = Exaone4Config::from_value(v).unwrap();
    assert!(c.layer_uses_rope(0) && c.layer_window(0) == Some(4096));
    assert!(
        !c.layer_uses_rope(3) && c.layer_window(3).is_none(),
        "full layers of a hybrid model have no RoPE"
    );
    // derived from the pattern when layer_types is absent
    let mut v = with(upstream_1_2b(), "sliding_window", json!(4096));
    v["sliding_window_pattern"] = json!(4);
    v.as_object_mut().unwrap().remove("layer_types");
    let c = Exaone4Config::from_value(v).unwrap();
    assert_eq!(c.layer_types[2], LayerType::SlidingAttention);
    assert_eq!(c.layer_types[3], LayerType::FullAttention);
}

#[test]
fn unknown_fields_survive_a_round_trip_and_layer_drop_edits_both_fields() {
    let mut v = upstream_1_2b();
    v["my_custom_field"] = json!({"keep": [1, 2, 3]});
    let c = Exaone4Config::from_value(v.clone()).unwrap();
    assert_eq!(c.to_value(), v, "an unmodified config round-trips exactly");
    let d = c.with_layers(&[
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
        26, 27, 28, 29,
    ]);
    let out = d.to_value();
    assert_eq!(out["num_hidden_layers"], 29);
    assert_eq!(out["layer_types"].as_array().unwrap().len(), 29);
    assert_eq!(out["my_custom_field"], v["my_custom_field"]);
    Exaone4Config::from_value(out).unwrap();
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let tmp = copy_fixture("full_tied");
    let f = tmp.path().join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(len / 2).unwrap();
    let e = Checkpoint::open(tmp.path())
        .err()
        .expect("truncated file must fail")
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

fn rewrite_without(dir: &std::path::Path, drop: &str, reshape: Option<(&str, Vec<usize>)>) {
    let ck = Checkpoint::open(dir).unwrap();
    let mut ts = BTreeMap::new();
    for n in ck.names() {
        if n == drop {
            continue;
        }
        let mut t = ck.raw(n, &Device::Cpu).unwrap();
        if let Some((name, shape)) = &reshape {
            if n == name {
                t = t
                    .flatten_all()
                    .unwrap()
                    .narrow(0, 0, shape.iter().product())
                    .unwrap()
                    .reshape(shape.clone())
                    .unwrap();
            }
        }
        ts.insert(n.clone(), RawTensor::from_tensor(&t).unwrap());
    }
    let out = dir.join("rewritten");
    write_model_dir(&out, &ck.config, None, &ts, &WriteOptions::default()).unwrap();
    drop_and_replace(dir, &out);
}

fn drop_and_replace(dir: &std::path::Path, out: &std::path::Path) {
    std::fs::rename(out.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let tmp = copy_fixture("full_tied");
    rewrite_without(tmp.path(), "model.layers.1.mlp.up_proj.weight", None);
    let e = exaone_compress::checkpoint::load_model(tmp.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, Error::MissingTensor { .. }), "{e}");
    assert!(
        e.to_string().contains("model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );

    let tmp = copy_fixture("full_tied");
    rewrite_without(
        tmp.path(),
        "",
        Some(("model.layers.2.self_attn.k_proj.weight", vec![16, 128])),
    );
    let e = exaone_compress::checkpoint::load_model(tmp.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model.layers.2.self_attn.k_proj.weight")
            && e.contains("[16, 128]")
            && e.contains("[32, 128]"),
        "{e}"
    );

    // untied without lm_head
    let tmp = copy_fixture("hybrid_untied");
    rewrite_without(tmp.path(), "lm_head.weight", None);
    let e = exaone_compress::checkpoint::load_model(tmp.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("lm_head.weight"), "{e}");
}

#[test]
fn config_and_weights_that_disagree_on_depth_are_refused() {
    let tmp = copy_fixture("full_tied");
    let p = tmp.path().join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["num_hidden_layers"] = json!(2);
    v["layer_types"] = json!(["full_attention", "full_attention"]);
    std::fs::write(&p, v.to_string()).unwrap();
    let e = exaone_compress::checkpoint::load_model(tmp.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model.layers.2.") && e.contains("num_hidden_layers"),
        "{e}"
    );
}

#[test]
fn tied_checkpoint_with_an_lm_head_in_the_file_uses_the_embedding() {
    // as vLLM does (and as llm-compressor's outputs need): a tied config ignores lm_head.weight
    let tmp = copy_fixture("full_tied");
    let ck = Checkpoint::open(tmp.path()).unwrap();
    let mut ts = BTreeMap::new();
    for n in ck.names() {
        ts.insert(
            n.clone(),
            RawTensor::from_tensor(&ck.raw(n, &Device::Cpu).unwrap()).unwrap(),
        );
    }
    let junk = Tensor::ones((512, 128), DType::F32, &Device::Cpu).unwrap();
    ts.insert(
        "lm_head.weight".into(),
        RawTensor::from_tensor(&junk).unwrap(),
    );
    let out = tmp.path().join("with_head");
    write_model_dir(&out, &ck.config, None, &ts, &WriteOptions::default()).unwrap();
    let m = exaone_compress::checkpoint::load_model(&out, DType::F32, &Device::Cpu).unwrap();
    let r = reference("full_tied");
    let ids = Tensor::from_vec(r.input_ids.clone(), (1, r.input_ids.len()), &Device::Cpu).unwrap();
    assert!(
        rel_err(
            &m.forward(&ids, None).unwrap().squeeze(0).unwrap(),
            &r.logits
        ) < 1e-4
    );
}

#[test]
fn written_checkpoints_reload_to_the_same_logits_sharded_or_not() {
    let m = exaone_compress::checkpoint::load_model(
        &fixture("hybrid_untied"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let r = reference("hybrid_untied");
    let ids = Tensor::from_vec(r.input_ids.clone(), (1, r.input_ids.len()), &Device::Cpu).unwrap();
    for (sub, shard) in [("one", 1usize << 30), ("sharded", 200_000)] {
        let out = tmp.path().join(sub);
        let opts = WriteOptions {
            max_shard_bytes: shard,
            side_files_from: Some(fixture("hybrid_untied")),
            overwrite: false,
        };
        save_model(&m, &out, None, &opts).unwrap();
        assert_eq!(
            out.join("model.safetensors.index.json").exists(),
            sub == "sharded"
        );
        assert!(out.join("generation_config.json").exists());
        let back = exaone_compress::checkpoint::load_model(&out, DType::F32, &Device::Cpu).unwrap();
        let e = rel_err(
            &back.forward(&ids, None).unwrap().squeeze(0).unwrap(),
            &r.logits,
        );
        assert!(e < 1e-4, "{sub}: {e}");
        let cfg_in: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("hybrid_untied").join("config.json")).unwrap(),
        )
        .unwrap();
        let cfg_out: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg_in, cfg_out, "config round-trips unchanged");
    }
    // bf16 output is half the size and says so
    let out = tmp.path().join("bf16");
    save_model(&m, &out, Some(DType::BF16), &WriteOptions::default()).unwrap();
    let ck = Checkpoint::open(&out).unwrap();
    assert_eq!(ck.config.dtype.as_deref(), Some("bfloat16"));
    assert_eq!(
        ck.info("model.norm.weight").unwrap().dtype,
        safetensors::Dtype::BF16
    );
}

#[test]
fn writer_never_clobbers_or_leaves_partial_output() {
    let m =
        exaone_compress::checkpoint::load_model(&fixture("full_tied"), DType::F32, &Device::Cpu)
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("precious.txt"), "keep me").unwrap();
    // not a model directory: refused as --overwrite would refuse it too
    let e = save_model(&m, &out, None, &WriteOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("even with --overwrite"), "{e}");
    assert_eq!(
        std::fs::read_to_string(out.join("precious.txt")).unwrap(),
        "keep me"
    );
    // a failing write (an unsupported tensor dtype) leaves nothing behind
    let mut ts = BTreeMap::new();
    ts.insert(
        "x".to_string(),
        RawTensor::from_tensor(&Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()).unwrap(),
    );
    let bad = tmp.path().join("bad");
    let cfg = m.config.clone();
    let mut broken = ts.clone();
    broken.get_mut("x").unwrap().data.truncate(3); // shape and bytes disagree
    assert!(write_model_dir(&bad, &cfg, None, &broken, &WriteOptions::default()).is_err());
    assert!(!bad.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the original dir remains: {leftovers:?}"
    );
    // overwrite never replaces a directory that is not a model directory
    let opts = WriteOptions {
        overwrite: true,
        ..Default::default()
    };
    let e = save_model(&m, &out, None, &opts).unwrap_err().to_string();
    assert!(e.contains("not a model directory"), "{e}");
    assert!(out.join("precious.txt").exists());
    // nor a model directory holding a file the harness does not write (it would be lost)
    std::fs::write(out.join("config.json"), "{}").unwrap();
    let e = save_model(&m, &out, None, &opts).unwrap_err().to_string();
    assert!(e.contains("precious.txt"), "{e}");
    assert!(out.join("precious.txt").exists());
    // a model directory it replaces, once the new one is complete, leaving nothing aside
    std::fs::remove_file(out.join("precious.txt")).unwrap();
    save_model(&m, &out, None, &opts).unwrap();
    assert!(out.join("model.safetensors").exists());
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no aside or partial remains: {names:?}");
}
