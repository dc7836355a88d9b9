//! Variants made by recipes: a study names each variant by its steps (prune, distill, quantize
//! with every parameter) and [`Builder`] makes it by running those steps on the base model's
//! directory through [`Step::run`] — the code `exaone-compress apply` runs — so the recipe
//! written beside the checkpoint is what made it, not a description of it. A chain's prefixes
//! are built once and shared (the pruned model under every pruned variant), and distillations
//! share their teacher's logits ([`TeacherCache`]). What a study keeps afterwards ([`Keep`]) and
//! how a rerun skips what it measured already ([`resumable`]) live here too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::compress::distill::TeacherCache;
use crate::compress::recipe::{Check, Ctx, ModelRef, Recipe, Staging, Step};
use crate::error::{Error, Result};
use crate::record::Results;

/// Which variants' checkpoints a study keeps once it is done.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// none: every checkpoint is measured in a temporary directory and removed
    None,
    /// the variant the report recommends (the Score's pick)
    Recommended,
    /// every variant made by a recipe
    All,
}

/// The rows a study's verdict adds at the end ([`crate::study::add_scores`]): recomputed from
/// the others, so results carried over by `--resume` leave them out.
pub const SCORE_METRICS: [&str; 9] = [
    "predicted_speedup",
    "perf_norm",
    "speed_norm",
    "score",
    "score_lo",
    "score_hi",
    "verdict_best",
    "verdict_tied",
    "verdict_pick",
];

/// The metric of the rows that say where a kept checkpoint is (value 1; the params hold the
/// directory, its recipe and the command that rebuilds it).
pub const KEPT_METRIC: &str = "kept_checkpoint";

/// Teacher logits a study keeps for its distillations on the CPU (a GPU's memory is the
/// model's: there the teacher runs again).
const TEACHER_CACHE_BYTES: usize = 3 << 30;

/// Makes variants from recipes, in a working directory beside where kept checkpoints go.
pub struct Builder {
    pub base_dir: PathBuf,
    pub base: ModelRef,
    pub ctx: Ctx,
    work: tempfile::TempDir,
    /// every prefix built so far: its plan hash, its directory, its recipe as written
    built: Vec<(String, PathBuf, Recipe)>,
}

impl Builder {
    /// A builder for variants of the model at `base_dir`, run on `device` in `dtype`, whose
    /// working directory is a temporary sibling of `beside` (so kept checkpoints move into
    /// place with a rename).
    pub fn new(
        base_dir: &Path,
        device: &str,
        dtype: candle_core::DType,
        beside: &Path,
    ) -> Result<Self> {
        let mut ctx = Ctx::new(device, Check::Record)?;
        ctx.dtype = dtype;
        let base = ModelRef::of(base_dir)?;
        ctx.models = vec![(base_dir.to_path_buf(), base.id())];
        ctx.streams = Some(Default::default());
        if ctx.device.is_cpu() {
            ctx.teacher_cache = Some(Arc::new(TeacherCache::new(TEACHER_CACHE_BYTES)));
        }
        for note in crate::fs::clean_stale(beside) {
            eprintln!("note: {note}");
        }
        let parent = crate::fs::parent_of(beside).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let work = tempfile::Builder::new()
            .prefix(&crate::fs::partial_prefix(beside)?)
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        Ok(Self {
            base_dir: base_dir.to_path_buf(),
            base,
            ctx,
            work,
            built: vec![],
        })
    }

    /// The recipe of `steps` from the base, before they run.
    pub fn recipe(&self, steps: &[Step]) -> Recipe {
        let mut r = Recipe::new(self.base.clone(), &self.ctx);
        r.steps = steps.to_vec();
        r
    }

