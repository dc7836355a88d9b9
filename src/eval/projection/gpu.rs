//! GPUs as the projection sees them: datasheet peaks (dense, no structured sparsity) and the
//! fractions of them real kernels reach, measured on one GPU and carried to another.

use serde::Serialize;

use super::invalid;
use crate::error::Result;

/// Which tensor-core rate a GEMM runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Rate {
    Bf16,
    Int8,
    Fp8,
}

/// Assumed fraction of peak memory bandwidth a streaming kernel reaches on the L4: 0.8, what
/// device-to-device copies typically reach on GDDR6 cards. An assumption, not a measurement:
/// replace it with a measured one ([`Efficiencies::carried`]).
pub const L4_EFF_BW: f64 = 0.8;
/// Assumed fraction of dense tensor-core peak a GEMM reaches on the L4: 0.5. The datasheet's
/// peaks are at boost clock; at its 72 W cap the L4 throttles under sustained GEMMs
/// (target.md), so achieved rates sit well below peak. An assumption: replace it when measured.
pub const L4_EFF_TC: f64 = 0.5;
/// Fixed cost per serving step: 200 µs for a CUDA-graph replay and the sampler's launches,
/// vLLM's CPU-side scheduling assumed overlapped with the GPU; it matters at batch 1 only.
pub const STEP_OVERHEAD_S: f64 = 2e-4;

/// A GPU's physical figures (datasheet, dense — no structured sparsity) and the efficiencies a
/// real kernel reaches on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuSpec {
    pub name: String,
    /// peak memory bandwidth, bytes/s
    pub mem_bw: f64,
    /// dense bf16 tensor throughput, FLOP/s
    pub bf16_flops: f64,
    /// dense int8 tensor throughput, OP/s (None: no int8 tensor cores; int8 GEMMs run at bf16)
    pub int8_ops: Option<f64>,
    /// dense fp8 tensor throughput, FLOP/s (None: no fp8 tensor cores; FP8 GEMMs dequantize to
    /// bf16, as vLLM's weight-only fp8 fallback does)
    pub fp8_flops: Option<f64>,
    /// fraction of `mem_bw` a streaming kernel reaches. To carry a measurement from another
    /// GPU: measured ÷ that GPU's datasheet peak, e.g. copy bandwidth on the H200 ÷ 4.8 TB/s
    pub eff_bw: f64,
    /// fraction of the tensor rates a GEMM reaches; e.g. a bf16 GEMM measured on the H200 ÷
    /// its dense 989.5 TFLOPS (1,979 "with sparsity" on the datasheet)
    pub eff_tc: f64,
    /// fraction of the int8 rate an int8 GEMM reaches, where measured apart (None: `eff_tc`)
    pub eff_int8: Option<f64>,
    /// fixed time per serving step, seconds
    pub step_overhead_s: f64,
}

impl GpuSpec {
    /// NVIDIA L4 (Ada, sm_89), from NVIDIA's L4 Tensor Core GPU datasheet: 24 GB GDDR6 at
    /// 300 GB/s; BF16 242 TFLOPS, INT8 485 TOPS, FP8 485 TFLOPS *with sparsity*, so dense
    /// 121 TFLOPS bf16, 242.5 TOPS int8, 242.5 TFLOPS fp8. Efficiencies [`L4_EFF_BW`],
    /// [`L4_EFF_TC`], overhead [`STEP_OVERHEAD_S`].
    pub fn l4() -> Self {
        Self::peaks("NVIDIA L4", 300e9, 121e12, Some(242.5e12), Some(242.5e12))
    }

    /// NVIDIA H200 (Hopper, SXM), datasheet: 4.8 TB/s HBM3e; dense 989.5 TFLOPS bf16,
    /// 1,979 TOPS int8, 1,979 TFLOPS fp8 (the datasheet's 1,979 / 3,958 / 3,958 are sparse).
    pub fn h200() -> Self {
        Self::peaks(
            "NVIDIA H200",
            4.8e12,
            989.5e12,
            Some(1979e12),
            Some(1979e12),
        )
    }

    /// NVIDIA H100 SXM (80 GB HBM3), datasheet: 3.35 TB/s; dense rates as the H200's.
    pub fn h100_sxm() -> Self {
        Self::peaks(
            "NVIDIA H100 SXM",
            3.35e12,
            989.5e12,
            Some(1979e12),
            Some(1979e12),
        )
    }

    fn peaks(name: &str, bw: f64, bf16: f64, int8: Option<f64>, fp8: Option<f64>) -> Self {
        Self {
            name: name.into(),
            mem_bw: bw,
            bf16_flops: bf16,
            int8_ops: int8,
            fp8_flops: fp8,
            eff_bw: L4_EFF_BW,
            eff_tc: L4_EFF_TC,
            eff_int8: None,
            step_overhead_s: STEP_OVERHEAD_S,
        }
    }

    /// The datasheet of a GPU named as `nvidia-smi` names it ("NVIDIA H200", "NVIDIA L4",
    /// "NVIDIA H100 80GB HBM3"): None for any other (its peaks are not known here).
    pub fn datasheet(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase();
        let words: Vec<&str> = n.split(|c: char| !c.is_ascii_alphanumeric()).collect();
        let has = |w: &str| words.contains(&w);
        if has("h200") {
            Some(Self::h200())
        } else if has("h100") && (has("hbm3") || has("sxm") || has("sxm5")) {
            Some(Self::h100_sxm())
        } else if has("l4") {
            Some(Self::l4())
        } else {
            None
        }
    }

