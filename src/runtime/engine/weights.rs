//! A model's weights on the device as the decode and serving engines read them: each layer's
//! Linears stacked where they share an input (q/k/v, gate/up) and kept as the checkpoint stores
//! them — bf16, W4A16 packed int4 (the W4 GEMM's layout, and the GEMVs' packing), W8A8
//! int8 or (on sm_89+) fp8 e4m3 with per-channel scales —, the norms, the embedding and the
//! RoPE tables; and [`Gemm`], which runs one Linear over any number of rows with what suits its
//! storage and row count.

use std::sync::Arc;

use candle_core::cuda::cudarc::cublas::CudaBlas;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda::CudaDevice;
use candle_core::{DType, Device, Result};
use half::bf16;

use super::{ck, EngineInfo};
use crate::checkpoint::Checkpoint;
use crate::model::exaone4::LINEAR_NAMES;
use crate::model::layers::inv_freq;
use crate::model::Exaone4Config;
use crate::runtime::int4::W4Buffers;
use crate::runtime::launch::gemm::gemm_bf16;
use crate::runtime::launch::gemm_lt::Fp8Lt;
use crate::runtime::launch::gemm_q8::{
    gemm_fp8_lt_quant, gemm_int8_cublas_quant, gemm_q8, quant_rows_fp8, OutQuant, Q8Gemm, Q8Kind,
};
use crate::runtime::launch::gemv::{gemv_bf16, Dense};
use crate::runtime::launch::norm_rope::silu_mul_rows;
use crate::runtime::launch::norm_rope::{rmsnorm_rows, RmsNormRows};
use crate::runtime::launch::quant::{quant_rows_int8, rmsnorm_quant_rows};
use crate::runtime::launch::wgmma_on;
use crate::runtime::launch::{cuda_err, fp8_supported, Dev};
use crate::runtime::quantized::{q8_path, Q8Path, FP8_LT_MIN_ROWS};
use crate::runtime::quantized::{Fp8Weights, Int8Weights, PackedInt4};

/// One (possibly stacked) Linear's weights.
pub(crate) enum Weights {
    Dense(CudaSlice<bf16>),
    Int4(PackedInt4),
    Int8(Int8Weights),
    /// W8A8 fp8 e4m3 with dynamic per-token fp8 activations, on a GPU with fp8 tensor cores
    Fp8(Fp8Weights),
    /// a compressed format with no kernel here (FP8 before sm_89, …), dequantized to bf16 at load
    Emulated(CudaSlice<bf16>),
}

pub(crate) struct Lin {
    pub(crate) w: Weights,
    pub(crate) n: usize,
    pub(crate) k: usize,
}

impl Lin {
    /// Bytes read from memory to apply it once (weights and their scales).
    fn bytes(&self) -> u64 {
        let (n, k) = (self.n as u64, self.k as u64);
        match &self.w {
            Weights::Dense(_) | Weights::Emulated(_) => n * k * 2,
            Weights::Int4(p) => {
                let groups = n * k / p.group as u64;
                n * k / 2 + groups * 2 * (1 + p.asymmetric as u64)
            }
            Weights::Int8(_) | Weights::Fp8(_) => n * k + n * 4,
        }
    }
}

pub(crate) struct Layer {
    pub(crate) qkv: Lin,
    pub(crate) o: Lin,
    pub(crate) gate_up: Lin,
    pub(crate) down: Lin,
    pub(crate) q_norm: CudaSlice<bf16>,
    pub(crate) k_norm: CudaSlice<bf16>,
    pub(crate) post_attn: CudaSlice<bf16>,
    pub(crate) post_ff: CudaSlice<bf16>,
    pub(crate) use_rope: bool,
    /// keys a query sees, itself included, on a sliding-window layer
    pub(crate) window: Option<usize>,
}

impl Layer {
    fn linears(&self) -> [&Lin; 4] {
        [&self.qkv, &self.o, &self.gate_up, &self.down]
    }
}

pub(crate) fn upload<T: DeviceRepr>(s: &Arc<CudaStream>, v: &[T]) -> Result<CudaSlice<T>> {
    s.clone_htod(v).map_err(cuda_err)
}

