//! Text generation: greedy or sampled, batched (left-padded), through the KV cache, with the
//! stopping rules of HF transformers' `generate` (eos ids, max/min new tokens).

use candle_core::{DType, Device, Result, Tensor, D};
use candle_transformers::generation::{LogitsProcessor, Sampling as CandleSampling};

use super::exaone4::Exaone4;

#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    Greedy,
    /// temperature sampling, optionally nucleus (top-p), reproducible from `seed`
    Sample {
        temperature: f64,
        top_p: Option<f64>,
        seed: u64,
    },
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// eos is masked out until this many tokens were generated (as HF's MinNewTokensLogitsProcessor)
    pub min_new_tokens: usize,
    pub eos_ids: Vec<u32>,
    pub pad_id: u32,
    pub sampling: Sampling,
}

impl GenerateOptions {
    /// Whether the sampling parameters are usable: the rule broken, if not.
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Sampling::Sample {
            temperature, top_p, ..
        } = &self.sampling
        {
            check_sampling(Some(*temperature), *top_p, "temperature", "top_p")?;
        }
        Ok(())
    }

    pub fn greedy(max_new_tokens: usize, eos_ids: Vec<u32>) -> Self {
        Self {
            max_new_tokens,
            min_new_tokens: 0,
            eos_ids,
            pad_id: 0,
            sampling: Sampling::Greedy,
        }
    }
}

/// Wall-clock split of one `generate` call (the device is synchronised at both ends: every
/// step reads its chosen tokens back to the host).
#[derive(Clone, Debug, Default)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    /// prefill of the whole batch, up to and including the first token chosen
    pub prefill_secs: f64,
    /// decode steps after the first token
    pub decode_steps: usize,
    pub decode_secs: f64,
}

/// Generates continuations of `prompts`. Each output holds only new tokens and ends with the
/// eos token that stopped it, if any.
pub fn generate(
    model: &Exaone4,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
) -> Result<Vec<Vec<u32>>> {
    Ok(generate_timed(model, prompts, opts)?.0)
}

