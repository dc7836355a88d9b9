//! Calibration: token samples, and the sequential layer-by-layer pass that quantizers use.
//! Activations are captured one layer at a time (never the whole model's), and each layer's
//! quantized output feeds the next layer's calibration, so later layers see upstream error.

use std::collections::BTreeMap;

use candle_core::{DType, Result, Tensor, D};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{rng, TokenStream};
use crate::model::{DecoderLayer, Exaone4};

/// `n` seeded windows of `len` tokens from a token stream. Both must be at least 1 (the flags
/// `--calib-samples` and `--calib-len` of the CLI).
/// The most tokens [`samples`] draws (64 MiB of ids): far beyond any calibration or evaluation
/// set worth running, and far below what would exhaust a machine's memory.
pub const MAX_SAMPLE_TOKENS: usize = 1 << 24;

pub fn samples(stream: &TokenStream, n: usize, len: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    if n == 0 {
        candle_core::bail!("0 samples: at least 1 is needed");
    }
    if len == 0 {
        candle_core::bail!("samples of 0 tokens: at least 1 is needed");
    }
    if n.checked_mul(len).is_none_or(|t| t > MAX_SAMPLE_TOKENS) {
        candle_core::bail!(
            "{n} samples of {len} tokens: more than the {MAX_SAMPLE_TOKENS} tokens a calibration or evaluation set may hold"
        );
    }
    let mut r = rng(seed);
    let t = stream.sample_windows(n, len, &mut r, &candle_core::Device::Cpu)?;
    t.to_vec2::<u32>()
}

/// What is gathered about the input of one Linear (or of the group sharing it).
#[derive(Default)]
pub struct Capture {
    pub hessian: super::quant::gptq::Hessian,
    /// Σ|x| per input channel, and the row count (AWQ's activation statistic)
    pub abs_sum: Option<Tensor>,
    pub rows: usize,
    /// up to `keep_rows` input rows, for AWQ's loss
    pub kept: Vec<Tensor>,
}

#[derive(Clone, Copy, Debug)]
pub struct CaptureOpts {
    pub hessian: bool,
    pub abs_mean: bool,
    pub keep_rows: usize,
}

impl Capture {
    fn add(&mut self, x: &Tensor, o: &CaptureOpts) -> Result<()> {
        let inp = x.dim(D::Minus1)?;
        let x2 = x.reshape(((), inp))?;
        if o.hessian {
            self.hessian.add(&x2)?;
        }
        if o.abs_mean {
            let s = x2.to_dtype(DType::F32)?.abs()?.sum(0)?;
            self.abs_sum = Some(match &self.abs_sum {
                None => s,
                Some(a) => (a + s)?,
            });
        }
        let have: usize = self.kept.iter().map(|t| t.dim(0).unwrap_or(0)).sum();
        if have < o.keep_rows {
            let take = (o.keep_rows - have).min(x2.dim(0)?);
            self.kept.push(x2.narrow(0, 0, take)?.to_dtype(DType::F32)?);
        }
        self.rows += x2.dim(0)?;
        if o.abs_mean {
            if let Some(a) = &self.abs_sum {
                let v = a.sum_all()?.to_scalar::<f32>()?;
                if !v.is_finite() {
                    candle_core::bail!("calibration activations contain NaN or infinity");
                }
            }
        }
        Ok(())
    }

    pub fn abs_mean(&self) -> Result<Tensor> {
        match &self.abs_sum {
            Some(s) => s / self.rows as f64,
            None => candle_core::bail!("abs mean was not captured"),
        }
    }

    pub fn kept_rows(&self) -> Result<Tensor> {
        Tensor::cat(&self.kept, 0)
    }
}

/// What a layer-by-layer method does to layer `i`, given the captures of its inputs.
pub type PerLayer<'a> =
    dyn FnMut(usize, &mut DecoderLayer, &BTreeMap<String, Capture>) -> Result<()> + 'a;

