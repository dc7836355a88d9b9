//! The embedded default model (`data/default-model/`): its shape and EXAONE 4 config, the
//! pre-training recipe that made it, how it is written next to its tokenizer, and the greedy
//! samples its training report shows. `experiments/train_default.rs` composes these.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::{freeze, lm_loss, make_trainable, train_with_checkpoints, LogPoint, TrainConfig};
use crate::checkpoint::{save_model, WriteOptions};
use crate::data::{rng, TokenStream};
use crate::error::Result;
use crate::model::init::random_model;
use crate::model::tokenizer::apply_chat_template;
use crate::model::{generate, ChatMessage, Exaone4, Exaone4Config, GenerateOptions, Tokenizer};

/// The standard deviation of the random initialisation (the config's `initializer_range`).
pub const INIT_STD: f64 = 0.02;
/// Perplexity of the shipped model is measured in windows of this many tokens …
pub const EVAL_WINDOW: usize = 512;
/// … advanced by this many …
pub const EVAL_STRIDE: usize = 256;
/// … this many windows at a time.
pub const EVAL_BATCH: usize = 8;
/// Plain-text prompts of the report's greedy samples.
pub const SAMPLE_PROMPTS: &[&str] = &["대한민국은", "The history of", "이 영화는"];
/// Prompts of the report's greedy samples sent as one user turn through the chat template.
pub const SAMPLE_CHAT_PROMPTS: &[&str] = &[
    "안녕하세요",
    "Tell me about the weather.",
    "다음 영화 리뷰는 긍정인가요, 부정인가요?\n정말 재미있고 감동적인 영화였어요",
];
/// Tokens generated per greedy sample.
pub const SAMPLE_TOKENS: usize = 40;

/// The default model's shape: GQA 4:1 with head_dim 64, so `hidden` / 64 query heads and a
/// quarter as many key/value heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
}

impl Shape {
    pub fn new(layers: usize, hidden: usize, intermediate: usize) -> Self {
        Self {
            layers,
            hidden,
            intermediate,
        }
    }

    /// The shape of the shipped default model.
    pub const DEFAULT: Shape = Shape {
        layers: 10,
        hidden: 256,
        intermediate: 768,
    };

    /// The EXAONE 4 config of this shape over a tokenizer of `vocab` ids: llama3 RoPE, full
    /// attention everywhere, QK-norm and post-norm (EXAONE 4's own), tied embeddings, bf16 on
    /// disk, EXAONE 4's special-token ids. Validated like any config.
    pub fn config(&self, vocab: usize) -> Result<Exaone4Config> {
        let heads = self.hidden / 64;
        let v = serde_json::json!({
            "architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4",
            "vocab_size": vocab, "hidden_size": self.hidden, "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers, "num_attention_heads": heads, "num_key_value_heads": heads / 4,
            "head_dim": 64, "hidden_act": "silu", "rms_norm_eps": 1e-5, "max_position_embeddings": 65536,
            "rope_theta": 1000000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            "sliding_window": null, "sliding_window_pattern": null,
            "layer_types": vec!["full_attention"; self.layers], "tie_word_embeddings": true,
            "bos_token_id": 1, "eos_token_id": 14, "pad_token_id": 0,
            "attention_dropout": 0.0, "initializer_range": INIT_STD, "use_cache": true,
            "dtype": "bfloat16", "transformers_version": "4.57.3"
        });
        Exaone4Config::from_value(v)
    }
}

/// The pre-training recipe: `steps` AdamW steps on `batch` random windows of `seq_len` tokens
/// of the training split, peak learning rate `lr`, everything seeded by `seed`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Pretrain {
    pub steps: usize,
    pub batch: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Pretrain {
    /// The recipe the shipped default model's defaults come from (its report records the
    /// command actually run).
    pub const DEFAULT: Pretrain = Pretrain {
        steps: 3000,
        batch: 32,
        seq_len: 256,
        lr: 2e-3,
        seed: 0,
    };

    /// The loop's settings: warm-up over the first 5% of the steps, then cosine decay; the
    /// validation loss every 5% of the steps; the loop's defaults otherwise.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            steps: self.steps,
            lr: self.lr,
            warmup_steps: self.steps / 20,
            eval_every: (self.steps / 20).max(1),
            ..Default::default()
        }
    }
}

/// A finished pre-training run: the model (frozen, f32), the loop's log, and its wall time.
pub struct Pretrained {
    pub model: Exaone4,
    pub log: Vec<LogPoint>,
    /// seconds spent in the loop (checkpoints included)
    pub train_secs: f64,
}

impl Pretrained {
    /// Tokens the model was trained on.
    pub fn tokens_seen(&self) -> usize {
        self.log.last().map(|l| l.tokens).unwrap_or(0)
    }
    /// Optimizer steps that ran (fewer than planned when a time limit stopped the loop).
    pub fn steps(&self) -> usize {
        self.log.len()
    }
}

