//! The steps of a recipe: each one's parameters and their checks, and running it on a model
//! directory to write a new one. The CLI's commands and `apply` both run steps through
//! [`Step::run`], so a recipe rebuilds exactly what the commands made.

use std::path::{Path, PathBuf};

use candle_core::DType;
use serde::{Deserialize, Serialize};

use super::hash::hash_tokens;
use super::quantize::run_quantize;
use super::source::read_source;
use super::{
    bad, positive_at_most, within, Calibration, Check, Ctx, ModelRef, QuantizeStep, Quantizer,
    Source,
};
use crate::checkpoint::{save_model, write_model_dir, Checkpoint, RawTensor, WriteOptions};
use crate::compress::distill::{distill_cached, DistillConfig, ParamGroup};
use crate::compress::prune::{choose, DropRule};
use crate::error::Result;
use crate::model::Exaone4;
use crate::train::TrainConfig;

/// An `Option` field that must be present (`null` allowed): serde would default it silently.
pub(super) fn required<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// One step of a recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// drop decoder layers (config surgery, renumbering); stored in bf16, or as the input
    /// stores them where it is quantized
    Prune(PruneStep),
    /// logit distillation of the input (the student) towards a teacher; stored in bf16
    Distill(DistillStep),
    /// quantize every decoder Linear not ignored; stored as compressed-tensors
    Quantize(QuantizeStep),
    /// the dense bf16 equivalent of a compressed-tensors checkpoint
    Dequantize(DequantizeStep),
}

/// What a step did: log lines, and a one-line summary (the CLI prints it with "; wrote OUT").
#[derive(Clone, Debug, Default)]
pub struct StepReport {
    pub log: Vec<String>,
    pub summary: String,
}

pub(super) fn write_opts(input: &Path) -> WriteOptions {
    WriteOptions {
        side_files_from: Some(input.to_path_buf()),
        ..Default::default()
    }
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Prune(_) => "prune",
            Self::Distill(_) => "distill",
            Self::Quantize(_) => "quantize",
            Self::Dequantize(_) => "dequantize",
        }
    }

    /// The step in words, e.g. `drop[3] (kl:1)`, `gptq W4A16-g128-sym`, `kd[norms] × 60 steps`.
    pub fn describe(&self) -> String {
        match self {
            // before it runs, a rule's layers are not chosen yet
            Self::Prune(p) if p.dropped.is_empty() => format!("drop by {}", p.rule),
            Self::Prune(p) => format!("drop{:?} ({})", p.dropped, p.rule),
            Self::Distill(d) => format!("kd[{}] × {} steps", d.train.join(", "), d.steps),
            Self::Quantize(q) => {
                let s = q.scheme().map(|s| s.name()).unwrap_or_default();
                let ig = if q.ignore.is_empty() {
                    String::new()
                } else {
                    format!(" ignore[{}]", q.ignore.join(", "))
                };
                format!("{} {s}{ig}", q.quantizer.name())
            }
            Self::Dequantize(_) => "dequantize".into(),
        }
    }

    /// The data files the step reads (calibration texts, distillation data).
    pub fn data_sources(&self) -> Vec<&Source> {
        match self {
            Self::Prune(p) => p.calibration.iter().map(|c| &c.data).collect(),
            Self::Distill(d) => vec![&d.data],
            Self::Quantize(q) => match &q.quantizer {
                Quantizer::Gptq { calibration, .. } | Quantizer::Awq { calibration, .. } => {
                    vec![&calibration.data]
                }
                _ => vec![],
            },
            Self::Dequantize(_) => vec![],
        }
    }

    /// Why vLLM could not serve what the step makes ([`QuantizeStep::serving_warning`]); None
    /// for steps that quantize nothing.
    pub fn serving_warning(&self) -> Option<String> {
        match self {
            Self::Quantize(q) => q.serving_warning(),
            _ => None,
        }
    }

    /// The parameters within their ranges and combinations, before any work.
    pub fn check(&self) -> Result<()> {
        match self {
            Self::Prune(p) => {
                parse_rule(&p.rule)?;
                if let Some(c) = &p.calibration {
                    c.check()?;
                }
                Ok(())
            }
            Self::Distill(d) => d.check(),
            Self::Quantize(q) => q.check(),
            Self::Dequantize(_) => Ok(()),
        }
    }

    /// Runs the step on the model directory `input`, writing a new one at `out` (a fresh path,
    /// e.g. inside a [`super::Staging`]). With [`Check::Record`] what the step reads (data
    /// hashes) and decides (the layers a rule drops) is recorded in the step; with
    /// [`Check::Verify`] it is checked against the step, and the recorded decisions are used.
    pub fn run(&mut self, input: &Path, out: &Path, ctx: &Ctx) -> Result<StepReport> {
        self.check()?;
        match self {
            Self::Prune(p) => run_prune(p, input, out, ctx),
            Self::Distill(d) => run_distill(d, input, out, ctx),
            Self::Quantize(q) => run_quantize(q, input, out, ctx),
            Self::Dequantize(_) => {
                let ck = Checkpoint::open(input)?;
                ck.check_quant_layout()?;
                let mut log = vec![];
                if ck.quant_info()?.is_none() {
                    log.push(format!(
                        "note: {} is not quantized; writing a bf16 copy",
                        input.display()
                    ));
                }
                crate::checkpoint::compressed_tensors::dequantize_checkpoint(
                    &ck,
                    out,
                    &WriteOptions::default(),
                )?;
                Ok(StepReport {
                    log,
                    summary: String::new(),
                })
            }
        }
    }
}

