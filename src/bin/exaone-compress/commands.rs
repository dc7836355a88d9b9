//! The subcommands that write or inspect checkpoints: quantize (with its calibration), prune,
//! dequant, package, info.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use exaone_compress::device::parse_dtype;
use exaone_compress::model::chat_template::ChatTemplate;
use exaone_compress::Checkpoint;

use super::flags::{ActOrderArg, Calib, MethodArg, QuantizeFlags, SchemeArg};
use super::ModelArgs;

pub(crate) fn calibration(dir: &std::path::Path, c: Calib) -> Result<Vec<Vec<u32>>> {
    use exaone_compress::compress::calibration::read_documents_with_template;
    use exaone_compress::data::{split_path, TokenStream};
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
    // the chat template of the directory the tokenizer comes from
    let tdir = if fell_back {
        exaone_compress::default_model_dir()
    } else {
        dir.to_path_buf()
    };
    let template = ChatTemplate::from_dir(&tdir)?;
    let path = c.file.unwrap_or_else(|| split_path("train"));
    let docs = read_documents_with_template(&path, &template, c.chat)
        .with_context(|| format!("reading calibration text {}", path.display()))?;
    let stream = TokenStream::from_lines(&tok, &docs, tok.token_id("[|endofturn|]"))?;
    exaone_compress::compress::calibration::samples(&stream, c.n, c.len, 0)
        .context("--calib-samples × --calib-len")
}

pub(crate) fn quantize(m: &ModelArgs, flags: QuantizeFlags) -> Result<()> {
    use exaone_compress::compress::quant::{
        apply, awq::AwqConfig, gptq::GptqConfig, ActOrder, Scheme,
    };
    let QuantizeFlags {
        scheme,
        method,
        group,
        actorder,
        calib,
        out,
        overwrite,
    } = flags;
    let out = out.as_path();
    let dir = m.dir();
    // every flag and the destination checked before any long work
    let s = match scheme {
        SchemeArg::W4a16 => Scheme::w4a16(group, true),
        SchemeArg::W4a16Asym => Scheme::w4a16(group, false),
        SchemeArg::W8a8 => Scheme::w8a8_int8(),
        SchemeArg::Fp8 => Scheme::fp8_dynamic(),
    }
    .with_actorder(actorder.map(|a| match a {
        ActOrderArg::Static => ActOrder::Static,
        ActOrderArg::Group => ActOrder::Group,
    }));
    if let Err(e) = s.check() {
        bail!("--scheme {} --group {group}: {e}", scheme.name());
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
        MethodArg::Gptq | MethodArg::Awq => calibration(&dir, calib)?,
        MethodArg::Rtn => vec![],
    };
    // timed: the quantization itself (calibration passes included), not loading or tokenizing
    let t0 = Instant::now();
    let q = match method {
        MethodArg::Rtn => apply::quantize_rtn(&base, &s, &|_| false)?,
        MethodArg::Gptq => apply::quantize_gptq(
            &base,
            &s,
            &calib,
            &GptqConfig::default(),
            &|_| false,
            &mut log,
        )?,
        MethodArg::Awq => apply::quantize_awq(
            &base,
            &s,
            &calib,
            &AwqConfig::default(),
            &|_| false,
            &mut log,
        )?,
    };
    let secs = t0.elapsed().as_secs_f64();
    for l in &log {
        eprintln!("{l}");
    }
    exaone_compress::compress::quant::apply::save_quantized(&q, out, &opts)?;
    eprintln!(
        "{} {} of {} Linears in {secs:.2} s; wrote {}",
        method.name(),
        s.name(),
        q.linears.len(),
        out.display()
    );
    Ok(())
}

pub(crate) fn prune(
    m: &ModelArgs,
    drop: Option<Vec<usize>>,
    rule: Option<exaone_compress::compress::prune::DropRule>,
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
        (None, Some(r)) => r,
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

pub(crate) fn dequant(
    model: &std::path::Path,
    out: &std::path::Path,
    overwrite: bool,
) -> Result<()> {
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

pub(crate) fn package(
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

pub(crate) fn info(m: &ModelArgs, json: bool) -> Result<()> {
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
