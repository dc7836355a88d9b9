//! One evaluation of one variant, every measure at once, recorded as rows: the unit the
//! experiment binaries compose.

use std::path::Path;

pub use super::verdict::add_scores;
use super::verdict::{add_paired, PerToken};
use crate::data::TokenStream;
use crate::error::ResultExt;
use crate::eval::{
    divergence_per_token, measure_checkpoint_speed, measure_speed, multiple_choice_per_item,
    perplexity_per_token, McItem,
};
use crate::model::{Exaone4, Tokenizer};
use crate::record::{Results, Variant};

/// What every variant is measured on.
pub struct Suite {
    pub tokenizer: Tokenizer,
    /// perplexity text (a prefix of the test split)
    pub test: TokenStream,
    pub ppl_window: usize,
    /// sequences for KL to the base
    pub kl_sequences: Vec<Vec<u32>>,
    pub mc_items: Vec<McItem>,
    pub speed_prompt: usize,
    pub speed_new_tokens: usize,
    pub speed_warmup: usize,
    pub speed_repeats: usize,
    pub batch: usize,
    /// the reference pipeline's measures, kept as legacy columns: greedy answers to these chat
    /// prompts compared with the base model's (similarity, exact match, empty answers)
    pub legacy_prompts: Vec<String>,
    pub legacy_new_tokens: usize,
    /// the chat template the legacy prompts are rendered with: the base model's own
    /// (`eval::generated::template_and_stops`; the built-in EXAONE 4 format by default)
    pub template: crate::model::chat_template::ChatTemplate,
    /// the base model's legacy answers, generated once
    pub legacy_base: std::sync::OnceLock<Vec<String>>,
    /// the variant that is the base (`original`): its per-token NLLs and per-item results are
    /// what every variant is paired with, so measuring it measures the base once
    pub base_variant: String,
    /// the base's per-token NLLs and per-item results, kept once measured
    pub base_per_token: std::sync::OnceLock<PerToken>,
    /// the base's logits of the KL sequences, computed once (on the CPU; a GPU recomputes them)
    pub base_logits: std::sync::OnceLock<Vec<candle_core::Tensor>>,
    /// a generation-scored multiple-choice pass, as the evaluation scores (None: no such column)
    pub gen_mc: Option<GenMcSuite>,
    /// items the base answered in an extractable form in that pass: none, and the other
    /// variants' passes are skipped (a column the base cannot score ranks nothing: e.g. the
    /// 8.6 M default model, which does not follow the question format)
    pub base_gen_answered: std::sync::OnceLock<usize>,
    /// seconds of each part of the last `evaluate` (perplexity, KL, …), for the study's log
    pub parts: std::sync::Mutex<Vec<(&'static str, f64)>>,
}

/// Multiple choice scored from generated answers (`eval::generated`): every item asked through
/// the model's chat template at once on the serving runner (the CUDA engine for a checkpoint on
/// CUDA, the reference executor elsewhere), greedy, the answer read by rule.
pub struct GenMcSuite {
    pub items: Vec<McItem>,
    pub template: crate::model::chat_template::ChatTemplate,
    pub opts: crate::eval::generated::GenMcOptions,
    /// where each variant's answers go as JSONL (`<variant>.jsonl`), like lm-eval's samples
    pub samples: Option<std::path::PathBuf>,
}

/// A progress bar for one stage of measuring a variant (hidden when stderr is no terminal).
fn stage_bar(what: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(what);
    bar
}

/// Prompts in the spirit of the reference pipeline's fixed ones (Korean and English questions).
pub const LEGACY_PROMPTS: [&str; 4] = [
    "한국의 수도는 어디인가요?",
    "Explain in one sentence what a language model is.",
    "다음 문장을 영어로 번역하세요: 오늘은 날씨가 좋습니다.",
    "What is 12 plus 30?",
];

/// A variant as written to disk: its size, the weight bytes a decode step reads, and where it is
/// (timed from there on CUDA).
#[derive(Clone, Copy)]
pub struct Stored<'a> {
    pub size_bytes: u64,
    pub weight_bytes: f64,
    pub checkpoint: Option<&'a Path>,
}

