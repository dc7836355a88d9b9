//! The runtime's numerical checks (`runtime::check`) run before any timing: every kernel
//! against the f32 reference, beside the plain bf16 path's own error, so that a fast figure is
//! never reported for a wrong kernel.

use std::path::Path;

use candle_core::Device;
use serde_json::json;

use crate::record::{Results, Variant};
use crate::runtime::Check;
use crate::Result;

/// On CUDA: fused attention and log-softmax; the decode engine (bf16 and, given, W4A16) at batch 1 and 2; the
/// quantized Linears of the given W4A16, W8A8 and (on GPUs with fp8 tensor cores) FP8
/// checkpoints. Prints each check and whether
/// graph replay picks the same tokens as eager launches (recorded as `graph_equals_eager`).
/// Empty off CUDA.
pub fn run(
    r: &mut Results,
    device: &Device,
    dir: &Path,
    w4a16: Option<&Path>,
    w8a8: Option<&Path>,
    fp8: Option<&Path>,
) -> Result<Vec<Check>> {
    #[allow(unused_mut)] // filled on CUDA builds only
    let mut checks: Vec<Check> = vec![];
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        use crate::runtime::check;
        checks.extend(check::attention(device)?);
        checks.extend(check::log_softmax(device)?);
        checks.push(check::forward(dir, device)?);
        let mut graph_same = true;
        for b in [1, 2] {
            let (c, same) = check::engine(dir, device, "bf16", b)?;
            checks.push(c);
            graph_same &= same;
            if let Some(w4) = w4a16 {
                let (c, same) = check::engine(w4, device, "W4A16", b)?;
                checks.push(c);
                graph_same &= same;
            }
        }
        if let Some(w4) = w4a16 {
            checks.push(check::linear_kernels(w4, device, "W4A16")?);
        }
        if let Some(w8) = w8a8 {
            checks.push(check::linear_kernels(w8, device, "W8A8")?);
            checks.push(check::quant_handoff(w8, device, "W8A8")?);
        }
        if let Some(f8) = fp8 {
            if crate::runtime::launch::fp8_supported(&device.as_cuda_device()?.cuda_stream())? {
                checks.push(check::linear_kernels(f8, device, "FP8")?);
                checks.push(check::quant_handoff(f8, device, "FP8")?);
            }
        }
        for c in &checks {
            eprintln!(
                "check {}: kernel {:.2e}, bf16 reference {:.2e}, top-1 {:.3} → {}",
                c.what,
                c.kernel_err,
                c.bf16_err,
                c.top1,
                if c.passes() { "ok" } else { "FAIL" }
            );
        }
        eprintln!("graph replay picks the same tokens as eager launches: {graph_same}");
        r.add(
            &Variant::new("checks", "runtime::check", json!({})),
            "graph_equals_eager",
            graph_same as u8 as f64,
            None,
            "bool",
        );
    }
    let _ = (r, device, dir, w4a16, w8a8, fp8);
    Ok(checks)
}

/// Each check's kernel error, bf16 reference error and top-1 agreement as rows of `checks`.
pub fn record(r: &mut Results, checks: &[Check]) {
    for c in checks {
        let v = Variant::new("checks", "runtime::check", json!({"what": c.what}));
        for (metric, x) in [
            ("kernel_rel_err", c.kernel_err),
            ("bf16_rel_err", c.bf16_err),
            ("top1", c.top1),
        ] {
            let metric = format!("{metric}: {}", c.what);
            r.add(&v, &metric, x, None, "");
        }
    }
}

/// The checks that fail their tolerance, by name.
pub fn failed(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| !c.passes())
        .map(|c| c.what.clone())
        .collect()
}
