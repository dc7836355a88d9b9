//! Compression: quantization (one core, several methods), layer drop, distillation.

pub mod calibration;
pub mod distill;
pub mod prune;
pub mod quant;
