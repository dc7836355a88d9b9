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
    emit_dependency_versions();
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernels();
    }
    for p in [".git/HEAD", ".git/index", ".git/refs/heads"] {
        println!("cargo:rerun-if-changed={p}");
    }
}

/// The runtime's CUDA kernels, one concern per file, each → its own PTX module twice: for
/// compute capability 8.0, which the driver compiles for the GPU at hand (Ampere, Ada — the L4 —
/// and Hopper alike), and for 9.0 (`<unit>.sm90.ptx`), loaded on Hopper and newer, where the
/// kernels' programmatic-launch waits (`kernels/common.cuh`) are real instructions. A unit that
/// needs newer instructions names its own base (gemm_fp8: the e4m3 mma of sm_89+, loaded only on
/// such a GPU); a Hopper-only unit is built for compute_90a alone, under both names
/// (gemm_q8_wgmma, gemm_w4_wgmma: the warpgroup MMA, loaded only on compute capability 9.0).
/// `src/runtime/launch/mod.rs` loads each as a module of its own.
fn compile_kernels() {
    const DIR: &str = "src/runtime/kernels";
    const UNITS: [&str; 7] = [
        "attention",
        "gemm_q8",
        "gemm_w4",
        "gemv",
        "norm_rope",
        "quant",
        "sampling",
    ];
    /// units built for a newer virtual architecture than compute_80
    const ARCH: [(&str, &str); 1] = [("gemm_fp8", "compute_89")];
    /// units of sm_90a's instructions only (wgmma): the same PTX under both names
    const HOPPER_ONLY: [&str; 2] = ["gemm_q8_wgmma", "gemm_w4_wgmma"];
    // every file of the folder, headers included, so an edit to common.cuh rebuilds them all
    println!("cargo:rerun-if-changed={DIR}");
    for e in std::fs::read_dir(DIR).unwrap_or_else(|e| panic!("reading {DIR}: {e}")) {
        let p = e.expect("kernel folder entry").path();
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let nvcc = std::env::var("CUDA_HOME")
        .map(|h| std::path::Path::new(&h).join("bin").join("nvcc"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| "nvcc".into());
    let units = UNITS.iter().map(|u| (*u, "compute_80")).chain(ARCH);
    let builds = units
        .flat_map(|(u, arch)| [(u, arch, ""), (u, "compute_90", ".sm90")])
        .chain(
            HOPPER_ONLY
                .iter()
                .flat_map(|u| [(*u, "compute_90a", ""), (*u, "compute_90a", ".sm90")]),
        );
    for (unit, arch, flavour) in builds {
        let src = format!("{DIR}/{unit}.cu");
        let out = out_dir.join(format!("{unit}{flavour}.ptx"));
        let status = std::process::Command::new(&nvcc)
            .args(["--ptx", &format!("-arch={arch}"), "-O3", "-std=c++17", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "running {} for {src}: {e} (the cuda feature needs the CUDA toolkit)",
                    nvcc.display()
                )
            });
        assert!(status.success(), "nvcc failed on {src}");
    }
}

/// The versions of the key dependencies as locked (Cargo.lock) and the compiler, for the
/// reports' Environment block: `EXAONE_COMPRESS_DEP_<NAME>` (e.g. `EXAONE_COMPRESS_DEP_CANDLE_CORE`;
/// several locked versions joined with `/`, none found `unknown`) and `EXAONE_COMPRESS_RUSTC`.
/// Read here, at build time: the binary never reads the source tree.
fn emit_dependency_versions() {
    const CRATES: [&str; 4] = ["candle-core", "polars", "safetensors", "tokenizers"];
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let lock_path = std::path::Path::new(&dir).join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    // [[package]] entries: `name = "…"` then `version = "…"`
    let mut locked: Vec<(String, String)> = vec![];
    let mut name: Option<String> = None;
    for line in lock.lines().map(str::trim) {
        if line == "[[package]]" {
            name = None;
        } else if let Some(v) = line.strip_prefix("name = ") {
            name = Some(v.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), &name) {
            locked.push((n.clone(), v.trim_matches('"').to_string()));
        }
    }
    for krate in CRATES {
        let versions: Vec<&str> = locked
            .iter()
            .filter(|(n, _)| n == krate)
            .map(|(_, v)| v.as_str())
            .collect();
        let v = if versions.is_empty() {
            "unknown".to_string()
        } else {
            versions.join("/")
        };
        let var = krate.to_uppercase().replace('-', "_");
        println!("cargo:rustc-env=EXAONE_COMPRESS_DEP_{var}={v}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=EXAONE_COMPRESS_RUSTC={version}");
}
