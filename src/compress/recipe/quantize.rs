//! The quantize step: the scheme and method with every setting, the Linears left dense, and
//! running it on a model directory.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::steps::{required, write_opts, StepReport};
use super::{at_least, bad, within, Calibration, Ctx};
use crate::compress::quant::apply::{quantize_awq, quantize_gptq, quantize_rtn, save_quantized};
use crate::compress::quant::{awq::AwqConfig, gptq::GptqConfig, ActOrder, Scheme};
use crate::error::Result;
use crate::model::exaone4::LINEAR_NAMES;

/// The quantization scheme, as `--scheme` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeName {
    /// int4 weights in groups, symmetric
    W4a16,
    /// int4 weights in groups, with zero points
    W4a16Asym,
    /// int8 weights per channel, int8 activations per token at run time
    W8a8,
    /// fp8 (e4m3) weights per channel, fp8 activations per token at run time
    Fp8,
}

impl SchemeName {
    /// Weights quantized in groups of input columns (a group size; act-order `group`).
    pub fn grouped(self) -> bool {
        matches!(self, Self::W4a16 | Self::W4a16Asym)
    }
    pub fn word(self) -> &'static str {
        match self {
            Self::W4a16 => "w4a16",
            Self::W4a16Asym => "w4a16-asym",
            Self::W8a8 => "w8a8",
            Self::Fp8 => "fp8",
        }
    }
}

/// GPTQ's act-order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActOrderName {
    None,
    /// columns by decreasing Hessian diagonal, groups in the original order (no g_idx)
    Static,
    /// groups formed in the permuted order (g_idx saved)
    Group,
}

/// The method and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum Quantizer {
    Rtn {},
    Gptq {
        /// fraction of mean(diag H) added to the diagonal
        damp: f64,
        /// columns per lazy-update block
        block: usize,
        /// times the damping is multiplied by 10 when the Cholesky factorisation fails
        max_damp_retries: usize,
        actorder: ActOrderName,
        calibration: Calibration,
    },
    Awq {
        /// scale ratios tried per mapping
        grid: usize,
        /// smooth v→o too (GQA-aware); false: up→down only, as llm-compressor does
        v_to_o: bool,
        /// weight-clipping search steps (0: plain RTN after scaling)
        clip_steps: usize,
        /// input rows the clipping search uses
        clip_rows: usize,
        calibration: Calibration,
    },
}

impl Quantizer {
    pub fn gptq(cfg: &GptqConfig, actorder: ActOrderName, calibration: Calibration) -> Self {
        Self::Gptq {
            damp: cfg.damp,
            block: cfg.block,
            max_damp_retries: cfg.max_damp_retries,
            actorder,
            calibration,
        }
    }

