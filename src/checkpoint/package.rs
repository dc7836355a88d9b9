//! `submit.zip`: a model directory validated against what the evaluation server's stack
//! (transformers 4.57.3, compressed-tensors 0.13.0, vLLM 0.14.1) will demand, then zipped with
//! `model/` at the root. A directory with problems gets the full list and no zip.

use crate::model::exaone4::LINEAR_NAMES;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::Checkpoint;
use crate::error::{Error, Result};

const TOP_KEYS: &[&str] = &[
    "config_groups",
    "format",
    "global_compression_ratio",
    "ignore",
    "kv_cache_scheme",
    "quant_method",
    "quantization_status",
    "sparsity_config",
    "transform_config",
    "version",
];
const SCHEME_KEYS: &[&str] = &[
    "format",
    "input_activations",
    "output_activations",
    "targets",
    "weights",
];
const ARGS_KEYS: &[&str] = &[
    "actorder",
    "block_structure",
    "dynamic",
    "group_size",
    "num_bits",
    "observer",
    "observer_kwargs",
    "scale_dtype",
    "strategy",
    "symmetric",
    "type",
    "zp_dtype",
];

fn unknown_keys(v: &Value, allowed: &[&str], at: &str, problems: &mut Vec<String>) {
    if let Some(o) = v.as_object() {
        for k in o.keys() {
            if !allowed.contains(&k.as_str()) {
                problems.push(format!("{at}: unknown key `{k}` (compressed-tensors' schema forbids extra keys; vLLM fails to load)"));
            }
        }
    } else if !v.is_null() {
        problems.push(format!("{at}: expected an object"));
    }
}

/// Every problem that would make the directory fail to load or be scored wrongly.
pub fn validate(dir: &Path) -> Vec<String> {
    let mut p = vec![];
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        if !dir.join(f).exists() {
            p.push(format!("{f} is missing"));
        }
    }
    let has_template = dir.join("chat_template.jinja").exists()
        || std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| v.get("chat_template").is_some_and(|c| !c.is_null()));
    if !has_template {
        p.push("no chat template (chat_template.jinja or tokenizer_config.json's chat_template): the harness applies it".into());
    }
    let ck = match Checkpoint::open(dir) {
        Ok(c) => c,
        Err(e) => {
            p.push(e.to_string());
            return p;
        }
    };
    let c = &ck.config;
    let n = c.num_hidden_layers;
    // stray or missing layers
    let mut seen = BTreeSet::new();
    for name in ck.names() {
        if let Some(rest) = name.strip_prefix("model.layers.") {
            if let Some(i) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok()) {
                seen.insert(i);
                if i >= n {
                    p.push(format!(
                        "tensor `{name}` is beyond num_hidden_layers = {n} (vLLM raises KeyError)"
                    ));
                }
            }
        }
    }
    let quant = match ck.quant_info() {
        Ok(q) => q,
        Err(e) => {
            p.push(e.to_string());
            None
        }
    };
    for i in 0..n {
        for l in LINEAR_NAMES {
            let pre = format!("model.layers.{i}.{l}");
            if !ck.contains(&format!("{pre}.weight"))
                && !ck.contains(&format!("{pre}.weight_packed"))
            {
                p.push(format!("`{pre}` has no weight (dense or packed)"));
            }
        }
        for nrm in [
            "self_attn.q_norm",
            "self_attn.k_norm",
            "post_attention_layernorm",
            "post_feedforward_layernorm",
        ] {
            if !ck.contains(&format!("model.layers.{i}.{nrm}.weight")) {
                p.push(format!("`model.layers.{i}.{nrm}.weight` is missing"));
            }
        }
        // vLLM fuses q/k/v and gate/up: the parts must be all quantized or all dense
        for group in [&LINEAR_NAMES[0..3], &LINEAR_NAMES[4..6]] {
            let states: BTreeSet<bool> = group
                .iter()
                .map(|l| ck.contains(&format!("model.layers.{i}.{l}.weight_scale")))
                .collect();
            if states.len() > 1 {
                p.push(format!(
                    "layer {i}: {group:?} are fused by vLLM but not all quantized alike"
                ));
            }
        }
    }
    for f in ["model.embed_tokens.weight", "model.norm.weight"] {
        if !ck.contains(f) {
            p.push(format!("`{f}` is missing"));
        }
    }
    if !c.tie_word_embeddings && !ck.contains("lm_head.weight") {
        p.push("tie_word_embeddings is false but lm_head.weight is missing (vLLM would run with uninitialised memory)".into());
    }
    if let Some(q) = c.raw.get("quantization_config") {
        unknown_keys(q, TOP_KEYS, "quantization_config", &mut p);
        if let Some(groups) = q.get("config_groups").and_then(Value::as_object) {
            for (g, s) in groups {
                unknown_keys(
                    s,
                    SCHEME_KEYS,
                    &format!("quantization_config.config_groups.{g}"),
                    &mut p,
                );
                for a in ["weights", "input_activations", "output_activations"] {
                    if let Some(args) = s.get(a) {
                        unknown_keys(
                            args,
                            ARGS_KEYS,
                            &format!("quantization_config.config_groups.{g}.{a}"),
                            &mut p,
                        );
                    }
                }
            }
        } else {
            p.push("quantization_config has no config_groups".into());
        }
        if let Some(q) = &quant {
            if !q.ignore.iter().any(|s| s == "lm_head") {
                p.push("quantization_config.ignore lacks \"lm_head\" (vLLM's compressed-tensors path never quantizes it)".into());
            }
        }
    }
    p
}

/// Validates `dir` and writes `out` (a zip whose only top-level entry is `model/`), atomically.
pub fn package(dir: &Path, out: &Path) -> Result<Vec<String>> {
    let problems = validate(dir);
    if !problems.is_empty() {
        return Err(Error::Invalid(format!(
            "{} is not ready to submit:\n  - {}",
            dir.display(),
            problems.join("\n  - ")
        )));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| Error::io(parent, e))?;
    {
        let mut zw = zip::ZipWriter::new(std::io::BufWriter::new(tmp.as_file()));
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .collect();
        files.sort_by_key(|e| e.file_name());
        for e in files {
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path();
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            let method = if name.ends_with(".safetensors") {
                zip::CompressionMethod::Stored
            } else {
                zip::CompressionMethod::Deflated
            };
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(method)
                .large_file(len >= (1 << 32) - 1);
            zw.start_file(format!("model/{name}"), opts)
                .map_err(|e| Error::Invalid(format!("zip: {e}")))?;
            let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            std::io::copy(&mut f, &mut zw).map_err(|e| Error::io(&path, e))?;
        }
        let w = zw
            .finish()
            .map_err(|e| Error::Invalid(format!("zip: {e}")))?;
        let mut w = w;
        w.flush().map_err(|e| Error::io(out, e))?;
    }
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    let mut notes = vec![];
    if ck_has_redundant_head(dir) {
        notes.push("lm_head.weight is in the files but tie_word_embeddings is true: vLLM ignores it (dead weight)".into());
    }
    Ok(notes)
}

fn ck_has_redundant_head(dir: &Path) -> bool {
    Checkpoint::open(dir)
        .map(|c| c.config.tie_word_embeddings && c.contains("lm_head.weight"))
        .unwrap_or(false)
}
