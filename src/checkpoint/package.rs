//! `submit.zip`: a model directory validated against what the evaluation server's stack
//! (transformers 4.57.3, compressed-tensors 0.13.0, vLLM 0.14.1) will demand, then zipped with
//! `model/` at the root. A directory with problems gets the full list and no zip.
//!
//! Validation checks contents, not just names: every tensor is read through the reader the
//! model loads with (shapes against the config, quantized Linears dequantized with every
//! parameter range-checked and matched against the declared scheme), the tokenizer is loaded and
//! its ids checked against `vocab_size`, the chat format is rendered and encoded, and a few
//! tokens are run through the model on the CPU (f32) with finite logits required.

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

/// The group sizes vLLM's Marlin kernel (W4A16 on the L4) takes, where they divide a Linear's
/// inputs (vLLM's MARLIN_SUPPORTED_GROUP_SIZES, besides one group per row).
pub const MARLIN_GROUP_SIZES: [usize; 3] = [32, 64, 128];

/// Every problem that would make the directory fail to load or be scored wrongly.
pub fn validate(dir: &Path) -> Vec<String> {
    // two checks that reach the same cause say it once
    let mut seen = std::collections::HashSet::new();
    problems(dir)
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

fn problems(dir: &Path) -> Vec<String> {
    // a directory that is not there has one problem, not one per file it lacks
    if !dir.is_dir() {
        return match Checkpoint::open(dir) {
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![format!("{}: not a directory", dir.display())],
        };
    }
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
    if let Ok(t) = std::fs::read_to_string(dir.join("tokenizer_config.json")) {
        match serde_json::from_str::<Value>(&t) {
            Err(e) => p.push(format!("tokenizer_config.json: invalid JSON: {e}")),
            // transformers takes a special token as text or as an AddedToken ({"content": …})
            Ok(v) => {
                for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
                    let ok = match v.get(key) {
                        None | Some(Value::Null) | Some(Value::String(_)) => true,
                        Some(Value::Object(o)) => o.get("content").is_some_and(Value::is_string),
                        Some(_) => false,
                    };
                    if !ok {
                        p.push(format!(
                            "tokenizer_config.json: `{key}` is {}, not a token's text: transformers cannot load it",
                            v[key]
                        ));
                    }
                }
            }
        }
    }
    if !has_template {
        p.push("no chat template (chat_template.jinja or tokenizer_config.json's chat_template): the harness applies it".into());
    }
    super::stray::stray_weights(dir, &mut p);
    let ck = match Checkpoint::open(dir) {
        Ok(c) => c,
        Err(e) => {
            // without config.json the checkpoint cannot be opened: said once, above
            if dir.join("config.json").exists() {
                p.push(e.to_string());
            }
            return p;
        }
    };
    let c = &ck.config;
    // the evaluation takes max_model_len from the config and sends long-context prompts
    // (Ko-LongRAG, up to ~8k tokens) with room to answer
    const CONTEXT_NEEDED: usize = 8192;
    if c.max_position_embeddings < CONTEXT_NEEDED {
        p.push(format!(
            "config.json: max_position_embeddings = {} leaves no room for the evaluation's long-context prompts (up to ~8k tokens): keep at least {CONTEXT_NEEDED}",
            c.max_position_embeddings
        ));
    }
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
    match quant.as_ref().and_then(|q| q.scheme.map(|_| q)) {
        Some(q) => quantized_linears_match(&ck, q, &mut p),
        None => {
            // quantized tensors with no scheme to read them by: vLLM loads the model as dense
            // and fails on the unknown tensors (our loader would infer them from their names)
            if let Some(n) = ck
                .names()
                .find(|n| n.ends_with(".weight_scale") || n.ends_with(".weight_packed"))
            {
                p.push(format!(
                    "`{n}` is a quantized tensor but config.json has no quantization_config scheme describing it"
                ));
            }
        }
    }
    let tok = tokenizer_problems(dir, c, &mut p);
    generation_config_problems(dir, c, &mut p);
    contents(&ck, tok.as_ref(), &mut p);
    p
}

