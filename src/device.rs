//! Choosing the device and compute dtype from a command-line word.

use candle_core::{DType, Device};

/// `cpu`, `cuda` or `cuda:N`. A CUDA device keeps freed memory pooled for reuse
/// (`runtime::keep_freed_memory`).
pub fn parse_device(s: &str) -> anyhow::Result<Device> {
    let d = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)?,
        s if s.starts_with("cuda:") => Device::new_cuda(s[5..].parse()?)?,
        other => anyhow::bail!("unknown device {other:?} (expected cpu, cuda or cuda:N)"),
    };
    crate::runtime::keep_freed_memory(&d)?;
    Ok(d)
}

/// `f32`, `bf16`, `f16`; `auto` is f32 on the CPU (the exact path) and bf16 on a GPU.
pub fn parse_dtype(s: &str, device: &Device) -> anyhow::Result<DType> {
    Ok(match s {
        "auto" => {
            if device.is_cpu() {
                DType::F32
            } else {
                DType::BF16
            }
        }
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" => DType::F16,
        other => anyhow::bail!("unknown dtype {other:?} (expected auto, f32, bf16 or f16)"),
    })
}
