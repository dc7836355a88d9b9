//! What every experiment starts from: the shared command-line options, the base model and its
//! splits ([`setup`]), the suite that writes, sizes and evaluates a variant ([`suite`]), and the
//! verdict paired with the base ([`verdict`]).

pub mod bench;
pub mod serving;
pub mod setup;
pub mod suite;
pub mod verdict;

pub use setup::{Study, StudyArgs};
pub use suite::{add_scores, SaveTo, Suite, LEGACY_PROMPTS};

/// Parses an experiment binary's flags as the CLI does: `--help` and `--version` print and exit
/// 0, any flag error prints clap's message and exits 1, like every other failure (clap itself
/// would exit 2).
pub fn parse_args<T: clap::Parser>() -> T {
    T::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit()
        }
        let _ = e.print();
        std::process::exit(1)
    })
}
