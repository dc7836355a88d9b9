//! Recipes: how a checkpoint was made, kept beside it as `recipe.json`, and the function that
//! makes it again. A recipe holds the ordered steps (prune, distill, quantize, dequantize) with
//! every parameter; the data each step read, by role (`{"role": "train"}`: the shipped split,
//! wherever the shipped data is) or by a path relative to the working directory — never an
//! absolute path — with hashes of the file and of the tokens drawn from it; the base model's
//! identity (hashes of its config and of its tensors); the device and dtype the steps ran on;
//! the tool's version and build commit; the result's identity; and a checksum over all of it.
//!
//! The CLI runs every command that writes a checkpoint through [`Step::run`] and [`make`], and
//! [`Recipe::apply`] runs a recipe's steps through the same functions, so a recipe applied to the
//! same base on the same device rebuilds its variant bit for bit (and checks that it did).
//! Hashes are XXH64 (`xxh64:` + 16 hex digits). Weights are hashed tensor by tensor in name
//! order (name, dtype, shape, bytes), so the same tensors hash alike however they are sharded;
//! config.json is hashed as canonical JSON (keys sorted, no spaces).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::WriteOptions;
use crate::error::{Error, Result};

/// The file beside a checkpoint's weights.
pub const RECIPE_FILE: &str = "recipe.json";
/// The format this version writes and reads.
pub const FORMAT: &str = "exaone-compress recipe 1";

/// Ranges of the quantizers' settings (the CLI's flags and a recipe's fields alike).
pub const GPTQ_DAMP: RangeInclusive<f64> = 0.0..=1.0;
pub const GPTQ_BLOCK: RangeInclusive<usize> = 1..=16384;
pub const GPTQ_DAMP_RETRIES: RangeInclusive<usize> = 0..=10;
pub const AWQ_GRID: RangeInclusive<usize> = 1..=1000;
pub const AWQ_CLIP_STEPS: RangeInclusive<usize> = 0..=100;
pub const AWQ_CLIP_ROWS: RangeInclusive<usize> = 1..=65536;

fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

fn json_err(e: serde_json::Error) -> Error {
    bad(format!("recipe: {e}"))
}

/// Fails unless `v` lies in `r`, naming `what` and the range.
pub fn within<T: PartialOrd + std::fmt::Display>(
    what: &str,
    v: T,
    r: &RangeInclusive<T>,
) -> Result<()> {
    if r.contains(&v) {
        return Ok(());
    }
    Err(bad(format!(
        "{what} {v}: must lie in {}..={}",
        r.start(),
        r.end()
    )))
}

/// Fails unless `v` is at least `min`, naming `what` (a range with no upper end, which
/// [`within`] would print as `min..=18446744073709551615`).
pub fn at_least<T: PartialOrd + std::fmt::Display>(what: &str, v: T, min: T) -> Result<()> {
    match v >= min {
        true => Ok(()),
        false => Err(bad(format!("{what} {v}: must be at least {min}"))),
    }
}

/// Fails unless 0 < `v` ≤ `max`, naming `what` (an open lower end, which [`within`] would
/// print as the smallest positive f64).
pub fn positive_at_most(what: &str, v: f64, max: f64) -> Result<()> {
    match v > 0.0 && v <= max {
        true => Ok(()),
        false => Err(bad(format!("{what} {v}: must be > 0 and at most {max}"))),
    }
}

mod hash;
mod quantize;
mod source;
mod steps;
use hash::canonical;
pub use hash::{hash_bytes, hash_json, hash_tokens, ModelId, Xxh64};
pub use quantize::*;
pub use source::*;
pub use steps::*;

// ---- the recipe ------------------------------------------------------------------------------

/// The tool that wrote a recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    pub version: String,
    /// the build commit (`+changes`: the tree had uncommitted edits)
    pub commit: String,
}

impl Tool {
    pub fn current() -> Self {
        Self {
            name: "exaone-compress".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            commit: crate::record::git_commit(),
        }
    }
}

