//! Compression formats and transforms on the HF fixtures: byte-exact packing, quantized and
//! pruned checkpoints that load and run as they did in memory, dequant, submit.zip validation.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{copy_fixture, fixture, reference, rel_err};
use exaone_compress::checkpoint::compressed_tensors::{
    dequantize_checkpoint, pack_int4, pack_zero_points, unpack_int4, unpack_zero_points,
};
use exaone_compress::checkpoint::{package, save_model, WriteOptions};
use exaone_compress::compress::prune::{choose, uniform, DropRule};
use exaone_compress::compress::quant::apply::{quantize_rtn, save_quantized};
use exaone_compress::compress::quant::{qparams, Scheme};
use exaone_compress::model::ActQuant;
use exaone_compress::{Checkpoint, Exaone4};

fn logits(m: &Exaone4, ids: &[u32]) -> Tensor {
    let x = Tensor::from_vec(ids.to_vec(), (1, ids.len()), m.device()).unwrap();
    m.forward(&x, None).unwrap().squeeze(0).unwrap()
}

#[test]
fn int4_packing_matches_the_format_check_values() {
    let lo: Vec<f32> = (-8..0).map(|x| x as f32).collect();
    let hi: Vec<f32> = (0..8).map(|x| x as f32).collect();
    assert_eq!(pack_int4(&lo, 1, 8)[0] as u32, 0x76543210);
    assert_eq!(pack_int4(&hi, 1, 8)[0] as u32, 0xFEDCBA98);
    // a ragged row is padded with zero nibbles, and unpacking inverts packing
    let q: Vec<f32> = (0..2 * 11).map(|i| ((i * 7) % 16) as f32 - 8.0).collect();
    let p = pack_int4(&q, 2, 11);
    assert_eq!(p.len(), 4);
    assert_eq!(p[1] as u32 >> 12, 0, "padding nibbles are zero");
    assert_eq!(unpack_int4(&p, 2, 11), q);
    // zero points pack along the output dimension: zp_packed[j, g] nibble i = zp[8j+i, g] + 8
    let zp: Vec<f32> = (0..10 * 3).map(|i| ((i * 5) % 16) as f32 - 8.0).collect();
    let zpp = pack_zero_points(&zp, 10, 3);
    assert_eq!(zpp.len(), 2 * 3);
    for g in 0..3 {
        for i in 0..8 {
            let nib = (zpp[g] as u32 >> (4 * i)) & 0xF;
            assert_eq!(nib as f32 - 8.0, zp[i * 3 + g]);
        }
    }
    assert_eq!(unpack_zero_points(&zpp, 10, 3), zp);
}

#[test]
fn min_max_arithmetic_follows_compressed_tensors() {
    let w4 = Scheme::w4a16(128, true).weights;
    // symmetric int4: absmax / 7.5, range forced to include 0
    assert_eq!(
        qparams(0.5, 1.5, &w4),
        (half::bf16::from_f32(0.2).to_f32(), 0.0)
    );
    let w4a = Scheme::w4a16(128, false).weights;
    let (s, z) = qparams(-0.3, 1.2, &w4a);
    assert_eq!(s, half::bf16::from_f32(0.1).to_f32());
    assert_eq!(z, (-8.0f32 + 0.3 / s).round());
    let w8 = Scheme::w8a8_int8().weights;
    assert_eq!(
        qparams(-2.55, 1.0, &w8).0,
        half::bf16::from_f32(2.55 / 127.5).to_f32()
    );
}

