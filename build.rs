//! Records the commit the binaries were built from, so a result written on another machine
//! (where the working tree may have no git history) still names the code that produced it.
fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let c = match commit {
        Some(c) if dirty => format!("{c}+changes"),
        Some(c) => c,
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=EXAONE_COMPRESS_BUILD_COMMIT={c}");
    for p in [".git/HEAD", ".git/index", ".git/refs/heads"] {
        println!("cargo:rerun-if-changed={p}");
    }
}
