//! Writing a Hugging Face model directory that transformers and vLLM load: safetensors (sharded
//! with an index above a size), config.json, generation_config.json, tokenizer files. Everything
//! is written into a temporary sibling directory that is renamed into place only when complete,
//! so a failure (or a crash) never leaves a half-written model where a model was expected.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use safetensors::{Dtype, View};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::model::Exaone4Config;

/// Files of a model directory that are not weights and are carried over unchanged.
pub const SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

/// A tensor ready to be written: any safetensors dtype, including those candle lacks (int8).
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let t = t.to_device(&candle_core::Device::Cpu)?.contiguous()?;
        let dtype = match t.dtype() {
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
            DType::F64 => Dtype::F64,
            DType::I64 => Dtype::I64,
            DType::I32 => Dtype::I32,
            DType::I16 => Dtype::I16,
            DType::U8 => Dtype::U8,
            DType::U32 => Dtype::U32,
            DType::F8E4M3 => Dtype::F8_E4M3,
            d => {
                return Err(Error::Dtype {
                    name: "<tensor>".into(),
                    dtype: format!("{d:?}"),
                })
            }
        };
        let shape = t.dims().to_vec();
        let data = View::data(&t).into_owned();
        Ok(Self { dtype, shape, data })
    }

    pub fn i8(shape: Vec<usize>, values: &[i8]) -> Self {
        Self {
            dtype: Dtype::I8,
            shape,
            data: values.iter().map(|&v| v as u8).collect(),
        }
    }
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Above this many bytes of tensors, split into `model-0000k-of-0000n.safetensors` + index.
    pub max_shard_bytes: usize,
    /// Copy tokenizer, chat template and generation config from this directory.
    pub side_files_from: Option<PathBuf>,
    /// Replace an existing directory at the destination (the old one is removed only after the
    /// new one is complete).
    pub overwrite: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            max_shard_bytes: 2 << 30,
            side_files_from: None,
            overwrite: false,
        }
    }
}

/// Writes `config` and `tensors` as a model directory at `out`, atomically.
/// `config_value` lets a caller add blocks (e.g. `quantization_config`) to the typed config.
pub fn write_model_dir(
    out: &Path,
    config: &Exaone4Config,
    config_value: Option<Value>,
    tensors: &BTreeMap<String, RawTensor>,
    opts: &WriteOptions,
) -> Result<()> {
    if out.exists() && !opts.overwrite {
        return Err(Error::Invalid(format!(
            "{} already exists (pass overwrite to replace it)",
            out.display()
        )));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let dir = tmp.path();

    write_weights(dir, tensors, opts.max_shard_bytes)?;

    let cfg = config_value.unwrap_or_else(|| config.to_value());
    let cfg_path = dir.join("config.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_string_pretty(&cfg).expect("json") + "\n",
    )
    .map_err(|e| Error::io(&cfg_path, e))?;

    if let Some(src) = &opts.side_files_from {
        for f in SIDE_FILES {
            let from = src.join(f);
            if from.exists() {
                std::fs::copy(&from, dir.join(f)).map_err(|e| Error::io(&from, e))?;
            }
        }
    }
    let gen = dir.join("generation_config.json");
    if !gen.exists() {
        let mut g = serde_json::Map::new();
        if let Some(b) = config.bos_token_id {
            g.insert("bos_token_id".into(), b.into());
        }
        match config.eos_token_ids.as_slice() {
            [] => {}
            [e] => {
                g.insert("eos_token_id".into(), (*e).into());
            }
            many => {
                g.insert("eos_token_id".into(), json!(many));
            }
        }
        if let Some(p) = config.pad_token_id {
            g.insert("pad_token_id".into(), p.into());
        }
        std::fs::write(
            &gen,
            serde_json::to_string_pretty(&Value::Object(g)).expect("json") + "\n",
        )
        .map_err(|e| Error::io(&gen, e))?;
    }

    // rename into place; an existing destination is moved aside first and removed last
    let kept = tmp.keep();
    let mut old = None;
    if out.exists() {
        let aside = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(out, &aside).map_err(|e| Error::io(out, e))?;
        old = Some(aside);
    }
    if let Err(e) = std::fs::rename(&kept, out) {
        if let Some(aside) = &old {
            let _ = std::fs::rename(aside, out);
        }
        let _ = std::fs::remove_dir_all(&kept);
        return Err(Error::io(out, e));
    }
    if let Some(aside) = old {
        let _ = std::fs::remove_dir_all(aside);
    }
    Ok(())
}

fn write_weights(
    dir: &Path,
    tensors: &BTreeMap<String, RawTensor>,
    max_shard: usize,
) -> Result<()> {
    let meta: Option<std::collections::HashMap<String, String>> = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    for (name, t) in tensors {
        let want = t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
        if t.data.len() != want {
            return Err(Error::Invalid(format!(
                "tensor `{name}`: {} bytes for shape {:?} of {:?} (expected {want})",
                t.data.len(),
                t.shape,
                t.dtype
            )));
        }
    }
    let total: usize = tensors.values().map(|t| t.data.len()).sum();
    if total <= max_shard {
        let path = dir.join("model.safetensors");
        return safetensors::serialize_to_file(tensors.iter(), meta, &path).map_err(|e| {
            Error::Safetensors {
                path,
                msg: e.to_string(),
            }
        });
    }
    // greedy packing in name order, as transformers does
    let mut shards: Vec<Vec<(&String, &RawTensor)>> = vec![vec![]];
    let mut size = 0;
    for (n, t) in tensors {
        if size + t.data.len() > max_shard && !shards.last().expect("non-empty").is_empty() {
            shards.push(vec![]);
            size = 0;
        }
        size += t.data.len();
        shards.last_mut().expect("non-empty").push((n, t));
    }
    let count = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let fname = format!("model-{:05}-of-{:05}.safetensors", i + 1, count);
        let path = dir.join(&fname);
        safetensors::serialize_to_file(
            shard.iter().map(|(n, t)| (n.as_str(), *t)),
            meta.clone(),
            &path,
        )
        .map_err(|e| Error::Safetensors {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        for (n, _) in shard {
            weight_map.insert((*n).clone(), fname.clone().into());
        }
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let path = dir.join("model.safetensors.index.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&index).expect("json") + "\n",
    )
    .map_err(|e| Error::io(&path, e))
}
