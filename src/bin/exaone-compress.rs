//! The `exaone-compress` command line. Thin: every command is a few library calls.
//! `info`, `generate`, `logits`, `dequant` and `package` are a scripted interface — keep their
//! flags and output formats stable.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::{Parser, Subcommand};
use exaone_compress::device::parse_dtype;
use exaone_compress::model::generate::{generate_timed, GenerationConfig, GenerationRequest};
use exaone_compress::model::tokenizer::apply_chat_template;
use exaone_compress::model::{ChatMessage, Tokenizer};
use exaone_compress::Checkpoint;

#[derive(Parser)]
#[command(
    name = "exaone-compress",
    version,
    about = "Compress and evaluate EXAONE 4 checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// HF model directory (default: the embedded default model)
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl ModelArgs {
    fn dir(&self) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(exaone_compress::default_model_dir)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Architecture, parameter count, bytes on disk, dtype, tying
    Info {
        #[command(flatten)]
        m: ModelArgs,
        /// print one JSON object instead of `key: value` lines
        #[arg(long)]
        json: bool,
    },
    /// Generate a continuation of a prompt
    Generate {
        #[command(flatten)]
        m: ModelArgs,
        /// prompt text (needs tokenizer.json in the model directory)
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        prompt: Option<String>,
        /// prompt as comma-separated token ids
        #[arg(long, value_delimiter = ',')]
        ids: Option<Vec<u32>>,
        /// wrap the prompt in the chat template (user turn + generation prompt)
        #[arg(long)]
        chat: bool,
        /// system message for --chat
        #[arg(long)]
        system: Option<String>,
        /// reasoning mode: open the think block instead of closing it
        #[arg(long)]
        think: bool,
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        #[arg(long, default_value_t = 0)]
        min_new_tokens: usize,
        /// greedy decoding (default: sample as generation_config.json says, greedy if it says nothing)
        #[arg(long)]
        greedy: bool,
        #[arg(long)]
        temperature: Option<f64>,
        #[arg(long)]
        top_p: Option<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// also print the generated ids as a JSON array on its own line
        #[arg(long)]
        print_ids: bool,
        /// auto (f32 on cpu, bf16 on cuda), f32, bf16, f16
        #[arg(long, default_value = "auto")]
        dtype: String,
    },
    /// Write the f32 logits of every position as a NumPy .npy [n_ids, vocab]
    Logits {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
        #[arg(long)]
        out: PathBuf,
        /// compute dtype (the logits are written as f32 whatever it is)
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// replace --out if it exists
        #[arg(long)]
        overwrite: bool,
    },
    /// Write the dense bf16 equivalent of a compressed-tensors checkpoint
    Dequant {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// replace --out if it exists
        #[arg(long)]
        overwrite: bool,
    },
    /// Quantize every decoder Linear and write a compressed-tensors checkpoint
    Quantize {
        #[command(flatten)]
        m: ModelArgs,
        /// w4a16, w4a16-asym, w8a8 (int8, dynamic per-token activations), fp8
        #[arg(long)]
        scheme: String,
        /// rtn, gptq or awq (awq: W4A16 only)
        #[arg(long, default_value = "rtn")]
        method: String,
        #[arg(long, default_value_t = 128)]
        group: usize,
        /// GPTQ act-order: static (no g_idx) or group (g_idx saved)
        #[arg(long)]
        actorder: Option<String>,
        /// calibration text (.jsonl with "text", or plain lines); default: the shipped train split
        #[arg(long)]
        calib: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        calib_samples: usize,
        #[arg(long, default_value_t = 256)]
        calib_len: usize,
        /// wrap each calibration text as a user turn of the chat template (JSONL lines with
        /// "messages" always go through the template)
        #[arg(long)]
        calib_chat: bool,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        overwrite: bool,
    },
    /// Drop decoder layers (config surgery and renumbering included)
    Prune {
        #[command(flatten)]
        m: ModelArgs,
        /// explicit layer indices, e.g. 15 or 3,7
        #[arg(long, value_delimiter = ',')]
        drop: Option<Vec<usize>>,
        /// uniform:N, first:N, last:N, bi:N (Block Influence), kl:N (measured KL)
        #[arg(long)]
        rule: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        overwrite: bool,
    },
    /// Validate a model directory for the evaluation server and zip it as model/ (submit.zip)
    Package {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value = "submit.zip")]
        out: PathBuf,
        /// only print the problems found; write nothing
        #[arg(long)]
        check: bool,
        /// replace --out if it exists
        #[arg(long)]
        overwrite: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Info { m, json } => info(&m, json),
        Cmd::Generate {
            m,
            prompt,
            ids,
            chat,
            system,
            think,
            max_new_tokens,
            min_new_tokens,
            greedy,
            temperature,
            top_p,
            seed,
            print_ids,
            dtype,
        } => {
            let dir = m.dir();
            let req = GenerationRequest {
                max_new_tokens,
                min_new_tokens,
                greedy,
                temperature,
                top_p,
                seed,
            };
            req.check()?;
            let device = exaone_compress::runtime::open_device(&m.device)?;
            let dtype = parse_dtype(&dtype, &device)?;
            let tok = if dir.join("tokenizer.json").exists() {
                Some(Tokenizer::from_dir(&dir)?)
            } else {
                None
            };
            let prompt_ids = match (&prompt, ids) {
                (_, Some(ids)) => ids,
                (Some(p), None) => {
                    let tok = tok.as_ref().with_context(|| {
                        format!(
                            "{}: no tokenizer.json, so --prompt cannot be encoded; pass --ids",
                            dir.display()
                        )
                    })?;
                    let text = if chat {
                        let mut msgs = vec![];
                        if let Some(s) = &system {
                            msgs.push(ChatMessage::system(s));
                        }
                        msgs.push(ChatMessage::user(p));
                        apply_chat_template(&msgs, true, think)
                    } else {
                        p.clone()
                    };
                    tok.encode(&text)?
                }
                (None, None) => bail!("give --prompt or --ids"),
            };
            let t_load = Instant::now();
            let ckpt = Checkpoint::open(&dir)?;
            let flag = if prompt.is_some() {
                "--prompt"
            } else {
                "--ids"
            };
            if prompt_ids.is_empty() {
                bail!("{flag}: the prompt holds no tokens");
            }
            ckpt.config.check_ids(&prompt_ids, flag)?;
            let room = exaone_compress::model::generate::max_new_tokens_within(
                &ckpt.config,
                prompt_ids.len(),
                max_new_tokens,
            );
            if room < max_new_tokens {
                eprintln!(
                    "note: --max-new-tokens {max_new_tokens} capped at {room}: a {}-token prompt leaves {room} positions of max_position_embeddings {}",
                    prompt_ids.len(),
                    ckpt.config.max_position_embeddings
                );
            }
            let model = exaone_compress::runtime::load_checkpoint(&ckpt, dtype, &device)?;
            let load_secs = t_load.elapsed().as_secs_f64();
            let opts = GenerationConfig::try_from_dir(&dir)?.options(&req, &model.config);
            let n_prompt = prompt_ids.len();
            let (mut outs, st) = generate_timed(&model, &[prompt_ids], &opts)?;
            let out = outs.remove(0);
            if let Some(tok) = &tok {
                println!("{}", tok.decode(&out, true)?);
            }
            if print_ids {
                println!("{}", serde_json::to_string(&out)?);
            }
            eprintln!(
                "[{} on {} {:?}: load {:.3} s; prefill {} tokens {:.4} s; decode {} tokens {:.4} s ({:.2} ms/token)]",
                dir.display(),
                m.device,
                dtype,
                load_secs,
                n_prompt,
                st.prefill_secs,
                st.decode_steps,
                st.decode_secs,
                1e3 * st.decode_secs / st.decode_steps.max(1) as f64
            );
            Ok(())
        }
        Cmd::Logits {
            m,
            ids,
            out,
            dtype,
            overwrite,
        } => {
            use exaone_compress::fs::{check_destination, refuse_overlap, OutputKind};
            let dir = m.dir();
            let device = exaone_compress::runtime::open_device(&m.device)?;
            let dtype = parse_dtype(&dtype, &device)?;
            refuse_overlap(&out, &[dir.as_path()], true)?;
            check_destination(&out, OutputKind::File, overwrite)?;
            let ckpt = Checkpoint::open(&dir)?;
            ckpt.config.check_ids(&ids, "--ids")?;
            let model = exaone_compress::runtime::load_checkpoint(&ckpt, dtype, &device)?;
            let n = ids.len();
            let input = Tensor::from_vec(ids, (1, n), &device)?;
            let logits = model
                .forward(&input, None)?
                .squeeze(0)?
                .to_device(&candle_core::Device::Cpu)?;
            exaone_compress::fs::write_output_via_path(&out, overwrite, |tmp| {
                Ok(logits.write_npy(tmp)?)
            })
            .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {} [{n}, {}] f32",
                out.display(),
                model.config.vocab_size
            );
            Ok(())
        }
        Cmd::Dequant {
            model,
            out,
            overwrite,
        } => dequant(&model, &out, overwrite),
        Cmd::Package {
            model,
            out,
            check,
            overwrite,
        } => package(&model, &out, check, overwrite),
        Cmd::Quantize {
            m,
            scheme,
            method,
            group,
            actorder,
            calib,
            calib_samples,
            calib_len,
            calib_chat,
            out,
            overwrite,
        } => quantize(
            &m,
            QuantizeFlags {
                scheme,
                method,
                group,
                actorder,
                calib: Calib {
                    file: calib,
                    n: calib_samples,
                    len: calib_len,
                    chat: calib_chat,
                },
                out,
                overwrite,
            },
        ),
        Cmd::Prune {
            m,
            drop,
            rule,
            out,
            overwrite,
        } => prune(&m, drop, rule.as_deref(), &out, overwrite),
    }
}