/// Whether a recipe read from a file is as it was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Integrity {
    /// its checksum matches its content
    Sealed,
    /// no checksum (deleted on purpose after an edit, or a recipe built in memory)
    #[default]
    Unsealed,
    /// edited after it was written
    Broken { recorded: String, actual: String },
}

/// How a checkpoint was made, as `recipe.json` holds it (see the module's documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub format: String,
    pub tool: Tool,
    /// when it was written (RFC 3339, UTC)
    pub created: String,
    /// the model the first step reads
    pub base: ModelRef,
    /// where the steps ran (`cpu`, `cuda:0`) and their compute dtype
    pub device: String,
    pub dtype: String,
    pub steps: Vec<Step>,
    /// the identity of the checkpoint the steps made
    #[serde(default)]
    pub result: Option<ModelId>,
    /// the hash of every other field (canonical JSON): an edit is noticed
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(skip)]
    pub integrity: Integrity,
}

fn checksum_of(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("checksum");
    }
    hash_bytes(canonical(&v).as_bytes())
}

impl Recipe {
    /// A recipe with no steps yet, starting from `base`, run where `ctx` says.
    pub fn new(base: ModelRef, ctx: &Ctx) -> Self {
        Self::on_device(base, &ctx.device_name, ctx.dtype)
    }

    /// A recipe with no steps yet, starting from `base`, for steps run on `device` (as the user
    /// names it: `cpu`, `cuda:0`) in `dtype` — e.g. for a study that makes its variants in
    /// memory and writes them with [`write_checkpoint`].
    pub fn on_device(base: ModelRef, device: &str, dtype: candle_core::DType) -> Self {
        Self {
            format: FORMAT.into(),
            tool: Tool::current(),
            created: crate::record::now_utc(),
            base,
            device: device.into(),
            dtype: format!("{dtype:?}").to_lowercase(),
            steps: vec![],
            result: None,
            checksum: None,
            integrity: Integrity::Unsealed,
        }
    }

    /// The recipe a checkpoint made from `input` starts with: `input`'s own recipe while it
    /// still describes the directory (sealed, its recorded result the directory's weights), so
    /// steps chain back to the first base; else a new recipe with `input` as its base.
    pub fn start(input: &Path, ctx: &Ctx) -> Result<Self> {
        let here = ModelRef::of(input)?;
        let path = input.join(RECIPE_FILE);
        if path.exists() {
            match Self::read(&path) {
                Ok(r) if r.integrity == Integrity::Sealed && r.result == Some(here.id()) => {
                    if r.device != ctx.device_name {
                        eprintln!("note: {} ran on {}, this step on {}: a rebuild is bit-exact only where each step ran", path.display(), r.device, ctx.device_name);
                    }
                    let mut r = Self { steps: r.steps, ..Self::new(r.base, ctx) };
                    r.result = None;
                    return Ok(r);
                }
                Ok(_) => eprintln!("note: {} no longer describes its directory (edited, or the weights changed): the new recipe starts from {}", path.display(), input.display()),
                Err(e) => eprintln!("note: {e}: the new recipe starts from {}", input.display()),
            }
        }
        Ok(Self::new(here, ctx))
    }