    /// The same GPU with kernels as efficient as `e` says.
    pub fn with_efficiencies(self, e: &Efficiencies) -> Self {
        Self {
            eff_bw: e.bandwidth,
            eff_tc: e.bf16,
            eff_int8: e.int8,
            ..self
        }
    }

    /// Every figure positive and finite, efficiencies in (0, 1], overhead ≥ 0.
    pub fn check(&self) -> Result<()> {
        let mut peaks = vec![self.mem_bw, self.bf16_flops];
        peaks.extend(self.int8_ops.iter().chain(&self.fp8_flops));
        let pos = peaks.iter().all(|x| x.is_finite() && *x > 0.0);
        let eff = |e: f64| e > 0.0 && e <= 1.0;
        let eff = eff(self.eff_bw) && eff(self.eff_tc) && self.eff_int8.is_none_or(eff);
        let o = self.step_overhead_s;
        if pos && eff && o.is_finite() && o >= 0.0 {
            return Ok(());
        }
        Err(invalid(format!(
            "GPU {self:?}: bandwidth and rates must be finite and > 0, efficiencies in (0, 1], the step overhead >= 0"
        )))
    }

    /// Achieved throughput of a GEMM asking for `r`: peak × `eff_tc` (× `eff_int8` for int8
    /// where given), the bf16 rate where the GPU lacks int8 or fp8 tensor cores.
    pub fn rate(&self, r: Rate) -> f64 {
        match (r, self.int8_ops, self.fp8_flops) {
            (Rate::Int8, Some(p), _) => p * self.eff_int8.unwrap_or(self.eff_tc),
            (Rate::Fp8, _, Some(p)) => p * self.eff_tc,
            _ => self.bf16_flops * self.eff_tc,
        }
    }

    /// Achieved bandwidth, bytes/s.
    pub fn bandwidth(&self) -> f64 {
        self.mem_bw * self.eff_bw
    }
}

/// Rates measured on a device: what [`Efficiencies::carried`] turns into fractions of peak.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceRates {
    /// the device's name as `nvidia-smi` gives it
    pub name: String,
    /// a large device-to-device copy, bytes moved (read + written) per second
    pub copy_bandwidth: f64,
    /// a dense bf16 GEMM, FLOP/s
    pub bf16_flops: f64,
    /// a dense int8 GEMM (int32 accumulate), OP/s
    pub int8_ops: Option<f64>,
}

/// The fractions of datasheet peak the projection's kernels reach, and where they came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Efficiencies {
    pub bandwidth: f64,
    /// bf16 GEMMs, and fp8 ones (not measured apart)
    pub bf16: f64,
    /// int8 GEMMs where measured apart
    pub int8: Option<f64>,
    /// e.g. "measured on NVIDIA H200 (…)" or "assumed (…)"
    pub source: String,
}

impl Efficiencies {
    /// [`L4_EFF_BW`] and [`L4_EFF_TC`]: no device measured.
    pub fn assumed(why: &str) -> Self {
        Self {
            bandwidth: L4_EFF_BW,
            bf16: L4_EFF_TC,
            int8: None,
            source: format!("assumed ({why}): {L4_EFF_BW} of peak bandwidth, {L4_EFF_TC} of peak tensor throughput"),
        }
    }

    /// The rule that carries a measurement to another GPU: each measured rate ÷ the measuring
    /// device's datasheet peak for it is the fraction the projected GPU reaches of its own peak
    /// (capped at 1). A device without a known datasheet, or a rate that is not finite and
    /// positive, falls back to [`assumed`](Self::assumed), saying why.
    pub fn carried(m: &DeviceRates) -> Self {
        let Some(d) = GpuSpec::datasheet(&m.name) else {
            return Self::assumed(&format!(
                "no datasheet here for the measuring device {:?}",
                m.name
            ));
        };
        let ok = |x: f64| x.is_finite() && x > 0.0;
        if !ok(m.copy_bandwidth) || !ok(m.bf16_flops) {
            return Self::assumed(&format!(
                "the rates measured on {} are not positive",
                d.name
            ));
        }
        let frac = |x: f64, peak: f64| (x / peak).min(1.0);
        let int8 = m
            .int8_ops
            .filter(|x| ok(*x))
            .zip(d.int8_ops)
            .map(|(x, p)| frac(x, p));
        let (bw, bf) = (
            frac(m.copy_bandwidth, d.mem_bw),
            frac(m.bf16_flops, d.bf16_flops),
        );
        let i8txt = match (m.int8_ops, d.int8_ops, int8) {
            (Some(x), Some(p), Some(f)) => format!(
                ", int8 GEMM {:.0} of {:.0} TOPS = {f:.3}",
                x / 1e12,
                p / 1e12
            ),
            _ => ", int8 GEMM not measured (bf16's fraction)".into(),
        };
        Self {
            bandwidth: bw,
            bf16: bf,
            int8,
            source: format!(
                "measured on {}: copy {:.0} of {:.0} GB/s = {bw:.3}, bf16 GEMM {:.0} of {:.1} TFLOPS = {bf:.3}{i8txt}; fp8 at bf16's fraction",
                d.name,
                m.copy_bandwidth / 1e9,
                d.mem_bw / 1e9,
                m.bf16_flops / 1e12,
                d.bf16_flops / 1e12
            ),
        }
    }
}