/// Every quantized Linear stored as its scheme says: the tensors the format has (packed int4
/// with `weight_shape`, or int8/fp8), a zero point iff asymmetric, `g_idx` iff act-order
/// "group", as many scale groups as the group size gives; every decoder Linear quantized
/// unless it is in `ignore`.
fn quantized_linears_match(
    ck: &Checkpoint,
    q: &super::compressed_tensors::QuantInfo,
    p: &mut Vec<String>,
) {
    use super::scheme::Strategy;
    let Some(s) = &q.scheme else {
        return;
    };
    let patterns = q.ignore.iter().any(|i| i.starts_with("re:"));
    for i in 0..ck.config.num_hidden_layers {
        for l in LINEAR_NAMES {
            let pre = format!("model.layers.{i}.{l}");
            let has = |suffix: &str| ck.contains(&format!("{pre}.{suffix}"));
            let ignored = q.ignore.contains(&pre);
            if !has("weight_scale") {
                let stored_quantized = has("weight_packed")
                    || ck
                        .info(&format!("{pre}.weight"))
                        .is_ok_and(|i| !i.is_float());
                if stored_quantized {
                    p.push(format!(
                        "`{pre}` is stored quantized but has no weight_scale: it cannot be dequantized"
                    ));
                } else if !ignored && !patterns && has("weight") {
                    p.push(format!("`{pre}` is stored dense but is not in quantization_config.ignore (vLLM expects it quantized)"));
                }
                continue;
            }
            if ignored {
                p.push(format!(
                    "`{pre}` is stored quantized but quantization_config.ignore lists it"
                ));
            }
            p.extend(ck.stored_as_scheme(&pre, s, true));
            let (Ok(scale), Ok(Some((_, _, inp)))) = (
                ck.info(&format!("{pre}.weight_scale")),
                ck.dequantized_shaped(&pre),
            ) else {
                continue; // the load reports why
            };
            let groups = match s.weights.strategy {
                Strategy::Channel => 1,
                Strategy::Group(g) => inp.div_ceil(g.max(1)),
            };
            // vLLM serves W4A16 on an L4 with Marlin, which takes groups of 32, 64 or 128 input
            // columns that divide the Linear's inputs (MARLIN_SUPPORTED_GROUP_SIZES), or one per row
            if let Strategy::Group(g) = s.weights.strategy {
                if s.format() == "pack-quantized"
                    && (!MARLIN_GROUP_SIZES.contains(&g) || inp % g != 0)
                {
                    p.push(format!(
                        "`{pre}`: group size {g} over {inp} input columns: vLLM's Marlin kernel takes groups of 32, 64 or 128 that divide the inputs"
                    ));
                }
            }
            if scale.shape.get(1) != Some(&groups) {
                p.push(format!(
                    "`{pre}.weight_scale` has shape {:?}: the scheme {} gives {groups} group(s) for {inp} input columns",
                    scale.shape,
                    s.name()
                ));
            }
        }
    }
}

/// Loads the tokenizer, checks its ids against `vocab_size` and that EXAONE 4's chat format
/// encodes with its special tokens; returns it when it loads.
fn tokenizer_problems(
    dir: &Path,
    c: &crate::model::Exaone4Config,
    p: &mut Vec<String>,
) -> Option<crate::model::Tokenizer> {
    use crate::model::{ChatMessage, Tokenizer};
    if !dir.join("tokenizer.json").exists() {
        return None; // reported above
    }
    let tok = match Tokenizer::from_dir(dir) {
        Ok(t) => t,
        Err(e) => {
            p.push(e.to_string());
            return None;
        }
    };
    let max_id = tok.inner.get_vocab(true).into_values().max();
    if let Some(m) = max_id.filter(|&m| m as usize >= c.vocab_size) {
        p.push(format!(
            "tokenizer.json has token ids up to {m} but vocab_size is {}: the embedding has no row for them",
            c.vocab_size
        ));
    }
    for t in ["[|user|]", "[|assistant|]", "[|endofturn|]"] {
        if tok.token_id(t).is_none() {
            p.push(format!(
                "tokenizer.json has no token {t}: EXAONE 4's chat template cannot be encoded"
            ));
        }
    }
    // the template the evaluation applies: the directory's own (else EXAONE's format), rendered
    // as transformers renders it, on the conversations a benchmark sends
    let template = match crate::model::chat_template::ChatTemplate::from_dir(dir) {
        Ok(t) => t,
        Err(e) => {
            p.push(format!("the chat template cannot be loaded: {e}"));
            return Some(tok);
        }
    };
    let none = serde_json::Map::new();
    let conversations: [(&str, Vec<ChatMessage>); 3] = [
        ("a user turn", vec![ChatMessage::user("Hello 안녕하세요")]),
        (
            "a system and a user turn",
            vec![
                ChatMessage::system("Be brief."),
                ChatMessage::user("Hello 안녕하세요"),
            ],
        ),
        (
            "a multi-turn conversation",
            vec![
                ChatMessage::user("Hello"),
                ChatMessage::assistant("Hi."),
                ChatMessage::user("안녕하세요"),
            ],
        ),
    ];
    for (what, msgs) in &conversations {
        let (with, without) = match (
            template.render(msgs, true, &none),
            template.render(msgs, false, &none),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                p.push(format!("the chat template fails on {what}: {e}"));
                continue;
            }
        };
        if !with.contains("안녕하세요") {
            p.push(format!("the chat template drops the user's text on {what}"));
        }
        if with == without {
            p.push(format!(
                "the chat template adds no generation prompt on {what}: the model would not know to answer"
            ));
        }
        match tok.encode(&with) {
            Ok(ids) if ids.is_empty() => {
                p.push(format!("the chat template renders {what} to no tokens"))
            }
            Ok(ids) if ids.len() > 1024.min(c.max_position_embeddings) => p.push(format!(
                "the chat template renders {what} to {} tokens: a benchmark prompt would not fit",
                ids.len()
            )),
            Ok(_) => {}
            Err(e) => p.push(format!(
                "the chat template's rendering of {what} does not encode: {e}"
            )),
        }
        if !with.contains("[|endofturn|]") && msgs.len() > 1 {
            p.push(format!(
                "the chat template does not close turns with [|endofturn|] on {what}: it is not EXAONE 4's"
            ));
        }
    }
    Some(tok)
}

