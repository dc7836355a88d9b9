//! The compressed-tensors on-disk format (0.13.0, as vLLM 0.14 and transformers 4.57 read it):
//! int4 nibble packing, the tensors of each format, and dequantization. The only place in the
//! crate that knows the format.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use safetensors::Dtype;
use serde_json::Value;

use super::qlinear::{dequantize, QLinear};
use super::scheme::Scheme;
use super::RawTensor;
use crate::error::{Error, Result};

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
    if !q.is_object() {
        return Err(Error::config(
            "quantization_config",
            format!("expected an object, got {q}"),
        ));
    }
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    if method != "compressed-tensors" {
        return Err(Error::config(
            "quantization_config.quant_method",
            format!("{method:?}: only \"compressed-tensors\" checkpoints are read"),
        ));
    }
    let format = match q.get("format") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(f)) => f.clone(),
        Some(x) => {
            return Err(Error::config(
                "quantization_config.format",
                format!("expected a string, got {x}"),
            ))
        }
    };
    let ignore = match q.get("ignore") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    Error::config(
                        "quantization_config.ignore",
                        format!("expected a list of strings, found {v}"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?,
        Some(x) => {
            return Err(Error::config(
                "quantization_config.ignore",
                format!("expected a list of strings, got {x}"),
            ))
        }
    };
    let scheme = match q.get("config_groups") {
        None | Some(Value::Null) => None,
        Some(Value::Object(groups)) => {
            let mut first = None;
            for (name, g) in groups {
                let s = Scheme::from_config_group(name, g)?;
                first.get_or_insert(s);
            }
            first
        }
        Some(x) => {
            return Err(Error::config(
                "quantization_config.config_groups",
                format!("expected an object, got {x}"),
            ))
        }
    };
    Ok(Some(QuantInfo {
        format,
        ignore,
        scheme,
    }))
}

fn bad(name: &str, msg: impl Into<String>) -> Error {
    Error::BadTensor {
        name: name.to_string(),
        msg: msg.into(),
    }
}

/// Reads a 1-D integer tensor (i32 or i64) as i64 values.
fn int_values(name: &str, t: &Tensor) -> Result<Vec<i64>> {
    match t.dtype() {
        DType::I64 | DType::I32 => Ok(t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?),
        d => Err(bad(name, format!("dtype {d:?}: expected int32 or int64"))),
    }
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
    Ok(dequantize_linear_shaped(prefix, has, get_raw, bytes, info_dtype)?.map(|(w, _, _)| w))
}

