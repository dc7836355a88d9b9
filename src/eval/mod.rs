//! Evaluation: perplexity, divergence from the base, task accuracy, speed, the score proxy.

pub mod divergence;
pub mod perplexity;

pub use divergence::{divergence, Divergence};
pub use perplexity::{perplexity, unigram_perplexity, Perplexity};
