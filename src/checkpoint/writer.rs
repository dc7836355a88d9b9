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
pub const SIDE_FILES: &[&str] = crate::fs::MODEL_SIDE_FILES;

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
    /// Replace an existing model directory at the destination (the old one is removed only
    /// after the new one is in place; something that is not a model directory is never
    /// replaced).
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

/// Checks, before any long work, that a model directory can be written at `out` with `opts`:
/// nothing there (or, with `overwrite`, a model directory or an empty one), not the input
/// directory, one containing it or one inside it (a model written into its input would be a
/// foreign folder in that model: `package` leaves it out, `--overwrite` refuses it), a parent
/// we can write in. Removes what killed runs left for
/// `out` (printing a note about each); returns the notes.
pub fn check_model_out(out: &Path, opts: &WriteOptions) -> Result<Vec<String>> {
    if let Some(src) = &opts.side_files_from {
        crate::fs::refuse_overlap(out, &[src.as_path()], true)?;
    }
    crate::fs::check_destination(out, crate::fs::OutputKind::ModelDir, opts.overwrite)
}

impl WriteOptions {
    /// [`check_model_out`]: whether a model directory can be written at `out` with these
    /// options, checked before any long work.
    pub fn check_destination(&self, out: &Path) -> Result<Vec<String>> {
        check_model_out(out, self)
    }
}

/// Writes `config` and `tensors` as a model directory at `out`, atomically: everything goes
/// into a temporary sibling `.NAME.partial-PID-*`, which is moved into place with a no-replace
/// rename. Without `overwrite`, anything at `out` — also something that appears there while
/// this runs — is left untouched and the write fails. With it, only a model directory (or an
/// empty one) is replaced, and only once the new one is complete.
/// `config_value` lets a caller add blocks (e.g. `quantization_config`) to the typed config.
pub fn write_model_dir(
    out: &Path,
    config: &Exaone4Config,
    config_value: Option<Value>,
    tensors: &BTreeMap<String, RawTensor>,
    opts: &WriteOptions,
) -> Result<()> {
    check_model_out(out, opts)?;
    let parent = crate::fs::parent_of(out).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&crate::fs::partial_prefix(out)?)
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    fill_dir(tmp.path(), config, config_value, tensors, opts).map_err(|e| Error::Context {
        context: format!("writing {}", out.display()),
        source: Box::new(e),
    })?;
    // readable as any new directory would be (the temporary was private)
    crate::fs::publish_mode(tmp.path(), true)?;
    for e in std::fs::read_dir(tmp.path()).map_err(|e| Error::io(tmp.path(), e))? {
        let p = e.map_err(|e| Error::io(tmp.path(), e))?.path();
        crate::fs::publish_mode(&p, p.is_dir())?;
    }
    let kept = tmp.keep();
    crate::fs::move_into_place(&kept, out, crate::fs::OutputKind::ModelDir, opts.overwrite)
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::json(path, e))? + "\n";
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Writes the files of a model directory into `dir` (a private temporary) and syncs them.
fn fill_dir(
    dir: &Path,
    config: &Exaone4Config,
    config_value: Option<Value>,
    tensors: &BTreeMap<String, RawTensor>,
    opts: &WriteOptions,
) -> Result<()> {
    write_weights(dir, tensors, opts.max_shard_bytes)?;
    let cfg = config_value.unwrap_or_else(|| config.to_value());
    write_json(&dir.join("config.json"), &cfg)?;
    if let Some(src) = &opts.side_files_from {
        for f in SIDE_FILES {
            let from = src.join(f);
            if from.exists() {
                std::fs::copy(&from, dir.join(f)).map_err(|e| {
                    Error::io(
                        &from,
                        std::io::Error::new(e.kind(), format!("copying into the output: {e}")),
                    )
                })?;
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
        write_json(&gen, &Value::Object(g))?;
    }
    // durable before the rename makes it visible
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&p, e))?;
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A safetensors serialization error: an I/O failure (a full disk) named as such.
fn st_write_error(path: &Path, e: safetensors::SafeTensorError) -> Error {
    match e {
        safetensors::SafeTensorError::IoError(io) => Error::io(path, io),
        e => Error::Invalid(format!("{}: cannot serialize: {e}", path.display())),
    }
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
        return safetensors::serialize_to_file(tensors.iter(), meta, &path)
            .map_err(|e| st_write_error(&path, e));
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
        .map_err(|e| st_write_error(&path, e))?;
        for (n, _) in shard {
            weight_map.insert((*n).clone(), fname.clone().into());
        }
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    write_json(&dir.join("model.safetensors.index.json"), &index)
}
