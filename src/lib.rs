//! exaone-compress: compress EXAONE 4 checkpoints and judge the result.
//!
//! The pipeline, one module per stage: [`model`] (EXAONE 4 on candle) → [`checkpoint`] (HF
//! directories in and out) → compression → evaluation → results and reports; [`runtime`] is
//! the CUDA serving path that evaluation times compressed models on.

pub mod checkpoint;
pub mod compress;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod fs;
pub mod model;
pub mod record;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod study;
pub mod train;

pub use checkpoint::Checkpoint;
pub use data::{default_model, default_model_dir};
pub use error::{Error, Result};
pub use model::{Exaone4, Exaone4Config};
