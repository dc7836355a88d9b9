//! Text: the corpus splits shipped in `data/text/`, tokenized streams, and batches drawn from
//! them (seeded) for training, calibration and evaluation.

use std::path::{Path, PathBuf};

use candle_core::{Device, Result, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::model::Tokenizer;

pub mod shipped;

/// The default model shipped in `data/default-model` (used when no `--model` is given), under
/// [`data_dir`]. `EXAONE_COMPRESS_DEFAULT_MODEL` (kept for compatibility) overrides the model alone.
pub fn default_model_dir() -> PathBuf {
    if let Some(p) = env_path("EXAONE_COMPRESS_DEFAULT_MODEL") {
        return p;
    }
    data_dir().join("default-model")
}

/// [`default_model_dir`], or an error naming every place it was looked for (and how to point
/// the binary at its data) when the shipped default model is in none of them: what a command
/// run without `--model` says when the binary carries no data and none lies beside it.
pub fn default_model() -> crate::Result<PathBuf> {
    let dir = default_model_dir();
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    let looked = if let Some(p) = env_path("EXAONE_COMPRESS_DEFAULT_MODEL") {
        format!("EXAONE_COMPRESS_DEFAULT_MODEL={}", p.display())
    } else if let Some(p) = env_path("EXAONE_COMPRESS_DATA") {
        format!("EXAONE_COMPRESS_DATA={} (its default-model/)", p.display())
    } else {
        let mut places: Vec<String> = data_candidates()
            .iter()
            .map(|d| d.join("default-model").display().to_string())
            .collect();
        places.push(match written_out() {
            Ok(Some(_)) => "the data compiled into this binary".into(),
            Ok(None) => "nothing compiled in (built without the `embedded-data` feature)".into(),
            Err(why) => {
                format!("the data compiled into this binary, which could not be written out: {why}")
            }
        });
        places.join(", ")
    };
    Err(crate::Error::Invalid(format!(
        "the shipped default model was not found (looked in {looked}): pass --model DIR, or \
         point EXAONE_COMPRESS_DATA at the repository's data/ folder (or copy data/ beside the \
         binary)"
    )))
}

/// The tokenizer of model directory `dir`, or the default model's when it has none (a
/// random-weight checkpoint): token ids then still mean something to the harness, text
/// quality does not. Returns whether it fell back.
pub fn tokenizer_for_model(dir: &Path) -> crate::Result<(Tokenizer, bool)> {
    if dir.join("tokenizer.json").exists() {
        Ok((Tokenizer::from_dir(dir)?, false))
    } else {
        Ok((Tokenizer::from_dir(&default_model_dir())?, true))
    }
}

/// The shipped data (the default model, text splits, benchmark items), found in this order:
/// 1. `EXAONE_COMPRESS_DATA`, the one override, if set;
/// 2. beside the running binary: `<bin dir>/data`, then `<bin dir>/../share/exaone-compress/data`;
/// 3. the copy compiled into the binary (feature `embedded-data`, on by default), written out
///    once to the user's cache (`data::shipped`): a binary copied or installed anywhere runs
///    without the source tree, whose path is never looked up.
///
/// A candidate counts when it holds `default-model/config.json`. When none does, the first
/// place beside the binary is returned, so that the error reading it names where data was
/// expected.
pub fn data_dir() -> PathBuf {
    if let Some(p) = env_path("EXAONE_COMPRESS_DATA") {
        return p;
    }
    let candidates = data_candidates();
    if let Some(d) = (candidates.iter()).find(|d| d.join("default-model/config.json").is_file()) {
        return d.clone();
    }
    match written_out() {
        Ok(Some(d)) => d,
        _ => candidates[0].clone(),
    }
}

/// [`shipped::written_out`], done once per process (hashing the data to name its folder reads
/// all of it); the error as text.
fn written_out() -> std::result::Result<Option<PathBuf>, String> {
    static ONCE: std::sync::OnceLock<std::result::Result<Option<PathBuf>, String>> =
        std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        shipped::written_out().map_err(|e| format!("{} ({e})", shipped::cache_dir_hint()))
    })
    .clone()
}