    /// Reads a recipe file (or the `recipe.json` of a checkpoint directory): a clear error for a
    /// file that is not a recipe this version reads (unknown step, missing or unknown field,
    /// another format); its integrity is noted.
    pub fn read(path: &Path) -> Result<Self> {
        // a checkpoint directory stands for the recipe written beside its weights
        let inside;
        let path = if path.is_dir() {
            inside = path.join(RECIPE_FILE);
            inside.as_path()
        } else {
            path
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        let mut r: Recipe = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "{}: not a recipe this version can apply: {e} (steps: prune, distill, quantize, dequantize; every field is required)",
                path.display()
            ))
        })?;
        if r.format != FORMAT {
            return Err(bad(format!(
                "{}: format {:?}; this version reads {FORMAT:?}",
                path.display(),
                r.format
            )));
        }
        r.integrity = match &r.checksum {
            None => Integrity::Unsealed,
            Some(c) if *c == checksum_of(&v) => Integrity::Sealed,
            Some(c) => Integrity::Broken {
                recorded: c.clone(),
                actual: checksum_of(&v),
            },
        };
        Ok(r)
    }

    /// Every step's parameters within their ranges and combinations (before any work).
    pub fn check(&self) -> Result<()> {
        if self.steps.is_empty() {
            return Err(bad("recipe: no steps"));
        }
        if !["f32", "bf16", "f16"].contains(&self.dtype.as_str()) {
            return Err(bad(format!(
                "recipe: dtype {:?} is not a compute dtype the steps run in (f32, bf16 or f16)",
                self.dtype
            )));
        }
        for (i, s) in self.steps.iter().enumerate() {
            s.check()
                .map_err(|e| bad(format!("recipe step {} ({}): {e}", i + 1, s.kind())))?;
        }
        Ok(())
    }

    /// The steps in words, e.g. `drop[3] → gptq W4A16-g128-sym`.
    pub fn method(&self) -> String {
        let s: Vec<String> = self.steps.iter().map(Step::describe).collect();
        s.join(" → ")
    }

    /// The variant this recipe makes, for results and reports: its steps as the method, the
    /// steps' parameters as the params.
    pub fn variant(&self, name: &str) -> crate::record::Variant {
        let params = serde_json::to_value(&self.steps).unwrap_or(Value::Null);
        crate::record::Variant::new(name, self.method(), params)
    }

    /// The hash of what makes the variant — the base's identity, the device and dtype, the steps
    /// with every parameter — and of nothing else (not when, by which build, nor the result):
    /// two recipes with the same plan hash make the same variant. Take it before the steps run
    /// (running records data hashes and a rule's decisions in the steps).
    pub fn plan_hash(&self) -> String {
        hash_json(&serde_json::json!({
            "base": [&self.base.config_hash, &self.base.weights_hash],
            "device": &self.device,
            "dtype": &self.dtype,
            "steps": serde_json::to_value(&self.steps).unwrap_or(Value::Null),
        }))
    }

    fn seal(&mut self) -> Result<()> {
        self.checksum = None;
        let v = serde_json::to_value(&*self).map_err(json_err)?;
        self.checksum = Some(checksum_of(&v));
        self.integrity = Integrity::Sealed;
        Ok(())
    }

    /// The recipe as written: pretty JSON and a newline.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self).map_err(json_err)? + "\n")
    }
}

/// A staging directory beside `out` (named as [`crate::fs`] names temporaries, so what a
/// killed run leaves is cleaned by the next): checkpoints are written inside it, the last one
/// gets its recipe and is moved to `out` in one rename.
pub struct Staging {
    dir: tempfile::TempDir,
    out: PathBuf,
}

impl Staging {
    pub fn new(out: &Path) -> Result<Self> {
        let parent = crate::fs::parent_of(out).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let dir = tempfile::Builder::new()
            .prefix(&crate::fs::partial_prefix(out)?)
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        Ok(Self {
            dir,
            out: out.to_path_buf(),
        })
    }

    /// Where the checkpoint that goes to `out` is written.
    pub fn model(&self) -> PathBuf {
        self.dir.path().join("model")
    }

    /// Where an intermediate checkpoint is written.
    pub fn step(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("step-{i}"))
    }

    /// Completes `r` with the result's identity and its checksum, writes it beside the
    /// checkpoint and moves the checkpoint to `out` (replacing a model directory there only
    /// with `overwrite`). Returns the recipe as written.
    pub fn publish(self, mut r: Recipe, overwrite: bool) -> Result<Recipe> {
        let model = self.model();
        r.result = Some(ModelId::of(&model)?);
        r.seal()?;
        let path = model.join(RECIPE_FILE);
        std::fs::write(&path, r.to_json()?).map_err(|e| Error::io(&path, e))?;
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        crate::fs::publish_mode(&path, false)?;
        crate::fs::move_into_place(
            &model,
            &self.out,
            crate::fs::OutputKind::ModelDir,
            overwrite,
        )?;
        Ok(r)
    }
}

