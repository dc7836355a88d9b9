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

/// An error and its causes as a person reads them: the first message, then each cause that the
/// message before it does not already say (the crate's errors quote their source in their own
/// text, which anyhow's report would print a second time under "Caused by"). Without
/// backtraces: candle writes one into its errors' text whenever `RUST_BACKTRACE` is set (for
/// panics); [`exit`] prints one under `RUST_LIB_BACKTRACE=1` alone.
pub fn describe(error: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut said = String::new();
    for e in error.chain() {
        let msg = without_backtrace(&e.to_string()).to_string();
        if said.contains(&msg) {
            continue;
        }
        if out.is_empty() {
            out = msg.clone();
        } else {
            out.push_str(&format!("\n  caused by: {msg}"));
        }
        said.push_str(&msg);
        said.push('\n');
    }
    out
}

/// `msg` up to the backtrace candle appends to its errors' text (`{inner}\n{backtrace}`, the
/// frames numbered from `   0: `).
fn without_backtrace(msg: &str) -> &str {
    match msg.find("\n   0: ") {
        Some(i) => msg[..i].trim_end(),
        None => msg,
    }
}

/// What a binary's `main` returns: `Error: ` and [`describe`]'s text on stderr and exit status
/// 1 for an error, and the error's backtrace where `RUST_LIB_BACKTRACE=1` asked for one (anyhow
/// also captures one under `RUST_BACKTRACE`, which is for panics: not printed then).
pub fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    let Err(e) = result else {
        return std::process::ExitCode::SUCCESS;
    };
    eprintln!("Error: {}", describe(&e));
    if std::env::var("RUST_LIB_BACKTRACE").is_ok_and(|v| v == "1") {
        eprintln!("\n{}", e.backtrace());
    }
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause the message already quotes is not repeated; one it does not quote is kept, on
    /// its own line.
    #[test]
    fn causes_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
        let e = Error::io(Path::new("/x"), io);
        let a = anyhow::Error::new(e);
        assert_eq!(describe(&a), "/x: no such directory");
        let a = a.context("loading the model");
        assert_eq!(
            describe(&a),
            "loading the model\n  caused by: /x: no such directory"
        );
    }

    /// A candle error carrying a backtrace (as candle makes them under `RUST_BACKTRACE=1`)
    /// reads as its message alone.
    #[test]
    fn candle_backtraces_are_not_in_the_message() {
        let inner = candle_core::Error::Msg("calibration of 100000 samples".into());
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(e.to_string().contains("\n   0: "), "{e}");
        let a = anyhow::Error::new(Error::from(e)).context("quantizing");
        assert_eq!(
            describe(&a),
            "quantizing\n  caused by: calibration of 100000 samples"
        );
    }
}