fn generation_config_problems(dir: &Path, c: &crate::model::Exaone4Config, p: &mut Vec<String>) {
    let path = dir.join("generation_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            p.push(format!("generation_config.json: invalid JSON: {e}"));
            return;
        }
    };
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    if let Err(e) = crate::model::generate::check_sampling(
        num("temperature").filter(|_| v.get("do_sample") == Some(&Value::Bool(true))),
        num("top_p"),
        "generation_config.json: temperature",
        "generation_config.json: top_p",
    ) {
        p.push(e);
    }
    let ids: Vec<&Value> = match v.get("eos_token_id") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(x) => vec![x],
        None => vec![],
    };
    for id in ids {
        if id.as_u64().is_none_or(|i| i as usize >= c.vocab_size) {
            p.push(format!(
                "generation_config.json: eos_token_id {id} is not a token id below vocab_size {}",
                c.vocab_size
            ));
        }
    }
}

/// Reads every tensor through the model's own loader (all problems listed, not just the first),
/// then runs a few tokens through the model on the CPU and requires finite logits.
fn contents(ck: &Checkpoint, tok: Option<&crate::model::Tokenizer>, p: &mut Vec<String>) {
    use candle_core::{DType, Device, Tensor};
    let cpu = Device::Cpu;
    let model = match ck.load_model(DType::F32, &cpu) {
        Ok(m) => m,
        Err(first) => {
            // list every tensor that fails, each with its reason (placeholders stand in)
            let found = std::cell::RefCell::new(vec![]);
            let _ = crate::model::Exaone4::build(
                ck.config.clone(),
                |name, shape| -> Result<Tensor> {
                    match ck.get(name, shape, DType::F32, &cpu) {
                        Ok(t) => Ok(t),
                        Err(e) => {
                            found.borrow_mut().push(e.to_string());
                            Ok(Tensor::zeros(1, DType::F32, &cpu)?)
                        }
                    }
                },
                DType::F32,
                &cpu,
            );
            let found = found.into_inner();
            if found.is_empty() {
                p.push(first.to_string());
            }
            for e in found {
                if !p.contains(&e) {
                    p.push(e);
                }
            }
            return;
        }
    };
    // every other stored tensor must be readable and known to vLLM
    let aux = [
        ".weight_scale",
        ".weight_packed",
        ".weight_shape",
        ".weight_zero_point",
        ".weight_g_idx",
    ];
    let used: BTreeSet<String> = model.named_tensors().into_iter().map(|(n, _)| n).collect();
    for name in ck.names() {
        if used.contains(name) || name.ends_with("rotary_emb.inv_freq") {
            continue;
        }
        let base = aux
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .map(|pre| format!("{pre}.weight"));
        let known = name == "lm_head.weight"
            || base.as_ref().is_some_and(|b| used.contains(b))
            || name
                .strip_suffix(".weight")
                .is_some_and(|pre| ck.contains(&format!("{pre}.weight_scale")));
        if !known {
            p.push(format!(
                "tensor `{name}` is not a parameter of this EXAONE 4 model (vLLM raises KeyError on it)"
            ));
        } else if let Err(e) = ck.raw(name, &cpu) {
            p.push(e.to_string());
        }
    }
    // every dense weight finite (a NaN row of the embedding escapes a short prompt); where one
    // is not, the logits below would only repeat it
    let nonfinite =
        super::finite::nonfinite_weights(&model, &|n| ck.contains(&format!("{n}_scale")));
    if !nonfinite.is_empty() {
        p.extend(nonfinite);
        return;
    }
    // a few tokens: the chat format when there is a tokenizer, else ids spread over the vocab
    let c = &model.config;
    let mut ids = tok
        .and_then(|t| {
            t.encode(&crate::model::tokenizer::apply_chat_template(
                &[crate::model::ChatMessage::user("Hello")],
                true,
                false,
            ))
            .ok()
        })
        .filter(|ids| !ids.is_empty() && ids.iter().all(|&i| (i as usize) < c.vocab_size))
        .unwrap_or_else(|| crate::model::generate::synthetic_ids(c.vocab_size, 8, 0));
    ids.truncate(c.max_position_embeddings.min(16));
    let n = ids.len();
    let logits = Tensor::from_vec(ids, (1, n), &cpu)
        .and_then(|x| model.forward(&x, None))
        .and_then(|l| l.flatten_all()?.to_vec1::<f32>());
    match logits {
        Ok(v) => {
            if let Some(k) = v.iter().position(|x| !x.is_finite()) {
                p.push(format!(
                    "the model computes non-finite logits ({} at position {}, token {}) on a {n}-token prompt: the weights or the config are broken",
                    v[k],
                    k / c.vocab_size,
                    k % c.vocab_size
                ));
            }
        }
        Err(e) => p.push(format!("running {n} tokens through the model failed: {e}")),
    }
}