/// Runs `step` on the checkpoint at `input` and writes the result at `out` with its recipe —
/// `recipe` (see [`Recipe::start`]) followed by `step` — atomically: nothing appears at `out`
/// unless all of it does, and what is there is replaced only with `overwrite`.
pub fn make(
    recipe: Recipe,
    mut step: Step,
    input: &Path,
    out: &Path,
    overwrite: bool,
    ctx: &Ctx,
) -> Result<(Recipe, StepReport)> {
    refuse_data_inside(out, std::slice::from_ref(&step), ctx)?;
    let staging = Staging::new(out)?;
    let rep = step.run(input, &staging.model(), ctx)?;
    let mut r = recipe;
    r.steps.push(step);
    Ok((staging.publish(r, overwrite)?, rep))
}

/// Fails if a data file `steps` read lies in `out`: it would go with what `--overwrite`
/// replaces, and the recipe written there would name a file that no longer exists.
fn refuse_data_inside(out: &Path, steps: &[Step], ctx: &Ctx) -> Result<()> {
    for src in steps.iter().flat_map(Step::data_sources) {
        if let Ok(p) = src.resolve(&ctx.root) {
            crate::fs::refuse_overlap(out, &[p.as_path()], false)?;
        }
    }
    Ok(())
}

/// Writes a checkpoint made in memory (`write(dir)` writes it into `dir`) with `recipe`, as
/// [`make`] does: for studies that make variants themselves. The recipe rebuilds the
/// checkpoint only if its steps are what `write` did.
pub fn write_checkpoint(
    recipe: Recipe,
    out: &Path,
    overwrite: bool,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<Recipe> {
    let staging = Staging::new(out)?;
    write(&staging.model())?;
    staging.publish(recipe, overwrite)
}

/// What [`Recipe::apply`] may accept.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    pub overwrite: bool,
    /// a base model, data or result that differs from the recipe's: a warning, not an error
    pub allow_mismatch: bool,
    /// the teacher of a distill step whose teacher is not the base
    pub teacher: Option<PathBuf>,
}

/// What [`Recipe::apply`] did.
pub struct Applied {
    pub recipe: Recipe,
    pub reports: Vec<StepReport>,
    /// whether the result is the recorded one (None: nothing recorded to compare with)
    pub bit_exact: Option<bool>,
}

