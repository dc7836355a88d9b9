//! Memory-mapped access to the tensors of a model directory, one file or shards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::model::Exaone4Config;

/// Where one tensor lives and what it is.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub file: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// byte range inside the file's mapping
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    /// Stored as a dense floating-point tensor (f32, f16 or bf16), not as quantized bytes.
    pub fn is_float(&self) -> bool {
        matches!(self.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
}

/// An opened model directory: its config and every tensor of every shard, memory-mapped.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: Exaone4Config,
    files: Vec<(PathBuf, Mmap)>,
    tensors: BTreeMap<String, TensorInfo>,
}

fn to_candle_dtype(name: &str, dt: Dtype) -> Result<DType> {
    Ok(match dt {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::F8_E4M3 => DType::F8E4M3,
        // int8 weights are read as raw bytes and reinterpreted by the dequantizer
        Dtype::I8 => DType::U8,
        other => {
            return Err(Error::Dtype {
                name: name.into(),
                dtype: format!("{other:?}"),
            })
        }
    })
}

impl Checkpoint {
    /// Opens `dir`: reads `config.json`, then `model.safetensors.index.json` if present (every
    /// shard it names), else `model.safetensors`, else every `*.safetensors` in the directory.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            let what = if dir.exists() {
                "not a directory: a model is a directory with config.json and *.safetensors"
            } else {
                "no such directory"
            };
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, what),
            ));
        }
        let config = Exaone4Config::from_file(dir)?;
        let files = shard_files(dir)?;
        let mut maps = Vec::with_capacity(files.len());
        let mut tensors = BTreeMap::new();
        for (idx, path) in files.into_iter().enumerate() {
            // mapping a directory fails with "No such device": say what is wrong instead
            if path.is_dir() {
                return Err(Error::Invalid(format!(
                    "{}: is a directory, not a safetensors file",
                    path.display()
                )));
            }
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the mapping is read-only; a checkpoint modified while open is the user's
            // problem, as with every mmap-based loader (transformers, candle, vLLM).
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let (header, meta) =
                SafeTensors::read_metadata(&mmap).map_err(|e| Error::Safetensors {
                    path: path.clone(),
                    msg: e.to_string(),
                })?;
            let base = 8 + header;
            for (name, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                if s > e || base.checked_add(e).is_none_or(|end| end > mmap.len()) {
                    return Err(Error::Safetensors {
                        path: path.clone(),
                        msg: format!(
                            "tensor `{name}` claims bytes {s}..{e} after the header, past the file's {} bytes",
                            mmap.len()
                        ),
                    });
                }
                if let Some(prev) = tensors.insert(
                    name.clone(),
                    TensorInfo {
                        file: idx,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: base + s,
                        end: base + e,
                    },
                ) {
                    return Err(Error::Invalid(format!(
                        "tensor `{name}` appears in two shards ({} and {})",
                        maps.get(prev.file)
                            .map(|(p, _): &(PathBuf, Mmap)| p.display().to_string())
                            .unwrap_or_default(),
                        path.display()
                    )));
                }
            }
            maps.push((path, mmap));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            files: maps,
            tensors,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.into(),
            dir: self.dir.clone(),
        })
    }

    /// Bytes on disk of all shards.
    pub fn bytes_on_disk(&self) -> u64 {
        self.files.iter().map(|(_, m)| m.len() as u64).sum()
    }

    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// The raw bytes of a tensor (little-endian, its own dtype).
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info(name)?;
        Ok(&self.files[info.file].1[info.start..info.end])
    }

    /// Loads a tensor as stored (dtype unchanged), on `device`.
    pub fn raw(&self, name: &str, device: &Device) -> Result<Tensor> {
        let info = self.info(name)?;
        let dt = to_candle_dtype(name, info.dtype)?;
        let t = Tensor::from_raw_buffer(self.bytes(name)?, dt, &info.shape, &Device::Cpu)?;
        Ok(t.to_device(device)?)
    }

    /// Loads a tensor, checks its shape, converts it to `dtype` on `device`. A Linear weight
    /// stored compressed (compressed-tensors) is dequantized.
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if let Some(prefix) = name.strip_suffix(".weight") {
            if let Some((w, out, inp)) = self.dequantized_shaped(prefix)? {
                if shape != [out, inp] {
                    return Err(Error::Shape {
                        name: name.into(),
                        expected: shape.to_vec(),
                        found: vec![out, inp],
                    });
                }
                return Ok(Tensor::from_vec(w, shape, &Device::Cpu)?
                    .to_dtype(dtype)?
                    .to_device(device)?);
            }
        }
        let info = self.info(name)?;
        if info.shape != shape {
            return Err(Error::Shape {
                name: name.into(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        // integers read as weights would be garbage (int8 -1 read as 255), not an approximation
        let integer = !info.is_float() && !matches!(info.dtype, Dtype::F8_E4M3 | Dtype::F8_E5M2);
        if dtype.is_float() && integer {
            return Err(Error::Invalid(format!(
                "{}: tensor `{name}` is stored as {:?} and no quantization_config describes it; a dense weight is a float (F32, F16, BF16, FP8)",
                self.dir.display(),
                info.dtype
            )));
        }
        let t = self.raw(name, &Device::Cpu)?;
        // convert on the CPU when narrowing so a bf16 file on a GPU moves half the bytes
        let t = if t.dtype() == dtype {
            t
        } else {
            t.to_dtype(dtype)?
        };
        Ok(t.to_device(device)?)
    }

    /// The dequantized weight of Linear `prefix` if it is stored compressed.
    pub fn dequantized(&self, prefix: &str) -> Result<Option<Vec<f32>>> {
        Ok(self.dequantized_shaped(prefix)?.map(|(w, _, _)| w))
    }

    /// The dequantized weight of Linear `prefix` and its shape (out, in), if stored compressed.
    /// Errors name this directory, the tensor and the rule its stored values break.
    pub fn dequantized_shaped(&self, prefix: &str) -> Result<Option<(Vec<f32>, usize, usize)>> {
        super::compressed_tensors::dequantize_linear_shaped(
            prefix,
            &|n| self.contains(n),
            &|n| self.raw(n, &Device::Cpu),
            &|n| Ok(self.bytes(n)?.to_vec()),
            &|n| self.tensors.get(n).map(|i| i.dtype),
        )
        .map_err(|e| match e {
            e @ (Error::BadTensor { .. } | Error::Shape { .. } | Error::Dtype { .. }) => {
                Error::Context {
                    context: self.dir.display().to_string(),
                    source: Box::new(e),
                }
            }
            e => e,
        })
    }

    /// The `quantization_config`, parsed (None for a dense checkpoint).
    pub fn quant_info(&self) -> Result<Option<super::compressed_tensors::QuantInfo>> {
        super::compressed_tensors::quant_info(&self.config.raw)
    }

    /// The dtype most of the floating-point weights are stored in.
    pub fn storage_dtype(&self) -> Option<Dtype> {
        let mut counts: BTreeMap<String, (usize, Dtype)> = BTreeMap::new();
        for info in self.tensors.values() {
            let n: usize = info.shape.iter().product();
            let e = counts
                .entry(format!("{:?}", info.dtype))
                .or_insert((0, info.dtype));
            e.0 += n;
        }
        counts.into_values().max_by_key(|(n, _)| *n).map(|(_, d)| d)
    }
}

pub(crate) fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::json(&index, e))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::Invalid(format!("{}: no `weight_map` object", index.display()))
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        // a shard is a file of this directory: a path would read (and `package` would zip)
        // something outside the model
        if let Some(bad) = files.iter().find(|f| {
            let p = Path::new(f.as_str());
            p.components().count() != 1 || p.file_name().is_none_or(|n| n != p.as_os_str())
        }) {
            return Err(Error::Invalid(format!(
                "{}: weight_map names shard {bad:?}, which is not a file name inside the model directory",
                index.display()
            )));
        }
        let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        for f in &files {
            if !f.exists() {
                return Err(Error::io(
                    f,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "shard named in model.safetensors.index.json is missing",
                    ),
                ));
            }
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let files = safetensors_in(dir).map_err(|e| Error::io(dir, e))?;
    if files.is_empty() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.safetensors, index or *.safetensors file",
            ),
        ));
    }
    Ok(files)
}

/// Every `*.safetensors` entry of `dir`, sorted.
pub(crate) fn safetensors_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    Ok(files)
}
