//! The compressed-tensors on-disk format (0.13.0, as vLLM 0.14 and transformers 4.57 read it):
//! int4 nibble packing, the tensors of each format, and dequantization. The only place in the
//! crate that knows the format.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use safetensors::Dtype;
use serde_json::Value;

use super::RawTensor;
use crate::error::{Error, Result};
use super::qlinear::{dequantize, QLinear};
use super::scheme::{NumType, Scheme, Strategy};

/// Packs int4 values (in −8..=7) of a [rows, cols] matrix: `q + 8` as nibbles, column
/// `8j + i` in bits `4i..4i+4` of word `j`, rows padded with zero nibbles to a multiple of 8.
pub fn pack_int4(q: &[f32], rows: usize, cols: usize) -> Vec<i32> {
    let words = cols.div_ceil(8);
    let mut out = vec![0i32; rows * words];
    for r in 0..rows {
        for c in 0..cols {
            let nib = (q[r * cols + c] as i32 + 8) as u32 & 0xF;
            let w = &mut out[r * words + c / 8];
            *w = (*w as u32 | (nib << (4 * (c % 8)))) as i32;
        }
    }
    out
}

/// Inverse of [`pack_int4`]: the signed values of a [rows, cols] matrix.
pub fn unpack_int4(packed: &[i32], rows: usize, cols: usize) -> Vec<f32> {
    let words = cols.div_ceil(8);
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let nib = (packed[r * words + c / 8] as u32 >> (4 * (c % 8))) & 0xF;
            out[r * cols + c] = nib as f32 - 8.0;
        }
    }
    out
}

/// Zero points [out, groups] packed along the OUTPUT dimension: [ceil(out/8), groups].
pub fn pack_zero_points(zp: &[f32], out: usize, groups: usize) -> Vec<i32> {
    let mut t = vec![0f32; groups * out];
    for r in 0..out {
        for g in 0..groups {
            t[g * out + r] = zp[r * groups + g];
        }
    }
    // pack the transpose along its columns (= output rows), then transpose back
    let packed_t = pack_int4(&t, groups, out);
    let words = out.div_ceil(8);
    let mut p = vec![0i32; words * groups];
    for g in 0..groups {
        for j in 0..words {
            p[j * groups + g] = packed_t[g * words + j];
        }
    }
    p
}

pub fn unpack_zero_points(p: &[i32], out: usize, groups: usize) -> Vec<f32> {
    let words = out.div_ceil(8);
    let mut t = vec![0i32; groups * words];
    for j in 0..words {
        for g in 0..groups {
            t[g * words + j] = p[j * groups + g];
        }
    }
    let zt = unpack_int4(&t, groups, out);
    let mut zp = vec![0f32; out * groups];
    for g in 0..groups {
        for r in 0..out {
            zp[r * groups + g] = zt[g * out + r];
        }
    }
    zp
}

fn bf16_tensor(v: &[f32], shape: Vec<usize>) -> RawTensor {
    let data = v
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    RawTensor {
        dtype: Dtype::BF16,
        shape,
        data,
    }
}