pub(crate) fn zeros<T: DeviceRepr + ValidAsZeroBits>(
    s: &Arc<CudaStream>,
    n: usize,
) -> Result<CudaSlice<T>> {
    s.alloc_zeros::<T>(n.max(1)).map_err(cuda_err)
}

fn dense(ckpt: &Checkpoint, name: &str, shape: &[usize]) -> Result<Vec<bf16>> {
    ckpt.get(name, shape, DType::BF16, &Device::Cpu)
        .map_err(ck)?
        .flatten_all()?
        .to_vec1()
}

/// Loads Linears `names` of layer `i` stacked along their outputs; with `all_formats`, W8A8 int8
/// ones natively, W8A8 fp8 ones natively where `fp8` (the GPU has fp8 tensor cores and the
/// checkpoint quantizes activations to fp8) and other compressed formats dequantized to bf16
/// (else an error names them).
#[allow(clippy::too_many_arguments)]
fn linear(
    ckpt: &Checkpoint,
    s: &Arc<CudaStream>,
    i: usize,
    names: &[&str],
    outs: &[usize],
    k: usize,
    all_formats: bool,
    fp8: bool,
) -> Result<Lin> {
    let prefixes: Vec<String> = names
        .iter()
        .map(|n| format!("model.layers.{i}.{n}"))
        .collect();
    // the stacked gate/up Linear: stored as pairs so the W4A16 GEMM gates in its epilogue
    let packed = if names == &LINEAR_NAMES[4..6] {
        PackedInt4::load_gate_up(ckpt, &prefixes, s)?
    } else {
        PackedInt4::load(ckpt, &prefixes, s)?
    };
    if let Some(p) = packed {
        return Ok(Lin {
            n: p.n,
            k: p.k,
            w: Weights::Int4(p),
        });
    }
    if all_formats {
        if let Some(w) = Int8Weights::load(ckpt, &prefixes, s)? {
            return Ok(Lin {
                n: w.n,
                k: w.k,
                w: Weights::Int8(w),
            });
        }
    }
    if all_formats && fp8 {
        if let Some(w) = Fp8Weights::load(ckpt, &prefixes, s)? {
            return Ok(Lin {
                n: w.0.n,
                k: w.0.k,
                w: Weights::Fp8(w),
            });
        }
    }
    let mut w = vec![];
    let mut emulated = false;
    for (p, &o) in prefixes.iter().zip(outs) {
        if ckpt.contains(&format!("{p}.weight_scale")) {
            if !all_formats {
                candle_core::bail!(
                    "{p}: the decode engine runs bf16 and W4A16 (pack-quantized) Linears; this one is stored in another compressed format (the serving engine runs it)"
                );
            }
            // another compressed format (FP8, int8 with per-tensor or group scales): run it
            // dequantized to bf16, exact to its stored values but not faster than bf16
            let (deq, rows, cols) = ckpt.dequantized_shaped(p).map_err(ck)?.ok_or_else(|| {
                candle_core::Error::Msg(format!("{p}: has a weight_scale but no compressed weight"))
            })?;
            if (rows, cols) != (o, k) {
                candle_core::bail!("{p}: dequantized to [{rows}, {cols}], expected [{o}, {k}]");
            }
            w.extend(deq.into_iter().map(bf16::from_f32));
            emulated = true;
            continue;
        }
        w.extend(dense(ckpt, &format!("{p}.weight"), &[o, k])?);
    }
    Ok(Lin {
        w: if emulated {
            Weights::Emulated(upload(s, &w)?)
        } else {
            Weights::Dense(upload(s, &w)?)
        },
        n: outs.iter().sum(),
        k,
    })
}

/// Everything of the model that lives on the device.
pub(crate) struct ModelWeights {
    pub(crate) embed: CudaSlice<bf16>,
    pub(crate) lm_head: Option<CudaSlice<bf16>>,
    pub(crate) norm: CudaSlice<bf16>,
    pub(crate) layers: Vec<Layer>,
    /// RoPE tables [positions, head_dim / 2]
    pub(crate) cos: CudaSlice<bf16>,
    pub(crate) sin: CudaSlice<bf16>,
    pub(crate) info: EngineInfo,
}