// ---- prune -----------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneStep {
    /// how the layers were chosen: `drop:3,7` (by index), `uniform:N`, `first:N`, `last:N`,
    /// `bi:N` (Block Influence), `kl:N` (measured KL)
    pub rule: String,
    /// the layers dropped (the input's numbering): what `apply` drops
    pub dropped: Vec<usize>,
    /// the text `bi` and `kl` measure on (null for the other rules)
    #[serde(deserialize_with = "required")]
    pub calibration: Option<Calibration>,
}

impl PruneStep {
    /// A step that drops what `rule` chooses; `bi` and `kl` measure on 16 windows of 256 tokens
    /// of the shipped train split (seed 0), as the `prune` command always has.
    pub fn new(rule: &DropRule) -> Self {
        let measured = matches!(rule, DropRule::BlockInfluence(_) | DropRule::MeasuredKl(_));
        Self {
            rule: rule_word(rule),
            dropped: vec![],
            calibration: measured.then(|| Calibration::new(None, 16, 256, false, 0)),
        }
    }
}

/// A drop rule in the words `--rule` and recipes use.
pub fn rule_word(r: &DropRule) -> String {
    match r {
        DropRule::Explicit(v) => {
            let v: Vec<String> = v.iter().map(usize::to_string).collect();
            format!("drop:{}", v.join(","))
        }
        DropRule::Uniform(n) => format!("uniform:{n}"),
        DropRule::First(n) => format!("first:{n}"),
        DropRule::Last(n) => format!("last:{n}"),
        DropRule::BlockInfluence(n) => format!("bi:{n}"),
        DropRule::MeasuredKl(n) => format!("kl:{n}"),
    }
}

/// The rule [`rule_word`] wrote.
pub fn parse_rule(s: &str) -> Result<DropRule> {
    let err = || {
        bad(format!(
            "rule {s:?}: expected drop:I,J,… or KIND:N with KIND one of uniform, first, last, bi, kl"
        ))
    };
    let (kind, rest) = s.split_once(':').ok_or_else(err)?;
    let nums: Vec<usize> = rest
        .split(',')
        .map(|n| n.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| err())?;
    let one = || match nums[..] {
        [n] if n > 0 => Ok(n),
        _ => Err(err()),
    };
    Ok(match kind {
        "drop" => DropRule::Explicit(nums.clone()),
        "uniform" => DropRule::Uniform(one()?),
        "first" => DropRule::First(one()?),
        "last" => DropRule::Last(one()?),
        "bi" => DropRule::BlockInfluence(one()?),
        "kl" => DropRule::MeasuredKl(one()?),
        _ => return Err(err()),
    })
}

