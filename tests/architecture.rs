//! The crate's layering, checked on its own source (docs/architecture.md says why): every
//! `crate::<module>` a file names must be in its own layer or one below it, no source file is
//! over 700 lines, and every experiment binary is a composition under 150 lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import its own layer and those before it.
const LAYERS: &[&[&str]] = &[
    &["error", "fs", "device", "record"],
    &["model"],
    &["checkpoint"],
    &["runtime"],
    &["data"],
    &["serve"],
    &["train"],
    &["compress"],
    &["report"],
    &["eval"],
    &["study"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn files(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, ext, out);
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| ext.contains(&x))
        {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (None: the crate root or a binary).
fn module_of(rel: &Path) -> Option<String> {
    let mut c = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string());
    let first = c.next()?;
    if c.next().is_none() {
        let stem = first.strip_suffix(".rs")?;
        return (stem != "lib").then(|| stem.to_string());
    }
    (first != "bin").then_some(first)
}

/// Every top-level module `text` refers to through `crate::`, with the line it is on. Handles
/// `crate::a::b`, `crate::{a, b::c}` and `use crate::a` alike; comments are skipped.
fn crate_refs(text: &str) -> Vec<(String, usize)> {
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + 7..];
            if after.starts_with('{') {
                let inner = &after[1..after.find('}').unwrap_or(after.len())];
                for part in inner.split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push((name, n + 1));
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push((name, n + 1));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn imports_point_down_the_layers() {
    let src = root().join("src");
    let mut all = vec![];
    files(&src, &["rs"], &mut all);
    let mut bad = vec![];
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for f in &all {
        let rel = f.strip_prefix(&src).unwrap();
        let Some(own) = module_of(rel) else { continue };
        let own_rank =
            rank(&own).unwrap_or_else(|| panic!("{}: module `{own}` has no layer", rel.display()));
        *seen.entry(own.clone()).or_default() += 1;
        for (m, line) in crate_refs(&std::fs::read_to_string(f).unwrap()) {
            // re-exports at the crate root (`crate::Error`, `crate::Result`) are the error layer
            let m = match m.as_str() {
                "Error" | "Result" => "error".to_string(),
                "default_model_dir" => "data".to_string(),
                "Exaone4" | "Exaone4Config" => "model".to_string(),
                "Checkpoint" => "checkpoint".to_string(),
                _ => m,
            };
            match rank(&m) {
                Some(r) if r <= own_rank => {}
                Some(_) => bad.push(format!("{}:{line}: {own} imports {m}", rel.display())),
                None => bad.push(format!(
                    "{}:{line}: unknown module crate::{m}",
                    rel.display()
                )),
            }
        }
    }
    assert!(seen.len() >= 8, "too few modules found: {seen:?}");
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    // the checker itself must be able to fail
    let refs = crate_refs("use crate::{eval::divergence, model::Exaone4};\nlet x = crate::study::Study::load();\n// crate::report in a comment");
    let names: Vec<&str> = refs.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["eval", "model", "study"]);
    assert!(rank("study") > rank("model"));
}

#[test]
fn no_source_file_is_over_700_lines() {
    let mut all = vec![];
    for d in ["src", "experiments", "tests"] {
        files(&root().join(d), &["rs", "cu", "cuh"], &mut all);
    }
    let long: Vec<String> = all
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > 700).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over 700 lines: {long:?}");
}

#[test]
fn experiment_binaries_are_short_compositions() {
    let mut all = vec![];
    files(&root().join("experiments"), &["rs"], &mut all);
    assert!(!all.is_empty());
    let long: Vec<String> = all
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n >= 150).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "experiment binaries of 150 lines or more: {long:?}"
    );
}