impl ModelWeights {
    /// Loads `ckpt` with RoPE tables for `positions` positions; with `all_formats` (the serving
    /// engine) W8A8 int8 Linears natively and other compressed formats dequantized to bf16, else
    /// bf16 and W4A16 only (an error naming the format otherwise).
    pub(crate) fn load(
        ckpt: &Checkpoint,
        s: &Arc<CudaStream>,
        positions: usize,
        all_formats: bool,
    ) -> Result<Self> {
        let cfg = ckpt.config.clone();
        let (hd, h) = (cfg.head_dim, cfg.hidden_size);
        if !(hd == 64 || hd == 128)
            || h % 8 != 0
            || !cfg
                .num_attention_heads
                .is_multiple_of(cfg.num_key_value_heads)
        {
            candle_core::bail!("the CUDA engines need head_dim 64 or 128 and hidden % 8 == 0");
        }
        let (nq, nkv, inter) = (
            cfg.num_attention_heads * hd,
            cfg.num_key_value_heads * hd,
            cfg.intermediate_size,
        );
        // fp8 weights run as W8A8 fp8 where the GPU has the instructions and the checkpoint
        // quantizes activations to fp8 too (else dequantized: weight-only fp8 stays exact)
        let fp8_acts = ckpt
            .quant_info()
            .map_err(ck)?
            .and_then(|q| q.scheme)
            .is_some_and(|sc| {
                sc.input_activations.is_some_and(|a| {
                    a.num_bits == 8 && a.ty == crate::checkpoint::scheme::NumType::Float
                })
            });
        let fp8 = all_formats && fp8_acts && fp8_supported(s)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{i}.{n}.weight");
            let lin = |names: &[&str], outs: &[usize], k| {
                linear(ckpt, s, i, names, outs, k, all_formats, fp8)
            };
            layers.push(Layer {
                qkv: lin(&LINEAR_NAMES[0..3], &[nq, nkv, nkv], h)?,
                o: lin(&LINEAR_NAMES[3..4], &[h], nq)?,
                gate_up: lin(&LINEAR_NAMES[4..6], &[inter, inter], h)?,
                down: lin(&LINEAR_NAMES[6..7], &[h], inter)?,
                q_norm: upload(s, &dense(ckpt, &p("self_attn.q_norm"), &[hd])?)?,
                k_norm: upload(s, &dense(ckpt, &p("self_attn.k_norm"), &[hd])?)?,
                post_attn: upload(s, &dense(ckpt, &p("post_attention_layernorm"), &[h])?)?,
                post_ff: upload(s, &dense(ckpt, &p("post_feedforward_layernorm"), &[h])?)?,
                use_rope: cfg.layer_uses_rope(i),
                window: cfg.layer_window(i),
            });
        }
        let embed = upload(
            s,
            &dense(ckpt, "model.embed_tokens.weight", &[cfg.vocab_size, h])?,
        )?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(upload(
                s,
                &dense(ckpt, "lm_head.weight", &[cfg.vocab_size, h])?,
            )?)
        };
        let norm = upload(s, &dense(ckpt, "model.norm.weight", &[h])?)?;
        let (cos, sin) = rope_tables(&cfg, positions);
        let kinds: Vec<&str> = layers
            .iter()
            .flat_map(|l| l.linears())
            .map(|l| match l.w {
                Weights::Dense(_) => "bf16",
                Weights::Int4(_) => "w4a16",
                Weights::Int8(_) => "w8a8",
                Weights::Fp8(_) => "w8a8-fp8",
                Weights::Emulated(_) => "dequantized-to-bf16",
            })
            .collect();
        let mut words: Vec<&str> = kinds.clone();
        words.sort_unstable();
        words.dedup();
        // a quantized checkpoint keeps some Linears dense only if told to (its ignore list)
        let weights = match words.as_slice() {
            [one] => one.to_string(),
            _ => words
                .iter()
                .filter(|w| **w != "bf16")
                .copied()
                .collect::<Vec<_>>()
                .join("+"),
        };
        let bytes = layers
            .iter()
            .flat_map(|l| l.linears())
            .map(|l| l.bytes())
            .sum::<u64>()
            + (cfg.vocab_size * h * 2 + h * 2) as u64;
        Ok(Self {
            embed,
            lm_head,
            norm,
            layers,
            cos: upload(s, &cos)?,
            sin: upload(s, &sin)?,
            info: EngineInfo {
                weights,
                weight_bytes_per_step: bytes,
            },
        })
    }

    /// The output projection (the embedding where tied).
    pub(crate) fn head(&self) -> &CudaSlice<bf16> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The scratch [`Gemm`] needs for products of up to `rows` rows of these Linears.
    pub(crate) fn scratch(&self, s: &Arc<CudaStream>, rows: usize) -> Result<Scratch> {
        let all = || self.layers.iter().flat_map(|l| l.linears());
        // W4A16: split-K partials, act-order gathers and (very wide products) a dequantized
        // weight, each the largest any Linear needs for up to `rows` rows
        let mut w4 = crate::runtime::int4::W4Needs::default();
        let sms = crate::runtime::int4::sm_count_of(s)?;
        for l in all() {
            if let Weights::Int4(p) = &l.w {
                let x = p.needs_up_to(sms, rows);
                w4.ws = w4.ws.max(x.ws);
                w4.xp = w4.xp.max(x.xp);
                w4.wtmp = w4.wtmp.max(x.wtmp);
            }
        }
        let some = |n: usize| (n > 0).then_some(n);
        // the 8-bit GEMMs scale in their epilogue: only the quantized activations are scratch,
        // plus, where a product can reach cuBLAS's int8 GEMM (prefill chunks), its int32 output
        let max_k = all()
            .filter(|l| matches!(l.w, Weights::Int8(_) | Weights::Fp8(_)))
            .map(|l| l.k)
            .max();
        let wgmma = wgmma_on(s)?;
        let max_n_int8 = all()
            .filter(|l| matches!(l.w, Weights::Int8(_)))
            .map(|l| l.n)
            .max()
            .filter(|_| {
                let cublas =
                    |gated| q8_path(Q8Kind::Int8, rows, gated, wgmma) == Q8Path::CublasInt8;
                cublas(false) || cublas(true)
            });
        // fp8 products of many rows go to cuBLASLt where it scales row-wise (Hopper on)
        let any_fp8 = all().any(|l| matches!(l.w, Weights::Fp8(_)));
        let fp8_lt = (any_fp8 && rows >= FP8_LT_MIN_ROWS)
            .then(|| Fp8Lt::probe_or_say(s, "fp8 GEMMs run on our tiles at every size"))
            .flatten();
        Ok(Scratch {
            wgmma,
            fp8_lt,
            wtmp: some(w4.wtmp).map(|n| zeros(s, n)).transpose()?,
            w4ws: some(w4.ws).map(|n| zeros(s, n)).transpose()?,
            w4xp: some(w4.xp).map(|n| zeros(s, n)).transpose()?,
            q8: max_k.map(|k| zeros(s, rows * k)).transpose()?,
            sx: max_k.map(|_| zeros(s, rows)).transpose()?,
            acc: max_n_int8.map(|n| zeros(s, rows * n)).transpose()?,
        })
    }
}

