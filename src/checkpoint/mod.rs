//! Hugging Face model directories: reading tensors (single file or sharded, memory-mapped),
//! writing them back atomically, and the compressed-tensors format.

pub mod compressed_tensors;
pub mod package;
mod reader;
mod writer;

pub use reader::{Checkpoint, TensorInfo};
pub use writer::{write_model_dir, RawTensor, WriteOptions, SIDE_FILES};

use std::path::{Path, PathBuf};

/// Everything that can go wrong reading or writing a checkpoint. Each variant names the file,
/// field or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}config field `{field}`: {msg}")]
    Config {
        field: String,
        msg: String,
        file: String,
    },
    #[error("{path}: not a readable safetensors file ({msg}); is it truncated?")]
    Safetensors { path: PathBuf, msg: String },
    #[error("tensor `{name}` is missing from {dir}")]
    MissingTensor { name: String, dir: PathBuf },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}`: unsupported dtype {dtype}")]
    Dtype { name: String, dtype: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn json(path: &Path, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn config(field: &str, msg: impl Into<String>) -> Self {
        Error::Config {
            field: field.to_string(),
            msg: msg.into(),
            file: String::new(),
        }
    }
    /// Attaches the file a config error came from.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Error::Config { field, msg, .. } => Error::Config {
                field,
                msg,
                file: format!("{}: ", path.display()),
            },
            e => e,
        }
    }
}

/// Saves a model's weights (in `dtype`, or as they are) and config as an HF model directory.
pub fn save_model(
    model: &crate::model::Exaone4,
    out: &Path,
    dtype: Option<candle_core::DType>,
    opts: &WriteOptions,
) -> Result<()> {
    let mut tensors = std::collections::BTreeMap::new();
    for (name, t) in model.named_tensors() {
        let t = match dtype {
            Some(d) => t.to_dtype(d)?,
            None => t.clone(),
        };
        tensors.insert(name, RawTensor::from_tensor(&t)?);
    }
    let mut cfg = model.config.clone();
    if let Some(d) = dtype {
        let name = match d {
            candle_core::DType::BF16 => "bfloat16",
            candle_core::DType::F16 => "float16",
            _ => "float32",
        };
        let key = if cfg.raw.contains_key("torch_dtype") && !cfg.raw.contains_key("dtype") {
            "torch_dtype"
        } else {
            "dtype"
        };
        cfg.raw.insert(key.into(), name.into());
        cfg.dtype = Some(name.into());
    }
    write_model_dir(out, &cfg, None, &tensors, opts)
}