fn run_prune(p: &mut PruneStep, input: &Path, out: &Path, ctx: &Ctx) -> Result<StepReport> {
    let base = crate::runtime::load_model(input, ctx.dtype, &ctx.device)?;
    let n = base.layers.len();
    let dropped = if ctx.check == Check::Record {
        let rule = parse_rule(&p.rule)?;
        let calib = match p.calibration.as_mut() {
            Some(c) => Some(c.read(input, ctx)?),
            None => None,
        };
        p.dropped = choose(&base, &rule, calib.as_deref())?;
        p.dropped.clone()
    } else {
        // the recorded choice (a rule's measurement is not repeated)
        if let Some(i) = p.dropped.iter().find(|&&i| i >= n) {
            return Err(bad(format!(
                "dropped: layer {i} does not exist (the input has {n})"
            )));
        }
        let mut d = p.dropped.clone();
        d.sort();
        d.dedup();
        if d.is_empty() || d.len() >= n || d != p.dropped {
            return Err(bad(format!("dropped {:?}: expected distinct layers in increasing order, at least one and fewer than all {n}", p.dropped)));
        }
        d
    };
    let kept: Vec<usize> = (0..n).filter(|i| !dropped.contains(i)).collect();
    let ck = Checkpoint::open(input)?;
    if ck.quant_info()?.is_some() {
        save_pruned_as_stored(&ck, &base.config.with_layers(&kept), &kept, input, out)?;
    } else {
        let small = base.with_layers(&kept)?;
        save_model(&small, out, Some(DType::BF16), &write_opts(input))?;
    }
    Ok(StepReport {
        log: vec![],
        summary: format!("dropped layers {dropped:?}; {} remain", kept.len()),
    })
}

/// `name` renumbered for a model that keeps the layers `kept` (in order): None where it names no
/// layer (`model.layers.I.…`), Some(None) where it names a dropped one.
fn renumbered(name: &str, kept: &[usize]) -> Option<Option<String>> {
    let (i, tail) = name.strip_prefix("model.layers.")?.split_once('.')?;
    let i: usize = i.parse().ok()?;
    Some(
        kept.iter()
            .position(|&k| k == i)
            .map(|j| format!("model.layers.{j}.{tail}")),
    )
}

/// Writes a pruned quantized (compressed-tensors) checkpoint as the input stores it: the kept
/// layers' tensors copied byte for byte under their new numbers, the config's layer count and
/// types (`cfg`) and its `quantization_config.ignore` entries that name a layer renumbered (a
/// dropped layer's removed). A regex entry that names layers by number cannot be renumbered and
/// is refused.
fn save_pruned_as_stored(
    ck: &Checkpoint,
    cfg: &crate::Exaone4Config,
    kept: &[usize],
    input: &Path,
    out: &Path,
) -> Result<()> {
    let mut value = cfg.to_value();
    if let Some(ignore) = value
        .pointer_mut("/quantization_config/ignore")
        .and_then(|v| v.as_array_mut())
    {
        let mut renamed = vec![];
        for e in ignore.drain(..) {
            let Some(name) = e.as_str() else {
                renamed.push(e);
                continue;
            };
            let numbered = name.starts_with("re:")
                && name.contains("layers")
                && name.chars().any(|c| c.is_ascii_digit());
            if numbered {
                return Err(bad(format!(
                    "prune: {}'s quantization ignore list names layers by number in the regex {name:?}, which cannot be renumbered; prune the dense model and quantize after",
                    input.display()
                )));
            }
            match renumbered(name, kept) {
                None => renamed.push(e),
                Some(Some(n)) => renamed.push(n.into()),
                Some(None) => {}
            }
        }
        *ignore = renamed;
    }
    let mut tensors = std::collections::BTreeMap::new();
    for name in ck.names() {
        let new = match renumbered(name, kept) {
            None => name.clone(),
            Some(Some(n)) => n,
            Some(None) => continue,
        };
        let i = ck.info(name)?;
        let raw = RawTensor {
            dtype: i.dtype,
            shape: i.shape.clone(),
            data: ck.bytes(name)?.to_vec(),
        };
        tensors.insert(new, raw);
    }
    write_model_dir(out, cfg, Some(value), &tensors, &write_opts(input))
}

// ---- distill ---------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillStep {
    /// the teacher: the recipe's base, or a model `apply` is given with `--teacher`
    pub teacher: ModelRef,
    /// what the student trains: `norms`, `embedding`, `lm-head` (untied first), `all-layers`,
    /// `layer:N` (the student's numbering)
    pub train: Vec<String>,
    pub steps: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    /// the cosine decays from lr to lr · min_lr_ratio
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// global gradient-norm clip (0: none)
    pub grad_clip: f64,
    /// of KL(teacher ‖ student)
    pub temperature: f64,
    /// windows per step
    pub batch: usize,
    /// tokens per window
    pub seq_len: usize,
    /// of the windows drawn
    pub seed: u64,
    pub data: Source,
    pub data_hash: String,
    /// the hash of the token stream the windows are drawn from
    pub tokens_hash: String,
}