fn i32_tensor(v: &[i32], shape: Vec<usize>) -> RawTensor {
    RawTensor {
        dtype: Dtype::I32,
        shape,
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The tensors that stand for one quantized Linear `prefix` (e.g. `model.layers.0.mlp.up_proj`).
pub fn linear_tensors(prefix: &str, ql: &QLinear, scheme: &Scheme) -> BTreeMap<String, RawTensor> {
    let mut m = BTreeMap::new();
    let ng = ql.n_groups();
    m.insert(
        format!("{prefix}.weight_scale"),
        bf16_tensor(&ql.scale, vec![ql.out, ng]),
    );
    match scheme.format() {
        "pack-quantized" => {
            m.insert(
                format!("{prefix}.weight_packed"),
                i32_tensor(
                    &pack_int4(&ql.q, ql.out, ql.inp),
                    vec![ql.out, ql.inp.div_ceil(8)],
                ),
            );
            let shape = [ql.out as i64, ql.inp as i64];
            m.insert(
                format!("{prefix}.weight_shape"),
                RawTensor {
                    dtype: Dtype::I64,
                    shape: vec![2],
                    data: shape.iter().flat_map(|x| x.to_le_bytes()).collect(),
                },
            );
            if !ql.scheme.symmetric {
                m.insert(
                    format!("{prefix}.weight_zero_point"),
                    i32_tensor(
                        &pack_zero_points(&ql.zp, ql.out, ng),
                        vec![ql.out.div_ceil(8), ng],
                    ),
                );
            }
            if let Some(g) = &ql.g_idx {
                let v: Vec<i32> = g.iter().map(|&x| x as i32).collect();
                m.insert(
                    format!("{prefix}.weight_g_idx"),
                    i32_tensor(&v, vec![ql.inp]),
                );
            }
        }
        "int-quantized" => {
            let v: Vec<i8> = ql.q.iter().map(|&x| x as i8).collect();
            m.insert(
                format!("{prefix}.weight"),
                RawTensor::i8(vec![ql.out, ql.inp], &v),
            );
        }
        _ => {
            let data: Vec<u8> =
                ql.q.iter()
                    .map(|&x| float8::F8E4M3::from_f32(x).to_bits())
                    .collect();
            m.insert(
                format!("{prefix}.weight"),
                RawTensor {
                    dtype: Dtype::F8_E4M3,
                    shape: vec![ql.out, ql.inp],
                    data,
                },
            );
        }
    }
    m
}

/// What a checkpoint's `quantization_config` says, as far as reading it needs.
#[derive(Clone, Debug)]
pub struct QuantInfo {
    pub format: String,
    pub ignore: Vec<String>,
    /// the group_0 scheme
    pub scheme: Option<Scheme>,
}

/// Parses `quantization_config` (None when the model is dense).
pub fn quant_info(config_raw: &serde_json::Map<String, Value>) -> Result<Option<QuantInfo>> {
    let Some(q) = config_raw.get("quantization_config") else {
        return Ok(None);
    };
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    if method != "compressed-tensors" {
        return Err(Error::config(
            "quantization_config.quant_method",
            format!("{method:?}: only \"compressed-tensors\" checkpoints are read"),
        ));
    }
    let format = q
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ignore = q
        .get("ignore")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let scheme = q
        .get("config_groups")
        .and_then(|g| g.as_object())
        .and_then(|g| g.values().next())
        .map(parse_group)
        .transpose()?;
    Ok(Some(QuantInfo {
        format,
        ignore,
        scheme,
    }))
}

fn parse_group(g: &Value) -> Result<Scheme> {
    use super::scheme::{ActOrder, ActivationScheme, WeightScheme};
    let w = g
        .get("weights")
        .ok_or_else(|| Error::config("quantization_config.config_groups.weights", "missing"))?;
    let bits = w.get("num_bits").and_then(Value::as_u64).unwrap_or(8) as u32;
    let ty = if w.get("type").and_then(Value::as_str) == Some("float") {
        NumType::Float
    } else {
        NumType::Int
    };
    let strategy = match w.get("strategy").and_then(Value::as_str) {
        Some("group") => {
            Strategy::Group(w.get("group_size").and_then(Value::as_u64).unwrap_or(128) as usize)
        }
        Some("channel") | None => Strategy::Channel,
        Some(other) => {
            return Err(Error::config(
                "quantization_config.weights.strategy",
                format!("{other:?} is not supported"),
            ))
        }
    };
    let actorder = match w.get("actorder").and_then(Value::as_str) {
        Some("static") | Some("weight") => Some(ActOrder::Static),
        Some("group") | Some("dynamic") => Some(ActOrder::Group),
        _ => None,
    };
    let symmetric = w.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
    let input_activations = g
        .get("input_activations")
        .filter(|a| !a.is_null())
        .map(|a| ActivationScheme {
            num_bits: a.get("num_bits").and_then(Value::as_u64).unwrap_or(8) as u32,
            ty: if a.get("type").and_then(Value::as_str) == Some("float") {
                NumType::Float
            } else {
                NumType::Int
            },
        });
    Ok(Scheme {
        weights: WeightScheme {
            num_bits: bits,
            ty,
            symmetric,
            strategy,
            actorder,
        },
        input_activations,
    })
}

/// Dequantizes the Linear `prefix` of a compressed checkpoint, if it is stored quantized.
/// `get_raw(name)` returns a stored tensor (CPU, its own dtype), `bytes(name)` its raw bytes.
pub fn dequantize_linear(
    prefix: &str,
    has: &dyn Fn(&str) -> bool,
    get_raw: &dyn Fn(&str) -> Result<Tensor>,
    bytes: &dyn Fn(&str) -> Result<Vec<u8>>,
    info_dtype: &dyn Fn(&str) -> Option<Dtype>,
) -> Result<Option<Vec<f32>>> {
    let scale_name = format!("{prefix}.weight_scale");
    if !has(&scale_name) {
        return Ok(None);
    }
    let scale_t = get_raw(&scale_name)?.to_dtype(DType::F32)?;
    let (out, ng) = scale_t.dims2()?;
    let scale = scale_t.flatten_all()?.to_vec1::<f32>()?;
    let packed = format!("{prefix}.weight_packed");
    let (q, inp) = if has(&packed) {
        let shape = get_raw(&format!("{prefix}.weight_shape"))?
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?;
        let (o, inp) = (shape[0] as usize, shape[1] as usize);
        if o != out {
            return Err(Error::Shape {
                name: format!("{prefix}.weight_shape"),
                expected: vec![out, inp],
                found: vec![o, inp],
            });
        }
        let p = get_raw(&packed)?.flatten_all()?.to_vec1::<i32>()?;
        if p.len() != out * inp.div_ceil(8) {
            return Err(Error::Shape {
                name: packed,
                expected: vec![out, inp.div_ceil(8)],
                found: vec![p.len() / out.max(1)],
            });
        }
        (unpack_int4(&p, out, inp), inp)
    } else {
        let wname = format!("{prefix}.weight");
        let raw = bytes(&wname)?;
        let inp = raw.len() / out;
        let q: Vec<f32> = match info_dtype(&wname) {
            Some(Dtype::I8) => raw.iter().map(|&b| b as i8 as f32).collect(),
            Some(Dtype::F8_E4M3) => raw
                .iter()
                .map(|&b| float8::F8E4M3::from_bits(b).to_f32())
                .collect(),
            other => {
                return Err(Error::Dtype {
                    name: wname,
                    dtype: format!("{other:?} next to a weight_scale"),
                })
            }
        };
        (q, inp)
    };
    let zp = {
        let name = format!("{prefix}.weight_zero_point");
        if has(&name) {
            let p = get_raw(&name)?.flatten_all()?.to_vec1::<i32>()?;
            unpack_zero_points(&p, out, ng)
        } else {
            vec![0f32; out * ng]
        }
    };
    let g_idx: Option<Vec<usize>> = {
        let name = format!("{prefix}.weight_g_idx");
        if has(&name) {
            Some(
                get_raw(&name)?
                    .flatten_all()?
                    .to_vec1::<i32>()?
                    .into_iter()
                    .map(|x| x as usize)
                    .collect(),
            )
        } else {
            None
        }
    };
    let group = inp.div_ceil(ng);
    let mut w = vec![0f32; out * inp];
    for r in 0..out {
        for c in 0..inp {
            let g = g_idx.as_ref().map(|gi| gi[c]).unwrap_or(c / group);
            let k = r * ng + g;
            w[r * inp + c] = dequantize(q[r * inp + c], scale[k], zp[k]);
        }
    }
    let _ = Device::Cpu;
    Ok(Some(w))
}

/// Writes the dense bf16 equivalent of a (possibly compressed) checkpoint: every quantized
/// Linear dequantized exactly as compressed-tensors does, `quantization_config` removed.
pub fn dequantize_checkpoint(
    ckpt: &super::Checkpoint,
    out: &std::path::Path,
    opts: &super::WriteOptions,
) -> Result<()> {
    let mut tensors = BTreeMap::new();
    const AUX: [&str; 5] = [
        ".weight_scale",
        ".weight_packed",
        ".weight_shape",
        ".weight_zero_point",
        ".weight_g_idx",
    ];
    let names: Vec<String> = ckpt.names().cloned().collect();
    for name in &names {
        if let Some(prefix) = AUX.iter().find_map(|s| name.strip_suffix(s)) {
            if name.ends_with(".weight_scale") {
                let w = ckpt
                    .dequantized(prefix)?
                    .expect("a weight_scale means a quantized Linear");
                let info_out = ckpt.info(&format!("{prefix}.weight_scale"))?.shape[0];
                let t = Tensor::from_vec(w, (info_out, ()), &Device::Cpu)?.to_dtype(DType::BF16)?;
                tensors.insert(format!("{prefix}.weight"), RawTensor::from_tensor(&t)?);
            }
            continue;
        }
        if name
            .strip_suffix(".weight")
            .is_some_and(|p| ckpt.contains(&format!("{p}.weight_scale")))
        {
            continue; // an int8/fp8 weight: written dequantized with its scale
        }
        let t = ckpt.raw(name, &Device::Cpu)?;
        let t = if t.dtype().is_float() {
            t.to_dtype(DType::BF16)?
        } else {
            t
        };
        tensors.insert(name.clone(), RawTensor::from_tensor(&t)?);
    }
    let mut cfg = ckpt.config.clone();
    cfg.raw.remove("quantization_config");
    let opts = super::WriteOptions {
        side_files_from: Some(ckpt.dir.clone()),
        ..opts.clone()
    };
    super::write_model_dir(out, &cfg, None, &tensors, &opts)
}