/// A path from environment variable `name`; set but empty counts as unset (as a shell's
/// `VAR= cmd` means "none", not "the working directory").
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Where [`data_dir`] looks beside the running binary, in order (never empty: the working
/// directory's `data` stands in when the binary's own path is unknown).
fn data_candidates() -> Vec<PathBuf> {
    let beside: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .map(|d| vec![d.join("data"), d.join("../share/exaone-compress/data")])
        .unwrap_or_default();
    match beside.is_empty() {
        true => vec![PathBuf::from("data")],
        false => beside,
    }
}

/// A split of the shipped corpus: `train`, `val` or `test` (JSONL, `{"text": ...}` a line).
pub fn split_path(split: &str) -> PathBuf {
    data_dir().join("text").join(format!("{split}.jsonl"))
}

/// Reads a text file as documents (one per non-empty line).
pub fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Reads documents from a `.jsonl` file — each line's `text`, or its `messages`
/// (`[{"role", "content"}, ...]`) rendered through EXAONE 4's chat template — or a plain text
/// file (each non-empty line). A malformed JSONL line is an error naming the file and line.
pub fn read_documents(path: &Path) -> std::io::Result<Vec<String>> {
    let is_jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let lines = read_lines(path)?;
    if !is_jsonl {
        return Ok(lines);
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: {e}", path.display(), i + 1),
                )
            })?;
            // a conversation is rendered through EXAONE 4's chat template, as the model sees it
            if let Some(msgs) = v.get("messages").and_then(|m| m.as_array()) {
                let turns: Option<Vec<crate::model::ChatMessage>> = msgs
                    .iter()
                    .map(|m| {
                        Some(crate::model::ChatMessage::new(
                            m.get("role")?.as_str()?,
                            m.get("content")?.as_str()?,
                        ))
                    })
                    .collect();
                return turns
                    .map(|t| crate::model::tokenizer::apply_chat_template(&t, false, false))
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "{}:{}: every message needs string \"role\" and \"content\"",
                                path.display(),
                                i + 1
                            ),
                        )
                    });
            }
            v.get("text")
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{}:{}: no string field \"text\" (or \"messages\")",
                            path.display(),
                            i + 1
                        ),
                    )
                })
        })
        .collect()
}

/// A tokenized text: all documents concatenated, each followed by `sep` (eos), with the byte
/// count of the text (for bits per byte).
#[derive(Clone, Debug)]
pub struct TokenStream {
    pub ids: Vec<u32>,
    pub bytes: usize,
}

impl TokenStream {
    pub fn from_lines(tok: &Tokenizer, lines: &[String], sep: Option<u32>) -> crate::Result<Self> {
        let mut ids = vec![];
        let mut bytes = 0;
        for l in lines {
            ids.extend(tok.encode(l)?);
            bytes += l.len();
            if let Some(s) = sep {
                ids.push(s);
            }
        }
        Ok(Self { ids, bytes })
    }

    /// `n` random windows of `len` tokens, seeded: [n, len] u32.
    pub fn sample_windows(
        &self,
        n: usize,
        len: usize,
        rng: &mut StdRng,
        device: &Device,
    ) -> Result<Tensor> {
        if self.ids.len() <= len {
            candle_core::bail!(
                "token stream of {} tokens is too short for windows of {len}",
                self.ids.len()
            );
        }
        let mut out = Vec::with_capacity(n * len);
        for _ in 0..n {
            let s = rng.random_range(0..self.ids.len() - len);
            out.extend_from_slice(&self.ids[s..s + len]);
        }
        Tensor::from_vec(out, (n, len), device)
    }

