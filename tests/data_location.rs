//! A built binary works wherever it is copied: it finds the shipped data beside itself, or where
//! `EXAONE_COMPRESS_DATA` says, before the source tree it was built from.

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

/// `info` on the default model: the first line names the directory it loaded.
fn info_path(bin: &Path, env: Option<&Path>) -> String {
    let mut c = Command::new(bin);
    c.arg("info").env_remove("EXAONE_COMPRESS_DEFAULT_MODEL");
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
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/default-model");
    // nothing beside it: the source tree it was built from
    assert_eq!(Path::new(&info_path(&bin, None)), shipped);
    // data beside the binary wins over the source tree
    copy_dir(&shipped, &bin_dir.join("data/default-model"));
    assert_eq!(
        Path::new(&info_path(&bin, None)),
        bin_dir.join("data/default-model")
    );
    // the override wins over both
    let other = tmp.path().join("elsewhere");
    copy_dir(&shipped, &other.join("default-model"));
    assert_eq!(
        Path::new(&info_path(&bin, Some(&other))),
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
