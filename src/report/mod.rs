//! Reports: markdown and PNG charts drawn from results.

pub mod chart;
pub mod layout;
pub mod runtime;
pub mod serve;
pub mod study;
pub mod train;

use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::record::{Environment, Results};

/// How [`by_role`] writes the temporary folder: `$TMPDIR` where it is set, else `/tmp`, so that a
/// pasted line finds the path on a machine with either.
pub const TMP_ROLE: &str = "${TMPDIR:-/tmp}";

/// `text`, a command line (shell words, as [`shell_words`] writes them), with this machine's
/// paths named by role, so a committed report names none: a path under the shipped data's folder
/// becomes `data/…` (the repository's copy of it), one under the working directory relative to it, one under `$OUT` (the GPU machine's output folder) or
/// `$TMPDIR`/`/tmp` as [`TMP_ROLE`] (which expands to `/tmp` where TMPDIR is unset), and a
/// path under the home folder through `~`. Relative paths and other words stay; a word that
/// needs quoting is quoted (outside the role, so that it still expands), so the line can be
/// pasted into a shell.
pub fn by_role(text: &str) -> String {
    let words =
        shlex::split(text).unwrap_or_else(|| text.split_whitespace().map(str::to_string).collect());
    words
        .iter()
        .map(|w| match role_of(w) {
            Some((head, lead, rest)) => format!("{}{lead}{}", shell_word(head), shell_word(rest)),
            None => shell_word(w).into_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One path (a model's, a checkpoint's) named by role as [`by_role`] does, not quoted.
pub fn path_by_role(path: &str) -> String {
    match role_of(path) {
        Some((head, lead, rest)) => format!("{head}{lead}{rest}"),
        None => path.to_string(),
    }
}

/// Command-line words joined into one line a POSIX shell splits back into the same words
/// (each quoted where it needs to be).
pub fn shell_words<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> String {
    words
        .into_iter()
        .map(|w| shell_word(w.as_ref()).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `w` as one shell word: as it is when every character is plain (letters, digits and
/// `+-./:@_,=%^`), else single-quoted — except a leading role (`$OUT/`, [`TMP_ROLE`]`/`, `~/`,
/// as [`by_role`] writes them), which stays outside the quotes so that it expands.
fn shell_word(w: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| c.is_alphanumeric() || "+-./:@_,=%^".contains(c);
    if w.is_empty() {
        return "".into();
    }
    // a `--flag=` before the role stays as it is too
    let (head, body) = match w.find('=') {
        Some(i) if w.starts_with('-') && w[..i].chars().all(plain) => w.split_at(i + 1),
        _ => ("", w),
    };
    for role in ["$OUT", TMP_ROLE, "~"] {
        match body.strip_prefix(role) {
            Some("") => return w.into(),
            Some(r) if r.len() > 1 && r.starts_with('/') => {
                return format!("{head}{role}/{}", shell_word(&r[1..])).into()
            }
            _ => {}
        }
    }
    match w.chars().all(plain) {
        true => w.into(),
        false => format!("'{}'", w.replace('\'', r"'\''")).into(),
    }
}

/// A word's path split by role: (what precedes the path, e.g. `--out=`; the role as written
/// before the rest — `${TMPDIR:-/tmp}/`, nothing for the working directory, `.` for that
/// directory itself; the rest below the role's root). None when it lies under no root.
fn role_of(w: &str) -> Option<(&str, String, &str)> {
    let cwd = std::env::current_dir()
        .ok()
        .map(|p| p.display().to_string());
    let var = |k: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| v.starts_with('/') && v.len() > 1)
    };
    // the shipped data wherever this binary reads it (written out to the user's cache, or
    // EXAONE_COMPRESS_DATA): named as the repository's `data/`, which holds the same files
    let data = crate::data::data_dir().display().to_string();
    let roots: Vec<(String, String)> = [
        Some((data, "data".to_string())),
        var("OUT").map(|v| (v, "$OUT".to_string())),
        cwd.map(|v| (v, ".".to_string())),
        var("TMPDIR").map(|v| (v, TMP_ROLE.to_string())),
        Some(("/tmp".to_string(), TMP_ROLE.to_string())),
        var("HOME").map(|v| (v, "~".to_string())),
    ]
    .into_iter()
    .flatten()
    .collect();
    // a word may carry the path after `--flag=`
    let (head, path) = match w.find('/') {
        Some(i) if w[..i].ends_with('=') || i == 0 => (&w[..i], &w[i..]),
        _ => return None,
    };
    for (root, role) in roots {
        if let Some(rest) = path.strip_prefix(root.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                let rest = rest.trim_start_matches('/');
                let lead = match (role.as_str(), rest) {
                    (".", "") => ".".to_string(),
                    (".", _) => String::new(),
                    (role, "") => role.to_string(),
                    (role, _) => format!("{role}/"),
                };
                return Some((head, lead, rest));
            }
        }
    }
    None
}

/// Draws a report's charts as PNG files in `out` (the error names the file that failed).
pub fn draw_charts(out: &std::path::Path, charts: Vec<(&str, chart::Chart)>) -> Result<()> {
    for (file, chart) in charts {
        let path = out.join(file);
        chart.png(&path).map_err(|e| Error::Chart {
            path: path.clone(),
            msg: e.to_string(),
        })?;
    }
    Ok(())
}

/// The caveat charts and headers carry when the weights are random (a shape-only checkpoint).
pub const RANDOM_WEIGHTS_CAVEAT: &str = "Random weights: accuracy meaningless; speed only";

/// Whether `r` was measured on a random-weight (shape-only) checkpoint, as far as the results
/// say: the model is named as one (the GPU scripts' `random-1.2b` checkpoints, `/tmp/exaone12-random`).
/// A study also knows it from its `--random-weights` flag.
pub fn random_weights(r: &Results) -> bool {
    let m = r.model.to_lowercase();
    m.contains("random")
}

/// The "Environment" section every report carries: the code (this crate's version and commit,
/// key dependencies, compiler), the machine (device, CPU, GPU, threads, OS) and the seeds
/// (`seeds` as given — recorded ones, or what the command line says).
pub fn environment_md(env: &Environment, commit: &str, device: &str, seeds: &str) -> String {
    let mut md = String::from("## Environment\n\n");
    if env.is_empty() {
        let _ = writeln!(
            md,
            "Not recorded: these results were written before the environment was. Commit {commit}, device {device}.\n"
        );
        return md;
    }
    md += "| | |\n|---|---|\n";
    let _ = writeln!(
        md,
        "| code | exaone-compress {}, commit {commit} |",
        env.version
    );
    let crates: Vec<String> = env.crates.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(md, "| crates | {} |", crates.join(", "));
    let _ = writeln!(md, "| compiler | {} |", env.rustc);
    let _ = writeln!(md, "| device | {device} |");
    let _ = writeln!(
        md,
        "| CPU | {} ({} logical CPUs available, {} rayon threads) |",
        env.cpu, env.cores, env.threads
    );
    if !env.gpu.is_empty() {
        let _ = writeln!(md, "| GPU | {} |", env.gpu);
    }
    let _ = writeln!(md, "| OS | {} |", env.os);
    let _ = writeln!(md, "| seeds | {seeds} |\n");
    md
}

/// The seeds to name: those recorded with the results, else the `--seed` of `command`, else
/// `fallback`.
pub fn seeds_of(env: &Environment, command: &str, fallback: &str) -> String {
    if !env.seeds.is_empty() {
        let s: Vec<String> = env.seeds.iter().map(|(k, v)| format!("{k} {v}")).collect();
        return s.join(", ");
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix("--seed=") {
            return format!("`--seed {v}`");
        }
        if *w == "--seed" {
            if let Some(v) = words.get(i + 1) {
                return format!("`--seed {}`", v.trim_end_matches([')', '`']));
            }
        }
    }
    fallback.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_come_from_the_record_then_the_command() {
        let mut env = Environment::default();
        assert_eq!(
            seeds_of(&env, "prune --seed 3 --overwrite", "-"),
            "`--seed 3`"
        );
        assert_eq!(seeds_of(&env, "prune --seed=4", "-"), "`--seed 4`");
        assert_eq!(seeds_of(&env, "prune", "default"), "default");
        env.seeds.insert("--seed".into(), 5);
        assert_eq!(seeds_of(&env, "prune --seed 3", "-"), "--seed 5");
    }

    #[test]
    fn results_without_an_environment_say_so() {
        let md = environment_md(&Environment::default(), "abc", "cpu (F32)", "-");
        assert!(md.starts_with("## Environment") && md.contains("Not recorded"));
        let env = Environment::capture("cpu (F32)");
        let md = environment_md(&env, "abc", "cpu (F32)", "-");
        assert!(md.contains("| code | exaone-compress ") && md.contains("candle-core 0.11"));
        assert!(!md.contains("| GPU |"));
    }
}

#[cfg(test)]
mod by_role_tests {
    use super::{by_role, path_by_role, shell_words};

    #[test]
    fn machine_paths_are_named_by_role() {
        let cwd = std::env::current_dir().unwrap().display().to_string();
        assert_eq!(
            by_role(&format!(
                "{cwd}/target/release/x --model {cwd}/data/default-model"
            )),
            "target/release/x --model data/default-model"
        );
        assert_eq!(
            by_role("x --model /tmp/exaone12-random --out=/tmp/o reports/serve"),
            "x --model ${TMPDIR:-/tmp}/exaone12-random --out=${TMPDIR:-/tmp}/o reports/serve"
        );
        // not under a root: left as it is
        assert_eq!(by_role("/tmpfoo a/b --flag"), "/tmpfoo a/b --flag");
        assert_eq!(by_role(&cwd), ".");
        // a path with a space stays one word when pasted; the role outside the quotes
        assert_eq!(
            by_role("x --out '/tmp/rep ü/a' 'it''s'"),
            "x --out ${TMPDIR:-/tmp}/'rep ü/a' its"
        );
        assert_eq!(
            by_role(&shell_words(["apply", "--recipe", "/tmp/a b/recipe.json"])),
            "apply --recipe ${TMPDIR:-/tmp}/'a b/recipe.json'"
        );
        assert_eq!(path_by_role("/tmp/a b"), "${TMPDIR:-/tmp}/a b");
        // named by role twice (the rebuild row is): the same line
        for line in ["x --out '/tmp/rep ü/a'", "x --out=/tmp/o --model=/tmp"] {
            let once = by_role(line);
            assert_eq!(by_role(&once), once);
        }
        assert_eq!(
            by_role("x --out=/tmp/o --model=/tmp"),
            "x --out=${TMPDIR:-/tmp}/o --model=${TMPDIR:-/tmp}"
        );
        assert_eq!(
            shlex::split(&shell_words(["it's", "x"])).unwrap(),
            ["it's", "x"]
        );
    }
}
