//! Evaluation: perplexity, divergence from the base, task accuracy, speed, the score proxy.

pub mod divergence;
pub mod perplexity;
pub mod speed;
pub mod tasks;

pub use divergence::{divergence, Divergence};
pub use perplexity::{perplexity, unigram_perplexity, Perplexity};
pub use speed::{
    measure as measure_speed, measure_checkpoint as measure_checkpoint_speed, Speed, Timing,
};
pub use tasks::{multiple_choice, McItem, McResult};