/// The default model's tokenizer cut down to the fixtures' 512 ids (its vocabulary, the merges
/// among kept tokens and the special tokens below 512): `package` refuses a tokenizer whose ids
/// reach past the embedding, as vLLM would index out of it.
fn tokenizer_files(dir: &std::path::Path) {
    use serde_json::{Map, Value};
    let src = exaone_compress::default_model_dir();
    let text = std::fs::read_to_string(src.join("tokenizer.json")).unwrap();
    let mut t: Value = serde_json::from_str(&text).unwrap();
    let keep = |id: &Value| id.as_u64().unwrap() < 512;
    let vocab: Map<String, Value> = t["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, id)| keep(id))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let merges: Vec<Value> = t["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let (a, b) = (p[0].as_str().unwrap(), p[1].as_str().unwrap());
            [a.to_string(), b.to_string(), format!("{a}{b}")]
                .iter()
                .all(|k| vocab.contains_key(k))
        })
        .cloned()
        .collect();
    t["model"]["vocab"] = vocab.into();
    t["model"]["merges"] = merges.into();
    let added: Vec<Value> = t["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| keep(&a["id"]))
        .cloned()
        .collect();
    t["added_tokens"] = added.into();
    std::fs::write(dir.join("tokenizer.json"), t.to_string()).unwrap();
    for f in ["tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn quantized_checkpoints_reload_to_the_model_that_wrote_them() {
    let base =
        exaone_compress::checkpoint::load_model(&fixture("full_tied"), DType::F32, &Device::Cpu)
            .unwrap();
    let r = reference("full_tied");
    let tmp = tempfile::tempdir().unwrap();
    let mut errs = std::collections::BTreeMap::new();
    for scheme in [
        Scheme::w4a16(128, true),
        Scheme::w4a16(128, false),
        Scheme::w8a8_int8(),
        Scheme::fp8_dynamic(),
    ] {
        let qm = quantize_rtn(&base, &scheme, &|_| false).unwrap();
        let out = tmp.path().join(scheme.name());
        save_quantized(&qm, &out, &WriteOptions::default()).unwrap();
        let ck = Checkpoint::open(&out).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["quantization_config"]["format"], scheme.format());
        let back = ck.load_model(DType::F32, &Device::Cpu).unwrap();
        let want_act = match scheme.format() {
            "int-quantized" => Some(ActQuant::Int8PerToken),
            "float-quantized" => Some(ActQuant::Fp8PerToken),
            _ => None,
        };
        assert_eq!(
            back.layers[0].mlp.up_proj.act_quant,
            want_act,
            "{}",
            scheme.name()
        );
        let (a, b) = (logits(&qm.model, &r.input_ids), logits(&back, &r.input_ids));
        assert!(
            rel_err(&b, &a) < 1e-6,
            "{}: reloaded differs {}",
            scheme.name(),
            rel_err(&b, &a)
        );
        let e = rel_err(&a, &r.logits);
        assert!(
            e > 1e-5 && e < 1.0,
            "{}: quantization error {e} implausible",
            scheme.name()
        );
        errs.insert(scheme.name(), e);
        // dequant writes the same weights densely
        let dense = tmp.path().join(format!("{}-dense", scheme.name()));
        dequantize_checkpoint(&ck, &dense, &WriteOptions::default()).unwrap();
        let d = exaone_compress::checkpoint::load_model(&dense, DType::F32, &Device::Cpu).unwrap();
        assert!(Checkpoint::open(&dense)
            .unwrap()
            .quant_info()
            .unwrap()
            .is_none());
        assert_eq!(
            d.layers[1]
                .self_attn
                .o_proj
                .weight
                .to_vec2::<f32>()
                .unwrap(),
            back.layers[1]
                .self_attn
                .o_proj
                .weight
                .to_vec2::<f32>()
                .unwrap()
        );
        // and the quantized directory packages once it has a tokenizer
        tokenizer_files(&out);
        let problems = package::validate(&out);
        assert!(problems.is_empty(), "{}: {problems:?}", scheme.name());
    }
    // 8 bits must beat 4 (random weights: the ordering, not the size, is what is certain)
    assert!(errs["W8A8-int8"] < errs["W4A16-g128-sym"], "{errs:?}");
    assert!(errs["FP8-dynamic"] < errs["W4A16-g128-sym"], "{errs:?}");
}

