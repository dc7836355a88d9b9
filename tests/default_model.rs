//! The embedded default model against HF transformers 4.57.3's view of it
//! (scripts/hf_check_default.py on the GPU machine): same token ids from the same
//! tokenizer.json, same chat template rendering, same logits, same greedy continuations.

mod common;

use candle_core::{DType, Device, Tensor};
use common::rel_err;
use exaone_compress::default_model_dir;
use exaone_compress::model::tokenizer::apply_chat_template;
use exaone_compress::model::{generate, ChatMessage, GenerateOptions, Tokenizer};

fn hf() -> serde_json::Value {
    let p = common::fixture("default_model_hf.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_and_chat_template_agree_with_hf() {
    let tok = Tokenizer::from_dir(&default_model_dir()).unwrap();
    let r = hf();
    for e in r["encodings"].as_array().unwrap() {
        assert_eq!(
            tok.encode(e["text"].as_str().unwrap()).unwrap(),
            ids(&e["ids"]),
            "{}",
            e["text"]
        );
    }
    for c in r["chat"].as_array().unwrap() {
        let msgs: Vec<ChatMessage> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let ours = apply_chat_template(&msgs, true, c["enable_thinking"].as_bool().unwrap());
        assert_eq!(ours, c["text"].as_str().unwrap());
    }
}

#[test]
fn logits_and_greedy_agree_with_hf() {
    let m = exaone_compress::checkpoint::load_model(&default_model_dir(), DType::F32, &Device::Cpu)
        .unwrap();
    let r = hf();
    let x = ids(&r["encodings"][0]["ids"]);
    let t = Tensor::from_vec(x.clone(), (1, x.len()), &Device::Cpu).unwrap();
    let ours = m.forward(&t, None).unwrap().squeeze(0).unwrap();
    let theirs = Tensor::read_npy(common::fixture("default_model_hf_logits.npy")).unwrap();
    let e = rel_err(&ours, &theirs);
    assert!(e < 1e-4, "rel err {e}");
    for g in r["greedy"].as_array().unwrap() {
        let want = ids(&g["ids"]);
        let got = generate(
            &m,
            &[ids(&g["prompt_ids"])],
            &GenerateOptions::greedy(24, m.config.eos_token_ids.clone()),
        )
        .unwrap()
        .remove(0);
        assert_eq!(got, want);
    }
}
