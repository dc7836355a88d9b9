//! The shipped data compiled into the binary (feature `embedded-data`, on by default): the
//! default model, the text splits and the benchmark items, so that a binary copied or
//! `cargo install`ed anywhere runs without the source tree. They are written out once, on first
//! use, to a folder named by their content's hash in the user's cache, and read from there like
//! any model directory.

use std::hash::Hasher;
use std::path::PathBuf;

/// One shipped file: its path below `data/` and its bytes.
#[cfg(feature = "embedded-data")]
type File = (&'static str, &'static [u8]);

#[cfg(feature = "embedded-data")]
macro_rules! shipped {
    ($($p:literal),* $(,)?) => {
        &[$(($p, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/", $p)) as &[u8])),*]
    };
}

/// Every file the harness reads from `data/` at run time (the fonts are compiled in where they
/// are drawn, `report/chart.rs`).
#[cfg(feature = "embedded-data")]
const FILES: &[File] = shipped![
    "README.md",
    "default-model/config.json",
    "default-model/generation_config.json",
    "default-model/model.safetensors",
    "default-model/special_tokens_map.json",
    "default-model/tokenizer.json",
    "default-model/tokenizer_config.json",
    "text/train.jsonl",
    "text/val.jsonl",
    "text/test.jsonl",
    "benchmarks/bigbench_mc_subset.jsonl",
    "benchmarks/kmmlu_criminal_law_test.json",
    "benchmarks/nsmc_sentiment_mc.jsonl",
];

#[cfg(not(feature = "embedded-data"))]
const FILES: &[(&str, &[u8])] = &[];

/// Whether this binary carries the shipped data.
pub fn embedded() -> bool {
    !FILES.is_empty()
}

/// The user's cache folder for the written-out data: `$XDG_CACHE_HOME`, `~/.cache`, else the
/// system's temporary folder.
fn cache_root() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("exaone-compress")
}

/// A hash of every shipped file's path and bytes (16 hex digits): the folder's name, so a
/// binary with other data never reads this one's.
fn content_key() -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (p, b) in FILES {
        h.write(p.as_bytes());
        h.write_usize(b.len());
        h.write(b);
    }
    format!("{:016x}", h.finish())
}

/// The folder holding the shipped data written out from this binary, written now if no earlier
/// run has (into a temporary sibling, renamed into place whole: a run stopped halfway or a
/// second process writing at the same time leaves no partial folder); in the user's cache, or
/// the system's temporary folder where the cache cannot be written. None when the binary
/// carries no data.
pub fn written_out() -> std::io::Result<Option<PathBuf>> {
    if !embedded() {
        return Ok(None);
    }
    let name = format!("data-{}", content_key());
    let fallback = std::env::temp_dir().join("exaone-compress");
    match write_into(&cache_root(), &name) {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if fallback != cache_root() => write_into(&fallback, &name).map(Some).map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// `root/name` holding the shipped files, written unless already there.
fn write_into(root: &std::path::Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = root.join(name);
    let complete = |d: &std::path::Path| d.join("default-model").join("config.json").is_file();
    if complete(&dir) {
        return Ok(dir);
    }
    std::fs::create_dir_all(root)?;
    let tmp = tempfile::Builder::new()
        .prefix(".data-writing-")
        .tempdir_in(root)?;
    for (p, bytes) in FILES {
        let to = tmp.path().join(p);
        std::fs::create_dir_all(to.parent().unwrap_or(tmp.path()))?;
        std::fs::write(&to, bytes)?;
    }
    let staged = tmp.keep();
    match std::fs::rename(&staged, &dir) {
        Ok(()) => Ok(dir),
        // another process put the same data in place first
        Err(_) if complete(&dir) => {
            let _ = std::fs::remove_dir_all(&staged);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(e)
        }
    }
}

/// Where [`written_out`] puts the data, for messages.
pub fn cache_dir_hint() -> String {
    cache_root().join("data-…").display().to_string()
}