/// `generate`, also returning how long prefill and decoding took.
pub fn generate_timed(
    model: &Exaone4,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
) -> Result<(Vec<Vec<u32>>, GenerateStats)> {
    let b = prompts.len();
    let mut stats = GenerateStats::default();
    if b == 0 || opts.max_new_tokens == 0 {
        return Ok((vec![vec![]; b], stats));
    }
    let t0 = std::time::Instant::now();
    if prompts.iter().any(|p| p.is_empty()) {
        candle_core::bail!("generate: every prompt needs at least one token");
    }
    if let Err(e) = opts.check() {
        candle_core::bail!("generate: {e}");
    }
    for (i, p) in prompts.iter().enumerate() {
        if let Err(e) = model.config.check_ids(p, &format!("generate: prompt {i}")) {
            candle_core::bail!("{e}");
        }
    }
    if (opts.pad_id as usize) >= model.config.vocab_size && prompts.len() > 1 {
        candle_core::bail!(
            "generate: pad id {} is outside the vocabulary (vocab_size {})",
            opts.pad_id,
            model.config.vocab_size
        );
    }
    let dev = model.device().clone();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    // never past the context: the KV cache is sized prompt + new tokens
    let max_new_tokens = max_new_tokens_within(&model.config, longest, opts.max_new_tokens);
    if max_new_tokens == 0 {
        return Ok((vec![vec![]; b], stats));
    }
    let pad: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let mut ids = Vec::with_capacity(b * longest);
    for p in prompts {
        ids.extend(std::iter::repeat_n(opts.pad_id, longest - p.len()));
        ids.extend_from_slice(p);
    }
    let mut cache = model.new_cache(b, longest + max_new_tokens, pad)?;
    let input = Tensor::from_vec(ids, (b, longest), &dev)?;
    let h = model.forward_hidden(&input, Some(&mut cache))?;
    let mut last = model.logits(&h.narrow(1, longest - 1, 1)?.squeeze(1)?)?; // [b, vocab]

    // NaN logits argmax to token 0 every step: said once, not printed as an answer
    let total = last.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    static SAID: std::sync::Once = std::sync::Once::new();
    if !total.is_finite() {
        SAID.call_once(|| eprintln!("warning: generate: the model's first logits are not finite (NaN or inf weights? `exaone-compress package --model DIR --check` finds them): what follows is meaningless"));
    }

    let vocab = model.config.vocab_size;
    let eos_mask = if opts.eos_ids.is_empty() || opts.min_new_tokens == 0 {
        None
    } else {
        let mut m = vec![0f32; vocab];
        for &e in &opts.eos_ids {
            if (e as usize) < vocab {
                m[e as usize] = f32::NEG_INFINITY;
            }
        }
        Some(Tensor::from_vec(m, vocab, &dev)?)
    };
    let mut samplers: Vec<LogitsProcessor> = match &opts.sampling {
        Sampling::Greedy => vec![],
        Sampling::Sample {
            temperature,
            top_p,
            seed,
        } => (0..b)
            .map(|r| {
                let s = match top_p {
                    Some(p) => CandleSampling::TopP {
                        p: *p,
                        temperature: *temperature,
                    },
                    None => CandleSampling::All {
                        temperature: *temperature,
                    },
                };
                LogitsProcessor::from_sampling(seed.wrapping_add(r as u64), s)
            })
            .collect(),
    };

    stats.prompt_tokens = b * longest;
    let mut out: Vec<Vec<u32>> = vec![vec![]; b];
    let mut done = vec![false; b];
    let mut t_decode = None;
    for step in 0..max_new_tokens {
        if step < opts.min_new_tokens {
            if let Some(m) = &eos_mask {
                last = last.broadcast_add(m)?;
            }
        }
        let next: Vec<u32> = match opts.sampling {
            Sampling::Greedy => last.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?,
            _ => {
                let rows = last.to_device(&Device::Cpu)?;
                (0..b)
                    .map(|r| samplers[r].sample(&rows.get(r)?))
                    .collect::<Result<_>>()?
            }
        };
        if step == 0 {
            stats.prefill_secs = t0.elapsed().as_secs_f64();
            t_decode = Some(std::time::Instant::now());
        } else {
            stats.decode_steps += 1;
        }
        for r in 0..b {
            if !done[r] {
                out[r].push(next[r]);
                done[r] = opts.eos_ids.contains(&next[r]);
            }
        }
        if done.iter().all(|&d| d) || step + 1 == max_new_tokens {
            break;
        }
        let feed: Vec<u32> = (0..b)
            .map(|r| if done[r] { opts.pad_id } else { next[r] })
            .collect();
        let input = Tensor::from_vec(feed, (b, 1), &dev)?;
        let h = model.forward_hidden(&input, Some(&mut cache))?;
        last = model.logits(&h.squeeze(1)?)?;
    }
    stats.decode_secs = t_decode.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    Ok((out, stats))
}

/// How many new tokens a prompt of `prompt_len` tokens may get when `requested` are asked for:
/// as many as keep every token that runs through the model within the context
/// (`max_position_embeddings`) — the last new token is never run, so a prompt that fills the
/// context still gets one, as vLLM gives it (a request stops once its tokens exceed
/// `max_model_len`); none for a longer prompt. Computed without overflow.
pub fn max_new_tokens_within(
    cfg: &super::Exaone4Config,
    prompt_len: usize,
    requested: usize,
) -> usize {
    match cfg.max_position_embeddings.checked_sub(prompt_len) {
        Some(left) => requested.min(left.saturating_add(1)),
        None => 0,
    }
}

