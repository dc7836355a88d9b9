//! Where models and data come from (by role or relative path), and how steps run: the
//! device, the check of what is read against the recipe, calibration samples.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::hash::{hash_bytes, hash_tokens, ModelId};
use super::{at_least, bad};
use crate::data::{default_model_dir, split_path, TokenStream};
use crate::error::{Error, Result};
use crate::model::Exaone4Config;

/// Where a model or a data file comes from: a role — `default-model`, or the shipped `train`,
/// `val` or `test` split — found wherever the shipped data is; or a path relative to the
/// working directory (`..` where it lies elsewhere).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    Role(String),
    Path(String),
}

const ROLES: [&str; 4] = ["default-model", "train", "val", "test"];

fn role_path(role: &str) -> Option<PathBuf> {
    match role {
        "default-model" => Some(default_model_dir()),
        "train" | "val" | "test" => Some(split_path(role)),
        _ => None,
    }
}

impl Source {
    pub fn of(path: &Path) -> Self {
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        if let Some(c) = canon(path) {
            for r in ROLES {
                if role_path(r).and_then(|p| canon(&p)) == Some(c.clone()) {
                    return Self::Role(r.into());
                }
            }
        }
        Self::Path(relative(path))
    }

    /// The path it names, relative paths taken from `root`.
    pub fn resolve(&self, root: &Path) -> Result<PathBuf> {
        match self {
            Self::Role(r) => role_path(r).ok_or_else(|| {
                bad(format!(
                    "recipe: unknown role {r:?} (known: {})",
                    ROLES.join(", ")
                ))
            }),
            Self::Path(p) => {
                let path = root.join(p);
                if !path.exists() {
                    return Err(bad(format!(
                        "recipe: {p} (relative to the working directory the recipe was made in) is not at {}; run where the recipe was made, or name that directory with --relative-to",
                        path.display()
                    )));
                }
                Ok(path)
            }
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Role(r) => format!("{r} (shipped)"),
            Self::Path(p) => p.clone(),
        }
    }
}

/// `path` relative to the working directory, with `/` between components.
fn relative(path: &Path) -> String {
    let cwd = std::env::current_dir().and_then(std::fs::canonicalize);
    let (Ok(p), Ok(cwd)) = (std::fs::canonicalize(path), cwd) else {
        return path.display().to_string();
    };
    let common = p
        .components()
        .zip(cwd.components())
        .take_while(|(a, b)| a == b)
        .count();
    let parts: Vec<String> =
        std::iter::repeat_n("..".to_string(), cwd.components().count() - common)
            .chain(
                p.components()
                    .skip(common)
                    .map(|c| c.as_os_str().to_string_lossy().into_owned()),
            )
            .collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// A model named by where it comes from and what it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub model: Source,
    pub config_hash: String,
    pub weights_hash: String,
}

impl ModelRef {
    pub fn of(dir: &Path) -> Result<Self> {
        let id = ModelId::of(dir)?;
        Ok(Self {
            model: Source::of(dir),
            config_hash: id.config_hash,
            weights_hash: id.weights_hash,
        })
    }

    pub fn id(&self) -> ModelId {
        ModelId {
            config_hash: self.config_hash.clone(),
            weights_hash: self.weights_hash.clone(),
        }
    }
}

/// Whether a run records what it reads (a command making a checkpoint) or checks it against
/// the recipe (`apply`; with `allow_mismatch`, a difference is a warning and is recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Record,
    Verify { allow_mismatch: bool },
}

/// Where and how steps run.
pub struct Ctx {
    pub device: Device,
    /// as the user named it: `cpu`, `cuda`, `cuda:N`
    pub device_name: String,
    pub dtype: DType,
    /// where relative data paths resolve
    pub root: PathBuf,
    pub check: Check,
    /// model directories a distill step's teacher may be, with their identities (for `apply`:
    /// the base first, then `--teacher`)
    pub models: Vec<(PathBuf, ModelId)>,
    /// the teachers' logits shared by the distill steps of one run (a study's); None: every
    /// step runs its teacher (the result is the same bit for bit)
    pub teacher_cache: Option<std::sync::Arc<crate::compress::distill::TeacherCache>>,
    /// token streams already read (by tokenizer, vocabulary, file content and template use),
    /// for a run of many steps on the same data; None: every step tokenizes its data
    pub streams: Option<StreamCache>,
}

/// Token streams kept by [`Ctx::token_stream`].
pub type StreamCache =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, TokenStream>>>;

impl Ctx {
    /// `device` opened with the runtime's memory pool; the dtype `auto` picks (f32 on the CPU,
    /// bf16 on a GPU); relative paths from the working directory.
    pub fn new(device: &str, check: Check) -> Result<Self> {
        let d = crate::runtime::open_device(device)?;
        let dtype = crate::device::parse_dtype("auto", &d)?;
        let root = std::env::current_dir().map_err(|e| Error::io(Path::new("."), e))?;
        Ok(Self {
            device: d,
            device_name: device.into(),
            dtype,
            root,
            check,
            models: vec![],
            teacher_cache: None,
            streams: None,
        })
    }

    /// [`token_stream`] of `path` for the model in `dir`, from the cache when the same
    /// tokenizer, vocabulary and file content were read before (the same stream bit for bit).
    pub fn token_stream(&self, dir: &Path, path: &Path, chat: bool) -> Result<TokenStream> {
        let Some(cache) = &self.streams else {
            return token_stream(dir, path, chat);
        };
        let file = |p: &Path| std::fs::read(p).map(|b| hash_bytes(&b)).unwrap_or_default();
        let tok = match dir.join("tokenizer.json") {
            t if t.is_file() => file(&t),
            _ => file(&default_model_dir().join("tokenizer.json")),
        };
        let vocab = Exaone4Config::from_file(dir)?.vocab_size;
        let key = format!("{tok} {vocab} {chat} {} {}", file(path), path.display());
        let lock = || cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = lock().get(&key) {
            return Ok(s.clone());
        }
        let s = token_stream(dir, path, chat)?;
        lock().insert(key, s.clone());
        Ok(s)
    }