    /// Builds the variant `steps` make from the base: each prefix of the chain once (a prefix
    /// built before is reused), every step through [`Step::run`] from the previous step's
    /// directory. Returns the directory (inside the working directory) and its recipe.
    pub fn build(&mut self, steps: &[Step]) -> Result<(PathBuf, Recipe)> {
        if steps.is_empty() {
            return Err(Error::Invalid("a variant's recipe needs a step".into()));
        }
        let (mut input, mut recipe) = (self.base_dir.clone(), self.recipe(&[]));
        for k in 1..=steps.len() {
            let key = self.recipe(&steps[..k]).plan_hash();
            if let Some((_, dir, r)) = self.built.iter().find(|(h, ..)| *h == key) {
                (input, recipe) = (dir.clone(), r.clone());
                continue;
            }
            let out = self.work.path().join(format!("{}", self.built.len()));
            let staging = Staging::new(&out)?;
            let mut step = steps[k - 1].clone();
            eprintln!("  step {k}/{}: {}", steps.len(), step.describe());
            let rep = step.run(&input, &staging.model(), &self.ctx)?;
            for l in rep
                .log
                .iter()
                .chain(Some(&rep.summary).filter(|s| !s.is_empty()))
            {
                eprintln!("  {l}");
            }
            recipe.steps.push(step);
            recipe.result = None;
            recipe = staging.publish(recipe, false)?;
            self.built.push((key, out.clone(), recipe.clone()));
            input = out;
        }
        Ok((input, recipe))
    }

