//! The `exaone-compress` command line. Thin: every command is a few library calls.
//! `info`, `generate`, `logits`, `dequant` and `package` are a scripted interface — keep their
//! flags and output formats stable.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::{Parser, Subcommand};
use exaone_compress::device::parse_dtype;
use exaone_compress::model::chat_template::ChatTemplate;
use exaone_compress::model::generate::{generate_timed, GenerationConfig, GenerationRequest};
use exaone_compress::model::{ChatMessage, Tokenizer};
use exaone_compress::Checkpoint;

/// Redraws the report in `dir` from its results (the experiment they name picks the layout).
fn report(dir: &std::path::Path, command: &str) -> Result<()> {
    let path = dir.join("results.parquet");
    let r = exaone_compress::record::Results::load(&path)?;
    match r.experiment.as_str() {
        "bench_runtime" => exaone_compress::report::runtime::write(&r, dir, command)?,
        "serve_bench" => exaone_compress::report::serve::write(&r, dir, command)?,
        e => bail!(
            "{}: results of `{e}`; this command redraws bench_runtime and serve_bench reports (a study's report is redrawn by rerunning it)",
            path.display()
        ),
    }
    println!("{}", dir.join("README.md").display());
    Ok(())
}

mod commands;
mod flags;
mod recipes;
use commands::{dequant, info, package, prune, quantize};
use flags::{checked, word, ActOrderArg, Calib, DtypeArg, MethodArg, QuantizeFlags, SchemeArg};

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
    /// HF model directory (default: the shipped default model, data/default-model)
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_parser = checked(exaone_compress::device::device_word))]
    device: String,
}

