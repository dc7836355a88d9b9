//! Choosing the device and compute dtype from a command-line word.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// `--device` checked when the command line is read (a clap value parser): `cpu`, `cuda` or
/// `cuda:N`. Whether this binary and machine have the GPU is [`parse_device`]'s to say.
pub fn device_word(s: &str) -> std::result::Result<String, String> {
    let ok = s == "cpu"
        || s == "cuda"
        || s.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    ok.then(|| s.to_string())
        .ok_or_else(|| "unknown device (allowed: cpu, cuda, cuda:N with N a number)".into())
}

/// `--dtype` checked when the command line is read: the words [`parse_dtype`] takes.
pub fn dtype_word(s: &str) -> std::result::Result<String, String> {
    const WORDS: [&str; 7] = [
        "auto", "f32", "float32", "bf16", "bfloat16", "f16", "float16",
    ];
    WORDS
        .contains(&s)
        .then(|| s.to_string())
        .ok_or_else(|| "unknown dtype (allowed: auto, f32, bf16, f16)".into())
}

/// `cpu`, `cuda` or `cuda:N`. (`runtime::open_device` also sets up the CUDA memory pool.)
pub fn parse_device(s: &str) -> Result<Device> {
    // a binary built without CUDA says how to get one, not candle's "not been built with cuda"
    let cuda = |n: usize| -> Result<Device> {
        if !cfg!(feature = "cuda") {
            return Err(Error::Flag(format!(
                "--device {s}: this binary was built for the CPU only; build one with \
                 `cargo build --release --features cuda` (README: the CUDA build) or pass --device cpu"
            )));
        }
        Ok(Device::new_cuda(n)?)
    };
    Ok(match s {
        "cpu" => Device::Cpu,
        "cuda" => cuda(0)?,
        s if s.starts_with("cuda:") => {
            let n = s[5..].parse().map_err(|_| {
                Error::Flag(format!("--device {s:?}: N in cuda:N must be a number"))
            })?;
            cuda(n)?
        }
        other => {
            return Err(Error::Flag(format!(
                "unknown device {other:?} (expected cpu, cuda or cuda:N)"
            )))
        }
    })
}

/// `f32`, `bf16`, `f16`; `auto` is f32 on the CPU (the exact path) and bf16 on a GPU.
pub fn parse_dtype(s: &str, device: &Device) -> Result<DType> {
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
        other => {
            return Err(Error::Flag(format!(
                "unknown dtype {other:?} (expected auto, f32, bf16 or f16)"
            )))
        }
    })
}

/// The memory the system has available (Linux's MemAvailable), where it says.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
