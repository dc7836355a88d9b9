//! A quantization scheme as data: what the quantizers compute and what the compressed-tensors
//! writer describes, from one value — never two descriptions of one scheme.

use serde_json::{json, Value};

use crate::error::{Error, Result};

use crate::model::ActQuant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumType {
    Int,
    Float,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// one scale per output row
    Channel,
    /// one scale per `group` consecutive inputs of a row
    Group(usize),
}

/// Column visiting order of GPTQ (compressed-tensors' `actorder`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActOrder {
    /// decreasing Hessian diagonal, groups keep their original columns; no g_idx saved
    Static,
    /// decreasing Hessian diagonal, groups formed in permuted order; `weight_g_idx` saved
    Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightScheme {
    pub num_bits: u32,
    pub ty: NumType,
    pub symmetric: bool,
    pub strategy: Strategy,
    pub actorder: Option<ActOrder>,
}

/// Activations quantized at run time, per token, symmetric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivationScheme {
    pub num_bits: u32,
    pub ty: NumType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme {
    pub weights: WeightScheme,
    pub input_activations: Option<ActivationScheme>,
}

impl WeightScheme {
    /// Integer range [qmin, qmax] (int) — for fp8 the representable magnitude is 448.
    pub fn qrange(&self) -> (f32, f32) {
        match self.ty {
            NumType::Int => {
                let half = 1i64 << (self.num_bits - 1);
                (-(half as f32), (half - 1) as f32)
            }
            NumType::Float => (-448.0, 448.0),
        }
    }

    /// Whether the scheme is one that can be computed and stored: the rule broken, if not.
    pub fn check(&self) -> std::result::Result<(), String> {
        match self.ty {
            NumType::Int if !(2..=8).contains(&self.num_bits) => {
                return Err(format!(
                    "num_bits {} for integer weights: expected 2 to 8",
                    self.num_bits
                ))
            }
            NumType::Float if self.num_bits != 8 => {
                return Err(format!(
                    "num_bits {} for float weights: only 8-bit (e4m3) floats exist",
                    self.num_bits
                ))
            }
            _ => {}
        }
        if let Strategy::Group(0) = self.strategy {
            return Err("group_size 0: a group holds at least 1 input column".into());
        }
        Ok(())
    }

    pub fn group_size(&self, in_features: usize) -> usize {
        match self.strategy {
            Strategy::Channel => in_features,
            Strategy::Group(g) => g,
        }
    }
}

impl ActivationScheme {
    /// How the forward emulates these activations' run-time quantization.
    pub fn act_quant(&self) -> ActQuant {
        match self.ty {
            NumType::Int => ActQuant::Int8PerToken,
            NumType::Float => ActQuant::Fp8PerToken,
        }
    }
}

impl Scheme {
    /// The activation fake-quantization this scheme implies (None: weight-only).
    pub fn act_quant(&self) -> Option<ActQuant> {
        self.input_activations.map(|a| a.act_quant())
    }

    /// int4 weights in groups, bf16 activations (GPTQ/AWQ/RTN W4A16).
    pub fn w4a16(group: usize, symmetric: bool) -> Self {
        Self {
            weights: WeightScheme {
                num_bits: 4,
                ty: NumType::Int,
                symmetric,
                strategy: Strategy::Group(group),
                actorder: None,
            },
            input_activations: None,
        }
    }
    /// int8 per-channel weights, int8 dynamic per-token activations (the competition's winner).
    pub fn w8a8_int8() -> Self {
        Self {
            weights: WeightScheme {
                num_bits: 8,
                ty: NumType::Int,
                symmetric: true,
                strategy: Strategy::Channel,
                actorder: None,
            },
            input_activations: Some(ActivationScheme {
                num_bits: 8,
                ty: NumType::Int,
            }),
        }
    }
    /// fp8 e4m3 per-channel weights, fp8 dynamic per-token activations.
    pub fn fp8_dynamic() -> Self {
        Self {
            weights: WeightScheme {
                num_bits: 8,
                ty: NumType::Float,
                symmetric: true,
                strategy: Strategy::Channel,
                actorder: None,
            },
            input_activations: Some(ActivationScheme {
                num_bits: 8,
                ty: NumType::Float,
            }),
        }
    }