impl ModelArgs {
    /// `--model`, else the shipped default model (an error naming where it was looked for when
    /// the binary was moved without its data).
    fn dir(&self) -> Result<PathBuf> {
        match &self.model {
            Some(m) => Ok(m.clone()),
            None => Ok(exaone_compress::default_model()?),
        }
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
    #[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "ids"])))]
    Generate {
        #[command(flatten)]
        m: ModelArgs,
        /// prompt text (needs tokenizer.json in the model directory); or --ids
        #[arg(long)]
        prompt: Option<String>,
        /// prompt as comma-separated token ids
        #[arg(long, value_delimiter = ',')]
        ids: Option<Vec<u32>>,
        /// wrap the prompt in the model's chat template (user turn + generation prompt):
        /// chat_template.jinja or tokenizer_config.json's, else the built-in EXAONE 4 format
        #[arg(long, conflicts_with = "ids")]
        chat: bool,
        /// system message for --chat
        #[arg(long)]
        system: Option<String>,
        /// reasoning mode for --chat (the template's enable_thinking)
        #[arg(long)]
        think: bool,
        #[arg(long, default_value_t = 128, value_parser = checked(flags::at_least_one))]
        max_new_tokens: usize,
        #[arg(long, default_value_t = 0)]
        min_new_tokens: usize,
        /// greedy decoding (default: sample as generation_config.json says, greedy if it says nothing)
        #[arg(long, conflicts_with_all = ["temperature", "top_p"])]
        greedy: bool,
        /// sampling temperature, > 0
        #[arg(long, value_parser = checked(flags::temperature))]
        temperature: Option<f64>,
        /// nucleus sampling mass, in (0, 1]
        #[arg(long, value_parser = checked(flags::top_p))]
        top_p: Option<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// also print the generated ids as a JSON array on its own line
        #[arg(long)]
        print_ids: bool,
        /// auto (f32 on cpu, bf16 on cuda), f32, bf16, f16
        #[arg(long, default_value = "auto", value_parser = word::<DtypeArg>())]
        dtype: DtypeArg,
    },
    /// Write the f32 logits of every position as a NumPy .npy [n_ids, vocab]
    Logits {
        #[command(flatten)]
        m: ModelArgs,
        /// token ids, comma-separated
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
        /// the .npy file to write
        #[arg(long)]
        out: PathBuf,
        /// compute dtype (the logits are written as f32 whatever it is)
        #[arg(long, default_value = "f32", value_parser = word::<DtypeArg>())]
        dtype: DtypeArg,
        /// replace --out if it exists
        #[arg(long)]
        overwrite: bool,
    },
    /// Write the dense bf16 equivalent of a compressed-tensors checkpoint
    Dequant {
        /// the compressed-tensors checkpoint directory
        #[arg(long)]
        model: PathBuf,
        /// the bf16 model directory to write
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
        #[arg(long, value_parser = word::<SchemeArg>())]
        scheme: SchemeArg,
        /// rtn, gptq or awq (awq: W4A16 only)
        #[arg(long, default_value = "rtn", value_parser = word::<MethodArg>())]
        method: MethodArg,
        /// input columns per quantization group, W4A16 schemes only [default: 128]
        #[arg(long, value_parser = checked(flags::group))]
        group: Option<usize>,
        /// GPTQ act-order: static (no g_idx) or group (g_idx saved; W4A16 schemes)
        #[arg(long, value_parser = word::<ActOrderArg>())]
        actorder: Option<ActOrderArg>,
        /// calibration text for gptq/awq (.jsonl with "text" or "messages", or plain lines);
        /// default: the shipped train split
        #[arg(long)]
        calib: Option<PathBuf>,
        /// calibration samples for gptq/awq [default: 32]
        #[arg(long, value_parser = checked(flags::at_least_one))]
        calib_samples: Option<usize>,
        /// tokens per calibration sample for gptq/awq [default: 256]
        #[arg(long, value_parser = checked(flags::at_least_one))]
        calib_len: Option<usize>,
        /// wrap each calibration text as a user turn of the model's chat template (JSONL lines
        /// with "messages" always go through the template)
        #[arg(long)]
        calib_chat: bool,
        /// seed of the calibration windows for gptq/awq [default: 0]
        #[arg(long)]
        calib_seed: Option<u64>,
        /// GPTQ: fraction of mean(diag H) added to the Hessian's diagonal, in [0, 1]
        /// [default: 0.01]
        #[arg(long, value_parser = checked(flags::damp))]
        damp: Option<f64>,
        /// GPTQ: columns per lazy-update block, 1..=16384 [default: 128]
        #[arg(long, value_parser = checked(flags::block))]
        block: Option<usize>,
        /// GPTQ: times the damping is raised tenfold when the Cholesky factorisation fails,
        /// 0..=10 [default: 4]
        #[arg(long, value_parser = checked(flags::damp_retries))]
        max_damp_retries: Option<usize>,
        /// AWQ: scale ratios tried per mapping, 1..=1000 [default: 20]
        #[arg(long, value_parser = checked(flags::awq_grid))]
        awq_grid: Option<usize>,
        /// AWQ: smooth up→down only (llm-compressor's mapping), not also v→o (GQA-aware)
        #[arg(long)]
        no_v_to_o: bool,
        /// AWQ: weight-clipping search steps, 0 (no clipping)..=100 [default: 10]
        #[arg(long, value_parser = checked(flags::clip_steps))]
        clip_steps: Option<usize>,
        /// AWQ: input rows the clipping search uses, 1..=65536 [default: 256]
        #[arg(long, value_parser = checked(flags::clip_rows))]
        clip_rows: Option<usize>,
        /// Linears to leave dense besides lm_head, comma-separated: names
        /// (model.layers.0.self_attn.q_proj), dotted prefixes (model.layers.3), dotted suffixes
        /// (mlp.down_proj) or globs (model.layers.*.mlp.down_proj); q/k/v and gate/up go together
        #[arg(long, value_delimiter = ',')]
        ignore: Vec<String>,
        /// the compressed-tensors model directory to write (with recipe.json)
        #[arg(long)]
        out: PathBuf,
        /// replace --out if it holds a model directory
        #[arg(long)]
        overwrite: bool,
    },
    /// Drop decoder layers (config surgery and renumbering included)
    #[command(group(clap::ArgGroup::new("layers").required(true).args(["drop", "rule"])))]
    Prune {
        #[command(flatten)]
        m: ModelArgs,
        /// explicit layer indices, e.g. 15 or 3,7; or --rule
        #[arg(long, value_delimiter = ',')]
        drop: Option<Vec<usize>>,
        /// uniform:N, first:N, last:N, bi:N (Block Influence), kl:N (measured KL)
        #[arg(long, value_parser = checked(flags::rule))]
        rule: Option<exaone_compress::compress::prune::DropRule>,
        /// the pruned model directory to write (with recipe.json)
        #[arg(long)]
        out: PathBuf,
        /// replace --out if it holds a model directory
        #[arg(long)]
        overwrite: bool,
    },
    /// Heal a student (a pruned or otherwise compressed model) by logit distillation from the
    /// teacher --model, and write it with its recipe
    Distill {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        d: recipes::DistillArgs,
    },
    /// Rebuild a checkpoint from its recipe.json: the same steps on the same base model, bit for
    /// bit on the device the recipe ran on
    Apply(recipes::ApplyArgs),
    /// Redraw a benchmark's report (README.md and charts) from its results.parquet alone: the
    /// runtime (bench_runtime) and serving (serve_bench) benchmarks
    Report {
        /// the report's folder (holding results.parquet)
        #[arg(long)]
        results: PathBuf,
        /// the command line that produced the results, to print in the report
        #[arg(long, value_parser = checked(flags::command_line))]
        command: String,
    },
    /// Validate a model directory for the evaluation server and zip it as model/ (submit.zip)
    Package {
        /// the model directory to validate and zip
        #[arg(long)]
        model: PathBuf,
        /// the zip to write (*.zip)
        #[arg(long, default_value = "submit.zip", value_parser = checked(flags::zip_path))]
        out: PathBuf,
        /// only print the problems found; write nothing (so no --out, no --overwrite)
        #[arg(long, conflicts_with_all = ["out", "overwrite"])]
        check: bool,
        /// replace --out if it exists
        #[arg(long)]
        overwrite: bool,
    },
}

/// A flag error (a bad value, or flags that do not go together): clap's message, exit status 1
/// like every other failure of this CLI (clap itself would exit with 2).
pub(crate) fn flag_error(kind: clap::error::ErrorKind, msg: String) -> ! {
    use clap::CommandFactory;
    let _ = clap::Error::raw(kind, format!("{msg}\n"))
        .with_cmd(&Cli::command())
        .print();
    std::process::exit(1)
}

fn main() -> std::process::ExitCode {
    exaone_compress::error::exit(run())
}

fn run() -> Result<()> {
    // `exaone-compress info | head` ends quietly when the reader goes away, as Unix tools do
    // (Rust starts with SIGPIPE ignored, so a print to the closed pipe would panic)
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread exists
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // as the studies do: freed tensors stay in the process for reuse (`distill` of 10 steps on
    // the default model: 39 s, 19 s of it in the kernel, against 29 s and 3 s), and candle's
    // matmul thread count is fixed once
    exaone_compress::study::tune_process();
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit() // --help, --version
        }
        let _ = e.print();
        std::process::exit(1)
    });
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
            if !chat && (think || system.is_some()) {
                let f = if think { "--think" } else { "--system" };
                let msg = format!("{f} shapes the chat template's prompt: it needs --chat");
                flag_error(clap::error::ErrorKind::MissingRequiredArgument, msg);
            }
            if min_new_tokens > max_new_tokens {
                let msg = format!("--min-new-tokens {min_new_tokens} is more than --max-new-tokens {max_new_tokens}: generation stops at the maximum");
                flag_error(clap::error::ErrorKind::ValueValidation, msg);
            }
            let dir = m.dir()?;
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
            let dtype = parse_dtype(dtype.word(), &device)?;
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
                        let mut kwargs = serde_json::Map::new();
                        kwargs.insert("enable_thinking".into(), think.into());
                        ChatTemplate::from_dir(&dir)?.render(&msgs, true, &kwargs)?
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
                    "note: --max-new-tokens {max_new_tokens} capped at {room}: after a {}-token prompt, max_position_embeddings {} holds {} more tokens to run through the model, and the last new token is not run",
                    prompt_ids.len(),
                    ckpt.config.max_position_embeddings,
                    room.saturating_sub(1)
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
            // an empty line alone would not say why
            if out.first().is_some_and(|id| opts.eos_ids.contains(id)) {
                eprintln!(
                    "note: the model ended its reply at once (its first new token, {}, is an end-of-sequence token); --min-new-tokens N keeps it from stopping before N tokens",
                    out[0]
                );
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
            let dir = m.dir()?;
            let device = exaone_compress::runtime::open_device(&m.device)?;
            let dtype = parse_dtype(dtype.word(), &device)?;
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
        Cmd::Report { results, command } => report(&results, &command),
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
            calib_seed,
            damp,
            block,
            max_damp_retries,
            awq_grid,
            no_v_to_o,
            clip_steps,
            clip_rows,
            ignore,
            out,
            overwrite,
        } => {
            use exaone_compress::compress::quant::{awq::AwqConfig, gptq::GptqConfig};
            let (g, a) = (GptqConfig::default(), AwqConfig::default());
            let flags = QuantizeFlags {
                scheme,
                method,
                group: group.unwrap_or(128),
                actorder,
                calib: Calib {
                    file: calib,
                    n: calib_samples.unwrap_or(32),
                    len: calib_len.unwrap_or(256),
                    chat: calib_chat,
                    seed: calib_seed.unwrap_or(0),
                },
                gptq: GptqConfig {
                    damp: damp.unwrap_or(g.damp),
                    block: block.unwrap_or(g.block),
                    max_damp_retries: max_damp_retries.unwrap_or(g.max_damp_retries),
                },
                awq: AwqConfig {
                    grid: awq_grid.unwrap_or(a.grid),
                    v_to_o: !no_v_to_o,
                    clip_steps: clip_steps.unwrap_or(a.clip_steps),
                    clip_rows: clip_rows.unwrap_or(a.clip_rows),
                },
                ignore,
                out,
                overwrite,
            };
            let given = |v: &[(bool, &'static str)]| -> Vec<&'static str> {
                v.iter().filter_map(|(g, f)| g.then_some(*f)).collect()
            };
            let calib_given = given(&[
                (flags.calib.file.is_some(), "--calib"),
                (calib_samples.is_some(), "--calib-samples"),
                (calib_len.is_some(), "--calib-len"),
                (calib_chat, "--calib-chat"),
                (calib_seed.is_some(), "--calib-seed"),
            ]);
            let gptq_given = given(&[
                (damp.is_some(), "--damp"),
                (block.is_some(), "--block"),
                (max_damp_retries.is_some(), "--max-damp-retries"),
            ]);
            let awq_given = given(&[
                (awq_grid.is_some(), "--awq-grid"),
                (no_v_to_o, "--no-v-to-o"),
                (clip_steps.is_some(), "--clip-steps"),
                (clip_rows.is_some(), "--clip-rows"),
            ]);
            if let Err(msg) = flags::quantize_combination(&flags, group.is_some(), &calib_given)
                .and_then(|_| {
                    flags::settings_combination(
                        &flags,
                        &gptq_given,
                        &awq_given,
                        clip_rows.is_some(),
                    )
                })
            {
                flag_error(clap::error::ErrorKind::ArgumentConflict, msg);
            }
            quantize(&m, flags)
        }
        Cmd::Distill { m, d } => recipes::distill(&m, d),
        Cmd::Apply(a) => recipes::apply(a),
        Cmd::Prune {
            m,
            drop,
            rule,
            out,
            overwrite,
        } => prune(&m, drop, rule, &out, overwrite),
    }
}