/// Where a variant's checkpoint is written before it is measured, and what goes beside it.
pub struct SaveTo<'a> {
    pub dir: &'a Path,
    /// tokenizer and generation files copied from here
    pub side_files_from: Option<std::path::PathBuf>,
    /// delete the checkpoint once measured
    pub remove_after: bool,
    /// replace a variant's checkpoint already there (a directory the study made itself may be
    /// replaced; the user's `--checkpoints` only with `--overwrite`)
    pub overwrite: bool,
}

/// Weight bytes a decoder step reads: every Linear's stored weights (+ scales), norms, and the
/// lm_head (the embedding lookup reads one row). `bits(prefix)` gives a Linear's weight bits and
/// the group size of its scales, None for one scale per output row (None overall: dense bf16).
pub fn weight_bytes_per_token(model: &Exaone4, bits: &dyn Fn(&str) -> Option<StoredAs>) -> f64 {
    let mut total = 0f64;
    for (name, t) in model.named_tensors() {
        let n = t.elem_count() as f64;
        if name == "model.embed_tokens.weight" {
            if model.lm_head.is_none() {
                total += 2.0 * n; // tied: the lm_head reads the whole matrix
            }
            continue;
        }
        let prefix = name.strip_suffix(".weight").unwrap_or(&name);
        total += match bits(prefix) {
            Some((b, group)) => {
                let scales = match group {
                    Some(g) => n / g as f64,
                    None => t.dim(0).unwrap_or(0) as f64,
                };
                n * b as f64 / 8.0 + 2.0 * scales
            }
            None => 2.0 * n,
        };
    }
    total
}

/// How a quantized Linear is stored: weight bits, and the group size of its scales (None: one
/// scale per output row).
pub type StoredAs = (u32, Option<usize>);

/// The group size of a scheme's scales for `weight_bytes_per_token` (None: one per row).
pub fn scale_group(s: crate::compress::quant::Strategy) -> Option<usize> {
    match s {
        crate::compress::quant::Strategy::Group(g) => Some(g),
        crate::compress::quant::Strategy::Channel => None,
    }
}

