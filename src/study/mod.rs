//! What every experiment starts from: the shared command-line options, the base model and its
//! splits ([`setup`]), the suite that writes, sizes and evaluates a variant ([`suite`]), variants made by
//! recipes and what a study keeps of them ([`variants`]), and the verdict paired with the base
//! ([`verdict`]).

pub mod bench;
pub mod l4_speed;
pub mod serving;
pub mod setup;
pub mod suite;
pub mod variants;
pub mod verdict;

pub use setup::{check_report_out, model_label, Study, StudyArgs};
pub use suite::{add_scores, SaveTo, Suite, LEGACY_PROMPTS};
pub use variants::Keep;

/// A count flag of at least one, said in words (clap's ranged parser says "not in
/// 1..18446744073709551615").
pub fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(
    s: &str,
) -> std::result::Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// A whole number of at least `MIN` (a clap value parser), with a message that says so.
pub fn at_least<const MIN: usize>(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= MIN => Ok(n),
        Ok(_) => Err(format!("must be at least {MIN}")),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// Parses an experiment binary's flags as the CLI does: `--help` and `--version` print and exit
/// 0, any flag error prints clap's message and exits 1, like every other failure (clap itself
/// would exit 2).
pub fn parse_args<T: clap::Parser>() -> T {
    tune_process();
    T::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit()
        }
        let _ = e.print();
        std::process::exit(1)
    })
}

/// `--drop-layers n` on a model of `layers` decoder layers: at least one must stay.
pub fn check_drop_layers(n: u64, layers: usize) -> crate::error::Result<()> {
    if n as usize >= layers {
        return Err(crate::error::Error::Flag(format!(
            "--drop-layers {n}: the model has {layers} decoder layers; drop at most {}",
            layers.saturating_sub(1)
        )));
    }
    Ok(())
}

/// What every binary sets up before any work: [`tune_allocator`] and [`pin_candle_threads`].
pub fn tune_process() {
    tune_allocator();
    pin_candle_threads();
}

/// Makes candle's CPU matmul stop re-reading `/proc/cpuinfo`. Unless `RAYON_NUM_THREADS` is
/// set, candle 0.11 works out the threads of every matmul afresh from the physical core count,
/// which `num_cpus` parses out of `/proc/cpuinfo` each time: a file the kernel formats anew on
/// every read (48 µs on a 2-core machine, growing with the cores), ~170 reads per second in the
/// main study (6,698 in its first 40 s, `strace`). The value candle computes is stored in
/// `RAYON_NUM_THREADS` once, after rayon's global pool has been sized, so rayon keeps its own
/// default and candle gets the same count as before, without the read. This process spawns no
/// child that would inherit the variable (only `nvidia-smi` and `sysctl`).
pub fn pin_candle_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let _ = rayon::current_num_threads();
    let n = candle_core::utils::get_num_threads();
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
}

/// Keeps freed memory in the process (glibc): a study allocates and frees tensors of tens of
/// MiB thousands of times (logits, activations, gradients), which glibc would otherwise map and
/// unmap each time, paying a page fault per 4 KiB on every reuse — a quarter of a CPU study's
/// time went to the kernel before this (11 s of 44 s in a short distillation). Large blocks are
/// then served from the heap, which is not trimmed.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; it is called before this
    // process allocates from other threads, and a value glibc refuses leaves its default.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