impl DistillStep {
    /// The `distill` experiment's settings: `steps` of AdamW at lr 1e-3 (warm-up a tenth of the
    /// steps, no weight decay, β 0.9/0.95, clip 1, cosine to a tenth), KL(teacher ‖ student) at
    /// T = 1 on batches of 8 windows of 256 tokens of `data` (default: the shipped train split),
    /// seed 7, the norms trained.
    pub fn new(teacher: ModelRef, steps: usize, data: Option<&Path>) -> Self {
        let t = TrainConfig::default();
        Self {
            teacher,
            train: vec!["norms".into()],
            steps,
            lr: 1e-3,
            warmup_steps: steps / 10,
            min_lr_ratio: t.min_lr_ratio,
            weight_decay: 0.0,
            beta1: t.beta1,
            beta2: t.beta2,
            grad_clip: t.grad_clip,
            temperature: 1.0,
            batch: 8,
            seq_len: 256,
            seed: 7,
            data: data.map_or(Source::Role("train".into()), Source::of),
            data_hash: String::new(),
            tokens_hash: String::new(),
        }
    }

    fn check(&self) -> Result<()> {
        for g in &self.train {
            parse_group(g, None)?;
        }
        if self.train.is_empty() {
            return Err(bad("train: no parameter group (e.g. norms)"));
        }
        within("steps", self.steps, &(1..=10_000_000))?;
        positive_at_most("lr", self.lr, 1.0)?;
        within("warmup_steps", self.warmup_steps, &(0..=self.steps))?;
        within("min_lr_ratio", self.min_lr_ratio, &(0.0..=1.0))?;
        within("weight_decay", self.weight_decay, &(0.0..=1.0))?;
        within("beta1", self.beta1, &(0.0..=0.999_999))?;
        within("beta2", self.beta2, &(0.0..=0.999_999))?;
        within("grad_clip", self.grad_clip, &(0.0..=1e6))?;
        within("temperature", self.temperature, &(1e-3..=100.0))?;
        within("batch", self.batch, &(1..=4096))?;
        within("seq_len", self.seq_len, &(1..=1 << 20))
    }

