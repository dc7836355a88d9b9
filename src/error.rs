//! The crate's one error type. Every layer returns it; binaries wrap it in `anyhow` for context.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the library. Each variant names the file, field, tensor or
/// flag at fault and the rule broken.
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
    #[error("{0}")]
    Flag(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Polars(#[from] polars::error::PolarsError),
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
