//! Trains the embedded default model: a small EXAONE 4 (GQA 4:1, head_dim 64, QK-norm,
//! post-norm, llama3 RoPE, tied embeddings) on the shipped Korean/English corpus.
//!
//!   cargo run --release --bin train_default -- --prepare-data --train-tokenizer   # CPU, once
//!   cargo run --release --features cuda --bin train_default -- --device cuda --steps 3000 --seed 0
//!
//! Writes the model to `data/default-model/` and the training report to `reports/default-model/`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::DType;
use clap::Parser;
use exaone_compress::checkpoint::{save_model, WriteOptions};
use exaone_compress::data::{
    build_default_corpus, data_dir, read_documents, rng, split_path, TokenStream,
};
use exaone_compress::eval::{perplexity, unigram_perplexity};
use exaone_compress::model::init::random_model;
use exaone_compress::model::tokenizer::{apply_chat_template, train_bpe};
use exaone_compress::model::{generate, ChatMessage, Exaone4Config, GenerateOptions, Tokenizer};
use exaone_compress::report::train as train_report;
use exaone_compress::train::{lm_loss, make_trainable, TrainConfig};

#[derive(Parser)]
struct Args {
    /// rebuild data/text/{train,val,test}.jsonl from these offline corpora
    #[arg(long)]
    prepare_data: bool,
    #[arg(long, default_value = "../shared/assets/corpora")]
    corpora: PathBuf,
    /// retrain the BPE tokenizer (written into --out)
    #[arg(long)]
    train_tokenizer: bool,
    #[arg(long, default_value_t = 4096)]
    vocab: usize,
    /// stop after data/tokenizer preparation
    #[arg(long)]
    no_train: bool,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 10)]
    layers: usize,
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    #[arg(long, default_value_t = 768)]
    intermediate: usize,
    /// model directory to write
    #[arg(long, default_value = "data/default-model")]
    out: PathBuf,
    #[arg(long, default_value = "reports/default-model")]
    report: PathBuf,
    /// safety stop: end training after this many minutes even if steps remain (the report
    /// then says how many steps ran)
    #[arg(long)]
    max_minutes: Option<f64>,
    /// save a checkpoint (bf16, atomically replaced) to `<out>.checkpoint` every N steps
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
}