    pub fn awq(cfg: &AwqConfig, calibration: Calibration) -> Self {
        Self::Awq {
            grid: cfg.grid,
            v_to_o: cfg.v_to_o,
            clip_steps: cfg.clip_steps,
            clip_rows: cfg.clip_rows,
            calibration,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Rtn {} => "rtn",
            Self::Gptq { .. } => "gptq",
            Self::Awq { .. } => "awq",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeStep {
    pub scheme: SchemeName,
    /// input columns per group (W4A16 schemes); null for the per-channel schemes
    #[serde(deserialize_with = "required")]
    pub group: Option<usize>,
    /// Linears left dense besides lm_head (see [`ignore_matches`])
    pub ignore: Vec<String>,
    pub quantizer: Quantizer,
}

/// Whether ignore pattern `p` names the Linear `name` (e.g. `model.layers.3.mlp.up_proj`): the
/// name itself, a dotted prefix (`model.layers.3`), a dotted suffix (`mlp.up_proj`, `up_proj`),
/// or a glob in which `*` stands for any characters (`model.layers.*.self_attn.o_proj`).
pub fn ignore_matches(p: &str, name: &str) -> bool {
    // greedy with one backtrack point, the last `*`: linear in the name for any pattern (trying
    // every split at every `*` is exponential in their number)
    fn glob(p: &[u8], s: &[u8]) -> bool {
        let (mut i, mut j) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while j < s.len() {
            if i < p.len() && p[i] == b'*' {
                star = Some((i, j));
                i += 1;
            } else if i < p.len() && p[i] == s[j] {
                i += 1;
                j += 1;
            } else if let Some((si, sj)) = star {
                // the last `*` takes one more character
                star = Some((si, sj + 1));
                i = si + 1;
                j = sj + 1;
            } else {
                return false;
            }
        }
        p[i..].iter().all(|&c| c == b'*')
    }
    if p.contains('*') {
        return glob(p.as_bytes(), name.as_bytes());
    }
    name == p || name.starts_with(&format!("{p}.")) || name.ends_with(&format!(".{p}"))
}

impl QuantizeStep {
    /// The scheme as data (group size and act-order included), checked.
    pub fn scheme(&self) -> Result<Scheme> {
        let g = self.group.unwrap_or(128);
        let s = match self.scheme {
            SchemeName::W4a16 => Scheme::w4a16(g, true),
            SchemeName::W4a16Asym => Scheme::w4a16(g, false),
            SchemeName::W8a8 => Scheme::w8a8_int8(),
            SchemeName::Fp8 => Scheme::fp8_dynamic(),
        };
        let a = match &self.quantizer {
            Quantizer::Gptq { actorder, .. } => match actorder {
                ActOrderName::None => None,
                ActOrderName::Static => Some(ActOrder::Static),
                ActOrderName::Group => Some(ActOrder::Group),
            },
            _ => None,
        };
        let s = s.with_actorder(a);
        s.check()
            .map_err(|e| bad(format!("scheme {} group {g}: {e}", self.scheme.word())))?;
        Ok(s)
    }

    /// Why vLLM could not serve the result as the evaluation does, if it could not: a W4A16
    /// group its Marlin kernel does not take (`package` refuses such a checkpoint). Said before
    /// any work, by `quantize` and by `apply` for each such step of a recipe.
    pub fn serving_warning(&self) -> Option<String> {
        use crate::checkpoint::package::MARLIN_GROUP_SIZES;
        let g = self.group.filter(|g| !MARLIN_GROUP_SIZES.contains(g))?;
        Some(format!(
            "group {g}: vLLM serves W4A16 with its Marlin kernel, which takes groups of 32, 64 or 128 that divide the inputs; `package` will refuse this checkpoint"
        ))
    }

    pub fn check(&self) -> Result<()> {
        let (s, grouped) = (self.scheme.word(), self.scheme.grouped());
        match self.group {
            None if grouped => {
                return Err(bad(format!(
                    "group: {s} quantizes in groups of input columns; give a group size"
                )))
            }
            Some(_) if !grouped => {
                return Err(bad(format!(
                    "group with scheme {s}: {s} quantizes whole output channels; group must be null"
                )))
            }
            Some(g) => at_least("group", g, 1)?,
            None => {}
        }
        match &self.quantizer {
            Quantizer::Rtn {} => {}
            Quantizer::Gptq {
                damp,
                block,
                max_damp_retries,
                actorder,
                calibration,
            } => {
                within("damp", *damp, &super::GPTQ_DAMP)?;
                within("block", *block, &super::GPTQ_BLOCK)?;
                within(
                    "max_damp_retries",
                    *max_damp_retries,
                    &super::GPTQ_DAMP_RETRIES,
                )?;
                if *actorder == ActOrderName::Group && !grouped {
                    return Err(bad(format!("actorder group with scheme {s}: {s} quantizes whole output channels, so there are no groups to reorder; use static, or a W4A16 scheme")));
                }
                calibration.check()?;
            }
            Quantizer::Awq {
                grid,
                clip_steps,
                clip_rows,
                calibration,
                ..
            } => {
                if !grouped {
                    return Err(bad(format!(
                        "method awq with scheme {s}: AWQ quantizes W4A16 only (w4a16 or w4a16-asym)"
                    )));
                }
                within("grid", *grid, &super::AWQ_GRID)?;
                within("clip_steps", *clip_steps, &super::AWQ_CLIP_STEPS)?;
                within("clip_rows", *clip_rows, &super::AWQ_CLIP_ROWS)?;
                calibration.check()?;
            }
        }
        if self.ignore.iter().any(|p| p.trim().is_empty()) {
            return Err(bad("ignore: an empty pattern"));
        }
        self.scheme().map(|_| ())
    }

    /// The Linears of a model with `layers` decoder layers that `ignore` leaves dense. Fails on
    /// a pattern that names none, and on one that splits q/k/v or gate/up (vLLM fuses each into
    /// one Linear, whose parts must be quantized alike).
    pub fn ignored(&self, layers: usize) -> Result<Vec<String>> {
        let names: Vec<String> = (0..layers)
            .flat_map(|i| {
                LINEAR_NAMES
                    .iter()
                    .map(move |n| format!("model.layers.{i}.{n}"))
            })
            .collect();
        for p in &self.ignore {
            if p != "lm_head" && !names.iter().any(|n| ignore_matches(p, n)) {
                return Err(bad(format!(
                    "ignore {p:?} names no Linear of this {layers}-layer model: give a name (model.layers.0.self_attn.q_proj), a dotted prefix (model.layers.3), a dotted suffix (mlp.down_proj) or a glob (model.layers.*.mlp.down_proj)"
                )));
            }
        }
        let skipped: Vec<String> = names
            .into_iter()
            .filter(|n| self.ignore.iter().any(|p| ignore_matches(p, n)))
            .collect();
        for i in 0..layers {
            for fused in [&LINEAR_NAMES[0..3], &LINEAR_NAMES[4..6]] {
                let full: Vec<String> = fused
                    .iter()
                    .map(|n| format!("model.layers.{i}.{n}"))
                    .collect();
                let k = full.iter().filter(|n| skipped.contains(n)).count();
                if k != 0 && k != full.len() {
                    return Err(bad(format!(
                        "ignore leaves part of {{{}}} dense: vLLM fuses them into one Linear whose parts must be quantized alike; ignore all of them or none",
                        full.join(", ")
                    )));
                }
            }
        }
        if layers > 0 && skipped.len() == layers * LINEAR_NAMES.len() {
            return Err(bad(format!(
                "ignore matches all {} decoder Linears of this {layers}-layer model: nothing would be quantized (the checkpoint would be the dense model under a quantization_config); leave some out of ignore",
                skipped.len()
            )));
        }
        Ok(skipped)
    }
}

pub(super) fn run_quantize(
    q: &mut QuantizeStep,
    input: &Path,
    out: &Path,
    ctx: &Ctx,
) -> Result<StepReport> {
    let scheme = q.scheme()?;
    let layers = crate::model::Exaone4Config::from_file(input)?.num_hidden_layers;
    let ignored = q.ignored(layers)?;
    let skip = |p: &str| ignored.iter().any(|n| n == p);
    let base = crate::runtime::load_model(input, ctx.dtype, &ctx.device)?;
    let mut log = vec![];
    // timed: the quantization itself (calibration passes included), not loading or tokenizing
    let (qm, secs) = match &mut q.quantizer {
        Quantizer::Rtn {} => {
            let t0 = Instant::now();
            (quantize_rtn(&base, &scheme, &skip)?, t0.elapsed())
        }
        Quantizer::Gptq {
            damp,
            block,
            max_damp_retries,
            calibration,
            ..
        } => {
            let calib = calibration.read(input, ctx)?;
            let cfg = GptqConfig {
                damp: *damp,
                block: *block,
                max_damp_retries: *max_damp_retries,
            };
            let t0 = Instant::now();
            let m = quantize_gptq(&base, &scheme, &calib, &cfg, &skip, &mut log)?;
            (m, t0.elapsed())
        }
        Quantizer::Awq {
            grid,
            v_to_o,
            clip_steps,
            clip_rows,
            calibration,
        } => {
            let calib = calibration.read(input, ctx)?;
            let cfg = AwqConfig {
                grid: *grid,
                v_to_o: *v_to_o,
                clip_steps: *clip_steps,
                clip_rows: *clip_rows,
            };
            let t0 = Instant::now();
            let m = quantize_awq(&base, &scheme, &calib, &cfg, &skip, &mut log)?;
            (m, t0.elapsed())
        }
    };
    save_quantized(&qm, out, &write_opts(input))?;
    let summary = format!(
        "{} {} of {} Linears in {:.2} s",
        q.quantizer.name(),
        scheme.name(),
        qm.linears.len(),
        secs.as_secs_f64()
    );
    Ok(StepReport { log, summary })
}