/// RoPE tables [positions, head_dim / 2] in bf16 from f32 products, as the candle path and
/// transformers compute them.
fn rope_tables(cfg: &Exaone4Config, positions: usize) -> (Vec<bf16>, Vec<bf16>) {
    let freqs = inv_freq(cfg);
    let n = positions * freqs.len();
    let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for p in 0..positions {
        for f in &freqs {
            let a = p as f32 * f;
            cos.push(bf16::from_f32(a.cos()));
            sin.push(bf16::from_f32(a.sin()));
        }
    }
    (cos, sin)
}

/// Device memory the Linears use beyond their inputs and outputs: a dequantized int4 weight
/// (wide W4A16 products), the 8-bit activations and their per-token scales (W8A8 int8 or fp8).
pub(crate) struct Scratch {
    pub(crate) wtmp: Option<CudaSlice<bf16>>,
    /// W4A16 split-K partials and act-order gathered activations
    w4ws: Option<CudaSlice<f32>>,
    w4xp: Option<CudaSlice<bf16>>,
    q8: Option<CudaSlice<u8>>,
    sx: Option<CudaSlice<f32>>,
    /// int32 products of cuBLAS's int8 GEMM, for W8A8 products of at least
    /// `quantized::CUBLAS_INT8_MIN_ROWS` rows
    acc: Option<CudaSlice<i32>>,
    /// cuBLASLt's row-wise scaled fp8 GEMM, for fp8 products of at least [`FP8_LT_MIN_ROWS`]
    /// rows, where the GPU runs it
    fp8_lt: Option<Fp8Lt>,
    /// whether our warpgroup-MMA tiles run here (`launch::wgmma_on`; then
    /// `quantized::q8_path` keeps plain int8 products on our tiles)
    wgmma: bool,
}