/// Where calibration samples come from.
struct Calib {
    file: Option<PathBuf>,
    n: usize,
    len: usize,
    /// wrap plain texts as user turns of the chat template
    chat: bool,
}

fn calibration(dir: &std::path::Path, c: Calib) -> Result<Vec<Vec<u32>>> {
    use exaone_compress::data::{read_documents, split_path, TokenStream};
    use exaone_compress::model::{tokenizer::apply_chat_template, ChatMessage};
    if c.n == 0 {
        bail!("--calib-samples 0: at least 1 calibration sample is needed");
    }
    if c.len == 0 {
        bail!("--calib-len 0: calibration samples need at least 1 token");
    }
    let (tok, fell_back) = exaone_compress::data::tokenizer_for_model(dir)?;
    if fell_back {
        eprintln!(
            "note: {} has no tokenizer.json: calibrating with the default model's tokenizer",
            dir.display()
        );
    }
    let vocab = exaone_compress::Exaone4Config::from_file(dir)?.vocab_size;
    if tok.vocab_size() > vocab {
        bail!(
            "calibration: the tokenizer ({}) has {} tokens but the model's vocab_size is {vocab}; give the model directory its own tokenizer.json",
            if fell_back { "the default model's" } else { "tokenizer.json" },
            tok.vocab_size()
        );
    }
    let (n, len) = (c.n, c.len);
    let path = c.file.unwrap_or_else(|| split_path("train"));
    let mut docs = read_documents(&path)
        .with_context(|| format!("reading calibration text {}", path.display()))?;
    if c.chat {
        docs = docs
            .iter()
            .map(|d| apply_chat_template(&[ChatMessage::user(d)], false, false))
            .collect();
    }
    let stream = TokenStream::from_lines(&tok, &docs, tok.token_id("[|endofturn|]"))?;
    Ok(exaone_compress::compress::calibration::samples(
        &stream, n, len, 0,
    )?)
}