#[test]
fn dropped_layers_are_renumbered_and_reload() {
    let base = exaone_compress::checkpoint::load_model(
        &fixture("hybrid_untied"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(uniform(30, 1), vec![15], "the reference pipeline's choice");
    let drop = choose(&base, &DropRule::Explicit(vec![1]), None).unwrap();
    let kept: Vec<usize> = (0..4).filter(|i| !drop.contains(i)).collect();
    let small = base.with_layers(&kept).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pruned");
    save_model(
        &small,
        &out,
        None,
        &WriteOptions {
            side_files_from: Some(fixture("hybrid_untied")),
            ..Default::default()
        },
    )
    .unwrap();
    let ck = Checkpoint::open(&out).unwrap();
    assert_eq!(ck.config.num_hidden_layers, 3);
    assert_eq!(ck.config.layer_types.len(), 3);
    assert!(
        ck.names().all(|n| !n.starts_with("model.layers.3.")),
        "no stray layer 3"
    );
    let back = ck.load_model(DType::F32, &Device::Cpu).unwrap();
    let ids = reference("hybrid_untied").input_ids;
    assert!(rel_err(&logits(&back, &ids), &logits(&small, &ids)) < 1e-6);
    // the sliding/full pattern follows the kept layers
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        raw["layer_types"],
        serde_json::json!(["sliding_attention", "sliding_attention", "full_attention"])
    );
    // rules: first/last/uniform, and nonsense refused
    assert_eq!(
        choose(&base, &DropRule::First(2), None).unwrap(),
        vec![0, 1]
    );
    assert_eq!(choose(&base, &DropRule::Last(1), None).unwrap(), vec![3]);
    assert!(choose(&base, &DropRule::Explicit(vec![7]), None).is_err());
    assert!(choose(&base, &DropRule::Uniform(4), None).is_err());
    assert!(
        choose(&base, &DropRule::BlockInfluence(1), None).is_err(),
        "needs calibration text"
    );
    let calib: Vec<Vec<u32>> = ids.chunks(16).map(|c| c.to_vec()).collect();
    let bi = choose(&base, &DropRule::BlockInfluence(1), Some(&calib)).unwrap();
    let kl = choose(&base, &DropRule::MeasuredKl(1), Some(&calib)).unwrap();
    assert_eq!((bi.len(), kl.len()), (1, 1));
}

#[test]
fn package_lists_every_problem_and_writes_nothing() {
    let tmp = copy_fixture("full_tied");
    let dir = tmp.path();
    // no tokenizer, no chat template, and a stray layer
    let ck = Checkpoint::open(dir).unwrap();
    let mut raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    raw["num_hidden_layers"] = serde_json::json!(2);
    raw["layer_types"] = serde_json::json!(["full_attention", "full_attention"]);
    raw["quantization_config"] = serde_json::json!({"quant_method": "compressed-tensors", "config_groups": {"group_0": {"weights": {"num_bits": 4, "bogus": 1}}}, "ignore": [], "spelling_mistake": true});
    std::fs::write(dir.join("config.json"), raw.to_string()).unwrap();
    drop(ck);
    let problems = package::validate(dir);
    let all = problems.join("\n");
    for want in [
        "tokenizer.json",
        "chat template",
        "model.layers.2.",
        "spelling_mistake",
        "bogus",
        "lm_head",
    ] {
        assert!(all.contains(want), "missing a problem about {want}:\n{all}");
    }
    let zip = tmp.path().join("submit.zip");
    assert!(package::package(dir, &zip).is_err());
    assert!(!zip.exists());
}

#[test]
fn a_good_directory_zips_under_model() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("full_tied");
    tokenizer_files(src.path());
    let zip_path = tmp.path().join("submit.zip");
    package::package(src.path(), &zip_path).unwrap();
    let mut z = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let names: Vec<String> = (0..z.len())
        .map(|i| z.by_index(i).unwrap().name().to_string())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("model/")), "{names:?}");
    assert!(
        names.contains(&"model/model.safetensors".to_string())
            && names.contains(&"model/config.json".to_string())
    );
}

/// Calibration text: JSONL `text` lines as they are, `messages` lines through the chat
/// template, and a malformed line is an error naming file and line.
#[test]
fn calibration_jsonl_text_and_chat_messages() {
    use exaone_compress::data::read_documents;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("calib.jsonl");
    std::fs::write(
        &p,
        "{\"text\": \"plain line\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"안녕\"}, {\"role\": \"assistant\", \"content\": \"네\"}]}\n",
    )
    .unwrap();
    let docs = read_documents(&p).unwrap();
    assert_eq!(docs[0], "plain line");
    assert_eq!(
        docs[1],
        "[|user|]\n안녕[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\n네[|endofturn|]\n"
    );
    std::fs::write(&p, "{\"text\": \"ok\"}\n{\"messages\": [{\"role\": 1}]}\n").unwrap();
    let e = read_documents(&p).unwrap_err().to_string();
    assert!(e.contains("calib.jsonl:2"), "{e}");
}