    /// Records `got` in `have`, or checks it against `have`.
    pub(super) fn settle(
        &self,
        have: &mut String,
        got: String,
        what: &dyn Fn() -> String,
    ) -> Result<()> {
        match self.check {
            Check::Verify { .. } if *have == got => Ok(()),
            Check::Record => {
                *have = got;
                Ok(())
            }
            Check::Verify {
                allow_mismatch: true,
            } => {
                eprintln!("warning: {} hashes to {got}, the recipe says {have}; applied anyway (--allow-mismatch): the result is a new variant", what());
                *have = got;
                Ok(())
            }
            Check::Verify {
                allow_mismatch: false,
            } => Err(bad(format!(
                "{} hashes to {got} but the recipe says {have}: it is not what the variant was made from; pass --allow-mismatch to apply the recipe to it anyway",
                what()
            ))),
        }
    }
}

/// A token stream of text file `path` for the model in `dir`: its tokenizer (else the default
/// model's, with a note) and chat template; documents as calibration reads them, each followed
/// by `[|endofturn|]`. Fails when the tokenizer's ids exceed the model's vocabulary.
pub fn token_stream(dir: &Path, path: &Path, chat: bool) -> Result<TokenStream> {
    use crate::compress::calibration::read_documents_with_template;
    use crate::model::chat_template::ChatTemplate;
    let (tok, fell_back) = crate::data::tokenizer_for_model(dir)?;
    if fell_back {
        eprintln!(
            "note: {} has no tokenizer.json: calibrating with the default model's tokenizer",
            dir.display()
        );
    }
    let vocab = Exaone4Config::from_file(dir)?.vocab_size;
    if tok.vocab_size() > vocab {
        return Err(bad(format!(
            "calibration: the tokenizer ({}) has {} tokens but the model's vocab_size is {vocab}; give the model directory its own tokenizer.json",
            if fell_back { "the default model's" } else { "tokenizer.json" },
            tok.vocab_size()
        )));
    }
    let tdir = if fell_back {
        default_model_dir()
    } else {
        dir.to_path_buf()
    };
    let template = ChatTemplate::from_dir(&tdir)?;
    let docs = read_documents_with_template(path, &template, chat).map_err(|e| Error::Context {
        context: format!("reading the text of {}", path.display()),
        source: Box::new(e),
    })?;
    TokenStream::from_lines(&tok, &docs, tok.token_id("[|endofturn|]"))
}

/// Reads `source` (hashing it: recorded or checked) and returns its path.
pub(super) fn read_source(
    source: &Source,
    hash: &mut String,
    ctx: &Ctx,
    what: &str,
) -> Result<PathBuf> {
    // a file the user names now (not one a recipe recorded): said as the flag's file
    if let (Source::Path(p), Check::Record) = (source, ctx.check) {
        let path = ctx.root.join(p);
        if !path.is_file() {
            let why = match path.is_dir() {
                true => "is a directory; give a text file (one document per line or a JSONL)",
                false => "no such file",
            };
            return Err(bad(format!("{what} {}: {why}", path.display())));
        }
    }
    let path = source.resolve(&ctx.root)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    ctx.settle(hash, hash_bytes(&bytes), &|| {
        format!("{what} {}", path.display())
    })?;
    Ok(path)
}

/// Calibration samples: `samples` seeded windows of `len` tokens from a text file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub data: Source,
    /// the data file's content hash
    pub data_hash: String,
    pub samples: usize,
    pub len: usize,
    /// plain texts wrapped as user turns of the chat template
    pub chat: bool,
    pub seed: u64,
    /// the hash of the windows drawn
    pub tokens_hash: String,
}

impl Calibration {
    /// `data` (default: the shipped train split); the hashes are filled when it is read.
    pub fn new(data: Option<&Path>, samples: usize, len: usize, chat: bool, seed: u64) -> Self {
        Self {
            data: data.map_or(Source::Role("train".into()), Source::of),
            data_hash: String::new(),
            samples,
            len,
            chat,
            seed,
            tokens_hash: String::new(),
        }
    }

    /// The samples for the model in `dir`, the hashes recorded or checked.
    pub fn read(&mut self, dir: &Path, ctx: &Ctx) -> Result<Vec<Vec<u32>>> {
        let path = read_source(&self.data, &mut self.data_hash, ctx, "calibration data")?;
        let stream = ctx.token_stream(dir, &path, self.chat)?;
        let s = crate::compress::calibration::samples(&stream, self.samples, self.len, self.seed)
            .map_err(|e| {
            // named as the user gave them: flags when making, the recipe's fields in `apply`
            let what = match ctx.check {
                Check::Record => "--calib-samples × --calib-len",
                Check::Verify { .. } => "the recipe's calibration samples × len",
            };
            bad(format!("{what}: {e}"))
        })?;
        ctx.settle(&mut self.tokens_hash, hash_tokens(&s), &|| {
            format!("the calibration windows drawn from {}", path.display())
        })?;
        Ok(s)
    }

    pub fn check(&self) -> Result<()> {
        at_least("calibration samples", self.samples, 1)?;
        at_least("calibration len", self.len, 1)
    }
}