impl Recipe {
    /// Rebuilds the checkpoint this recipe describes from the base model at `base` into `out`:
    /// the recipe checked first (integrity, every field, the base's identity, the
    /// destination), then its steps run through the same functions the CLI ran, intermediate
    /// checkpoints kept in a staging directory beside `out`, and the result compared with the
    /// recorded one before anything is moved to `out` (a mismatch on the recipe's own device is
    /// an error unless `allow_mismatch`). `out` receives the checkpoint and a fresh recipe.
    pub fn apply(
        &self,
        base: &Path,
        out: &Path,
        ctx: &mut Ctx,
        opts: &ApplyOptions,
    ) -> Result<Applied> {
        if let Integrity::Broken { recorded, actual } = &self.integrity {
            return Err(bad(format!(
                "the recipe was changed after it was written: its checksum is {recorded} but its content hashes to {actual}; if the edit is on purpose, delete the \"checksum\" field (the result is then a new variant, not checked against the recorded one)"
            )));
        }
        self.check()?;
        WriteOptions {
            side_files_from: Some(base.to_path_buf()),
            overwrite: opts.overwrite,
            ..Default::default()
        }
        .check_destination(out)?;
        if let Some(t) = &opts.teacher {
            crate::fs::refuse_overlap(out, &[t.as_path()], true)?;
        }
        refuse_data_inside(out, &self.steps, ctx)?;
        let allow = opts.allow_mismatch;
        let id = ModelId::of(base)?;
        if id != self.base.id() {
            let msg = format!(
                "the base model {} is not the recipe's ({}): its config hashes to {} and its weights to {}, the recipe's to {} and {}",
                base.display(),
                self.base.model.label(),
                id.config_hash,
                id.weights_hash,
                self.base.config_hash,
                self.base.weights_hash
            );
            if !allow {
                return Err(bad(format!(
                    "{msg}; pass --allow-mismatch to apply the recipe to it anyway"
                )));
            }
            eprintln!("warning: {msg}; applied anyway (--allow-mismatch)");
        }
        if self.device != ctx.device_name {
            eprintln!(
                "note: the recipe ran on {}, this on {}: the result will not be bit-exact",
                self.device, ctx.device_name
            );
        }
        let tool = Tool::current();
        if self.tool.commit != tool.commit {
            eprintln!(
                "note: the recipe was written by commit {}, this is {}",
                self.tool.commit, tool.commit
            );
        }
        ctx.check = Check::Verify {
            allow_mismatch: allow,
        };
        ctx.models = vec![(base.to_path_buf(), self.base.id())];
        if let Some(t) = &opts.teacher {
            ctx.models.push((t.clone(), ModelId::of(t)?));
        }
        let staging = Staging::new(out)?;
        let mut r = Self {
            steps: self.steps.clone(),
            ..Self::new(
                ModelRef {
                    model: Source::of(base),
                    config_hash: id.config_hash,
                    weights_hash: id.weights_hash,
                },
                ctx,
            )
        };
        let (n, mut input, mut reports) = (r.steps.len(), base.to_path_buf(), vec![]);
        for (i, step) in r.steps.iter_mut().enumerate() {
            let o = if i + 1 == n {
                staging.model()
            } else {
                staging.step(i)
            };
            eprintln!("step {}/{n}: {}", i + 1, step.describe());
            reports.push(step.run(&input, &o, ctx)?);
            input = o;
        }
        let got = ModelId::of(&staging.model())?;
        let bit_exact = match (&self.integrity, &self.result) {
            (Integrity::Sealed, Some(want)) => Some(*want == got),
            _ => None,
        };
        if let (Some(false), Some(want)) = (bit_exact, &self.result) {
            let msg = format!(
                "the rebuilt checkpoint is not the recorded variant: its weights hash to {} (recorded {}), its config to {} (recorded {})",
                got.weights_hash, want.weights_hash, got.config_hash, want.config_hash
            );
            if self.device == ctx.device_name && !allow {
                return Err(bad(format!("{msg}; nothing was written. The same base, data, device and build rebuild bit for bit: a different build of the tool, or non-deterministic kernels, may explain it; pass --allow-mismatch to keep the result")));
            }
            eprintln!("warning: {msg}");
        }
        let recipe = staging.publish(r, opts.overwrite)?;
        Ok(Applied {
            recipe,
            reports,
            bit_exact,
        })
    }
}

/// A note when `dir`'s `recipe.json` cannot rebuild `dir` (`package` says it: the recipe goes
/// into the submission): not a recipe this version reads, or one recorded for other weights or
/// another config. None without a recipe, or when it is this checkpoint's.
pub fn recipe_note(dir: &Path) -> Option<String> {
    let path = dir.join(RECIPE_FILE);
    if !path.is_file() {
        return None;
    }
    let r = match Recipe::read(&path) {
        Ok(r) => r,
        Err(e) => {
            return Some(format!(
                "{e}: `exaone-compress apply` cannot rebuild this checkpoint from it"
            ))
        }
    };
    let (want, have) = (r.result?, ModelId::of(dir).ok()?);
    let what = match (
        want.weights_hash == have.weights_hash,
        want.config_hash == have.config_hash,
    ) {
        (true, true) => return None,
        (false, _) => format!(
            "weights {} where this directory's are {}",
            want.weights_hash, have.weights_hash
        ),
        (true, false) => "the same weights with another config.json".to_string(),
    };
    Some(format!("{RECIPE_FILE} was recorded for another checkpoint ({what}): `exaone-compress apply` would not rebuild this one from it"))
}
