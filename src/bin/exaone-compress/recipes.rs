//! The subcommands that work with recipes beyond writing them: `distill` (a student healed by
//! logit distillation from a teacher, written with its recipe) and `apply` (a checkpoint rebuilt
//! from its recipe).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use exaone_compress::compress::recipe::{
    self, ApplyOptions, Check, Ctx, DistillStep, ModelRef, Recipe, Step,
};

use super::flags::{self, checked};
use super::{flag_error, ModelArgs};

#[derive(clap::Args)]
pub struct DistillArgs {
    /// the student's model directory (e.g. written by `prune`); the teacher is --model
    #[arg(long)]
    student: PathBuf,
    /// the distilled model directory to write (with recipe.json)
    #[arg(long)]
    out: PathBuf,
    /// optimizer steps, 1..=10000000
    #[arg(long, default_value_t = 60, value_parser = checked(flags::steps))]
    steps: usize,
    /// what the student trains, comma-separated: norms, embedding, lm-head (untied first: one
    /// more vocab × hidden matrix on disk), all-layers, layer:N (the student's numbering)
    #[arg(long, value_delimiter = ',', default_value = "norms", value_parser = checked(flags::param_group))]
    train: Vec<String>,
    /// peak learning rate, in (0, 1]
    #[arg(long, default_value_t = 1e-3, value_parser = checked(flags::lr))]
    lr: f64,
    /// linear warm-up steps, at most --steps [default: a tenth of --steps]
    #[arg(long)]
    warmup: Option<usize>,
    /// the cosine decays to lr × this, in [0, 1]
    #[arg(long, default_value_t = 0.1, value_parser = checked(flags::unit))]
    min_lr_ratio: f64,
    /// AdamW weight decay of the matrices, in [0, 1]
    #[arg(long, default_value_t = 0.0, value_parser = checked(flags::unit))]
    weight_decay: f64,
    /// global gradient-norm clip (0: none)
    #[arg(long, default_value_t = 1.0, value_parser = checked(flags::grad_clip))]
    grad_clip: f64,
    /// temperature of KL(teacher ‖ student), in [0.001, 100]
    #[arg(long, default_value_t = 1.0, value_parser = checked(flags::kd_temperature))]
    temperature: f64,
    /// windows per step, 1..=4096
    #[arg(long, default_value_t = 8, value_parser = checked(flags::batch))]
    batch: usize,
    /// tokens per window
    #[arg(long, default_value_t = 256, value_parser = checked(flags::at_least_one))]
    seq_len: usize,
    /// seed of the windows drawn
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// training text (.jsonl with "text" or "messages", or plain lines) [default: the shipped
    /// train split]
    #[arg(long)]
    data: Option<PathBuf>,
    /// replace --out if it holds a model directory
    #[arg(long)]
    overwrite: bool,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// the recipe: a checkpoint's recipe.json (or the checkpoint's directory)
    #[arg(long)]
    recipe: PathBuf,
    /// the base model [default: the recipe's base — the shipped default model, or its path
    /// relative to --relative-to]
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, cuda or cuda:N (bit for bit only on the device the recipe ran on)
    #[arg(long, default_value = "cpu", value_parser = checked(exaone_compress::device::device_word))]
    device: String,
    /// the teacher of a distill step whose teacher is not the base
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// where the recipe's relative data and model paths resolve [default: the working directory]
    #[arg(long)]
    relative_to: Option<PathBuf>,
    /// apply even where the base model, the data or the result differ from the recipe's
    /// (warnings instead of errors; the result is then a new variant)
    #[arg(long)]
    allow_mismatch: bool,
    /// the rebuilt model directory to write
    #[arg(long)]
    out: PathBuf,
    /// replace --out if it holds a model directory
    #[arg(long)]
    overwrite: bool,
}

pub(crate) fn distill(m: &ModelArgs, a: DistillArgs) -> Result<()> {
    let warmup = a.warmup.unwrap_or(a.steps / 10);
    if warmup > a.steps {
        let msg = format!(
            "--warmup {warmup} is more than --steps {}: the warm-up is part of the steps",
            a.steps
        );
        flag_error(clap::error::ErrorKind::ValueValidation, msg);
    }
    let teacher = m.dir()?;
    let (student, out) = (a.student.as_path(), a.out.as_path());
    let opts = exaone_compress::checkpoint::WriteOptions {
        side_files_from: Some(student.to_path_buf()),
        overwrite: a.overwrite,
        ..Default::default()
    };
    exaone_compress::fs::refuse_overlap(out, &[teacher.as_path()], true)?;
    opts.check_destination(out)?;
    let mut ctx = Ctx::new(&m.device, Check::Record)?;
    let teacher_ref = ModelRef::of(&teacher)?;
    ctx.models = vec![(teacher.clone(), teacher_ref.id())];
    let mut step = DistillStep::new(teacher_ref, a.steps, a.data.as_deref());
    step.train = a.train;
    step.lr = a.lr;
    step.warmup_steps = warmup;
    step.min_lr_ratio = a.min_lr_ratio;
    step.weight_decay = a.weight_decay;
    step.grad_clip = a.grad_clip;
    step.temperature = a.temperature;
    step.batch = a.batch;
    step.seq_len = a.seq_len;
    step.seed = a.seed;
    // layer:N against the student, before any work
    let layers = exaone_compress::Exaone4Config::from_file(student)?.num_hidden_layers;
    step.config(layers).context("--train")?;
    let r = Recipe::start(student, &ctx)?;
    eprintln!(
        "distilling {} from {} (teacher): {} steps of {} × {} tokens, training {}",
        student.display(),
        teacher.display(),
        step.steps,
        step.batch,
        step.seq_len,
        step.train.join(", ")
    );
    let (_, rep) = recipe::make(r, Step::Distill(step), student, out, a.overwrite, &ctx)?;
    eprintln!("{}; wrote {}", rep.summary, out.display());
    Ok(())
}

pub(crate) fn apply(a: ApplyArgs) -> Result<()> {
    let r = Recipe::read(&a.recipe)?;
    for (i, step) in r.steps.iter().enumerate() {
        if let Some(w) = step.serving_warning() {
            eprintln!("warning: {} step {}: {w}", display(&a.recipe), i + 1);
        }
    }
    let allow_mismatch = a.allow_mismatch;
    let mut ctx = Ctx::new(&a.device, Check::Verify { allow_mismatch })?;
    if let Some(root) = &a.relative_to {
        ctx.root = root.clone();
    }
    let base = match &a.model {
        Some(m) => m.clone(),
        None => r.base.model.resolve(&ctx.root)?,
    };
    let opts = ApplyOptions {
        overwrite: a.overwrite,
        allow_mismatch,
        teacher: a.teacher.clone(),
    };
    let done = r
        .apply(&base, &a.out, &mut ctx, &opts)
        .with_context(|| format!("applying {}", a.recipe.display()))?;
    for rep in &done.reports {
        for l in &rep.log {
            eprintln!("{l}");
        }
        if !rep.summary.is_empty() {
            eprintln!("{}", rep.summary);
        }
    }
    let result = done
        .recipe
        .result
        .as_ref()
        .map(|id| id.weights_hash.as_str());
    let how = match done.bit_exact {
        Some(true) => "the recorded variant, bit for bit",
        Some(false) => "NOT the recorded variant (see the warning above)",
        None => "no sealed result in the recipe to compare with",
    };
    eprintln!(
        "wrote {} (weights {}): {how}",
        display(&a.out),
        result.unwrap_or("?")
    );
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