/// Validates `dir` and writes `out` (a zip whose only top-level entry is `model/`), atomically,
/// refusing an existing `out`. See [`package_to`].
pub fn package(dir: &Path, out: &Path) -> Result<Vec<String>> {
    package_to(dir, out, false)
}

/// Validates `dir` and writes `out` (a zip whose only top-level entry is `model/`): checked
/// first (not inside the model directory nor one of its files; nothing there unless
/// `overwrite`, and then only a file), validated, then written to a temporary sibling and moved
/// into place (a no-replace rename without `overwrite`). Returns notes for the user.
pub fn package_to(dir: &Path, out: &Path, overwrite: bool) -> Result<Vec<String>> {
    crate::fs::refuse_overlap(out, &[dir], true)?;
    crate::fs::check_destination(out, crate::fs::OutputKind::File, overwrite)?;
    let problems = validate(dir);
    if !problems.is_empty() {
        return Err(Error::Invalid(format!(
            "{} is not ready to submit ({} problem(s)); no zip was written:\n  - {}",
            dir.display(),
            problems.len(),
            problems.join("\n  - ")
        )));
    }
    let mut notes = notes(dir);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .collect();
    files.sort_by_key(|e| e.file_name());
    files.retain(|e| {
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if hidden {
            notes.push(format!(
                "left out {} (a hidden file is not part of a model)",
                e.path().display()
            ));
        }
        !hidden
    });
    crate::fs::write_output(out, overwrite, |file| {
        let zip_err = |e: zip::result::ZipError| match e {
            zip::result::ZipError::Io(io) => Error::io(out, io),
            e => Error::Invalid(format!("{}: zip: {e}", out.display())),
        };
        let mut zw = zip::ZipWriter::new(std::io::BufWriter::new(file));
        let mut buf = vec![0u8; 1 << 20];
        for e in &files {
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
                .map_err(zip_err)?;
            // read errors name the input, write errors (a full disk) the zip
            let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            loop {
                let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| Error::io(&path, e))?;
                if n == 0 {
                    break;
                }
                zw.write_all(&buf[..n]).map_err(|e| Error::io(out, e))?;
            }
        }
        let mut w = zw.finish().map_err(zip_err)?;
        w.flush().map_err(|e| Error::io(out, e))
    })?;
    Ok(notes)
}

/// What `package` says beside a valid model (none of it stops the zip): files zipped that no
/// loader reads, an lm_head that vLLM ignores.
pub fn notes(dir: &Path) -> Vec<String> {
    let mut notes = super::stray::foreign_files(dir);
    if ck_has_redundant_head(dir) {
        notes.push("lm_head.weight is in the files but tie_word_embeddings is true: vLLM ignores it (dead weight)".into());
    }
    notes
}

fn ck_has_redundant_head(dir: &Path) -> bool {
    Checkpoint::open(dir)
        .map(|c| c.config.tie_word_embeddings && c.contains("lm_head.weight"))
        .unwrap_or(false)
}