    /// Whether this scheme can be quantized and written as compressed-tensors: the rule broken,
    /// if not (e.g. a group size of 0, or int4 weights with int8 activations).
    pub fn check(&self) -> std::result::Result<(), String> {
        self.weights.check()?;
        if let Some(a) = self.input_activations {
            if a.num_bits != 8 {
                return Err(format!(
                    "input_activations num_bits {}: only 8-bit activation quantization is supported",
                    a.num_bits
                ));
            }
        }
        match self.format() {
            "pack-quantized" if self.weights.num_bits != 4 => Err(format!(
                "num_bits {} for weight-only integers: only 4-bit packing is supported",
                self.weights.num_bits
            )),
            "int-quantized" if self.weights.num_bits != 8 => Err(format!(
                "num_bits {} for integer weights with quantized activations: only W8A8 is supported",
                self.weights.num_bits
            )),
            _ => Ok(()),
        }
    }

    pub fn with_actorder(mut self, a: Option<ActOrder>) -> Self {
        self.weights.actorder = a;
        self
    }

    /// compressed-tensors' format name for this scheme.
    pub fn format(&self) -> &'static str {
        match (self.weights.ty, self.input_activations) {
            (NumType::Float, _) => "float-quantized",
            (NumType::Int, Some(_)) => "int-quantized",
            (NumType::Int, None) => "pack-quantized",
        }
    }

    /// A short name for tables: "W4A16-g128-sym", "W8A8-int8", "FP8-dynamic".
    pub fn name(&self) -> String {
        let w = &self.weights;
        match (w.ty, self.input_activations) {
            (NumType::Float, _) => "FP8-dynamic".into(),
            (NumType::Int, Some(a)) => format!("W{}A{}-int8", w.num_bits, a.num_bits),
            (NumType::Int, None) => {
                let g = match w.strategy {
                    Strategy::Channel => "ch".to_string(),
                    Strategy::Group(g) => format!("g{g}"),
                };
                format!(
                    "W{}A16-{g}-{}",
                    w.num_bits,
                    if w.symmetric { "sym" } else { "asym" }
                )
            }
        }
    }

    /// The `config_groups.group_0` entry, exactly as compressed-tensors 0.13.0 serializes it.
    pub fn config_group(&self) -> Value {
        let w = &self.weights;
        let (strategy, group_size) = match w.strategy {
            Strategy::Channel => ("channel", Value::Null),
            Strategy::Group(g) => ("group", json!(g)),
        };
        let actorder = match (w.strategy, w.actorder) {
            (Strategy::Group(_), Some(ActOrder::Static)) => json!("static"),
            (Strategy::Group(_), Some(ActOrder::Group)) => json!("group"),
            _ => Value::Null,
        };
        let weights = json!({
            "actorder": actorder, "block_structure": null, "dynamic": false, "group_size": group_size,
            "num_bits": w.num_bits, "observer": "minmax", "observer_kwargs": {}, "scale_dtype": null,
            "strategy": strategy, "symmetric": w.symmetric,
            "type": match w.ty { NumType::Int => "int", NumType::Float => "float" },
            "zp_dtype": if w.symmetric { Value::Null } else { json!("torch.int8") },
        });
        let inputs = match self.input_activations {
            None => Value::Null,
            Some(a) => json!({
                "actorder": null, "block_structure": null, "dynamic": true, "group_size": null,
                "num_bits": a.num_bits, "observer": null, "observer_kwargs": {}, "scale_dtype": null,
                "strategy": "token", "symmetric": true,
                "type": match a.ty { NumType::Int => "int", NumType::Float => "float" },
                "zp_dtype": null,
            }),
        };
        json!({
            "format": self.format(), "input_activations": inputs, "output_activations": null,
            "targets": ["Linear"], "weights": weights,
        })
    }

    /// Parses a `config_groups` entry as compressed-tensors writes it (see
    /// [`config_group`](Self::config_group)), strictly: wrong types and unsupported values are
    /// errors naming the field.
    pub fn from_config_group(name: &str, g: &Value) -> Result<Self> {
        parse_config_group(name, g)
    }

    /// The whole `quantization_config` block.
    pub fn quantization_config(&self, ignore: &[String]) -> Value {
        json!({
            "config_groups": {"group_0": self.config_group()},
            "format": self.format(), "global_compression_ratio": null, "ignore": ignore,
            "kv_cache_scheme": null, "quant_method": "compressed-tensors",
            "quantization_status": "compressed", "sparsity_config": {}, "transform_config": {},
            "version": "0.13.0",
        })
    }
}

fn opt_u64(v: &Value, key: &str, at: &str) -> Result<Option<u64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_u64().map(Some).ok_or_else(|| {
            Error::config(
                &format!("{at}.{key}"),
                format!("expected a non-negative integer, got {x}"),
            )
        }),
    }
}