/// The `quantize` subcommand's flags beside the model.
struct QuantizeFlags {
    scheme: String,
    method: String,
    group: usize,
    actorder: Option<String>,
    calib: Calib,
    out: PathBuf,
    overwrite: bool,
}

fn quantize(m: &ModelArgs, flags: QuantizeFlags) -> Result<()> {
    let QuantizeFlags {
        scheme,
        method,
        group,
        actorder,
        calib,
        out,
        overwrite,
    } = flags;
    let (scheme, method, actorder, out) =
        (scheme.as_str(), method.as_str(), actorder.as_deref(), out.as_path());
    use exaone_compress::compress::quant::{
        apply, awq::AwqConfig, gptq::GptqConfig, ActOrder, Scheme,
    };
    let dir = m.dir();
    // every flag and the destination checked before any long work
    if group == 0 {
        bail!("--group 0: a group holds at least 1 input column");
    }
    let mut s = match scheme {
        "w4a16" => Scheme::w4a16(group, true),
        "w4a16-asym" => Scheme::w4a16(group, false),
        "w8a8" => Scheme::w8a8_int8(),
        "fp8" => Scheme::fp8_dynamic(),
        other => bail!("unknown scheme {other:?} (w4a16, w4a16-asym, w8a8, fp8)"),
    };
    s = s.with_actorder(match actorder {
        None => None,
        Some("static") => Some(ActOrder::Static),
        Some("group") => Some(ActOrder::Group),
        Some(o) => bail!("unknown actorder {o:?} (static, group)"),
    });
    if let Err(e) = s.check() {
        bail!("--scheme {scheme} --group {group}: {e}");
    }
    if !["rtn", "gptq", "awq"].contains(&method) {
        bail!("unknown method {method:?} (rtn, gptq, awq)");
    }
    let opts = exaone_compress::checkpoint::WriteOptions {
        side_files_from: Some(dir.clone()),
        overwrite,
        ..Default::default()
    };
    opts.check_destination(out)?;
    let device = exaone_compress::runtime::open_device(&m.device)?;
    let dtype = parse_dtype("auto", &device)?;
    let base = exaone_compress::runtime::load_model(&dir, dtype, &device)?;
    let mut log = vec![];
    let calib = match method {
        "gptq" | "awq" => calibration(&dir, calib)?,
        _ => vec![],
    };
    // timed: the quantization itself (calibration passes included), not loading or tokenizing
    let t0 = Instant::now();
    let q = match method {
        "rtn" => apply::quantize_rtn(&base, &s, &|_| false)?,
        "gptq" => apply::quantize_gptq(
            &base,
            &s,
            &calib,
            &GptqConfig::default(),
            &|_| false,
            &mut log,
        )?,
        "awq" => apply::quantize_awq(
            &base,
            &s,
            &calib,
            &AwqConfig::default(),
            &|_| false,
            &mut log,
        )?,
        other => bail!("unknown method {other:?} (rtn, gptq, awq)"),
    };
    let secs = t0.elapsed().as_secs_f64();
    for l in &log {
        eprintln!("{l}");
    }
    exaone_compress::compress::quant::apply::save_quantized(&q, out, &opts)?;
    eprintln!(
        "{method} {} of {} Linears in {secs:.2} s; wrote {}",
        s.name(),
        q.linears.len(),
        out.display()
    );
    Ok(())
}

