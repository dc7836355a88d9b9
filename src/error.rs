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
    /// An output destination that is occupied: nothing was written and nothing replaced.
    #[error("{path} already exists (pass --overwrite to replace it); nothing was changed")]
    Exists { path: PathBuf },
    /// An output destination that cannot receive the output, and why.
    #[error("{path}: {msg}")]
    Output { path: PathBuf, msg: String },
    /// A stored tensor whose values or shape break a rule of its format: which, and the rule.
    #[error("tensor `{name}`: {msg}")]
    BadTensor { name: String, msg: String },
    #[error("{0}")]
    Flag(String),
    #[error("chart {path}: {msg}")]
    Chart { path: PathBuf, msg: String },
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
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

/// Adds what was being done to an error, e.g. `.context(|| format!("loading {}", dir.display()))`.
pub trait ResultExt<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: what(),
            source: Box::new(e.into()),
        })
    }
}
