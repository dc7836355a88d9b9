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
    let dev = model.device().clone();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pad: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let mut ids = Vec::with_capacity(b * longest);
    for p in prompts {
        ids.extend(std::iter::repeat_n(opts.pad_id, longest - p.len()));
        ids.extend_from_slice(p);
    }
    let mut cache = model.new_cache(b, longest + opts.max_new_tokens, pad)?;
    let input = Tensor::from_vec(ids, (b, longest), &dev)?;
    let h = model.forward_hidden(&input, Some(&mut cache))?;
    let mut last = model.logits(&h.narrow(1, longest - 1, 1)?.squeeze(1)?)?; // [b, vocab]

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
    for step in 0..opts.max_new_tokens {
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
        if done.iter().all(|&d| d) || step + 1 == opts.max_new_tokens {
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
    pub fn from_dir(dir: &std::path::Path) -> Self {
        let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) else {
            return Self::default();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Self::default();
        };
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
        Self {
            do_sample: v
                .get("do_sample")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            temperature: v.get("temperature").and_then(|x| x.as_f64()),
            top_p: v.get("top_p").and_then(|x| x.as_f64()),
            eos_ids,
        }
    }
}