/// Rows up to which the engines' bf16 Linears run our GEMV rather than cuBLAS: in the H200 GEMM
/// sweep (`reports/gemm_sweep`, the W4A16 section's `bf16 gemv` and `bf16 cublas` rows) the GEMV
/// leads at one row on three of the 1.2B's four shapes (qkv 5.4 vs 6.2 µs) but costs ~2 µs more
/// per extra row, so that at four rows cuBLAS takes half its time on every shape (qkv 6.2 vs
/// 11.1 µs).
pub(crate) const DENSE_GEMV_MAX_ROWS: usize = 1;

/// What the producer of a Linear's input left in the scratch: with `Some`, the rows' per-token
/// 8-bit quantization (of that kind, `rows` rows of the buffer at `x`), written by the RMSNorm
/// that made them ([`Gemm::norm_residual`]), so that the product skips its own quantizer.
#[derive(Clone, Copy, Default)]
pub(crate) struct Staged(Option<(Q8Kind, u64, usize)>);

/// Runs Linears on one stream: bf16 by GEMV (one row) or cuBLAS, W4A16 by the W4 tensor-core
/// GEMM (`PackedInt4::forward`: the GEMV or dequantize + cuBLAS at the row counts where they
/// win), W8A8 (int8, fp8) by per-token quantization and our 8-bit tensor-core GEMM with the
/// scales in its epilogue, as the candle forward does, on the path `quantized::q8_path` picks: on
/// Hopper plain int8 products of 1024 rows or more on our warpgroup-MMA tiles; from
/// `CUBLAS_INT8_MIN_ROWS` rows the other int8 products on cuBLAS's int8 GEMM and the scales in a
/// second pass, from [`FP8_LT_MIN_ROWS`] rows fp8 on cuBLASLt's row-wise scaled fp8 GEMM where the
/// GPU runs it.
pub(crate) struct Gemm<'a> {
    pub(crate) dev: &'a CudaDevice,
    pub(crate) blas: &'a CudaBlas,
    pub(crate) stream: &'a Arc<CudaStream>,
    pub(crate) scratch: &'a Scratch,
}

fn missing(what: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "linear: no {what} scratch allocated for this model"
    ))
}

