//! A built binary works wherever it is copied: it carries the shipped data and writes it out to
//! the user's cache; data beside it, or where `EXAONE_COMPRESS_DATA` says, comes first; the source
//! tree it was built from is never read.

use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// `info` on the default model with `cache` as the user's cache: the first line names the
/// directory it loaded.
fn info_path(bin: &Path, env: Option<&Path>, cache: &Path) -> String {
    let mut c = Command::new(bin);
    c.arg("info")
        .env_remove("EXAONE_COMPRESS_DEFAULT_MODEL")
        .env("XDG_CACHE_HOME", cache);
    match env {
        Some(d) => c.env("EXAONE_COMPRESS_DATA", d),
        None => c.env_remove("EXAONE_COMPRESS_DATA"),
    };
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    out.lines()
        .next()
        .unwrap()
        .trim_start_matches("path: ")
        .to_string()
}

#[test]
fn a_copied_binary_finds_its_data_beside_it_or_through_the_override() {
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let bin = bin_dir.join("exaone-compress");
    std::fs::copy(env!("CARGO_BIN_EXE_exaone-compress"), &bin).unwrap();
    let cache = tmp.path().join("cache");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/default-model");
    // nothing beside it: the data it carries, written out to the cache, byte for byte the
    // repository's, and written once
    let written = info_path(&bin, None, &cache);
    let written = Path::new(&written);
    assert!(
        written.starts_with(cache.join("exaone-compress")),
        "{}",
        written.display()
    );
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(written.join(f)).unwrap(),
            std::fs::read(shipped.join(f)).unwrap(),
            "{f}"
        );
    }
    let text = written.parent().unwrap().join("text/train.jsonl");
    assert_eq!(
        std::fs::read(&text).unwrap(),
        std::fs::read(shipped.join("../text/train.jsonl")).unwrap()
    );
    let stamp = std::fs::metadata(written.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(Path::new(&info_path(&bin, None, &cache)), written);
    let again = std::fs::metadata(written.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(stamp, again, "written out again");
    // nothing half-written is left beside it
    let left: Vec<_> = std::fs::read_dir(cache.join("exaone-compress"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // data beside the binary wins over the data it carries
    copy_dir(&shipped, &bin_dir.join("data/default-model"));
    assert_eq!(
        Path::new(&info_path(&bin, None, &cache)),
        bin_dir.join("data/default-model")
    );
    // the override wins over both
    let other = tmp.path().join("elsewhere");
    copy_dir(&shipped, &other.join("default-model"));
    assert_eq!(
        Path::new(&info_path(&bin, Some(&other), &cache)),
        other.join("default-model")
    );
}

#[test]
fn a_binary_without_its_data_says_where_it_looked_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let nowhere = tmp.path().join("nowhere");
    let o = Command::new(env!("CARGO_BIN_EXE_exaone-compress"))
        .arg("info")
        .env_remove("EXAONE_COMPRESS_DEFAULT_MODEL")
        .env("EXAONE_COMPRESS_DATA", &nowhere)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "default model was not found",
        "EXAONE_COMPRESS_DATA=",
        "nowhere",
        "--model",
    ] {
        assert!(err.contains(want), "no {want:?} in: {err}");
    }
}