/// [`dequantize_linear`], also returning the weight's shape (out, in). Every stored tensor is
/// checked before use: dtypes, shapes against each other, `weight_shape` positive and consistent
/// with the packed data, group indices within the groups, scales finite and ≥ 0; the result is finite.
pub fn dequantize_linear_shaped(
    prefix: &str,
    has: &dyn Fn(&str) -> bool,
    get_raw: &dyn Fn(&str) -> Result<Tensor>,
    bytes: &dyn Fn(&str) -> Result<Vec<u8>>,
    info_dtype: &dyn Fn(&str) -> Option<Dtype>,
) -> Result<Option<(Vec<f32>, usize, usize)>> {
    let scale_name = format!("{prefix}.weight_scale");
    if !has(&scale_name) {
        return Ok(None);
    }
    let scale_t = get_raw(&scale_name)?;
    if !scale_t.dtype().is_float() {
        return Err(bad(
            &scale_name,
            format!("dtype {:?}: scales are floating point", scale_t.dtype()),
        ));
    }
    let (out, ng) = match *scale_t.dims() {
        [o, g] => (o, g),
        ref d => {
            return Err(bad(
                &scale_name,
                format!("shape {d:?}: expected [out_features, groups]"),
            ))
        }
    };
    if out == 0 || ng == 0 {
        return Err(bad(
            &scale_name,
            format!("shape [{out}, {ng}]: needs at least one row and one group"),
        ));
    }
    let scale = scale_t
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    // every compressed-tensors quantizer writes a range over its levels, ≥ 0: a negative scale
    // is a damaged file, not a variant
    if let Some(k) = scale.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
        return Err(bad(
            &scale_name,
            format!(
                "{} at [{}, {}]: scales must be finite and not negative",
                scale[k],
                k / ng,
                k % ng
            ),
        ));
    }
    let packed = format!("{prefix}.weight_packed");
    let is_packed = has(&packed);
    let (q, inp) = if is_packed {
        let shape_name = format!("{prefix}.weight_shape");
        let st = get_raw(&shape_name)?;
        if st.dims() != [2] {
            return Err(bad(
                &shape_name,
                format!(
                    "shape {:?}: expected [2] (out_features, in_features)",
                    st.dims()
                ),
            ));
        }
        let v = int_values(&shape_name, &st)?;
        let (o, i) = (v[0], v[1]);
        if o <= 0 || i <= 0 {
            return Err(bad(
                &shape_name,
                format!("[{o}, {i}]: both sizes must be positive"),
            ));
        }
        let (o, inp) = (o as u64, i as u64);
        if o != out as u64 {
            return Err(Error::Shape {
                name: shape_name,
                expected: vec![out, i as usize],
                found: vec![o as usize, i as usize],
            });
        }
        let pt = get_raw(&packed)?;
        if pt.dtype() != DType::I32 {
            return Err(bad(
                &packed,
                format!("dtype {:?}: packed int4 weights are int32", pt.dtype()),
            ));
        }
        let words = inp.div_ceil(8);
        if pt.dims() != [out, words as usize] {
            return Err(Error::Shape {
                name: packed,
                expected: vec![out, words as usize],
                found: pt.dims().to_vec(),
            });
        }
        let inp = inp as usize;
        let p = pt.flatten_all()?.to_vec1::<i32>()?;
        (unpack_int4(&p, out, inp), inp)
    } else {
        let wname = format!("{prefix}.weight");
        let wt = get_raw(&wname)?;
        let inp = match *wt.dims() {
            [o, i] if o == out && i > 0 => i,
            ref d => {
                return Err(bad(
                    &wname,
                    format!("shape {d:?}: expected [{out}, in_features] to match its weight_scale"),
                ))
            }
        };
        let raw = bytes(&wname)?;
        if raw.len() != out * inp {
            return Err(bad(
                &wname,
                format!(
                    "{} bytes for shape [{out}, {inp}]: an 8-bit weight stores one byte per value ({} bytes); is it stored in a wider dtype?",
                    raw.len(),
                    out * inp
                ),
            ));
        }
        let q: Vec<f32> = match info_dtype(&wname) {
            Some(Dtype::I8) => raw.iter().map(|&b| b as i8 as f32).collect(),
            Some(Dtype::F8_E4M3) => raw
                .iter()
                .map(|&b| float8::F8E4M3::from_bits(b).to_f32())
                .collect(),
            other => {
                return Err(Error::Dtype {
                    name: wname,
                    dtype: format!(
                        "{other:?} next to a weight_scale (expected int8 or float8_e4m3)"
                    ),
                })
            }
        };
        (q, inp)
    };
    if ng > inp {
        return Err(bad(
            &scale_name,
            format!("{ng} groups for {inp} input columns: more groups than columns"),
        ));
    }
    let zp = {
        let name = format!("{prefix}.weight_zero_point");
        if has(&name) {
            let zt = get_raw(&name)?;
            if is_packed {
                let want = [out.div_ceil(8), ng];
                if zt.dtype() != DType::I32 || zt.dims() != want {
                    return Err(bad(
                        &name,
                        format!(
                            "{:?} {:?}: packed int4 zero points are int32 of shape {want:?}",
                            zt.dtype(),
                            zt.dims()
                        ),
                    ));
                }
                unpack_zero_points(&zt.flatten_all()?.to_vec1::<i32>()?, out, ng)
            } else {
                if zt.dims() != [out, ng] {
                    return Err(Error::Shape {
                        name,
                        expected: vec![out, ng],
                        found: zt.dims().to_vec(),
                    });
                }
                match info_dtype(&name) {
                    Some(Dtype::I8) => bytes(&name)?.iter().map(|&b| b as i8 as f32).collect(),
                    _ => int_values(&name, &zt)?
                        .into_iter()
                        .map(|x| x as f32)
                        .collect(),
                }
            }
        } else {
            vec![0f32; out * ng]
        }
    };
    let g_idx: Option<Vec<usize>> = {
        let name = format!("{prefix}.weight_g_idx");
        if has(&name) {
            let gt = get_raw(&name)?;
            if gt.dims() != [inp] {
                return Err(Error::Shape {
                    name,
                    expected: vec![inp],
                    found: gt.dims().to_vec(),
                });
            }
            let v = int_values(&name, &gt)?;
            if let Some(c) = v.iter().position(|&x| x < 0 || x >= ng as i64) {
                return Err(bad(
                    &name,
                    format!(
                        "entry {c} is {}: group indices must lie in 0..{ng} (the groups of the weight_scale)",
                        v[c]
                    ),
                ));
            }
            Some(v.into_iter().map(|x| x as usize).collect())
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
    if let Some(k) = w.iter().position(|x| !x.is_finite()) {
        return Err(bad(
            &format!("{prefix}.weight"),
            format!(
                "dequantizes to {} at [{}, {}]: stored values must give finite weights",
                w[k],
                k / inp,
                k % inp
            ),
        ));
    }
    Ok(Some((w, out, inp)))
}

/// Writes the dense bf16 equivalent of a (possibly compressed) checkpoint: every quantized
/// Linear dequantized exactly as compressed-tensors does, `quantization_config` removed.
pub fn dequantize_checkpoint(
    ckpt: &super::Checkpoint,
    out: &std::path::Path,
    opts: &super::WriteOptions,
) -> Result<()> {
    ckpt.check_dense_shapes()?;
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
                let Some((w, out_f, in_f)) = ckpt.dequantized_shaped(prefix)? else {
                    continue;
                };
                let t = Tensor::from_vec(w, (out_f, in_f), &Device::Cpu)?.to_dtype(DType::BF16)?;
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
