//! Building the model from a checkpoint directory: the weights through the reader (compressed
//! Linears dequantized), and the run-time activation quantization that W8A8/FP8 checkpoints imply.

use std::path::Path;

use candle_core::{DType, Device};

use super::Checkpoint;
use crate::error::{Error, Result};
use crate::model::Exaone4;

impl Checkpoint {
    /// The model this checkpoint holds, computing in `dtype` on `device`.
    pub fn load_model(&self, dtype: DType, device: &Device) -> Result<Exaone4> {
        let cfg = self.config.clone();
        // a stray layer beyond num_hidden_layers means the config and weights disagree
        let stray = format!("model.layers.{}.", cfg.num_hidden_layers);
        if let Some(n) = self.names().find(|n| n.starts_with(&stray)) {
            return Err(Error::Invalid(format!(
                "{}: tensor `{n}` belongs to a layer beyond num_hidden_layers = {} (vLLM raises KeyError on it)",
                self.dir.display(),
                cfg.num_hidden_layers
            )));
        }
        self.check_quant_layout()?;
        // tied: vLLM ignores any lm_head.weight in the file, and so does `build`
        let mut m = Exaone4::build(
            cfg,
            |name, shape| self.get(name, shape, dtype, device),
            dtype,
            device,
        )?;
        // W8A8 / FP8 checkpoints quantize activations per token at run time: emulate it on the
        // Linears stored quantized, so quality figures reflect what vLLM computes
        if let Some(aq) = self
            .quant_info()?
            .and_then(|q| q.scheme)
            .and_then(|s| s.act_quant())
        {
            for (i, layer) in m.layers.iter_mut().enumerate() {
                for (n, lin) in layer.linears_mut() {
                    if self.contains(&format!("model.layers.{i}.{n}.weight_scale")) {
                        lin.act_quant = Some(aq);
                    }
                }
            }
        }
        Ok(m)
    }
}

impl Checkpoint {
    /// Fails where the quantized Linears are not stored as `quantization_config` says: scales
    /// without a quantization_config, or a Linear whose tensors are not those of the config's
    /// scheme ([`Checkpoint::stored_as_scheme`]: packed int4 under an 8-bit format, a zero point
    /// the scheme has no place for, …). The tensors alone could be dequantized, but vLLM reads
    /// them by the config, so a model that ran here would not run there.
    pub fn check_quant_layout(&self) -> Result<()> {
        let scaled = || {
            self.names()
                .filter_map(|n| n.strip_suffix(".weight_scale"))
                .map(str::to_string)
        };
        let problems: Vec<String> = match self.quant_info()? {
            None => scaled()
                .take(1)
                .map(|p| format!("`{p}` is stored quantized (it has a weight_scale), but config.json has no quantization_config"))
                .collect(),
            Some(q) => match &q.scheme {
                Some(s) if s.format() != q.format => vec![format!(
                    "quantization_config.format is {:?} but its scheme {} is stored as {:?}",
                    q.format,
                    s.name(),
                    s.format()
                )],
                // how the values are read; a g_idx the dequantizer checks itself (range,
                // length), and `package` refuses one the scheme has no place for
                Some(s) => scaled()
                    .flat_map(|p| self.stored_as_scheme(&p, s, false))
                    .collect(),
                None => vec![],
            },
        };
        match problems.first() {
            None => Ok(()),
            Some(first) => Err(Error::Invalid(format!(
                "{}: {first}{}: the config does not describe the tensors (vLLM reads them by it; `exaone-compress package --model DIR --check` lists every mismatch)",
                self.dir.display(),
                match problems.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            ))),
        }
    }

    /// How the quantized Linear `pre` is not stored as the scheme `s` says: each tensor of its
    /// format (packed int4 with `weight_shape`, or an 8-bit `weight`) missing or out of place,
    /// a zero point iff asymmetric and, with `g_idx`, a `g_idx` iff act-order "group" (one line
    /// each).
    pub(crate) fn stored_as_scheme(
        &self,
        pre: &str,
        s: &super::scheme::Scheme,
        g_idx: bool,
    ) -> Vec<String> {
        use super::scheme::ActOrder;
        let has = |suffix: &str| self.contains(&format!("{pre}.{suffix}"));
        let packed = s.format() == "pack-quantized";
        let mut p = vec![];
        for (suffix, want) in [
            ("weight_packed", packed),
            ("weight_shape", packed),
            ("weight", !packed),
            ("weight_zero_point", !s.weights.symmetric),
            (
                "weight_g_idx",
                packed && s.weights.actorder == Some(ActOrder::Group),
            ),
        ] {
            if has(suffix) != want && (g_idx || suffix != "weight_g_idx") {
                p.push(format!(
                    "`{pre}.{suffix}` is {} but the scheme {} (format {}) {} it",
                    if want { "missing" } else { "present" },
                    s.name(),
                    s.format(),
                    if want { "needs" } else { "has no place for" }
                ));
            }
        }
        p
    }

    /// Checks, without reading any weight, that every dense tensor the model reads is there
    /// with the shape the config gives and a floating-point dtype (quantized Linears are
    /// checked when they are dequantized). For commands that copy tensors through rather than
    /// load the model (`dequant`).
    pub fn check_dense_shapes(&self) -> Result<()> {
        let placeholder = || candle_core::Tensor::zeros(1, DType::F32, &Device::Cpu);
        Exaone4::build(
            self.config.clone(),
            |name, shape| -> Result<candle_core::Tensor> {
                let quantized = name
                    .strip_suffix(".weight")
                    .is_some_and(|p| self.contains(&format!("{p}.weight_scale")));
                if quantized {
                    return Ok(placeholder()?); // checked as it is dequantized
                }
                let info = self.info(name)?;
                if info.shape != shape {
                    return Err(Error::Shape {
                        name: name.into(),
                        expected: shape.to_vec(),
                        found: info.shape.clone(),
                    });
                }
                if !info.is_float() {
                    return Err(Error::Dtype {
                        name: name.into(),
                        dtype: format!("{:?} (a dense weight is f32, f16 or bf16)", info.dtype),
                    });
                }
                Ok(placeholder()?)
            },
            DType::F32,
            &Device::Cpu,
        )
        .map(|_| ())
        .map_err(|e| Error::Context {
            context: format!("{}", self.dir.display()),
            source: Box::new(e),
        })
    }
}

/// Opens a model directory and loads its model.
pub fn load_model(dir: &Path, dtype: DType, device: &Device) -> Result<Exaone4> {
    Checkpoint::open(dir)?.load_model(dtype, device)
}