    /// Consecutive non-overlapping windows of `len` tokens (at most `max`), as a list.
    pub fn chunks(&self, len: usize, max: usize) -> Vec<Vec<u32>> {
        self.ids
            .chunks_exact(len)
            .take(max)
            .map(|c| c.to_vec())
            .collect()
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// What `build_default_corpus` wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CorpusStats {
    pub train_lines: usize,
    pub val_lines: usize,
    pub test_lines: usize,
    pub bytes: usize,
}

/// Builds the default model's corpus from the offline corpora (origins in data/README.md):
/// Korean formal prose (LibreOffice help, Debian FAQ, the Constitution, bills), Korean informal
/// text (NSMC movie reviews), English prose (Brown), and a small share of chat-formatted
/// turns made from them, so the model also knows the chat template. Splits are by blocks of
/// 10 consecutive lines (1 in 20 blocks to test, 1 in 20 to validation) so neighbouring lines
/// do not leak across splits. Deterministic.
pub fn build_default_corpus(corpora: &Path, out: &Path) -> std::io::Result<CorpusStats> {
    use crate::model::tokenizer::apply_chat_template;
    use crate::model::ChatMessage;
    let read = |f: &str| read_lines(&corpora.join(f));
    let mut docs: Vec<String> = vec![];
    let ko_formal: Vec<String> = [
        "ko_libreoffice_help.txt",
        "ko_debian_faq.txt",
        "ko_constitution.txt",
        "ko_bills.txt",
    ]
    .iter()
    .map(|f| read(f))
    .collect::<std::io::Result<Vec<_>>>()?
    .into_iter()
    .flatten()
    .map(|l| l.trim().to_string())
    .filter(|l| l.chars().count() >= 8)
    .collect();
    let reviews: Vec<(u32, String)> = read("ko_nsmc_reviews.tsv")?
        .into_iter()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            (f.len() == 4).then(|| (f[2].parse().unwrap_or(0), f[3].trim().to_string()))
        })
        .filter(|(_, r)| r.chars().count() >= 10)
        .take(30_000)
        .collect();
    let brown: Vec<String> = read("en_brown.txt")?.into_iter().step_by(2).collect();
    docs.extend(ko_formal.iter().cloned());
    docs.extend(reviews.iter().map(|(_, r)| r.clone()));
    docs.extend(brown.iter().cloned());
    // chat turns: sentiment of every 10th review, continuation of every 10th formal/English line
    for (i, (rating, r)) in reviews.iter().enumerate().filter(|(i, _)| i % 10 == 0) {
        let label = if *rating >= 7 {
            "긍정적인 리뷰입니다."
        } else if *rating <= 4 {
            "부정적인 리뷰입니다."
        } else {
            "중립적인 리뷰입니다."
        };
        let q = if i % 20 == 0 {
            format!("다음 영화 리뷰는 긍정인가요, 부정인가요?\n{r}")
        } else {
            format!("이 리뷰의 감정을 알려 주세요: {r}")
        };
        docs.push(apply_chat_template(
            &[ChatMessage::user(&q), ChatMessage::assistant(label)],
            false,
            false,
        ));
    }
    for (i, l) in ko_formal
        .iter()
        .chain(brown.iter())
        .enumerate()
        .filter(|(i, _)| i % 10 == 0)
    {
        let cut = l
            .char_indices()
            .nth(l.chars().count() / 2)
            .map(|(b, _)| b)
            .unwrap_or(0);
        let (a, b) = l.split_at(cut);
        if a.is_empty() || b.is_empty() {
            continue;
        }
        let ask = if l.is_ascii() {
            format!("Continue the text: {a}")
        } else {
            format!("다음 글을 이어서 써 주세요: {a}")
        };
        let _ = i;
        docs.push(apply_chat_template(
            &[ChatMessage::user(&ask), ChatMessage::assistant(b)],
            false,
            false,
        ));
    }
    // interleave sources deterministically so every split sees every kind of text
    let mut order: Vec<usize> = (0..docs.len()).collect();
    let mut r = rng(20261126);
    for i in (1..order.len()).rev() {
        let j = r.random_range(0..=i);
        order.swap(i, j);
    }
    let (mut train, mut val, mut test) = (vec![], vec![], vec![]);
    for (k, block) in order.chunks(10).enumerate() {
        let dest = match k % 20 {
            0 => &mut test,
            1 => &mut val,
            _ => &mut train,
        };
        dest.extend(block.iter().map(|&i| docs[i].as_str()));
    }
    std::fs::create_dir_all(out)?;
    let mut stats = CorpusStats {
        train_lines: train.len(),
        val_lines: val.len(),
        test_lines: test.len(),
        bytes: 0,
    };
    for (name, lines) in [("train", &train), ("val", &val), ("test", &test)] {
        let mut text = String::new();
        for l in lines {
            stats.bytes += l.len();
            text.push_str(&serde_json::json!({ "text": l }).to_string());
            text.push('\n');
        }
        // atomically: a split cut short would break every recipe that names it by hash
        crate::fs::write_atomic(&out.join(format!("{name}.jsonl")), text.as_bytes())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(stats)
}

/// The shipped train/val/test splits tokenized with `tok`, documents separated by `eos`.
pub fn default_splits(
    tok: &Tokenizer,
    eos: Option<u32>,
) -> crate::Result<(TokenStream, TokenStream, TokenStream)> {
    let load = |s: &str| -> crate::Result<TokenStream> {
        let path = split_path(s);
        let docs = read_documents(&path).map_err(|e| crate::Error::io(&path, e))?;
        TokenStream::from_lines(tok, &docs, eos)
    };
    Ok((load("train")?, load("val")?, load("test")?))
}

/// The documents of a shipped split (`train`, `val` or `test`), as [`read_documents`] reads
/// them; an unreadable split is an error naming its file.
pub fn split_documents(split: &str) -> crate::Result<Vec<String>> {
    let path = split_path(split);
    read_documents(&path).map_err(|e| crate::Error::io(&path, e))
}
