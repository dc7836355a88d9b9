//! Hugging Face model directories: reading tensors (single file or sharded, memory-mapped),
//! writing them back atomically, and the compressed-tensors format.

pub mod compressed_tensors;
mod finite;
mod load;
pub mod package;
pub mod qlinear;
mod reader;
pub mod scheme;
mod stray;
mod writer;

pub use load::load_model;
pub use reader::{Checkpoint, TensorInfo};
pub use writer::{write_model_dir, RawTensor, WriteOptions, SIDE_FILES};

use std::path::Path;

use crate::error::Result;

/// Saves a model's weights (in `dtype`, or as they are) and config as an HF model directory.
pub fn save_model(
    model: &crate::model::Exaone4,
    out: &Path,
    dtype: Option<candle_core::DType>,
    opts: &WriteOptions,
) -> Result<()> {
    let mut tensors = std::collections::BTreeMap::new();
    for (name, t) in model.named_tensors() {
        let t = match dtype {
            Some(d) => t.to_dtype(d)?,
            None => t.clone(),
        };
        tensors.insert(name, RawTensor::from_tensor(&t)?);
    }
    let mut cfg = model.config.clone();
    if let Some(d) = dtype {
        let name = match d {
            candle_core::DType::BF16 => "bfloat16",
            candle_core::DType::F16 => "float16",
            _ => "float32",
        };
        let key = if cfg.raw.contains_key("torch_dtype") && !cfg.raw.contains_key("dtype") {
            "torch_dtype"
        } else {
            "dtype"
        };
        cfg.raw.insert(key.into(), name.into());
        cfg.dtype = Some(name.into());
    }
    write_model_dir(out, &cfg, None, &tensors, opts)
}