    /// Copies a built checkpoint to `dest`, atomically (a temporary sibling renamed into place;
    /// a model directory there replaced only with `overwrite`).
    pub fn keep(&self, dir: &Path, dest: &Path, overwrite: bool) -> Result<()> {
        crate::fs::check_destination(dest, crate::fs::OutputKind::ModelDir, overwrite)?;
        if let Some(p) = crate::fs::parent_of(dest).to_str() {
            std::fs::create_dir_all(p).map_err(|e| Error::io(Path::new(p), e))?;
        }
        // a copy beside `dest` first: the rename into place is then one step
        let staging = tempfile::Builder::new()
            .prefix(&crate::fs::partial_prefix(dest)?)
            .tempdir_in(crate::fs::parent_of(dest))
            .map_err(|e| Error::io(dest, e))?
            .keep();
        let copied = copy_dir(dir, &staging);
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        crate::fs::publish_mode(&staging, true)?;
        crate::fs::move_into_place(&staging, dest, crate::fs::OutputKind::ModelDir, overwrite)
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let p = e.map_err(|e| Error::io(from, e))?.path();
        if p.is_file() {
            let name = p.file_name().unwrap_or_default();
            std::fs::copy(&p, to.join(name)).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// The hash a resumed study compares: of a variant made in memory, its method and parameters
/// on the base (`base`: the base's plan hash, or its identity).
pub fn variant_hash(method: &str, params: &Value, base: &str) -> String {
    crate::compress::recipe::hash_json(&json!({"method": method, "params": params, "base": base}))
}

/// The rows of variant `name` in `previous` that a resumed study keeps instead of measuring it
/// again: those recorded with the same `recipe_hash` and `suite_hash` (what was measured and
/// how), less the verdict's rows (recomputed). None where the variant must be measured (absent,
/// or its recipe or the measurement changed: said on stderr).
pub fn resumable(
    previous: &Results,
    name: &str,
    recipe_hash: &str,
    suite_hash: &str,
) -> Option<Vec<crate::record::Row>> {
    // the rows of its measurement carry the hashes; rows a study records about the variant
    // otherwise (the base's per-layer drop-one KL, recorded before it is measured) do not, and
    // are recorded again by the resumed study
    let hashes = |r: &crate::record::Row| -> Option<Value> {
        let p: Value = serde_json::from_str(&r.params).ok()?;
        p.get("recipe_hash").is_some().then_some(p)
    };
    let Some(params) = previous
        .rows
        .iter()
        .filter(|r| r.variant == name)
        .find_map(hashes)
    else {
        if previous.variant(name).is_some() {
            eprintln!("{name}: not measured in the results being resumed; measuring it");
        }
        return None;
    };
    let same = |k: &str, want: &str| params.get(k).and_then(Value::as_str) == Some(want);
    if !same("recipe_hash", recipe_hash) {
        eprintln!("{name}: its recipe changed since the results being resumed; measuring it again");
        return None;
    }
    if !same("suite_hash", suite_hash) {
        eprintln!("{name}: measured with other settings (tokens, items, seeds) in the results being resumed; measuring it again");
        return None;
    }
    eprintln!("{name}: resumed (recipe {recipe_hash} unchanged)");
    Some(
        previous
            .rows
            .iter()
            .filter(|r| r.variant == name && !SCORE_METRICS.contains(&r.metric.as_str()))
            .filter(|r| !super::l4_speed::L4_SPEED_METRICS.contains(&r.metric.as_str()))
            .filter(|r| r.metric != KEPT_METRIC)
            .filter(|r| hashes(r).is_some())
            .cloned()
            .collect(),
    )
}

impl super::Study {
    fn builder(&mut self) -> Result<&mut Builder> {
        if self.builder.is_none() {
            let b = Builder::new(
                &self.dir,
                &self.args.device,
                self.base.dtype(),
                &self.ck_root,
            )?;
            self.builder = Some(b);
        }
        Ok(self.builder.as_mut().expect("just made"))
    }

    /// Makes the variant `name` by running `steps` on the base model (a chain's prefixes built
    /// once per study), writes it with its recipe, and evaluates the checkpoint as written —
    /// loaded as vLLM would load it. With `--resume`, a variant the resumed results hold with
    /// the same recipe (plan hash) and measurement is carried over instead.
    pub fn measure_recipe(&mut self, name: &str, steps: Vec<Step>) -> Result<()> {
        let hash = self.builder()?.recipe(&steps).plan_hash();
        if self.recipes.iter().any(|r| r.0 == name) {
            return Err(Error::Invalid(format!("variant {name:?} measured twice")));
        }
        if self.resumed(name, &hash) {
            // the same weights as a variant before it: said in the report as in the run that
            // measured it (its recorded result names its weights)
            let id = self.results.variant(name).and_then(|v| {
                let r = &v.params["result"];
                Some(crate::compress::recipe::ModelId {
                    config_hash: r["config_hash"].as_str()?.to_string(),
                    weights_hash: r["weights_hash"].as_str()?.to_string(),
                })
            });
            if let Some(same) = id.and_then(|id| self.measured_with_weights(&id, Some(name))) {
                self.same_weights.push((name.into(), same));
            }
            self.recipes.push((name.into(), steps, hash, None));
            return self.save_progress();
        }
        eprintln!("building {name}");
        let t0 = std::time::Instant::now();
        let (dir, recipe) = self.builder()?.build(&steps)?;
        self.stage(&format!("build {name}"), t0);
        let params = json!({"steps": recipe.steps, "result": recipe.result});
        let v = crate::record::Variant::new(name, recipe.method(), params);
        let v = self.with_hashes(&v, &hash);
        self.recipes
            .push((name.into(), steps, hash, Some(dir.clone())));
        let same = recipe
            .result
            .as_ref()
            .and_then(|id| self.measured_with_weights(id, None));
        if let Some(same) = same {
            // the same model: measuring it again would only resample the timings
            eprintln!("{name}: the same weights as {same}; its measurement carried over");
            self.carry_measurement(&same, &v, &dir)?;
            self.same_weights.push((name.into(), same));
            return self.save_progress();
        }
        let t0 = std::time::Instant::now();
        self.evaluate_dir(&v, &dir)?;
        self.stage_measured(name, t0);
        self.save_progress()
    }

    /// The variant measured in this run or resumed (the base included), other than `except`,
    /// whose model has the config and weights of `id`, if any.
    fn measured_with_weights(
        &self,
        id: &crate::compress::recipe::ModelId,
        except: Option<&str>,
    ) -> Option<String> {
        let key = format!("{} {}", id.config_hash, id.weights_hash);
        let base = &self.suite.base_variant;
        if key == self.base_key && self.results.get(base, "test_ppl").is_some() {
            return Some(base.clone());
        }
        self.results
            .variants()
            .into_iter()
            .filter(|n| Some(n.as_str()) != except)
            .filter(|n| self.results.get(n, "test_ppl").is_some())
            .find(|n| {
                self.results.variant(n).is_some_and(|v| {
                    let r = &v.params["result"];
                    r["config_hash"] == id.config_hash.as_str()
                        && r["weights_hash"] == id.weights_hash.as_str()
                })
            })
    }

    /// Records `same`'s measurement rows as `v`'s (the verdict's, the L4 projection's and the
    /// keeping rows are recomputed at the end, as for a resumed variant), with `v`'s own size on
    /// disk, and its generated answers' file under `v`'s name.
    fn carry_measurement(
        &mut self,
        same: &str,
        v: &crate::record::Variant,
        dir: &Path,
    ) -> Result<()> {
        let params = v.params.to_string();
        // as evaluating it would: no generation-scored pass for a variant (never the base) where
        // the base answered none of the items
        let skip_gen = self.suite.base_gen_answered.get() == Some(&0);
        let rows: Vec<crate::record::Row> = self
            .results
            .rows
            .iter()
            .filter(|r| r.variant == same && r.metric != "size_mib")
            .filter(|r| !SCORE_METRICS.contains(&r.metric.as_str()))
            .filter(|r| !super::l4_speed::L4_SPEED_METRICS.contains(&r.metric.as_str()))
            .filter(|r| r.metric != KEPT_METRIC && !r.metric.contains("_layer_"))
            .filter(|r| !(skip_gen && r.metric.starts_with("genmc_")))
            .map(|r| crate::record::Row {
                variant: v.name.clone(),
                method: v.method.clone(),
                params: params.clone(),
                ..r.clone()
            })
            .collect();
        self.results.rows.extend(rows);
        let mib = super::suite::dir_bytes(dir) as f64 / (1u64 << 20) as f64;
        self.results.add(v, "size_mib", mib, None, "MiB");
        let samples = self.suite.gen_mc.as_ref().and_then(|g| g.samples.as_ref());
        if let Some(d) = samples.filter(|_| !skip_gen) {
            let file = |n: &str| {
                let f = crate::record::Variant::new(n, "", json!({})).dir_name();
                d.join(format!("{f}.jsonl"))
            };
            let from = file(same);
            if from.is_file() {
                let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
                crate::fs::write_atomic(&file(&v.name), &bytes)?;
            }
        }
        Ok(())
    }

    /// Keeps the checkpoints `--keep` names under the checkpoints directory (each with its
    /// recipe.json; a variant resumed, not built in this run, is built again unless the kept
    /// one is already it), records where as [`KEPT_METRIC`] rows; in the default directory
    /// (`<out>/checkpoints`, the study's own) the variants an earlier run kept that this one does
    /// not are removed with `--overwrite` and otherwise left in place (and named on stderr).
    pub(crate) fn keep_checkpoints(&mut self) -> Result<()> {
        let picked = |n: &str| self.results.get(n, "verdict_pick") == Some(1.0);
        let names: Vec<String> = match self.keep {
            Keep::None => vec![],
            Keep::All => self.recipes.iter().map(|r| r.0.clone()).collect(),
            // random weights: the report recommends nothing, so nothing is "recommended" to keep
            Keep::Recommended if self.args.random_weights => {
                eprintln!("--keep recommended: with --random-weights the report recommends nothing; no checkpoint kept (--keep all keeps every variant's)");
                vec![]
            }
            Keep::Recommended => self
                .recipes
                .iter()
                .filter(|r| picked(&r.0))
                .map(|r| r.0.clone())
                .collect(),
        };
        let own = self.args.checkpoints.is_none();
        let overwrite = own || self.args.overwrite;
        let mut kept = vec![];
        for name in &names {
            let (steps, dir) = match self.recipes.iter().find(|r| &r.0 == name) {
                Some(r) => (r.1.clone(), r.3.clone()),
                None => continue,
            };
            let v = self.results.variant(name);
            let dest = self
                .ck_root
                .join(v.as_ref().map_or(name.clone(), |v| v.dir_name()));
            let want = v.as_ref().and_then(|v| {
                v.params["result"]["weights_hash"]
                    .as_str()
                    .map(String::from)
            });
            let have = crate::compress::recipe::ModelId::of(&dest)
                .ok()
                .map(|i| i.weights_hash);
            if dir.is_none() && want.is_some() && want == have {
                eprintln!("{name}: kept already at {}", dest.display());
            } else {
                let dir = match dir {
                    Some(d) => d,
                    None => {
                        eprintln!("building {name} again, to keep it");
                        self.builder()?.build(&steps)?.0
                    }
                };
                self.builder()?.keep(&dir, &dest, overwrite)?;
            }
            kept.push(dest.clone());
            let recipe = dest.join(crate::compress::recipe::RECIPE_FILE);
            // paths by role (`./…` below the working directory, `$TMPDIR/…`, `~/…`): the results
            // are committed with the report and name no path of the machine that made them
            let (recipe_s, base_s) = (recipe.display().to_string(), self.dir.display().to_string());
            // the shipped default model is `apply`'s own default: named, its role (`data/…`)
            // would hold only in the repository, wherever the binary finds its data
            let base: &[&str] = if self.dir == crate::data::default_model_dir() {
                &[]
            } else {
                &["--model", &base_s]
            };
            let words = ["exaone-compress", "apply", "--recipe", &recipe_s]
                .into_iter()
                .chain(base.iter().copied())
                .chain(["--out", "DIR"]);
            let rebuild = crate::report::by_role(&crate::report::shell_words(words));
            let method = self.results.method_of(name);
            let row = crate::record::Variant::new(
                name.clone(),
                method,
                json!({"checkpoint": dest.display().to_string(), "recipe": recipe.display().to_string(), "rebuild": rebuild}),
            );
            self.results.add(&row, KEPT_METRIC, 1.0, None, "");
        }
        if own {
            let earlier = unkept(&self.ck_root, &kept);
            if self.args.overwrite {
                for p in &earlier {
                    let _ = std::fs::remove_dir_all(p);
                }
            } else if !earlier.is_empty() {
                let list: Vec<String> = earlier.iter().map(|p| p.display().to_string()).collect();
                eprintln!(
                    "left in place {} checkpoint(s) an earlier run kept and this one does not (--overwrite removes them): {}",
                    earlier.len(),
                    list.join(", ")
                );
            }
            // gone only if nothing is left in it
            let _ = std::fs::remove_dir(&self.ck_root);
        }
        // said once, with the reason that holds (random weights said theirs above)
        if self.keep != Keep::None && names.is_empty() && !self.args.random_weights {
            let keep = format!("{:?}", self.keep).to_lowercase();
            match self.recipes.is_empty() {
                true => eprintln!("--keep {keep}: no variant made by a recipe to keep (variants made in memory have no recipe and are not kept)"),
                false => eprintln!("--keep {keep}: the report recommends no variant; no checkpoint kept (--keep all keeps every variant's)"),
            }
        }
        Ok(())
    }
}

/// The model directories (with a recipe) in the study's own checkpoints directory that this
/// run did not keep: an earlier run's, removed only with `--overwrite` (they may be what the
/// user meant to submit).
fn unkept(root: &Path, kept: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return vec![];
    };
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.join(crate::compress::recipe::RECIPE_FILE).is_file()
                && !kept.contains(p)
        })
        .collect();
    found.sort();
    found
}