/// Directory size in bytes.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Suite {
    /// A suite on `test` text and `kl_sequences`, with no task items, no speed runs and no
    /// legacy prompts; set the public fields for more.
    pub fn new(tokenizer: Tokenizer, test: TokenStream, kl_sequences: Vec<Vec<u32>>) -> Self {
        Self {
            tokenizer,
            ppl_window: 512.min(test.ids.len().max(2)),
            test,
            kl_sequences,
            mc_items: vec![],
            speed_prompt: 64,
            speed_new_tokens: 32,
            speed_warmup: 1,
            speed_repeats: 0,
            batch: 8,
            legacy_prompts: vec![],
            legacy_new_tokens: 32,
            template: crate::model::chat_template::ChatTemplate::builtin(),
            legacy_base: Default::default(),
            base_variant: Variant::original().name,
            base_per_token: Default::default(),
            base_logits: Default::default(),
            gen_mc: None,
            base_gen_answered: Default::default(),
            parts: Default::default(),
        }
    }

    /// The hash of how this suite measures (`device` and dtype as the results name them): the
    /// tokens, items, prompts and every setting. Results measured under the same hash are
    /// comparable row for row, so a resumed study may carry them over.
    pub fn settings_hash(&self, device: &str) -> String {
        use crate::compress::recipe::{hash_json, hash_tokens};
        let mc: Vec<_> = self
            .mc_items
            .iter()
            .map(|i| serde_json::json!([i.task, i.prompt, i.choices, i.label]))
            .collect();
        hash_json(&serde_json::json!({
            "device": device,
            "test": hash_tokens(std::slice::from_ref(&self.test.ids)),
            "test_bytes": self.test.bytes,
            "ppl_window": self.ppl_window,
            "kl": hash_tokens(&self.kl_sequences),
            "mc": mc,
            "speed": [self.speed_prompt, self.speed_new_tokens, self.speed_warmup, self.speed_repeats],
            "batch": self.batch,
            "legacy": [serde_json::json!(self.legacy_prompts), serde_json::json!(self.legacy_new_tokens)],
            "gen_mc": self.gen_mc.as_ref().map(|g| serde_json::json!([
                g.items.iter().map(|i| serde_json::json!([i.task, i.prompt, i.choices, i.label])).collect::<Vec<_>>(),
                g.opts.max_new_tokens,
                g.opts.stop_ids,
            ])),
        }))
    }

    /// Writes a variant as its checkpoint (compressed-tensors when `q` is given, else bf16),
    /// then measures it: size on disk, weight bytes per token, and `evaluate`.
    pub fn measure(
        &self,
        results: &mut Results,
        variant: &Variant,
        base: &Exaone4,
        model: &Exaone4,
        q: Option<&crate::compress::quant::apply::QuantizedModel>,
        save: &SaveTo,
    ) -> crate::Result<()> {
        use crate::checkpoint::{save_model, WriteOptions};
        use crate::compress::quant::apply::save_quantized;
        let out = save.dir.join(variant.dir_name());
        let opts = WriteOptions {
            side_files_from: save.side_files_from.clone(),
            overwrite: save.overwrite,
            ..Default::default()
        };
        let bits: std::collections::BTreeMap<String, StoredAs> = match q {
            Some(q) => {
                save_quantized(q, &out, &opts)?;
                let w = &q.scheme.weights;
                q.linears
                    .keys()
                    .map(|p| (p.clone(), (w.num_bits, scale_group(w.strategy))))
                    .collect()
            }
            None => {
                save_model(model, &out, Some(candle_core::DType::BF16), &opts)?;
                Default::default()
            }
        };
        let wb = weight_bytes_per_token(model, &|p| bits.get(p).copied());
        eprintln!("evaluating {} ({})", variant.name, variant.method);
        let stored = Stored {
            size_bytes: dir_bytes(&out),
            weight_bytes: wb,
            checkpoint: Some(&out),
        };
        self.evaluate(results, variant, base, model, &stored)?;
        if save.remove_after {
            std::fs::remove_dir_all(&out).map_err(|source| crate::Error::Io {
                path: out.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Greedy answers to the legacy prompts, as text.
    fn legacy_answers(&self, model: &Exaone4) -> crate::Result<Vec<String>> {
        use crate::model::{generate, ChatMessage, GenerateOptions};
        let eos: Vec<u32> = self
            .tokenizer
            .token_id("[|endofturn|]")
            .into_iter()
            .collect();
        let no_thinking = serde_json::Map::from_iter([(
            "enable_thinking".to_string(),
            serde_json::Value::Bool(false),
        )]);
        let mut out = vec![];
        for p in &self.legacy_prompts {
            let prompt = self
                .template
                .render(&[ChatMessage::user(p)], true, &no_thinking)?;
            let ids = self.tokenizer.encode(&prompt)?;
            let opts = GenerateOptions::greedy(self.legacy_new_tokens, eos.clone());
            let g = generate(model, &[ids], &opts)?;
            out.push(self.tokenizer.decode(&g[0], true)?.trim().to_string());
        }
        Ok(out)
    }

    /// The generation-scored pass of `model` (its checkpoint, where written, runs on the CUDA
    /// engine when the model is on CUDA), its answers written as JSONL when asked.
    fn gen_mc_pass(
        &self,
        g: &GenMcSuite,
        model: &Exaone4,
        checkpoint: Option<&Path>,
        who: &str,
    ) -> crate::Result<crate::eval::generated::GenMcResult> {
        use crate::eval::generated::{score, workload};
        use crate::serve::{Runner, SchedulerConfig, DEFAULT_BLOCK_SIZE};
        // a pool that holds every item at once: each prompt and its answer's cap
        let max_len = model.config.max_position_embeddings.min(4096);
        let (_, w) = workload(&g.items, &g.template, &self.tokenizer, &g.opts)?;
        let blocks = w
            .kv_blocks(DEFAULT_BLOCK_SIZE)
            .max(max_len.div_ceil(DEFAULT_BLOCK_SIZE));
        let cfg = SchedulerConfig::vllm_defaults(blocks, max_len);
        let vocab = model.config.vocab_size;
        let bar = stage_bar(format!("{who}: generated answers"));
        bar.set_length(g.items.len() as u64);
        let res = match (checkpoint, model.device()) {
            #[cfg(feature = "cuda")]
            (Some(dir), candle_core::Device::Cuda(_)) => {
                use crate::runtime::serving::KvBudget;
                use crate::serve::cuda::CudaExecutor;
                let ordinal = match model.device().location() {
                    candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
                    _ => 0,
                };
                // the pool is sized to the workload, not to what the study's models left free
                crate::runtime::trim_freed_memory(model.device())?;
                let ckpt = crate::checkpoint::Checkpoint::open(dir)?;
                let kv = KvBudget::Blocks(blocks);
                let (exec, cfg) = CudaExecutor::load(&ckpt, ordinal, &cfg, kv)?;
                let mut runner = Runner::new(exec, cfg, vocab);
                score(&mut runner, &g.items, &g.template, &self.tokenizer, &g.opts)
            }
            _ => {
                let _ = checkpoint;
                let exec = crate::serve::CpuExecutor::new(model);
                let mut runner = Runner::new(exec, cfg, vocab);
                score(&mut runner, &g.items, &g.template, &self.tokenizer, &g.opts)
            }
        }?;
        bar.set_position(g.items.len() as u64);
        bar.finish_and_clear();
        if let Some(d) = &g.samples {
            std::fs::create_dir_all(d).map_err(|e| crate::Error::io(d, e))?;
            let file = Variant::new(who, "", serde_json::json!({})).dir_name();
            res.write_jsonl(&d.join(format!("{file}.jsonl")))?;
        }
        Ok(res)
    }

    /// Perplexity on the test text and every scored token's NLL, window by window.
    fn per_token(
        &self,
        model: &Exaone4,
        who: &str,
    ) -> crate::Result<(crate::eval::Perplexity, Vec<Vec<f32>>)> {
        let w = self.ppl_window;
        let bar = stage_bar(format!("{who}: perplexity"));
        let r = perplexity_per_token(model, &self.test, w, w / 2, self.batch, Some(&bar));
        bar.finish_and_clear();
        Ok(r?)
    }

    /// KL(base ‖ model) on the KL sequences, the base's logits computed once on the CPU.
    fn divergence(
        &self,
        base: &Exaone4,
        model: &Exaone4,
        who: &str,
    ) -> crate::Result<(crate::eval::Divergence, Vec<Vec<f32>>)> {
        use crate::eval::divergence::{base_logits, divergence_from_logits};
        let bar = stage_bar(format!("{who}: KL to the base"));
        let (seqs, batch) = (&self.kl_sequences, self.batch);
        let r = if base.device().is_cpu() && !seqs.is_empty() && self.base_logits_fit(base) {
            let logits = match self.base_logits.get() {
                Some(l) => l,
                None => {
                    let l = base_logits(base, seqs, batch)?;
                    self.base_logits.get_or_init(|| l)
                }
            };
            divergence_from_logits(logits, model, seqs, batch, Some(&bar))
        } else {
            divergence_per_token(base, model, seqs, batch, Some(&bar))
        };
        bar.finish_and_clear();
        Ok(r?)
    }

    /// Whether the base's logits on the KL sequences, kept for every variant, take at most half
    /// the memory available (else each variant runs the base again: same figures, more time).
    fn base_logits_fit(&self, base: &Exaone4) -> bool {
        if self.base_logits.get().is_some() {
            return true;
        }
        let tokens: usize = self.kl_sequences.iter().map(Vec::len).sum();
        let need = (tokens * base.config.vocab_size * base.dtype().size_in_bytes()) as u64;
        let fit = crate::device::available_memory().is_none_or(|have| need <= have / 2);
        static SAID: std::sync::Once = std::sync::Once::new();
        if !fit {
            SAID.call_once(|| {
                eprintln!(
                    "KL: the base's logits on {} sequences ({:.1} GiB) are more than half the memory available; the base runs again for each variant instead of being kept",
                    self.kl_sequences.len(),
                    need as f64 / (1u64 << 30) as f64
                )
            });
        }
        fit
    }

    /// The base's per-item results (per-token NLL, multiple-choice and generated answers the
    /// paired statistics compare against), measured once per study.
    fn base_results(&self, base: &Exaone4) -> crate::Result<&PerToken> {
        if let Some(b) = self.base_per_token.get() {
            return Ok(b);
        }
        let (_, nll) = self.per_token(base, &self.base_variant)?;
        let mc_right = if self.mc_items.is_empty() {
            vec![]
        } else {
            multiple_choice_per_item(base, &self.tokenizer, &self.mc_items)?
                .1
                .right
        };
        // the base's answers (no checkpoint of it here: the reference executor)
        let gen_right = match &self.gen_mc {
            Some(g) => {
                let res = self.gen_mc_pass(g, base, None, &self.base_variant)?;
                let _ = self.base_gen_answered.set(res.items.len() - res.no_answer);
                res.correct()
            }
            None => vec![],
        };
        Ok(self.base_per_token.get_or_init(|| PerToken {
            nll,
            mc_right,
            gen_right,
        }))
    }

    /// Measures `model` against `base` and adds the rows for `variant` (its paired rows against
    /// the base's per-token results: `study::verdict`).
    pub fn evaluate(
        &self,
        results: &mut Results,
        variant: &Variant,
        base: &Exaone4,
        model: &Exaone4,
        stored: &Stored,
    ) -> crate::Result<()> {
        let Stored {
            size_bytes,
            weight_bytes,
            checkpoint,
        } = *stored;
        let add =
            |r: &mut Results, m: &str, v: f64, s: Option<f64>, u: &str| r.add(variant, m, v, s, u);
        // seconds per part, for the study's log (`lap` closes a part)
        let mut parts = vec![];
        let mut t0 = std::time::Instant::now();
        let mut lap = |what: &'static str| {
            parts.push((what, t0.elapsed().as_secs_f64()));
            t0 = std::time::Instant::now();
        };
        add(results, "layers", model.layers.len() as f64, None, "");
        add(
            results,
            "parameters",
            model.config.num_parameters() as f64,
            None,
            "",
        );
        add(
            results,
            "size_mib",
            size_bytes as f64 / (1u64 << 20) as f64,
            None,
            "MiB",
        );
        add(
            results,
            "weight_mb_per_token",
            weight_bytes / 1e6,
            None,
            "MB",
        );
        let (p, nll) = self
            .per_token(model, &variant.name)
            .context(|| format!("{}: perplexity", variant.name))?;
        // s.e. of mean NLL carried to the perplexity scale (first order)
        add(results, "test_ppl", p.ppl, Some(p.ppl * p.nll_stderr), "");
        add(results, "test_bits_per_byte", p.bits_per_byte, None, "bits");
        lap("perplexity");
        let (d, kl) = self
            .divergence(base, model, &variant.name)
            .context(|| format!("{}: KL to the base", variant.name))?;
        add(results, "kl_mean", d.kl_mean, Some(d.kl_stderr), "nats");
        add(results, "kl_p99", d.kl_p99, None, "nats");
        add(results, "top1", d.top1, None, "");
        lap("KL");
        let mut mc_right = vec![];
        if !self.mc_items.is_empty() {
            let (mc, items) = multiple_choice_per_item(model, &self.tokenizer, &self.mc_items)
                .context(|| format!("{}: log-likelihood multiple choice", variant.name))?;
            add(results, "mc_acc", mc.acc, Some(mc.acc_stderr), "");
            add(results, "mc_acc_norm", mc.acc_norm, None, "");
            add(results, "mc_chance", mc.chance, None, "");
            mc_right = items.right;
            lap("multiple choice");
        }
        let mut gen_right = vec![];
        let is_base = variant.name == self.base_variant;
        // the base's per-item results before this variant's generation pass: whether the base
        // answers at all decides that pass (a resumed study, whose base was carried over,
        // measures them here, with the first variant it measures)
        let base_first = if is_base {
            None
        } else {
            let computed = self.base_per_token.get().is_none();
            let b = self.base_results(base)?;
            if computed {
                lap("the base's per-item results");
            }
            Some(b)
        };
        let base_silent = self.base_gen_answered.get() == Some(&0);
        if let Some(g) = self.gen_mc.as_ref().filter(|_| is_base || !base_silent) {
            let res = self
                .gen_mc_pass(g, model, checkpoint, &variant.name)
                .context(|| format!("{}: generation-scored multiple choice", variant.name))?;
            let n = res.items.len().max(1) as f64;
            let se = (res.accuracy * (1.0 - res.accuracy) / n).sqrt();
            add(results, "genmc_acc", res.accuracy, Some(se), "");
            add(
                results,
                "genmc_no_answer",
                res.no_answer as f64 / n,
                None,
                "",
            );
            let t = &res.run.totals;
            add(
                results,
                "genmc_output_len_mean",
                t.output_len_mean,
                Some(t.output_len_std),
                "tokens",
            );
            gen_right = res.correct();
            if is_base {
                let _ = self.base_gen_answered.set(res.items.len() - res.no_answer);
            }
            lap("generated answers");
        }
        let ours = PerToken {
            nll,
            mc_right,
            gen_right,
        };
        // the base itself: what was just measured
        let theirs = match base_first {
            Some(b) => b,
            None => self.base_per_token.get_or_init(|| ours.clone()),
        };
        add_paired(results, variant, theirs, &ours, &kl);
        if !self.legacy_prompts.is_empty() {
            let ours = self.legacy_answers(model)?;
            let theirs = match self.legacy_base.get() {
                Some(b) => b,
                None => {
                    let b = self.legacy_answers(base)?;
                    self.legacy_base.get_or_init(|| b)
                }
            };
            let n = ours.len() as f64;
            let sim: f64 = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| similar::TextDiff::from_chars(a.as_str(), b.as_str()).ratio() as f64)
                .sum::<f64>()
                / n;
            let exact = ours.iter().zip(theirs).filter(|(a, b)| a == b).count() as f64 / n;
            let empty = ours.iter().filter(|a| a.is_empty()).count() as f64 / n;
            add(results, "legacy_similarity", sim, None, "");
            add(results, "legacy_exact_match", exact, None, "");
            add(results, "legacy_empty_answers", empty, None, "");
            lap("legacy answers");
        }
        if self.speed_repeats > 0 {
            // on CUDA a written checkpoint is timed as it runs (compressed kernels, the decode
            // engine); elsewhere the in-memory model
            let runtime = match checkpoint {
                Some(dir) => measure_checkpoint_speed(
                    dir,
                    model.device(),
                    self.speed_prompt,
                    self.speed_new_tokens,
                    self.speed_warmup,
                    self.speed_repeats,
                )
                .context(|| format!("{}: speed of the checkpoint as it runs", variant.name))?,
                None => None,
            };
            let s = match runtime {
                Some((s, engine)) => {
                    add(
                        results,
                        "decode_on_engine",
                        engine as u8 as f64,
                        None,
                        "bool",
                    );
                    s
                }
                None => measure_speed(
                    model,
                    self.speed_prompt,
                    self.speed_new_tokens,
                    self.speed_warmup,
                    self.speed_repeats,
                )
                .context(|| format!("{}: speed", variant.name))?,
            };
            let t = &s.decode_s_per_token;
            add(
                results,
                "decode_ms_per_token",
                1e3 * t.median,
                Some(1e3 * (t.max - t.min)),
                "ms",
            );
            add(results, "decode_ms_min", 1e3 * t.min, None, "ms");
            add(
                results,
                "prefill_tokens_per_s",
                s.prefill_tokens_per_s.median,
                Some(s.prefill_tokens_per_s.max - s.prefill_tokens_per_s.min),
                "tokens/s",
            );
            lap("speed");
        }
        parts.retain(|p| p.1 >= 0.05);
        if let Ok(mut p) = self.parts.lock() {
            *p = parts;
        }
        Ok(())
    }
}
