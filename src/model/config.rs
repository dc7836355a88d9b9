//! `config.json` of an EXAONE 4 checkpoint: a typed view for the model code, and the raw JSON
//! object kept beside it so that fields we do not model survive a load → save round trip.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// More decoder layers than any released model has by two orders of magnitude (EXAONE 4.0 32B:
/// 64): a larger count is a corrupt config, refused before anything is sized by it.
const MAX_LAYERS: usize = 4096;

/// How one decoder layer attends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    FullAttention,
    SlidingAttention,
}

/// `rope_scaling` (transformers 4.x) or `rope_parameters` (5.x) when it is llama3-style.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// The typed fields the model needs, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Exaone4Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub hidden_act: String,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3Scaling>,
    pub sliding_window: Option<usize>,
    pub layer_types: Vec<LayerType>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// `dtype` or `torch_dtype` as written, e.g. "bfloat16".
    pub dtype: Option<String>,
    /// The whole JSON object as read (or as built), the source of truth for fields not modelled.
    pub raw: Map<String, Value>,
}

fn field<'a>(raw: &'a Map<String, Value>, key: &str) -> Result<&'a Value> {
    raw.get(key)
        .ok_or_else(|| Error::config(key, "missing required field"))
}

fn usize_field(raw: &Map<String, Value>, key: &str) -> Result<usize> {
    let v = field(raw, key)?;
    v.as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| Error::config(key, format!("expected a non-negative integer, got {v}")))
}

fn opt_usize(raw: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x as usize))
            .ok_or_else(|| Error::config(key, format!("expected an integer or null, got {v}"))),
    }
}

fn f64_field(raw: &Map<String, Value>, key: &str) -> Result<f64> {
    let v = field(raw, key)?;
    v.as_f64()
        .ok_or_else(|| Error::config(key, format!("expected a number, got {v}")))
}

fn token_ids(raw: &Map<String, Value>, key: &str) -> Result<Vec<u32>> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .map(|x| vec![x])
            .ok_or_else(|| Error::config(key, format!("expected a token id, got {n}"))),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| {
                        Error::config(key, format!("expected a list of token ids, found {v}"))
                    })
            })
            .collect(),
        Some(v) => Err(Error::config(
            key,
            format!("expected a token id or a list, got {v}"),
        )),
    }
}

impl Exaone4Config {
    /// Reads and validates `dir/config.json` (or a path to a JSON file).
    pub fn from_file(path: &Path) -> Result<Self> {
        let path = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
        Self::from_value(value).map_err(|e| e.in_file(&path))
    }

    pub fn from_value(value: Value) -> Result<Self> {
        let Value::Object(raw) = value else {
            return Err(Error::config(
                "<root>",
                "config.json must hold a JSON object",
            ));
        };
        Self::from_raw(raw)
    }

