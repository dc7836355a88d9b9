//! Quantizing a whole model: every decoder Linear (unless skipped) through one method, the
//! dense weights replaced by their dequantized values so the model runs as the checkpoint will.

use crate::model::exaone4::LINEAR_NAMES;
use std::collections::BTreeMap;

use candle_core::{DType, Result};

use crate::checkpoint::compressed_tensors::linear_tensors;
use crate::checkpoint::{write_model_dir, RawTensor, WriteOptions};

use super::{rtn::rtn, QLinear, Scheme};
use crate::model::{ActQuant, Exaone4, Linear};

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

impl QuantizedModel {
    /// A copy sharing the model's weights (cheap) with its own quantized values, e.g. to heal
    /// the model by distillation while keeping the original.
    pub fn share(&self) -> Self {
        Self {
            model: self.model.share(),
            linears: self.linears.clone(),
            scheme: self.scheme,
            ignore: self.ignore.clone(),
        }
    }
}

/// The activation fake-quantization a scheme implies.
pub fn act_quant(s: &Scheme) -> Option<ActQuant> {
    s.act_quant()
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

/// Replaces a Linear's weight by its dequantized quantization and records the quantized values.
fn put(
    lin: &mut Linear,
    ql: QLinear,
    prefix: String,
    aq: Option<ActQuant>,
    linears: &mut BTreeMap<String, QLinear>,
) -> Result<()> {
    lin.weight = ql.dequantized_tensor(lin.weight.dtype(), &lin.weight.device().clone())?;
    lin.act_quant = aq;
    linears.insert(prefix, ql);
    Ok(())
}

/// The quantized model as the checkpoint will hold it: every weight not quantized rounded to
/// bf16 (quantized ones already are).
fn finish(
    mut m: Exaone4,
    linears: BTreeMap<String, QLinear>,
    scheme: &Scheme,
    ignore: Vec<String>,
) -> Result<QuantizedModel> {
    let dt = m.dtype();
    for (_, t) in m.named_tensors_mut() {
        *t = t.to_dtype(candle_core::DType::BF16)?.to_dtype(dt)?;
    }
    Ok(QuantizedModel {
        model: m,
        linears,
        scheme: *scheme,
        ignore,
    })
}

/// Every decoder Linear prefix of `model`, in order.
pub fn linear_prefixes(model: &Exaone4) -> Vec<String> {
    (0..model.layers.len())
        .flat_map(|i| {
            LINEAR_NAMES
                .iter()
                .map(move |n| format!("model.layers.{i}.{n}"))
        })
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
        let q = rtn(&weights[&format!("{p}.weight")], &scheme.weights)
            .map_err(|e| candle_core::Error::Msg(format!("{p}.weight: {e}")))?;
        linears.insert(p.clone(), q);
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

/// Which capture (shared input) feeds each Linear.
pub fn capture_of(linear: &str) -> &'static str {
    match linear {
        "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj" => "self_attn.q_proj",
        "self_attn.o_proj" => "self_attn.o_proj",
        "mlp.gate_proj" | "mlp.up_proj" => "mlp.gate_proj",
        _ => "mlp.down_proj",
    }
}

/// GPTQ of every Linear not matched by `skip`, layer by layer on calibration samples.
pub fn quantize_gptq(
    model: &Exaone4,
    scheme: &Scheme,
    calib: &[Vec<u32>],
    cfg: &super::gptq::GptqConfig,
    skip: &dyn Fn(&str) -> bool,
    log: &mut Vec<String>,
) -> Result<QuantizedModel> {
    if let Err(e) = scheme.check() {
        candle_core::bail!("{}: {e}", scheme.name());
    }
    use crate::compress::calibration::{sequential, CaptureOpts};
    let mut linears = BTreeMap::new();
    let mut ignore = vec!["lm_head".to_string()];
    let opts = CaptureOpts {
        hessian: true,
        abs_mean: false,
        keep_rows: 0,
    };
    let aq = act_quant(scheme);
    let (t_all, mut t_layers, mut secs) = (std::time::Instant::now(), 0f64, [0f64; 4]);
    let m = sequential(model, calib, 8, opts, "GPTQ", &mut |i, layer, caps| {
        let t_layer = std::time::Instant::now();
        // Linears sharing an input share its Hessian: quantize each such group as one matrix
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for n in LINEAR_NAMES {
            let p = format!("model.layers.{i}.{n}");
            if skip(&p) {
                ignore.push(p);
            } else {
                groups.entry(capture_of(n)).or_default().push(n);
            }
        }
        let mut done: BTreeMap<&str, QLinear> = BTreeMap::new();
        for (cap, names) in &groups {
            let h = caps[*cap].hessian.h.as_ref().expect("hessian captured");
            let lins: BTreeMap<&str, &Linear> = layer.linears().into_iter().collect();
            let ws: Vec<&candle_core::Tensor> = names.iter().map(|n| &lins[n].weight).collect();
            let (qs, rep) = super::gptq::gptq_shared(&ws, h, scheme, cfg)?;
            let who = format!("model.layers.{i}.{}", names.join("+"));
            if rep.retries > 0 {
                log.push(format!(
                    "{who}: Cholesky failed at damping {:.0e}; succeeded at {:.0e}",
                    cfg.damp, rep.damp_used
                ));
            }
            if rep.dead_columns > 0 {
                log.push(format!(
                    "{who}: {} dead input columns zeroed",
                    rep.dead_columns
                ));
            }
            done.extend(names.iter().copied().zip(qs));
            secs.iter_mut().zip(rep.secs).for_each(|(a, b)| *a += b);
        }
        for (n, lin) in layer.linears_mut() {
            if let Some(ql) = done.remove(n) {
                put(lin, ql, format!("model.layers.{i}.{n}"), aq, &mut linears)?;
            }
        }
        t_layers += t_layer.elapsed().as_secs_f64();
        Ok(())
    })?;
    let total = t_all.elapsed().as_secs_f64();
    log.push(format!(
        "GPTQ {total:.1} s: calibration passes {:.1} s; per Linear group: prepare {:.1} s, factorise H {:.1} s, column loops {:.1} s, lazy updates {:.1} s; into the model {:.1} s",
        total - t_layers,
        secs[0],
        secs[1],
        secs[2],
        secs[3],
        t_layers - secs.iter().sum::<f64>()
    ));
    finish(m, linears, scheme, ignore)
}

/// AWQ (W4A16): smooth up→down and (GQA-aware) v→o layer by layer, then RTN every Linear.
pub fn quantize_awq(
    model: &Exaone4,
    scheme: &Scheme,
    calib: &[Vec<u32>],
    cfg: &super::awq::AwqConfig,
    skip: &dyn Fn(&str) -> bool,
    log: &mut Vec<String>,
) -> Result<QuantizedModel> {
    if let Err(e) = scheme.check() {
        candle_core::bail!("{}: {e}", scheme.name());
    }
    use super::awq::{scale_columns, search, unscale_rows};
    use crate::compress::calibration::{sequential, CaptureOpts};
    let mut linears = BTreeMap::new();
    let mut ignore = vec!["lm_head".to_string()];
    let opts = CaptureOpts {
        hessian: false,
        abs_mean: true,
        keep_rows: 4096,
    };
    let (heads, kvh, hd) = (
        model.config.num_attention_heads,
        model.config.num_key_value_heads,
        model.config.head_dim,
    );
    let aq = act_quant(scheme);
    let (t_all, mut t_layers) = (std::time::Instant::now(), 0f64);
    let m = sequential(model, calib, 8, opts, "AWQ", &mut |i, layer, caps| {
        let t_layer = std::time::Instant::now();
        let mut smooth: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
        // up → down
        let cap = &caps["mlp.down_proj"];
        let xm: Vec<f32> = cap.abs_mean()?.to_vec1()?;
        let tie: Vec<usize> = (0..xm.len()).collect();
        let (s, l0, l1) = search(
            &cap.kept_rows()?,
            &layer.mlp.down_proj.weight,
            &xm,
            &tie,
            xm.len(),
            scheme,
            cfg,
        )?;
        layer.mlp.down_proj.weight = scale_columns(&layer.mlp.down_proj.weight, &s)?;
        layer.mlp.up_proj.weight = unscale_rows(&layer.mlp.up_proj.weight, &s)?;
        smooth.insert("mlp.down_proj", s.clone());
        log.push(format!("layer {i} up→down: output MSE {l0:.3e} → {l1:.3e}"));
        if cfg.v_to_o {
            let cap = &caps["self_attn.o_proj"];
            let xm: Vec<f32> = cap.abs_mean()?.to_vec1()?;
            let g = heads / kvh;
            // o_proj column h·hd + j  ↔  v_proj row (h / g)·hd + j
            let tie: Vec<usize> = (0..heads * hd)
                .map(|c| (c / hd / g) * hd + c % hd)
                .collect();
            let (s, l0, l1) = search(
                &cap.kept_rows()?,
                &layer.self_attn.o_proj.weight,
                &xm,
                &tie,
                kvh * hd,
                scheme,
                cfg,
            )?;
            let full: Vec<f32> = tie.iter().map(|&t| s[t]).collect();
            layer.self_attn.o_proj.weight = scale_columns(&layer.self_attn.o_proj.weight, &full)?;
            layer.self_attn.v_proj.weight = unscale_rows(&layer.self_attn.v_proj.weight, &s)?;
            smooth.insert("self_attn.o_proj", full.clone());
            log.push(format!(
                "layer {i} v→o (GQA): output MSE {l0:.3e} → {l1:.3e}"
            ));
        }
        for (n, lin) in layer.linears_mut() {
            let p = format!("model.layers.{i}.{n}");
            if skip(&p) {
                ignore.push(p);
                continue;
            }
            let ql = if cfg.clip_steps > 0 {
                // the inputs this Linear sees after smoothing (v/up outputs were divided by s,
                // so o/down inputs are the captured rows divided by s)
                let cap = &caps[capture_of(n)];
                let mut x = cap.kept_rows()?;
                let rows = x.dim(0)?.min(cfg.clip_rows);
                x = x.narrow(0, 0, rows)?;
                if let Some(s) = smooth.get(n) {
                    x = super::awq::scale_columns(
                        &x,
                        &s.iter().map(|v| 1.0 / v).collect::<Vec<f32>>(),
                    )?;
                }
                super::awq::rtn_clipped(&lin.weight, &x, scheme, cfg.clip_steps)?
            } else {
                rtn(&lin.weight, &scheme.weights)?
            };
            put(lin, ql, p, aq, &mut linears)?;
        }
        t_layers += t_layer.elapsed().as_secs_f64();
        Ok(())
    })?;
    let total = t_all.elapsed().as_secs_f64();
    log.push(format!(
        "AWQ {total:.1} s: calibration passes {:.1} s; scale and clipping searches, quantization {t_layers:.1} s",
        total - t_layers
    ));
    finish(m, linears, scheme, ignore)
}

/// Writes a quantized model as a compressed-tensors checkpoint: quantized Linears in the
/// scheme's format, everything else bf16, `quantization_config` in config.json.
pub fn save_quantized(
    qm: &QuantizedModel,
    out: &std::path::Path,
    opts: &WriteOptions,
) -> crate::Result<()> {
    let mut tensors = BTreeMap::new();
    for (name, t) in qm.model.named_tensors() {
        let prefix = name.strip_suffix(".weight").unwrap_or(&name);
        if let Some(ql) = qm.linears.get(prefix) {
            tensors.extend(linear_tensors(prefix, ql, &qm.scheme));
        } else {
            tensors.insert(
                name.clone(),
                RawTensor::from_tensor(&t.to_dtype(DType::BF16)?)?,
            );
        }
    }
    let mut cfg = qm.model.config.clone();
    cfg.raw.remove("torch_dtype");
    cfg.raw.insert("dtype".into(), "bfloat16".into());
    let mut v = cfg.to_value();
    v["quantization_config"] = qm.scheme.quantization_config(&qm.ignore);
    write_model_dir(out, &cfg, Some(v), &tensors, opts)
}