impl<'a> Gemm<'a> {
    fn d<'b, T>(&self, b: &'b CudaSlice<T>) -> Dev<'b, T> {
        Dev::new(b, self.stream)
    }

    /// y [rows, n] = x [rows, k] · Wᵀ for a bf16 W [n, k]: our GEMV up to [`DENSE_GEMV_MAX_ROWS`]
    /// rows, cuBLAS beyond.
    pub(crate) fn dense(&self, w: &Dense, x: Dev<bf16>, y: Dev<bf16>, rows: usize) -> Result<()> {
        if rows > DENSE_GEMV_MAX_ROWS {
            return gemm_bf16(self.blas, x, w.w, y, rows, w.n, w.k);
        }
        gemv_bf16(self.dev, w, x, y, rows)
    }

    /// The 8-bit kind of a Linear's product (None: bf16 or W4A16 input).
    fn q8_kind(lin: &Lin) -> Option<Q8Kind> {
        match lin.w {
            Weights::Int8(_) => Some(Q8Kind::Int8),
            Weights::Fp8(_) => Some(Q8Kind::Fp8),
            _ => None,
        }
    }

    /// The RMSNorm `norm` (its output rows are the input of `next`, where a Linear reads them):
    /// where `next` is 8-bit, the norm also quantizes its output per token into the scratch
    /// (`rmsnorm_quant_rows`: the same bytes as the product's own quantizer, one launch less),
    /// and the returned [`Staged`] lets `next`'s product skip its quantizer.
    pub(crate) fn norm_residual(&self, norm: &RmsNormRows, next: Option<&Lin>) -> Result<Staged> {
        let s: &'a Scratch = self.scratch;
        let fused = next
            .filter(|_| crate::runtime::quantized::handoff())
            .filter(|l| {
                l.k == norm.n && norm.idx.is_none() && norm.row_step == 1 && norm.row_off == 0
            })
            .and_then(Self::q8_kind)
            .zip(s.q8.as_ref().zip(s.sx.as_ref()));
        let Some((kind, (q, sx))) = fused else {
            rmsnorm_rows(self.dev, norm)?;
            return Ok(Staged::default());
        };
        rmsnorm_quant_rows(self.dev, norm, kind, self.d(q), self.d(sx))?;
        Ok(Staged(Some((kind, norm.out.addr(), norm.rows))))
    }

    /// y [rows, n] = x [rows, k] · Wᵀ (gated: act [rows, n/2] = silu(gate) · up) for 8-bit
    /// weights: quantizes x per token into the scratch (unless `staged` says its producer did),
    /// then the GEMM scales (and gates) in its epilogue.
    /// `gu` (gated products only): room for the [rows, n] gate/up products where a path
    /// materialises them. `quantize_out` (gated products whose next product, down, is of the
    /// same kind): where the path's gate sees whole rows (cuBLAS int8, cuBLASLt fp8) it also
    /// quantizes y into the scratch, said by the returned [`Staged`].
    #[allow(clippy::too_many_arguments)]
    fn q8(
        &self,
        kind: Q8Kind,
        w: &Int8Weights,
        x: Dev<bf16>,
        y: Dev<bf16>,
        rows: usize,
        gu: Option<Dev<bf16>>,
        staged: Staged,
        quantize_out: bool,
    ) -> Result<Staged> {
        let gated = gu.is_some();
        let s: &'a Scratch = self.scratch;
        let q = self.d(s.q8.as_ref().ok_or_else(|| missing("8-bit"))?);
        let sx = self.d(s.sx.as_ref().ok_or_else(|| missing("8-bit"))?);
        if staged.0 != Some((kind, x.addr(), rows)) {
            match kind {
                Q8Kind::Int8 => quant_rows_int8(self.dev, x, q, sx, rows, w.k)?,
                Q8Kind::Fp8 => quant_rows_fp8(self.dev, x, q, sx, rows, w.k)?,
            }
        }
        let g = Q8Gemm {
            q,
            w: self.d(&w.w),
            sx,
            sw: self.d(&w.scale),
            y,
            m: rows,
            n: w.n,
            k: w.k,
        };
        // the gate's output quantized into the scratch the GEMM read its input from: the
        // epilogue runs after the product, so the bytes it overwrites are no longer needed.
        // Only down's product reads it, from the scratch (`Staged` names y's address, not its
        // contents): the bf16 rows are not written.
        let out = (gated && quantize_out).then_some(OutQuant {
            q,
            scale: sx,
            keep_y: false,
        });
        let done = Staged(Some((kind, y.addr(), rows)));
        let path = q8_path(kind, rows, gated, s.wgmma);
        match (path, &s.acc, &s.fp8_lt) {
            (Q8Path::CublasInt8, Some(acc), _) => {
                gemm_int8_cublas_quant(self.dev, self.blas, &g, self.d(acc), gated, out)?;
                Ok(if out.is_some() {
                    done
                } else {
                    Staged::default()
                })
            }
            (Q8Path::CublasLtFp8, _, Some(lt)) => {
                gemm_fp8_lt_quant(self.dev, lt, &g, gu, out)?;
                Ok(if out.is_some() {
                    done
                } else {
                    Staged::default()
                })
            }
            _ => {
                gemm_q8(self.dev, kind, &g, gated, None)?;
                Ok(Staged::default())
            }
        }
    }

    /// The scratch a W4A16 product may use.
    fn w4_buffers(&self) -> W4Buffers<'a> {
        let s: &'a Scratch = self.scratch;
        W4Buffers {
            ws: s.w4ws.as_ref().map(|b| Dev::new(b, self.stream)),
            xp: s.w4xp.as_ref().map(|b| Dev::new(b, self.stream)),
            wtmp: s.wtmp.as_ref().map(|b| Dev::new(b, self.stream)),
        }
    }

    /// y [rows, n] = x [rows, k] · Wᵀ.
    pub(crate) fn linear(&self, lin: &Lin, x: Dev<bf16>, y: Dev<bf16>, rows: usize) -> Result<()> {
        self.linear_staged(lin, x, y, rows, Staged::default())
    }

    /// [`Gemm::linear`] of an input its producer may have quantized already (`staged`, from
    /// [`Gemm::norm_residual`]).
    pub(crate) fn linear_staged(
        &self,
        lin: &Lin,
        x: Dev<bf16>,
        y: Dev<bf16>,
        rows: usize,
        staged: Staged,
    ) -> Result<()> {
        match &lin.w {
            Weights::Dense(w) | Weights::Emulated(w) => {
                let w = Dense {
                    w: self.d(w),
                    n: lin.n,
                    k: lin.k,
                };
                self.dense(&w, x, y, rows)
            }
            Weights::Int4(p) => {
                let buf = self.w4_buffers();
                p.forward(self.dev, self.blas, self.stream, x, y, rows, &buf, None)
            }
            Weights::Int8(w) => self
                .q8(Q8Kind::Int8, w, x, y, rows, None, staged, false)
                .map(drop),
            Weights::Fp8(w) => self
                .q8(Q8Kind::Fp8, &w.0, x, y, rows, None, staged, false)
                .map(drop),
        }
    }

    /// act [rows, n/2] = silu(gate) · up from the stacked gate/up Linear (gu [rows, n] holds the
    /// products where they are materialised; the 8-bit paths and the W4A16 GEMM gate in their
    /// epilogue), of an input its producer may have quantized already (`staged`, from
    /// [`Gemm::norm_residual`]; `Staged::default()` where it did not). Where `next` (the Linear
    /// that reads act: down) is 8-bit of the same kind and the product's gate sees whole rows,
    /// act's per-token quantization is left in the scratch too, and the returned [`Staged`]
    /// lets `next` skip its quantizer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gated(
        &self,
        lin: &Lin,
        x: Dev<bf16>,
        gu: Dev<bf16>,
        act: Dev<bf16>,
        rows: usize,
        staged: Staged,
        next: Option<&Lin>,
    ) -> Result<Staged> {
        let same = |kind| {
            crate::runtime::quantized::handoff()
                && next.and_then(Self::q8_kind) == Some(kind)
                && next.is_some_and(|l| l.k == lin.n / 2)
        };
        match &lin.w {
            Weights::Int8(w) => {
                let q = same(Q8Kind::Int8);
                return self.q8(Q8Kind::Int8, w, x, act, rows, Some(gu), staged, q);
            }
            Weights::Fp8(w) => {
                let q = same(Q8Kind::Fp8);
                return self.q8(Q8Kind::Fp8, &w.0, x, act, rows, Some(gu), staged, q);
            }
            Weights::Int4(p) => {
                let buf = self.w4_buffers();
                p.forward_gated(
                    self.dev,
                    self.blas,
                    self.stream,
                    x,
                    gu,
                    act,
                    rows,
                    &buf,
                    None,
                )?;
                return Ok(Staged::default());
            }
            _ => {}
        }
        self.linear_staged(lin, x, gu, rows, staged)?;
        silu_mul_rows(self.dev, gu, act, rows, lin.n / 2)?;
        Ok(Staged::default())
    }
}