    /// Parses the typed view out of a raw JSON object and checks it is a model we can run.
    pub fn from_raw(raw: Map<String, Value>) -> Result<Self> {
        match raw.get("model_type").and_then(Value::as_str) {
            Some("exaone4") => {}
            Some(other) => {
                return Err(Error::config(
                    "model_type",
                    format!(
                    "unknown architecture {other:?}: only \"exaone4\" (EXAONE 4.0) is supported"
                ),
                ))
            }
            None => {
                return Err(Error::config(
                    "model_type",
                    "missing required field (expected \"exaone4\")",
                ))
            }
        }
        if let Some(archs) = raw.get("architectures") {
            let ok = archs
                .as_array()
                .map(|a| a.iter().any(|v| v.as_str() == Some("Exaone4ForCausalLM")))
                .unwrap_or(false);
            if !ok {
                return Err(Error::config(
                    "architectures",
                    format!("expected [\"Exaone4ForCausalLM\"], got {archs}"),
                ));
            }
        }
        let hidden_size = usize_field(&raw, "hidden_size")?;
        let num_attention_heads = usize_field(&raw, "num_attention_heads")?;
        let num_key_value_heads = match opt_usize(&raw, "num_key_value_heads")? {
            Some(n) => n,
            None => num_attention_heads,
        };
        let num_hidden_layers = usize_field(&raw, "num_hidden_layers")?;
        // checked before anything is sized by it (the layer types, the decoder's layers)
        if !(1..=MAX_LAYERS).contains(&num_hidden_layers) {
            return Err(Error::config(
                "num_hidden_layers",
                format!("{num_hidden_layers}: must be between 1 and {MAX_LAYERS}"),
            ));
        }
        let head_dim = match opt_usize(&raw, "head_dim")? {
            Some(d) => d,
            None => {
                if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
                    return Err(Error::config(
                        "head_dim",
                        format!("absent, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(Error::config(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::config(
                "head_dim",
                format!("{head_dim} must be even and positive (RoPE rotates halves)"),
            ));
        }
        let hidden_act = field(&raw, "hidden_act")
            .ok()
            .and_then(Value::as_str)
            .unwrap_or("silu")
            .to_string();
        if hidden_act != "silu" {
            return Err(Error::config(
                "hidden_act",
                format!("{hidden_act:?}: vLLM's EXAONE 4 supports only \"silu\""),
            ));
        }

        // rope: transformers 4.x writes rope_theta + rope_scaling, 5.x rope_parameters
        let (rope_theta, rope_scaling) = parse_rope(&raw)?;

        let sliding_window = opt_usize(&raw, "sliding_window")?;
        let layer_types = match raw.get("layer_types") {
            None | Some(Value::Null) => {
                // transformers derives them from sliding_window_pattern; ZeroDivisionError when
                // both are absent and sliding_window is null — spell it out instead
                derive_layer_types(&raw, num_hidden_layers, sliding_window)?
            }
            Some(v) => {
                let lt: Vec<LayerType> = serde_json::from_value(v.clone()).map_err(|e| {
                    Error::config(
                        "layer_types",
                        format!("expected a list of \"full_attention\"/\"sliding_attention\": {e}"),
                    )
                })?;
                lt
            }
        };
        if layer_types.len() != num_hidden_layers {
            return Err(Error::config(
                "layer_types",
                format!("has {} entries but num_hidden_layers is {num_hidden_layers} (transformers raises ValueError)", layer_types.len()),
            ));
        }
        if layer_types.contains(&LayerType::SlidingAttention) && sliding_window.is_none() {
            return Err(Error::config(
                "sliding_window",
                "null, but layer_types has sliding_attention layers",
            ));
        }
        if let Some(Value::String(s)) = raw.get("sliding_window_pattern") {
            if !raw.contains_key("layer_types") {
                return Err(Error::config(
                    "sliding_window_pattern",
                    format!("string pattern {s:?} without layer_types: transformers 4.57 raises TypeError"),
                ));
            }
        }

        // vLLM maps the name to a torch dtype (its table of half/float16/float/float32/bfloat16)
        // and fails on any other
        let dtype = match ["dtype", "torch_dtype"]
            .iter()
            .find_map(|k| raw.get(*k).map(|v| (k, v)))
        {
            None | Some((_, Value::Null)) => None,
            Some((_, Value::String(s)))
                if ["bfloat16", "float16", "float32", "half", "float"].contains(&s.as_str()) =>
            {
                Some(s.clone())
            }
            Some((k, v)) => {
                return Err(Error::config(
                    k,
                    format!(
                    "{v}: not a dtype the model can be loaded in (bfloat16, float16 or float32)"
                ),
                ))
            }
        };
        let cfg = Self {
            vocab_size: usize_field(&raw, "vocab_size")?,
            hidden_size,
            intermediate_size: usize_field(&raw, "intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            hidden_act,
            rms_norm_eps: f64_field(&raw, "rms_norm_eps")?,
            max_position_embeddings: usize_field(&raw, "max_position_embeddings")?,
            rope_theta,
            rope_scaling,
            sliding_window,
            layer_types,
            // PretrainedConfig's default is true
            tie_word_embeddings: raw
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            bos_token_id: token_ids(&raw, "bos_token_id")?.first().copied(),
            eos_token_ids: token_ids(&raw, "eos_token_id")?,
            pad_token_id: token_ids(&raw, "pad_token_id")?.first().copied(),
            dtype,
            raw,
        };
        cfg.check_values()?;
        Ok(cfg)
    }

    /// The ranges every value must lie in for the forward to compute finite numbers and the
    /// sizes to be representable: what transformers would accept but then turn into NaN, a
    /// division by zero or an overflow.
    fn check_values(&self) -> Result<()> {
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(Error::config(k, "0: must be at least 1"));
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(Error::config(
                "rms_norm_eps",
                format!(
                    "{}: must be a finite number >= 0 (a negative epsilon makes RMSNorm NaN)",
                    self.rms_norm_eps
                ),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::config(
                "rope_theta",
                format!(
                    "{}: must be a finite number > 0 (RoPE frequencies are theta^(-2i/d))",
                    self.rope_theta
                ),
            ));
        }
        if let Some(l3) = &self.rope_scaling {
            let key = if self.raw.contains_key("rope_parameters") {
                "rope_parameters"
            } else {
                "rope_scaling"
            };
            for (k, v) in [
                ("factor", l3.factor),
                ("low_freq_factor", l3.low_freq_factor),
                ("high_freq_factor", l3.high_freq_factor),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::config(
                        &format!("{key}.{k}"),
                        format!("{v}: must be a finite number > 0"),
                    ));
                }
            }
            if l3.original_max_position_embeddings == 0 {
                return Err(Error::config(
                    &format!("{key}.original_max_position_embeddings"),
                    "0: must be at least 1",
                ));
            }
        }
        if self.sliding_window == Some(0) {
            return Err(Error::config(
                "sliding_window",
                "0: a window must hold at least one position",
            ));
        }
        for (k, id) in [
            ("bos_token_id", self.bos_token_id),
            ("pad_token_id", self.pad_token_id),
        ]
        .into_iter()
        .chain(
            self.eos_token_ids
                .iter()
                .map(|&e| ("eos_token_id", Some(e))),
        ) {
            if let Some(id) = id.filter(|&i| i as usize >= self.vocab_size) {
                return Err(Error::config(
                    k,
                    format!(
                        "{id} is outside the vocabulary (vocab_size {})",
                        self.vocab_size
                    ),
                ));
            }
        }
        // every tensor's element count, and the total, must be representable
        let n = self.num_parameters_u128();
        let widest = [
            self.num_attention_heads as u128 * self.head_dim as u128,
            self.intermediate_size as u128,
            self.vocab_size as u128,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            * self.hidden_size as u128;
        if n > (isize::MAX as u128) || widest > (isize::MAX as u128) {
            return Err(Error::config(
                "hidden_size",
                format!("{} with vocab_size {}, intermediate_size {} and {} heads of {}: {n} parameters, too large to represent", self.hidden_size, self.vocab_size, self.intermediate_size, self.num_attention_heads, self.head_dim),
            ));
        }
        Ok(())
    }

    /// Whether layer `i` applies RoPE. transformers: RoPE iff `sliding_window` is null or the layer
    /// is sliding (global NoPE for hybrid models). vLLM 0.14 instead applies RoPE everywhere when no
    /// layer is sliding; the two differ only for a config with a window but no sliding layer, which
    /// `warnings()` reports.
    pub fn layer_uses_rope(&self, i: usize) -> bool {
        self.sliding_window.is_none() || self.layer_types[i] == LayerType::SlidingAttention
    }

    /// The window of layer `i`, if it is a sliding-window layer.
    pub fn layer_window(&self, i: usize) -> Option<usize> {
        match self.layer_types[i] {
            LayerType::SlidingAttention => self.sliding_window,
            LayerType::FullAttention => None,
        }
    }

    /// Things that load but that the two reference implementations would run differently.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = vec![];
        if self.sliding_window.is_some() && !self.layer_types.contains(&LayerType::SlidingAttention)
        {
            w.push("sliding_window is set but no layer is sliding: transformers runs every layer without RoPE, vLLM with RoPE; this tool follows transformers".into());
        }
        w
    }

    /// Total parameter count as transformers counts it (a tied lm_head counted once); saturates
    /// at `usize::MAX` (a validated config never gets near it).
    pub fn num_parameters(&self) -> usize {
        usize::try_from(self.num_parameters_u128()).unwrap_or(usize::MAX)
    }

    /// [`num_parameters`](Self::num_parameters) in 128 bits: exact for any sizes a config holds.
    pub fn num_parameters_u128(&self) -> u128 {
        let h = self.hidden_size as u128;
        let d = self.head_dim as u128;
        let q = self.num_attention_heads as u128 * d;
        let kv = self.num_key_value_heads as u128 * d;
        let per_layer =
            h * q * 2 + h * kv * 2 + 3 * h * self.intermediate_size as u128 + 2 * d + 2 * h;
        let embed = self.vocab_size as u128 * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        per_layer * self.num_hidden_layers as u128 + embed + head + h
    }

    /// Checks that `ids` can be fed to the model: none is outside the vocabulary, and there are
    /// at most `max_position_embeddings` of them. `what` names where they came from (a flag).
    pub fn check_ids(&self, ids: &[u32], what: &str) -> Result<()> {
        if let Some((i, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= self.vocab_size)
        {
            return Err(Error::Invalid(format!(
                "{what}: token id {id} (position {i}) is outside the vocabulary: ids must be below vocab_size {}",
                self.vocab_size
            )));
        }
        if ids.len() > self.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "{what}: {} tokens exceed the context of max_position_embeddings {}",
                ids.len(),
                self.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// The config as JSON: the raw object, with every modelled field written back from the typed
    /// view (so edits to the typed view, e.g. a layer drop, reach the file). Keys keep their order.
    pub fn to_value(&self) -> Value {
        let mut raw = self.raw.clone();
        let mut set = |k: &str, v: Value| {
            raw.insert(k.to_string(), v);
        };
        set("vocab_size", self.vocab_size.into());
        set("hidden_size", self.hidden_size.into());
        set("intermediate_size", self.intermediate_size.into());
        set("num_hidden_layers", self.num_hidden_layers.into());
        set("num_attention_heads", self.num_attention_heads.into());
        set("num_key_value_heads", self.num_key_value_heads.into());
        set("tie_word_embeddings", self.tie_word_embeddings.into());
        if self.raw.contains_key("layer_types")
            || self.layer_types.contains(&LayerType::SlidingAttention)
        {
            set(
                "layer_types",
                serde_json::to_value(&self.layer_types).expect("layer types serialize"),
            );
        }
        Value::Object(raw)
    }

    pub fn to_json_pretty(&self) -> String {
        // transformers writes 2-space indented, sorted keys; we keep the file's own order
        serde_json::to_string_pretty(&self.to_value()).expect("config serializes")
    }

    /// EXAONE-4.0-1.2B's config.json as LG AI Research publishes it (the evaluation's model;
    /// `../shared/spec/exaone4.md`), for what is computed of that model without its weights.
    pub fn exaone_4_0_1_2b() -> Self {
        let full = vec![Value::from("full_attention"); 30];
        let v = serde_json::json!({
            "architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4",
            "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 4096,
            "num_hidden_layers": 30, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 64, "hidden_act": "silu", "rms_norm_eps": 1e-5,
            "max_position_embeddings": 65536, "rope_theta": 1000000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            "sliding_window": null, "sliding_window_pattern": null, "layer_types": full,
            "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 361,
            "pad_token_id": 0, "torch_dtype": "bfloat16"
        });
        Self::from_value(v).expect("the published config is valid")
    }

    /// A config keeping only the layers in `kept` (in that order): `num_hidden_layers` and
    /// `layer_types` change together, as transformers 4.57 demands.
    pub fn with_layers(&self, kept: &[usize]) -> Self {
        let mut c = self.clone();
        c.num_hidden_layers = kept.len();
        c.layer_types = kept.iter().map(|&i| self.layer_types[i]).collect();
        c.raw.insert(
            "layer_types".into(),
            serde_json::to_value(&c.layer_types).expect("layer types serialize"),
        );
        c
    }
}

fn parse_rope(raw: &Map<String, Value>) -> Result<(f64, Option<Llama3Scaling>)> {
    let params = raw.get("rope_parameters").filter(|v| !v.is_null());
    let scaling_key = if params.is_some() {
        "rope_parameters"
    } else {
        "rope_scaling"
    };
    let scaling = params.or_else(|| raw.get("rope_scaling").filter(|v| !v.is_null()));
    let theta = match raw.get("rope_theta").and_then(Value::as_f64) {
        Some(t) => t,
        None => scaling
            .and_then(|s| s.get("rope_theta"))
            .and_then(Value::as_f64)
            .ok_or_else(|| Error::config("rope_theta", "missing required field"))?,
    };
    let Some(s) = scaling else {
        return Ok((theta, None));
    };
    let rope_type = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match rope_type {
        "default" => Ok((theta, None)),
        "llama3" => {
            let l3: Llama3Scaling = serde_json::from_value(s.clone())
                .map_err(|e| Error::config(scaling_key, format!("llama3 scaling: {e}")))?;
            if l3.high_freq_factor <= l3.low_freq_factor {
                return Err(Error::config(
                    scaling_key,
                    "high_freq_factor must exceed low_freq_factor",
                ));
            }
            Ok((theta, Some(l3)))
        }
        other => Err(Error::config(
            scaling_key,
            format!("rope_type {other:?} is not supported (EXAONE 4 uses \"llama3\" or none)"),
        )),
    }
}

fn derive_layer_types(
    raw: &Map<String, Value>,
    n: usize,
    window: Option<usize>,
) -> Result<Vec<LayerType>> {
    if window.is_none() {
        // transformers 4.57 divides by sliding_window_pattern (0 here): a ZeroDivisionError
        return Err(Error::config(
            "layer_types",
            "missing while sliding_window is null: transformers 4.57 fails to load this (ZeroDivisionError); write layer_types explicitly",
        ));
    }
    let pattern = match raw.get("sliding_window_pattern") {
        Some(Value::Number(p)) => p.as_u64().unwrap_or(0) as usize,
        Some(Value::String(s)) => {
            return Err(Error::config(
                "sliding_window_pattern",
                format!(
                    "string pattern {s:?} without layer_types: transformers 4.57 raises TypeError"
                ),
            ))
        }
        _ => 4,
    };
    if pattern == 0 {
        return Err(Error::config(
            "sliding_window_pattern",
            "0 with no layer_types",
        ));
    }
    Ok((0..n)
        .map(|i| {
            if (i + 1) % pattern != 0 {
                LayerType::SlidingAttention
            } else {
                LayerType::FullAttention
            }
        })
        .collect())
}