fn prune(
    m: &ModelArgs,
    drop: Option<Vec<usize>>,
    rule: Option<&str>,
    out: &std::path::Path,
    overwrite: bool,
) -> Result<()> {
    use exaone_compress::compress::prune::{choose, DropRule};
    let dir = m.dir();
    let opts = exaone_compress::checkpoint::WriteOptions {
        side_files_from: Some(dir.clone()),
        overwrite,
        ..Default::default()
    };
    opts.check_destination(out)?;
    let device = exaone_compress::runtime::open_device(&m.device)?;
    let base = exaone_compress::runtime::load_model(&dir, parse_dtype("auto", &device)?, &device)?;
    let rule = match (drop, rule) {
        (Some(d), None) => DropRule::Explicit(d),
        (None, Some(r)) => {
            let (kind, n) = r
                .split_once(':')
                .with_context(|| format!("--rule {r:?}: expected KIND:N"))?;
            let n: usize = n
                .parse()
                .with_context(|| format!("--rule {r:?}: N must be a number"))?;
            match kind {
                "uniform" => DropRule::Uniform(n),
                "first" => DropRule::First(n),
                "last" => DropRule::Last(n),
                "bi" => DropRule::BlockInfluence(n),
                "kl" => DropRule::MeasuredKl(n),
                other => bail!("unknown rule {other:?} (uniform, first, last, bi, kl)"),
            }
        }
        _ => bail!("give exactly one of --drop and --rule"),
    };
    let calib = match rule {
        DropRule::BlockInfluence(_) | DropRule::MeasuredKl(_) => Some(calibration(
            &dir,
            Calib {
                file: None,
                n: 16,
                len: 256,
                chat: false,
            },
        )?),
        _ => None,
    };
    let dropped = choose(&base, &rule, calib.as_deref())?;
    let kept: Vec<usize> = (0..base.layers.len())
        .filter(|i| !dropped.contains(i))
        .collect();
    let small = base.with_layers(&kept)?;
    exaone_compress::checkpoint::save_model(&small, out, Some(candle_core::DType::BF16), &opts)?;
    eprintln!(
        "dropped layers {dropped:?}; {} remain; wrote {}",
        kept.len(),
        out.display()
    );
    Ok(())
}