    /// The configuration `compress::distill` runs, for a student of `layers` layers.
    pub fn config(&self, layers: usize) -> Result<DistillConfig> {
        let mut groups: Vec<ParamGroup> = vec![];
        for g in &self.train {
            let g = parse_group(g, Some(layers))?;
            if let ParamGroup::Layers(new) = &g {
                let have = groups.iter_mut().find_map(|x| match x {
                    ParamGroup::Layers(l) => Some(l),
                    _ => None,
                });
                if let Some(l) = have {
                    l.extend(new);
                    l.sort();
                    l.dedup();
                    continue;
                }
            }
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        Ok(DistillConfig {
            train: TrainConfig {
                steps: self.steps,
                lr: self.lr,
                min_lr_ratio: self.min_lr_ratio,
                warmup_steps: self.warmup_steps,
                weight_decay: self.weight_decay,
                beta1: self.beta1,
                beta2: self.beta2,
                grad_clip: self.grad_clip,
                eval_every: 0,
                ..Default::default()
            },
            temperature: self.temperature,
            groups,
            batch: self.batch,
            seq_len: self.seq_len,
            seed: self.seed,
        })
    }
}

/// A parameter group's word (`norms`, `embedding`, `lm-head`, `all-layers`, `layer:N`); layer
/// numbers are checked against `layers` when it is known.
pub fn parse_group(s: &str, layers: Option<usize>) -> Result<ParamGroup> {
    let n = layers.unwrap_or(usize::MAX);
    Ok(match s {
        "norms" => ParamGroup::Norms,
        "embedding" => ParamGroup::Embedding,
        "lm-head" => ParamGroup::UntiedLmHead,
        "all-layers" => ParamGroup::Layers((0..layers.unwrap_or(0)).collect()),
        _ => match s.strip_prefix("layer:").map(str::parse::<usize>) {
            Some(Ok(i)) if i < n => ParamGroup::Layers(vec![i]),
            Some(Ok(i)) => {
                return Err(bad(format!(
                    "train layer:{i}: the student's {n} layers are numbered 0 to {}", n.saturating_sub(1)
                )))
            }
            _ => {
                return Err(bad(format!(
                    "train {s:?}: unknown parameter group (allowed: norms, embedding, lm-head, all-layers, layer:N)"
                )))
            }
        },
    })
}

/// The directory of the distill step's teacher among the models the run knows.
fn teacher_dir(d: &mut DistillStep, ctx: &Ctx) -> Result<PathBuf> {
    let want = d.teacher.id();
    if let Some((p, _)) = ctx.models.iter().find(|(_, id)| *id == want) {
        return Ok(p.clone());
    }
    match (ctx.check, ctx.models.last()) {
        (Check::Verify { allow_mismatch: true }, Some((p, id))) => {
            eprintln!("warning: the distill step's teacher ({}) is not among the models given; using {} (--allow-mismatch)", d.teacher.model.label(), p.display());
            d.teacher = ModelRef {
                model: Source::of(p),
                config_hash: id.config_hash.clone(),
                weights_hash: id.weights_hash.clone(),
            };
            Ok(p.clone())
        }
        _ => Err(bad(format!(
            "the distill step's teacher ({}, weights {}) is not the base model{}: give it with --teacher DIR",
            d.teacher.model.label(),
            d.teacher.weights_hash,
            if ctx.models.len() > 1 { " nor --teacher" } else { "" }
        ))),
    }
}

fn run_distill(d: &mut DistillStep, input: &Path, out: &Path, ctx: &Ctx) -> Result<StepReport> {
    let tdir = teacher_dir(d, ctx)?;
    let path = read_source(&d.data, &mut d.data_hash, ctx, "distillation data")?;
    let teacher = crate::runtime::load_model(&tdir, ctx.dtype, &ctx.device)?;
    let mut student = crate::runtime::load_model(input, ctx.dtype, &ctx.device)?;
    let (tv, sv) = (teacher.config.vocab_size, student.config.vocab_size);
    if tv != sv {
        return Err(bad(format!("distill: the teacher's vocab_size is {tv}, the student's {sv}: logits can only be distilled over one vocabulary")));
    }
    let cfg = d.config(student.layers.len())?;
    // what would fail after the training fails before it
    let ctx_len = student.config.max_position_embeddings;
    if d.seq_len > ctx_len {
        return Err(bad(format!(
            "distill: windows of {} tokens exceed the student's context (max_position_embeddings {ctx_len})",
            d.seq_len
        )));
    }
    if ctx.device.is_cpu() {
        // the student's logits, their gradient and the teacher's log-probabilities, in f32
        let need = 3 * 4 * d.batch * d.seq_len * sv;
        if let Some(have) = crate::device::available_memory().filter(|&h| need as u64 > h) {
            return Err(bad(format!(
                "distill: a step of {} × {} tokens needs at least {:.1} GiB for its logits ({} × vocabulary {sv} × f32, three copies), more than the {:.1} GiB of memory available; use a smaller batch or seq_len",
                d.batch,
                d.seq_len,
                need as f64 / (1u64 << 30) as f64,
                d.batch * d.seq_len,
                have as f64 / (1u64 << 30) as f64
            )));
        }
    }
    if Checkpoint::open(input)?.quant_info()?.is_some() {
        stored_dense(&student, &cfg.groups, input)?;
    }
    let stream = ctx.token_stream(input, &path, false)?;
    ctx.settle(
        &mut d.tokens_hash,
        hash_tokens(std::slice::from_ref(&stream.ids)),
        &|| format!("the tokens of {}", path.display()),
    )?;
    // validation: windows of the shipped val split, for the log only
    let val_stream = ctx.token_stream(input, &crate::data::split_path("val"), false)?;
    let mut r = crate::data::rng(d.seed + 1);
    let val = vec![val_stream.sample_windows(2, d.seq_len.min(256), &mut r, &ctx.device)?];
    let name = format!(
        "{} {} {:?} {:?}",
        d.teacher.config_hash, d.teacher.weights_hash, ctx.dtype, ctx.device
    );
    // a student that is its teacher (same config and weights, nothing untied) sits at the
    // minimum: KL(teacher ‖ student) is 0 at every token and so is its gradient. Training would
    // only turn the rounding differences of two forward paths into AdamW steps of size lr.
    let id = super::hash::ModelId::of(input)?;
    let is_teacher = id.weights_hash == d.teacher.weights_hash
        && id.config_hash == d.teacher.config_hash
        && !cfg.groups.contains(&ParamGroup::UntiedLmHead);
    if is_teacher {
        save_student(&student, &cfg.groups, input, out)?;
        return Ok(StepReport {
            log: vec![],
            summary:
                "the student is its teacher (same weights): nothing to learn, written unchanged"
                    .into(),
        });
    }
    let cache = ctx.teacher_cache.as_deref().map(|c| (c, name.as_str()));
    let log = distill_cached(&teacher, &mut student, &stream, &val, &cfg, cache)?;
    save_student(&student, &cfg.groups, input, out)?;
    let (first, last) = (log.first(), log.last());
    let summary = format!(
        "distilled [{}] for {} steps: KD loss {:.4} → {:.4}, validation KL {:.4}",
        d.train.join(", "),
        log.len(),
        first.map_or(f64::NAN, |p| p.loss),
        last.map_or(f64::NAN, |p| p.loss),
        last.and_then(|p| p.eval_loss).unwrap_or(f64::NAN)
    );
    Ok(StepReport {
        log: vec![],
        summary,
    })
}

/// Writes a distilled student: in bf16 when the input was dense; as the input stored it when it
/// was quantized (compressed-tensors), its quantized Linears unchanged and only the trained
/// tensors replaced — training a quantized Linear itself is refused (dequantize first).
fn save_student(student: &Exaone4, groups: &[ParamGroup], input: &Path, out: &Path) -> Result<()> {
    let ck = Checkpoint::open(input)?;
    if ck.quant_info()?.is_none() {
        return save_model(student, out, Some(DType::BF16), &write_opts(input));
    }
    stored_dense(student, groups, input)?;
    let mut tensors = std::collections::BTreeMap::new();
    for name in ck.names() {
        let i = ck.info(name)?;
        let raw = RawTensor {
            dtype: i.dtype,
            shape: i.shape.clone(),
            data: ck.bytes(name)?.to_vec(),
        };
        tensors.insert(name.clone(), raw);
    }
    for (name, t) in student.named_tensors() {
        if !groups.iter().any(|g| g.selects(&name)) {
            continue;
        }
        let stored = if name == "lm_head.weight" {
            tensors.get("model.embed_tokens.weight")
        } else {
            tensors.get(&name)
        };
        let dt = match stored.map(|r| r.dtype) {
            Some(safetensors::Dtype::F32) => DType::F32,
            Some(safetensors::Dtype::F16) => DType::F16,
            _ => DType::BF16,
        };
        tensors.insert(name, RawTensor::from_tensor(&t.to_dtype(dt)?)?);
    }
    let path = input.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| crate::Error::json(&path, e))?;
    if student.lm_head.is_some() {
        value["tie_word_embeddings"] = false.into();
    }
    let mut cfg = student.config.clone();
    cfg.tie_word_embeddings = student.lm_head.is_none();
    write_model_dir(out, &cfg, Some(value), &tensors, &write_opts(input))
}

/// Every tensor `groups` trains is stored dense at its shape in the quantized checkpoint
/// `input` (the trained tensors replace those; a quantized Linear cannot be replaced so).
fn stored_dense(student: &Exaone4, groups: &[ParamGroup], input: &Path) -> Result<()> {
    let ck = Checkpoint::open(input)?;
    for (name, t) in student.named_tensors() {
        if !groups.iter().any(|g| g.selects(&name)) {
            continue;
        }
        let stored = match name.as_str() {
            "lm_head.weight" => "model.embed_tokens.weight",
            n => n,
        };
        let dense = |i: &crate::checkpoint::TensorInfo| i.shape == t.dims() && i.is_float();
        // (a W8A8 Linear's int8 weight has the dense shape: the dtype tells them apart)
        if !ck.contains(stored) || !dense(ck.info(stored)?) {
            return Err(bad(format!(
                "distill: {name} of the quantized checkpoint {} is not stored as a dense tensor; train norms, embedding or lm-head of a quantized model, or dequantize it first",
                input.display()
            )));
        }
    }
    Ok(())
}

/// The empty parameters of a dequantize step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DequantizeStep {}
