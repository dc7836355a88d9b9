//! Compression: quantization (one core, several methods), layer drop, distillation, and the
//! recipes that record (and rebuild) what a chain of them made.

pub mod calibration;
pub mod distill;
pub mod prune;
pub mod quant;
pub mod recipe;
