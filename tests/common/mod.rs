#![allow(dead_code)]
use std::path::PathBuf;

use candle_core::Tensor;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub struct Reference {
    pub input_ids: Vec<u32>,
    pub prompt_len: usize,
    pub max_new_tokens: usize,
    pub greedy: Vec<u32>,
    pub greedy_min_new_tokens: Vec<u32>,
    pub stop_id: u32,
    pub greedy_stop: Vec<u32>,
    pub greedy_stop_min12: Vec<u32>,
    pub logits: Tensor,
}

fn ids(v: &serde_json::Value, k: &str) -> Vec<u32> {
    v[k].as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn reference(name: &str) -> Reference {
    let dir = fixture(name);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    Reference {
        input_ids: ids(&v, "input_ids"),
        prompt_len: v["prompt_len"].as_u64().unwrap() as usize,
        max_new_tokens: v["max_new_tokens"].as_u64().unwrap() as usize,
        greedy: ids(&v, "greedy"),
        greedy_min_new_tokens: ids(&v, "greedy_min_new_tokens"),
        stop_id: v["stop_id"].as_u64().unwrap() as u32,
        greedy_stop: ids(&v, "greedy_stop"),
        greedy_stop_min12: ids(&v, "greedy_stop_min12"),
        logits: Tensor::read_npy(dir.join("logits.npy")).unwrap(),
    }
}

/// max |a − b| / max |b|
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let m = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    d / m
}

/// Copies a fixture into a fresh temporary directory.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}