fn config(a: &Args, vocab: usize) -> Result<Exaone4Config> {
    let heads = a.hidden / 64;
    let v = serde_json::json!({
        "architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4",
        "vocab_size": vocab, "hidden_size": a.hidden, "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers, "num_attention_heads": heads, "num_key_value_heads": heads / 4,
        "head_dim": 64, "hidden_act": "silu", "rms_norm_eps": 1e-5, "max_position_embeddings": 65536,
        "rope_theta": 1000000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "sliding_window": null, "sliding_window_pattern": null,
        "layer_types": vec!["full_attention"; a.layers], "tie_word_embeddings": true,
        "bos_token_id": 1, "eos_token_id": 14, "pad_token_id": 0,
        "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": true,
        "dtype": "bfloat16", "transformers_version": "4.57.3"
    });
    Ok(Exaone4Config::from_value(v)?)
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.prepare_data {
        let s = build_default_corpus(&a.corpora, &data_dir().join("text"))
            .context("building the corpus")?;
        println!("corpus: {s:?}");
    }
    if a.train_tokenizer {
        let docs = read_documents(&split_path("train"))?;
        let tmp = tempfile::NamedTempFile::new()?;
        std::fs::write(tmp.path(), docs.join("\n"))?;
        let tok = train_bpe(&[tmp.path().to_path_buf()], a.vocab, &a.out)?;
        println!("tokenizer: {} ids", tok.vocab_size());
    }
    if a.no_train {
        return Ok(());
    }
    let device = exaone_compress::runtime::open_device(&a.device)?;
    let tok = Tokenizer::from_dir(&a.out)?;
    let eos = tok
        .token_id("[|endofturn|]")
        .context("tokenizer lacks [|endofturn|]")?;
    let stream = |split: &str| -> Result<TokenStream> {
        Ok(TokenStream::from_lines(
            &tok,
            &read_documents(&split_path(split))?,
            Some(eos),
        )?)
    };
    let (train_s, val_s, test_s) = (stream("train")?, stream("val")?, stream("test")?);
    println!(
        "tokens: train {} val {} test {}",
        train_s.ids.len(),
        val_s.ids.len(),
        test_s.ids.len()
    );

    let cfg = config(&a, tok.vocab_size())?;
    let mut model = random_model(cfg.clone(), 0.02, a.seed, DType::F32, &device)?;
    println!("model: {} parameters", cfg.num_parameters());
    let vars = make_trainable(&mut model, &|_| true)?;
    let tc = TrainConfig {
        steps: a.steps,
        lr: a.lr,
        warmup_steps: a.steps / 20,
        eval_every: (a.steps / 20).max(1),
        ..Default::default()
    };
    let mut r = rng(a.seed);
    let val_batches: Vec<_> = {
        let mut vr = rng(a.seed + 1);
        (0..4)
            .map(|_| val_s.sample_windows(16, a.seq_len + 1, &mut vr, &device))
            .collect::<candle_core::Result<_>>()?
    };
    let t0 = Instant::now();
    let ckpt_dir = a.out.with_extension("checkpoint");
    let log = exaone_compress::train::train_with_checkpoints(
        &mut model,
        &vars,
        &tc,
        &mut |m, _| {
            let b = train_s.sample_windows(a.batch, a.seq_len + 1, &mut r, &device)?;
            Ok((lm_loss(m, &b)?, a.batch * a.seq_len))
        },
        &mut |m| {
            let mut s = 0.0;
            for b in &val_batches {
                s += lm_loss(m, b)?.to_scalar::<f32>()? as f64;
            }
            Ok(s / val_batches.len() as f64)
        },
        &mut |m, step| {
            let o = WriteOptions {
                overwrite: true,
                ..Default::default()
            };
            save_model(m, &ckpt_dir, Some(DType::BF16), &o)
                .map_err(|e| candle_core::Error::Msg(format!("checkpoint at step {step}: {e}")))
        },
        "train",
    )?;
    let _ = std::fs::remove_dir_all(&ckpt_dir);
    let train_secs = t0.elapsed().as_secs_f64();
    exaone_compress::train::freeze(&mut model);

    let opts = WriteOptions {
        max_shard_bytes: 1 << 30,
        side_files_from: None,
        overwrite: true,
    };
    // keep the tokenizer files: write to a sibling then move them in
    let staging = a.out.with_extension("new");
    save_model(
        &model,
        &staging,
        Some(DType::BF16),
        &WriteOptions {
            side_files_from: Some(a.out.clone()),
            ..opts.clone()
        },
    )?;
    let gen = serde_json::json!({"bos_token_id": 1, "eos_token_id": eos, "pad_token_id": 0, "do_sample": false, "transformers_version": "4.57.3"});
    std::fs::write(
        staging.join("generation_config.json"),
        serde_json::to_string_pretty(&gen)? + "\n",
    )?;
    let old = a.out.with_extension("old");
    std::fs::rename(&a.out, &old)?;
    std::fs::rename(&staging, &a.out)?;
    std::fs::remove_dir_all(&old)?;

    // evaluate what was written (bf16 weights), in f32
    let shipped = exaone_compress::checkpoint::load_model(&a.out, DType::F32, &device)?;
    let ppl_val = perplexity(&shipped, &val_s, 512, 256, 8, None)?;
    println!("validation perplexity {:.3}", ppl_val.ppl);
    let ppl_test = perplexity(&shipped, &test_s, 512, 256, 8, None)?;
    let unigram = unigram_perplexity(&train_s.ids, &test_s.ids[1..], cfg.vocab_size);
    let mut samples = vec![];
    for p in ["대한민국은", "The history of", "이 영화는"] {
        let ids = tok.encode(p)?;
        let out = generate(&shipped, &[ids], &GenerateOptions::greedy(40, vec![eos]))?.remove(0);
        samples.push((p.to_string(), tok.decode(&out, true)?));
    }
    for p in [
        "안녕하세요",
        "Tell me about the weather.",
        "다음 영화 리뷰는 긍정인가요, 부정인가요?\n정말 재미있고 감동적인 영화였어요",
    ] {
        let ids = tok.encode(&apply_chat_template(&[ChatMessage::user(p)], true, false))?;
        let out = generate(&shipped, &[ids], &GenerateOptions::greedy(40, vec![eos]))?.remove(0);
        samples.push((format!("[chat] {p}"), tok.decode(&out, true)?));
    }
    let device_name = if device.is_cpu() {
        "cpu".to_string()
    } else {
        std::env::var("GPU_NAME").unwrap_or_else(|_| a.device.clone())
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    train_report::write(
        &a.report,
        &train_report::Summary {
            command,
            device: device_name,
            parameters: cfg.num_parameters(),
            tokens_seen: log.last().map(|l| l.tokens).unwrap_or(0),
            train_secs,
            train_tokens: train_s.ids.len(),
            val_ppl: ppl_val.ppl,
            test_ppl: ppl_test.ppl,
            test_ppl_stderr_nll: ppl_test.nll_stderr,
            test_bits_per_byte: ppl_test.bits_per_byte,
            unigram_test_ppl: unigram,
            samples,
            seed: a.seed,
            steps: log.len(),
            batch: a.batch,
            seq_len: a.seq_len,
            lr: a.lr,
        },
        &log,
    )?;
    println!(
        "test perplexity {:.2} (unigram {:.2}), written {}",
        ppl_test.ppl,
        unigram,
        a.out.display()
    );
    Ok(())
}