/// Temperature must be finite and > 0, top-p in (0, 1]: the rule broken, naming the values by
/// `t_name` and `p_name` (a flag or a field).
pub fn check_sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    t_name: &str,
    p_name: &str,
) -> std::result::Result<(), String> {
    if let Some(t) = temperature {
        if !(t.is_finite() && t > 0.0) {
            return Err(format!(
                "{t_name} {t}: must be a finite number > 0 (use greedy decoding for 0)"
            ));
        }
    }
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(format!("{p_name} {p}: must lie in (0, 1]"));
        }
    }
    Ok(())
}

/// The parts of `generation_config.json` generation reads.
#[derive(Clone, Debug, Default)]
pub struct GenerationConfig {
    pub do_sample: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub eos_ids: Vec<u32>,
}

impl GenerationConfig {
    /// Reads `dir/generation_config.json`; absent or unreadable means HF's defaults (greedy).
    /// (`try_from_dir` says when the file is there but unreadable.)
    pub fn from_dir(dir: &std::path::Path) -> Self {
        Self::try_from_dir(dir).unwrap_or_default()
    }

    /// Reads `dir/generation_config.json`: HF's defaults (greedy) when there is none, an error
    /// naming the file when it cannot be read or is not JSON.
    pub fn try_from_dir(dir: &std::path::Path) -> crate::Result<Self> {
        let path = dir.join("generation_config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(crate::Error::io(&path, e)),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| crate::Error::json(&path, e))?;
        let eos_ids = match v.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_u64().map(|x| x as u32))
                .collect(),
            _ => vec![],
        };
        Ok(Self {
            do_sample: v
                .get("do_sample")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            temperature: v.get("temperature").and_then(|x| x.as_f64()),
            top_p: v.get("top_p").and_then(|x| x.as_f64()),
            eos_ids,
        })
    }
}

/// What a caller asks of one generation on top of the model's `generation_config.json`.
#[derive(Clone, Debug, Default)]
pub struct GenerationRequest {
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    /// force greedy decoding whatever the file says
    pub greedy: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl GenerationRequest {
    /// Whether the request's values are usable, naming the CLI flags they come from.
    pub fn check(&self) -> crate::Result<()> {
        check_sampling(self.temperature, self.top_p, "--temperature", "--top-p")
            .map_err(crate::Error::Flag)
    }
}

impl GenerationConfig {
    /// The options HF transformers' `generate` would use: an explicit temperature or top-p
    /// (or the file's `do_sample`) means sampling, with values from the request, else the file,
    /// else temperature 1; `greedy` overrides all. Stop ids come from the file, else the model's
    /// config.
    pub fn options(&self, req: &GenerationRequest, cfg: &super::Exaone4Config) -> GenerateOptions {
        let sample =
            !req.greedy && (req.temperature.is_some() || req.top_p.is_some() || self.do_sample);
        let sampling = if sample {
            Sampling::Sample {
                temperature: req.temperature.or(self.temperature).unwrap_or(1.0),
                top_p: req.top_p.or(self.top_p),
                seed: req.seed,
            }
        } else {
            Sampling::Greedy
        };
        let eos_ids = if self.eos_ids.is_empty() {
            cfg.eos_token_ids.clone()
        } else {
            self.eos_ids.clone()
        };
        GenerateOptions {
            max_new_tokens: req.max_new_tokens,
            min_new_tokens: req.min_new_tokens,
            eos_ids,
            pad_id: cfg.pad_token_id.unwrap_or(0),
            sampling,
        }
    }
}

/// A deterministic stand-in prompt of `len` token ids for speed measurements and kernel
/// checks: ids spread over the vocabulary (skipping the 4 lowest, special in EXAONE's
/// tokenizers), starting `offset` steps into the sequence.
pub fn synthetic_ids(vocab: usize, len: usize, offset: usize) -> Vec<u32> {
    let span = vocab.saturating_sub(4).max(1);
    (0..len)
        .map(|i| (4 + ((offset + i) * 7919) % span) as u32)
        .collect()
}
