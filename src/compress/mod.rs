//! Compression: quantization (one core, several methods), layer drop, distillation.

pub mod prune;
pub mod quant;
