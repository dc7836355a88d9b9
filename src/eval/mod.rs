//! Evaluation: perplexity, divergence from the base, task accuracy, speed, the score proxy.

pub mod perplexity;

pub use perplexity::{perplexity, unigram_perplexity, Perplexity};