/// Pre-trains a model of config `cfg` from a random initialisation (`recipe.seed`, std
/// [`INIT_STD`], f32 on `device`) on `train`, with the loop settings `tc` (normally
/// `recipe.train_config()`). The validation loss is the mean over 4 fixed batches of 16
/// windows of `val` (seeded `recipe.seed + 1`). When `tc` asks for checkpoints they are saved
/// (bf16, atomically replaced) to `checkpoint_dir`, which is removed once the loop ends.
pub fn pretrain(
    cfg: &Exaone4Config,
    recipe: &Pretrain,
    tc: &TrainConfig,
    train: &TokenStream,
    val: &TokenStream,
    checkpoint_dir: &Path,
    device: &Device,
) -> Result<Pretrained> {
    let mut model = random_model(cfg.clone(), INIT_STD, recipe.seed, DType::F32, device)?;
    let vars = make_trainable(&mut model, &|_| true)?;
    let (batch, window) = (recipe.batch, recipe.seq_len + 1);
    let mut r = rng(recipe.seed);
    let val_batches: Vec<Tensor> = {
        let mut vr = rng(recipe.seed + 1);
        (0..4)
            .map(|_| val.sample_windows(16, window, &mut vr, device))
            .collect::<candle_core::Result<_>>()?
    };
    let t0 = Instant::now();
    let mut wrote_checkpoint = false;
    let log = train_with_checkpoints(
        &mut model,
        &vars,
        tc,
        &mut |m, _| {
            let b = train.sample_windows(batch, window, &mut r, device)?;
            Ok((lm_loss(m, &b)?, batch * recipe.seq_len))
        },
        &mut |m| {
            let mut s = 0.0;
            for b in &val_batches {
                s += lm_loss(m, b)?.to_scalar::<f32>()? as f64;
            }
            Ok(s / val_batches.len() as f64)
        },
        &mut |m, step| {
            wrote_checkpoint = true;
            let o = WriteOptions {
                overwrite: true,
                ..Default::default()
            };
            save_model(m, checkpoint_dir, Some(DType::BF16), &o)
                .map_err(|e| candle_core::Error::Msg(format!("checkpoint at step {step}: {e}")))
        },
        "train",
    )?;
    // only what this run wrote: a folder of that name made by anyone else stays
    if wrote_checkpoint {
        let _ = std::fs::remove_dir_all(checkpoint_dir);
    }
    let train_secs = t0.elapsed().as_secs_f64();
    freeze(&mut model);
    Ok(Pretrained {
        model,
        log,
        train_secs,
    })
}

/// Whether `out` may receive a model (or a tokenizer): nothing of one there, or `overwrite`.
pub fn check_out(out: &Path, overwrite: bool) -> Result<()> {
    let has_model = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .any(|f| out.join(f).exists());
    if has_model && !overwrite {
        return Err(crate::Error::Flag(format!(
            "--out {}: a model is already there; pass --overwrite to replace it",
            out.display()
        )));
    }
    Ok(())
}

/// Where [`pretrain`] keeps its checkpoints for the model directory `out`: `<out>.checkpoint`
/// beside it (the whole name kept: `exaone-4.0` gives `exaone-4.0.checkpoint`).
pub fn checkpoint_dir(out: &Path) -> std::path::PathBuf {
    let name = out
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().to_string());
    out.with_file_name(format!("{name}.checkpoint"))
}

/// Writes `model` (bf16) as the model directory `out`, keeping the tokenizer files already in
/// `out` and adding a greedy `generation_config.json` that stops at `eos`. The directory is
/// completed beside `out` and swapped in by `save_model` (a killed run's leftovers are put back
/// or removed by the next, `fs::clean_stale`), then the generation config replaced atomically.
pub fn write_model(model: &Exaone4, out: &Path, eos: u32) -> Result<()> {
    let opts = WriteOptions {
        max_shard_bytes: 1 << 30,
        side_files_from: Some(out.to_path_buf()),
        overwrite: true,
    };
    save_model(model, out, Some(DType::BF16), &opts)?;
    let gen = serde_json::json!({"bos_token_id": 1, "eos_token_id": eos, "pad_token_id": 0, "do_sample": false, "transformers_version": "4.57.3"});
    let text = serde_json::to_string_pretty(&gen).expect("json") + "\n";
    crate::fs::write_atomic(&out.join("generation_config.json"), text.as_bytes())
}

/// Greedy continuations ([`SAMPLE_TOKENS`] tokens, stopping at `eos`) of [`SAMPLE_PROMPTS`]
/// as plain text, then of [`SAMPLE_CHAT_PROMPTS`] as chat turns (labelled `[chat] …`):
/// (prompt, continuation without special tokens) pairs.
pub fn greedy_samples(model: &Exaone4, tok: &Tokenizer, eos: u32) -> Result<Vec<(String, String)>> {
    let opts = GenerateOptions::greedy(SAMPLE_TOKENS, vec![eos]);
    let mut samples = vec![];
    let prompts = SAMPLE_PROMPTS
        .iter()
        .map(|p| (p.to_string(), p.to_string()));
    let chats = SAMPLE_CHAT_PROMPTS.iter().map(|p| {
        let text = apply_chat_template(&[ChatMessage::user(p)], true, false);
        (format!("[chat] {p}"), text)
    });
    for (label, text) in prompts.chain(chats) {
        let ids = tok.encode(&text)?;
        let out = generate(model, &[ids], &opts)?.remove(0);
        samples.push((label, tok.decode(&out, true)?));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_shape_is_the_shipped_config() {
        let shipped = crate::data::data_dir().join("default-model");
        let shipped = Exaone4Config::from_file(&shipped).unwrap();
        let cfg = Shape::DEFAULT.config(shipped.vocab_size).unwrap();
        assert_eq!(cfg, shipped);
        assert_eq!(cfg.num_parameters(), 8_591_872);
    }

    #[test]
    fn the_recipe_warms_up_and_evaluates_every_twentieth() {
        let tc = Pretrain::DEFAULT.train_config();
        assert_eq!((tc.steps, tc.warmup_steps, tc.eval_every), (3000, 150, 150));
        assert_eq!((tc.checkpoint_every, tc.max_secs), (0, None));
        let tiny = Pretrain {
            steps: 7,
            ..Pretrain::DEFAULT
        }
        .train_config();
        assert_eq!((tiny.warmup_steps, tiny.eval_every), (0, 1));
    }
}
