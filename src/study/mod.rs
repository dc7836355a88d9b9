//! What every experiment starts from: the shared command-line options, the base model and its
//! splits ([`setup`]), the suite that writes, sizes and evaluates a variant ([`suite`]), and the
//! variant as data ([`variant`]).

pub mod bench;
pub mod setup;
pub mod suite;

pub use setup::{Study, StudyArgs};
pub use suite::{add_scores, SaveTo, Suite, LEGACY_PROMPTS};