/// Runs `calib` through `model` layer by layer. For each layer, `captures` of every Linear
/// input are gathered with the layer as it is; `per_layer(i, layer, captures)` then changes
/// the layer (quantizes it) and the changed layer's output feeds layer i+1. Returns the model
/// with every layer changed.
pub fn sequential(
    model: &Exaone4,
    calib: &[Vec<u32>],
    chunk: usize,
    opts: CaptureOpts,
    label: &str,
    per_layer: &mut PerLayer,
) -> Result<Exaone4> {
    if calib.is_empty() {
        candle_core::bail!("no calibration samples");
    }
    let t = calib[0].len();
    if t == 0 || calib.iter().any(|c| c.len() != t) {
        candle_core::bail!(
            "calibration samples must all hold the same number (at least 1) of tokens; the first holds {t}"
        );
    }
    if t > model.config.max_position_embeddings {
        candle_core::bail!(
            "calibration samples of {t} tokens exceed the model's context (max_position_embeddings {})",
            model.config.max_position_embeddings
        );
    }
    for (i, c) in calib.iter().enumerate() {
        if let Err(e) = model
            .config
            .check_ids(c, &format!("calibration sample {i}"))
        {
            candle_core::bail!("{e}");
        }
    }
    let mut m = model.share();
    let dev = m.device().clone();
    // hidden states of every chunk at the current layer's input
    let mut hs: Vec<Tensor> = vec![];
    for c in calib.chunks(chunk.max(1)) {
        let flat: Vec<u32> = c.iter().flat_map(|s| s.iter().copied()).collect();
        hs.push(m.embed(&Tensor::from_vec(flat, (c.len(), t), &dev)?)?);
    }
    let bar = ProgressBar::new(m.layers.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} layer {pos}/{len} (eta {eta}) {msg}",
        )
        .expect("template"),
    );
    bar.set_prefix(label.to_string());
    for i in 0..m.layers.len() {
        let mut caps: BTreeMap<String, Capture> = BTreeMap::new();
        for h in &hs {
            let b = h.dim(0)?;
            let ctx = m.context(b, t, 0, &vec![0; b], None)?;
            m.layers[i].forward_hooked(
                i,
                h,
                &ctx,
                Some(&mut |name: &str, x: &Tensor| {
                    caps.entry(name.to_string()).or_default().add(x, &opts)
                }),
            )?;
        }
        per_layer(i, &mut m.layers[i], &caps)?;
        for h in hs.iter_mut() {
            let b = h.dim(0)?;
            let ctx = m.context(b, t, 0, &vec![0; b], None)?;
            *h = m.layers[i].forward(i, h, &ctx)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(m)
}

/// Calibration documents from a file, as `data::read_documents` reads them (`.jsonl`: each
/// line's `text`, or its `messages` — with the line's `tools`, if any — rendered through the
/// model's chat `template`; any other file: each non-empty line), except that the chat turns
/// go through `template` (the model directory's own, or the built-in EXAONE 4 format). With
/// `wrap_plain`, plain texts become user turns of the template as well.
pub fn read_documents_with_template(
    path: &std::path::Path,
    template: &crate::model::chat_template::ChatTemplate,
    wrap_plain: bool,
) -> crate::Result<Vec<String>> {
    use crate::model::ChatMessage;
    use crate::Error;
    let none = serde_json::Map::new();
    let wrap = |t: String| -> crate::Result<String> {
        if wrap_plain {
            template.render(&[ChatMessage::user(&t)], false, &none)
        } else {
            Ok(t)
        }
    };
    let lines = crate::data::read_lines(path).map_err(|e| Error::io(path, e))?;
    if lines.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: holds no text (every line empty); give a file with one document per line",
            path.display()
        )));
    }
    if path.extension().is_none_or(|e| e != "jsonl") {
        return lines.into_iter().map(wrap).collect();
    }
    let at = |i: usize, msg: String| Error::Invalid(format!("{}:{}: {msg}", path.display(), i + 1));
    let mut docs = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).map_err(|e| at(i, e.to_string()))?;
        if let Some(msgs) = v.get("messages").and_then(|m| m.as_array()) {
            let tools = v
                .get("tools")
                .and_then(|t| t.as_array())
                .map(|t| t.as_slice());
            let text = template
                .render_json(msgs, tools, false, &none)
                .map_err(|e| at(i, e.to_string()))?;
            docs.push(text);
        } else if let Some(t) = v.get("text").and_then(|t| t.as_str()) {
            docs.push(wrap(t.to_string())?);
        } else {
            return Err(at(i, "no string field \"text\" (or \"messages\")".into()));
        }
    }
    Ok(docs)
}
