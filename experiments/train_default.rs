//! Trains the embedded default model: a small EXAONE 4 (GQA 4:1, head_dim 64, QK-norm,
//! post-norm, llama3 RoPE, tied embeddings) on the shipped Korean/English corpus.
//!
//!   cargo run --release --bin train_default -- --prepare-data --train-tokenizer   # CPU, once
//!   cargo run --release --features cuda --bin train_default -- --overwrite --device cuda --steps 3000
//!
//! Writes the model to `data/default-model/` and the training report to `reports/default-model/`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::DType;
use clap::Parser;
use exaone_compress::checkpoint::load_model;
use exaone_compress::data::{build_default_corpus, data_dir, default_splits, split_documents};
use exaone_compress::eval::{perplexity, unigram_perplexity};
use exaone_compress::model::tokenizer::train_bpe_on_documents;
use exaone_compress::model::Tokenizer;
use exaone_compress::report::train::{self as train_report, device_label, Summary};
use exaone_compress::train::default_model::{self as dm, Pretrain, Shape};

/// Trains the embedded default model (a small EXAONE 4) on the shipped Korean/English corpus.
#[derive(Parser)]
#[command(long_about = None)]
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
    #[arg(long, default_value = "cpu", value_parser = exaone_compress::device::device_word)]
    device: String,
    #[arg(long, default_value_t = Pretrain::DEFAULT.steps)]
    steps: usize,
    #[arg(long, default_value_t = Pretrain::DEFAULT.batch)]
    batch: usize,
    #[arg(long, default_value_t = Pretrain::DEFAULT.seq_len)]
    seq_len: usize,
    #[arg(long, default_value_t = Pretrain::DEFAULT.lr)]
    lr: f64,
    #[arg(long, default_value_t = Pretrain::DEFAULT.seed)]
    seed: u64,
    #[arg(long, default_value_t = Shape::DEFAULT.layers)]
    layers: usize,
    #[arg(long, default_value_t = Shape::DEFAULT.hidden)]
    hidden: usize,
    #[arg(long, default_value_t = Shape::DEFAULT.intermediate)]
    intermediate: usize,
    /// model directory to write
    #[arg(long, default_value = "data/default-model")]
    out: PathBuf,
    /// replace the model (or tokenizer) already at --out — the shipped default model by default
    #[arg(long)]
    overwrite: bool,
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

fn main() -> std::process::ExitCode {
    exaone_compress::error::exit(run())
}

fn run() -> Result<()> {
    let a = exaone_compress::study::parse_args::<Args>();
    if a.train_tokenizer || !a.no_train {
        dm::check_out(&a.out, a.overwrite)?;
    }
    if a.prepare_data {
        let s = build_default_corpus(&a.corpora, &data_dir().join("text"))
            .context("building the corpus")?;
        println!("corpus: {s:?}");
    }
    if a.train_tokenizer {
        let tok = train_bpe_on_documents(&split_documents("train")?, a.vocab, &a.out)?;
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
    let (train_s, val_s, test_s) = default_splits(&tok, Some(eos))?;
    let [tr, va, te] = [&train_s, &val_s, &test_s].map(|s| s.ids.len());
    println!("tokens: train {tr} val {va} test {te}");

    let cfg = Shape::new(a.layers, a.hidden, a.intermediate).config(tok.vocab_size())?;
    println!("model: {} parameters", cfg.num_parameters());
    let recipe = Pretrain {
        steps: a.steps,
        batch: a.batch,
        seq_len: a.seq_len,
        lr: a.lr,
        seed: a.seed,
    };
    // as before this refactor, --max-minutes and --checkpoint-every do not reach the loop
    let (tc, ckpt_dir) = (recipe.train_config(), dm::checkpoint_dir(&a.out));
    let run = dm::pretrain(&cfg, &recipe, &tc, &train_s, &val_s, &ckpt_dir, &device)?;
    dm::write_model(&run.model, &a.out, eos)?;

    // evaluate what was written (bf16 weights), in f32
    let shipped = load_model(&a.out, DType::F32, &device)?;
    let (w, st, b) = (dm::EVAL_WINDOW, dm::EVAL_STRIDE, dm::EVAL_BATCH);
    let eval = |s| perplexity(&shipped, s, w, st, b, None);
    let ppl_val = eval(&val_s)?;
    println!("validation perplexity {:.3}", ppl_val.ppl);
    let ppl_test = eval(&test_s)?;
    let unigram = unigram_perplexity(&train_s.ids, &test_s.ids[1..], cfg.vocab_size);
    let summary = Summary {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        device: device_label(&device, &a.device),
        parameters: cfg.num_parameters(),
        tokens_seen: run.tokens_seen(),
        train_secs: run.train_secs,
        train_tokens: train_s.ids.len(),
        val_ppl: ppl_val.ppl,
        test_ppl: ppl_test.ppl,
        test_ppl_stderr_nll: ppl_test.nll_stderr,
        test_bits_per_byte: ppl_test.bits_per_byte,
        unigram_test_ppl: unigram,
        samples: dm::greedy_samples(&shipped, &tok, eos)?,
        seed: recipe.seed,
        steps: run.steps(),
        batch: recipe.batch,
        seq_len: recipe.seq_len,
        lr: recipe.lr,
    };
    train_report::write(&a.report, &summary, &run.log)?;
    let (ppl, out) = (ppl_test.ppl, a.out.display());
    println!("test perplexity {ppl:.2} (unigram {unigram:.2}), written {out}");
    Ok(())
}