fn opt_str<'a>(v: &'a Value, key: &str, at: &str) -> Result<Option<&'a str>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_str().map(Some).ok_or_else(|| {
            Error::config(
                &format!("{at}.{key}"),
                format!("expected a string, got {x}"),
            )
        }),
    }
}

fn num_type(v: &Value, at: &str) -> Result<NumType> {
    match opt_str(v, "type", at)? {
        None | Some("int") => Ok(NumType::Int),
        Some("float") => Ok(NumType::Float),
        Some(o) => Err(Error::config(
            &format!("{at}.type"),
            format!("{o:?}: expected \"int\" or \"float\""),
        )),
    }
}

fn bits(v: &Value, at: &str) -> Result<u32> {
    let b = opt_u64(v, "num_bits", at)?.unwrap_or(8);
    if !(1..=16).contains(&b) {
        return Err(Error::config(
            &format!("{at}.num_bits"),
            format!("{b}: expected 1 to 16"),
        ));
    }
    Ok(b as u32)
}

/// Parses one `config_groups` entry (`name`), every field checked for its type and range (a
/// field of the wrong type is an error, never a default), then the scheme checked as a whole.
/// The inverse of [`Scheme::config_group`].
pub(crate) fn parse_config_group(name: &str, g: &Value) -> Result<Scheme> {
    let at = format!("quantization_config.config_groups.{name}");
    if !g.is_object() {
        return Err(Error::config(&at, format!("expected an object, got {g}")));
    }
    let w = g
        .get("weights")
        .filter(|w| w.is_object())
        .ok_or_else(|| Error::config(&format!("{at}.weights"), "missing (or not an object)"))?;
    let wat = format!("{at}.weights");
    let num_bits = bits(w, &wat)?;
    let ty = num_type(w, &wat)?;
    let strategy = match opt_str(w, "strategy", &wat)? {
        Some("group") => {
            let gs = opt_u64(w, "group_size", &wat)?.ok_or_else(|| {
                Error::config(
                    &format!("{wat}.group_size"),
                    "missing for strategy \"group\"",
                )
            })?;
            if gs == 0 || gs > u32::MAX as u64 {
                return Err(Error::config(
                    &format!("{wat}.group_size"),
                    format!("{gs}: must be a positive group size"),
                ));
            }
            Strategy::Group(gs as usize)
        }
        Some("channel") | None => Strategy::Channel,
        Some(other) => {
            return Err(Error::config(
                &format!("{wat}.strategy"),
                format!("{other:?} is not supported (\"group\" or \"channel\")"),
            ))
        }
    };
    let actorder = match w.get("actorder") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(ActOrder::Group),
        Some(Value::String(s)) => match s.as_str() {
            "static" | "weight" => Some(ActOrder::Static),
            "group" | "dynamic" => Some(ActOrder::Group),
            o => {
                return Err(Error::config(
                    &format!("{wat}.actorder"),
                    format!("{o:?}: expected \"static\", \"weight\", \"group\" or \"dynamic\""),
                ))
            }
        },
        Some(x) => {
            return Err(Error::config(
                &format!("{wat}.actorder"),
                format!("expected a string or null, got {x}"),
            ))
        }
    };
    let symmetric = match w.get("symmetric") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(x) => {
            return Err(Error::config(
                &format!("{wat}.symmetric"),
                format!("expected true or false, got {x}"),
            ))
        }
    };
    let input_activations = match g.get("input_activations") {
        None | Some(Value::Null) => None,
        Some(a) if a.is_object() => {
            let aat = format!("{at}.input_activations");
            Some(ActivationScheme {
                num_bits: bits(a, &aat)?,
                ty: num_type(a, &aat)?,
            })
        }
        Some(x) => {
            return Err(Error::config(
                &format!("{at}.input_activations"),
                format!("expected an object or null, got {x}"),
            ))
        }
    };
    let scheme = Scheme {
        weights: WeightScheme {
            num_bits,
            ty,
            symmetric,
            strategy,
            actorder,
        },
        input_activations,
    };
    scheme.check().map_err(|msg| {
        Error::config(
            &at,
            format!("{msg} (this reader supports W4A16 packed, W8A8 int8 and FP8)"),
        )
    })?;
    if let Some(f) = opt_str(g, "format", &at)? {
        if f != scheme.format() {
            return Err(Error::config(
                &format!("{at}.format"),
                format!(
                    "{f:?}, but the scheme it describes is stored as {:?}",
                    scheme.format()
                ),
            ));
        }
    }
    Ok(scheme)
}
