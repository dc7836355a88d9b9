//! Quantizing a whole model: every decoder Linear (unless skipped) through one method, the
//! dense weights replaced by their dequantized values so the model runs as the checkpoint will.

use std::collections::BTreeMap;

use candle_core::Result;

use super::{rtn::rtn, QLinear, Scheme};
use crate::model::{ActQuant, Exaone4};

/// A model whose Linears were quantized, and the quantized values to write.
pub struct QuantizedModel {
    /// runs with the dequantized weights (and per-token activation quantization for W8A8/FP8)
    pub model: Exaone4,
    /// by Linear prefix, e.g. `model.layers.3.mlp.up_proj`
    pub linears: BTreeMap<String, QLinear>,
    pub scheme: Scheme,
    /// Linear prefixes left dense (always includes `lm_head`)
    pub ignore: Vec<String>,
}

/// The activation fake-quantization a scheme implies.
pub fn act_quant(s: &Scheme) -> Option<ActQuant> {
    s.input_activations.map(|a| match a.ty {
        super::NumType::Int => ActQuant::Int8PerToken,
        super::NumType::Float => ActQuant::Fp8PerToken,
    })
}

/// Puts quantized Linears into `model`: dequantized weights, activation quantization. Every
/// other weight is rounded to bf16, as the checkpoint stores it, so the model in memory is the
/// model on disk.
pub fn install(
    model: &mut Exaone4,
    linears: &BTreeMap<String, QLinear>,
    scheme: &Scheme,
) -> Result<()> {
    let (dt, dev) = (model.dtype(), model.device().clone());
    for (_, t) in model.named_tensors_mut() {
        *t = t.to_dtype(candle_core::DType::BF16)?.to_dtype(dt)?;
    }
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for (n, lin) in layer.linears_mut() {
            if let Some(ql) = linears.get(&format!("model.layers.{i}.{n}")) {
                lin.weight = ql.dequantized_tensor(dt, &dev)?;
                lin.act_quant = act_quant(scheme);
            }
        }
    }
    Ok(())
}

/// Every decoder Linear prefix of `model`, in order.
pub fn linear_prefixes(model: &Exaone4) -> Vec<String> {
    const NAMES: [&str; 7] = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ];
    (0..model.layers.len())
        .flat_map(|i| NAMES.iter().map(move |n| format!("model.layers.{i}.{n}")))
        .collect()
}

/// Round-to-nearest quantization of every Linear not matched by `skip`.
pub fn quantize_rtn(
    model: &Exaone4,
    scheme: &Scheme,
    skip: &dyn Fn(&str) -> bool,
) -> Result<QuantizedModel> {
    let mut linears = BTreeMap::new();
    let mut ignore = vec!["lm_head".to_string()];
    let weights: BTreeMap<String, candle_core::Tensor> = model
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.clone()))
        .collect();
    for p in linear_prefixes(model) {
        if skip(&p) {
            ignore.push(p);
            continue;
        }
        linears.insert(
            p.clone(),
            rtn(&weights[&format!("{p}.weight")], &scheme.weights)?,
        );
    }
    let mut m = model.share();
    install(&mut m, &linears, scheme)?;
    Ok(QuantizedModel {
        model: m,
        linears,
        scheme: *scheme,
        ignore,
    })
}
