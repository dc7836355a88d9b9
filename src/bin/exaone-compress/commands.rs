//! The subcommands that write or inspect checkpoints: quantize, prune, dequant (each writing
//! the checkpoint with its recipe.json), package, info.

use std::path::Path;

use anyhow::{bail, Result};
use exaone_compress::compress::recipe::{
    self, ActOrderName, Calibration, Check, Ctx, DequantizeStep, PruneStep, QuantizeStep,
    Quantizer, Recipe, SchemeName, Step, StepReport,
};
use exaone_compress::Checkpoint;

use super::flags::{ActOrderArg, MethodArg, QuantizeFlags, SchemeArg};
use super::ModelArgs;

/// Runs `step` on `input` and writes `out` with its recipe (the input's own recipe, when it
/// still describes the input, followed by `step`).
fn make_with_recipe(
    device: &str,
    step: Step,
    input: &Path,
    out: &Path,
    overwrite: bool,
) -> Result<StepReport> {
    let ctx = Ctx::new(device, Check::Record)?;
    let r = Recipe::start(input, &ctx)?;
    let (_, rep) = recipe::make(r, step, input, out, overwrite, &ctx)?;
    Ok(rep)
}

pub(crate) fn quantize(m: &ModelArgs, flags: QuantizeFlags) -> Result<()> {
    let QuantizeFlags {
        scheme,
        method,
        group,
        actorder,
        calib,
        gptq,
        awq,
        ignore,
        out,
        overwrite,
    } = flags;
    let out = out.as_path();
    let dir = m.dir()?;
    // every flag and the destination checked before any long work
    let calibration = Calibration::new(
        calib.file.as_deref(),
        calib.n,
        calib.len,
        calib.chat,
        calib.seed,
    );
    let quantizer = match method {
        MethodArg::Rtn => Quantizer::Rtn {},
        MethodArg::Gptq => {
            let a = match actorder {
                None => ActOrderName::None,
                Some(ActOrderArg::Static) => ActOrderName::Static,
                Some(ActOrderArg::Group) => ActOrderName::Group,
            };
            Quantizer::gptq(&gptq, a, calibration)
        }
        MethodArg::Awq => Quantizer::awq(&awq, calibration),
    };
    let step = QuantizeStep {
        scheme: match scheme {
            SchemeArg::W4a16 => SchemeName::W4a16,
            SchemeArg::W4a16Asym => SchemeName::W4a16Asym,
            SchemeArg::W8a8 => SchemeName::W8a8,
            SchemeArg::Fp8 => SchemeName::Fp8,
        },
        group: scheme.grouped().then_some(group),
        ignore,
        quantizer,
    };
    if let Err(e) = step.check() {
        let e = e.to_string();
        if e.starts_with("ignore") {
            bail!("--{e}");
        }
        bail!("--scheme {} --group {group}: {e}", scheme.name());
    }
    if let Some(w) = step.serving_warning() {
        eprintln!("warning: --{w}");
    }
    let opts = exaone_compress::checkpoint::WriteOptions {
        side_files_from: Some(dir.clone()),
        overwrite,
        ..Default::default()
    };
    opts.check_destination(out)?;
    if !step.ignore.is_empty() {
        let layers = exaone_compress::Exaone4Config::from_file(&dir)?.num_hidden_layers;
        step.ignored(layers).map_err(|e| anyhow::anyhow!("--{e}"))?;
    }
    let rep = make_with_recipe(&m.device, Step::Quantize(step), &dir, out, overwrite)?;
    for l in &rep.log {
        eprintln!("{l}");
    }
    eprintln!("{}; wrote {}", rep.summary, out.display());
    Ok(())
}

pub(crate) fn prune(
    m: &ModelArgs,
    drop: Option<Vec<usize>>,
    rule: Option<exaone_compress::compress::prune::DropRule>,
    out: &Path,
    overwrite: bool,
) -> Result<()> {
    use exaone_compress::compress::prune::DropRule;
    let dir = m.dir()?;
    let opts = exaone_compress::checkpoint::WriteOptions {
        side_files_from: Some(dir.clone()),
        overwrite,
        ..Default::default()
    };
    opts.check_destination(out)?;
    let rule = match (drop, rule) {
        (Some(d), None) => DropRule::Explicit(d),
        (None, Some(r)) => r,
        _ => bail!("give exactly one of --drop and --rule"),
    };
    let step = Step::Prune(PruneStep::new(&rule));
    let rep = make_with_recipe(&m.device, step, &dir, out, overwrite)?;
    eprintln!("{}; wrote {}", rep.summary, out.display());
    Ok(())
}

pub(crate) fn dequant(model: &Path, out: &Path, overwrite: bool) -> Result<()> {
    let check = exaone_compress::checkpoint::WriteOptions {
        side_files_from: Some(model.to_path_buf()),
        overwrite,
        ..Default::default()
    };
    check.check_destination(out)?;
    let step = Step::Dequantize(DequantizeStep {});
    let rep = make_with_recipe("cpu", step, model, out, overwrite)?;
    for l in &rep.log {
        eprintln!("{l}");
    }
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
    let recipe = || exaone_compress::compress::recipe::recipe_note(model);
    if check {
        let problems = package::validate(model);
        for p in &problems {
            println!("problem: {p}");
        }
        if !problems.is_empty() {
            bail!("{} problem(s) in {}", problems.len(), model.display());
        }
        for note in package::notes(model).into_iter().chain(recipe()) {
            eprintln!("note: {note}");
        }
        println!("ok: {} is ready to package", model.display());
        return Ok(());
    }
    for note in package::package_to(model, out, overwrite)?
        .into_iter()
        .chain(recipe())
    {
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
    // nothing runs on it, but a device this build or machine lacks is an error as elsewhere
    exaone_compress::runtime::open_device(&m.device)?;
    let dir = m.dir()?;
    let ckpt = Checkpoint::open(&dir)?;
    // the figures below read the config: say when the tensors disagree with it
    if let Err(e) = ckpt.check_dense_shapes() {
        eprintln!("warning: the config does not describe the tensors: {e} (`package --check` lists every problem)");
    }
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