fn dequant(model: &std::path::Path, out: &std::path::Path, overwrite: bool) -> Result<()> {
    let check = exaone_compress::checkpoint::WriteOptions {
        side_files_from: Some(model.to_path_buf()),
        overwrite,
        ..Default::default()
    };
    check.check_destination(out)?;
    let ckpt = Checkpoint::open(model)?;
    if ckpt.quant_info()?.is_none() {
        eprintln!(
            "note: {} is not quantized; writing a bf16 copy",
            model.display()
        );
    }
    let opts = exaone_compress::checkpoint::WriteOptions {
        overwrite,
        ..Default::default()
    };
    exaone_compress::checkpoint::compressed_tensors::dequantize_checkpoint(&ckpt, out, &opts)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn package(
    model: &std::path::Path,
    out: &std::path::Path,
    check: bool,
    overwrite: bool,
) -> Result<()> {
    use exaone_compress::checkpoint::package;
    if check {
        let problems = package::validate(model);
        for p in &problems {
            println!("problem: {p}");
        }
        if !problems.is_empty() {
            bail!("{} problem(s) in {}", problems.len(), model.display());
        }
        println!("ok: {} is ready to package", model.display());
        return Ok(());
    }
    for note in package::package_to(model, out, overwrite)? {
        eprintln!("note: {note}");
    }
    let size = std::fs::metadata(out)?.len();
    println!(
        "wrote {} ({:.1} MiB, model/ at the root)",
        out.display(),
        size as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn info(m: &ModelArgs, json: bool) -> Result<()> {
    let dir = m.dir();
    let ckpt = Checkpoint::open(&dir)?;
    let c = &ckpt.config;
    let full = c
        .layer_types
        .iter()
        .filter(|t| **t == exaone_compress::model::LayerType::FullAttention)
        .count();
    let quant = c
        .raw
        .get("quantization_config")
        .and_then(|q| q.get("format"))
        .and_then(|f| f.as_str())
        .unwrap_or("none");
    let storage = ckpt
        .storage_dtype()
        .map(|d| format!("{d:?}").to_lowercase())
        .unwrap_or_default();
    let v = serde_json::json!({
        "path": dir.display().to_string(),
        "architecture": "Exaone4ForCausalLM",
        "model_type": "exaone4",
        "parameters": c.num_parameters(),
        "bytes_on_disk": ckpt.bytes_on_disk(),
        "dtype": c.dtype.clone().unwrap_or_default(),
        "storage_dtype": storage,
        "tie_word_embeddings": c.tie_word_embeddings,
        "lm_head_in_file": ckpt.contains("lm_head.weight"),
        "num_hidden_layers": c.num_hidden_layers,
        "full_attention_layers": full,
        "sliding_attention_layers": c.num_hidden_layers - full,
        "sliding_window": c.sliding_window,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "attention_heads": c.num_attention_heads,
        "kv_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_position_embeddings,
        "rope": if c.rope_scaling.is_some() { "llama3" } else { "default" },
        "quantization": quant,
        "tensors": ckpt.names().count(),
        "shards": ckpt.files().count(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (k, val) in v.as_object().expect("object") {
            let s = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k}: {s}");
        }
        for w in c.warnings() {
            println!("warning: {w}");
        }
    }
    Ok(())
}
