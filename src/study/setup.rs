//! What every experiment binary starts from: the command-line options they share, the base
//! model, its tokenizer (or the default model's, for shape-only checkpoints), the text splits,
//! calibration samples and the evaluation suite. One place, so every study measures the same way.

use std::path::PathBuf;

use crate::error::{Error, Result, ResultExt};

use super::suite::{SaveTo, Stored, Suite, LEGACY_PROMPTS};
use super::variants::{resumable, variant_hash, Builder, Keep};
use crate::compress::calibration::samples;
use crate::compress::quant::apply::QuantizedModel;
use crate::compress::recipe::Step;
use crate::data::default_model_dir;
use crate::data::{data_dir, default_splits, TokenStream};
use crate::device::parse_dtype;
use crate::eval::tasks::{load_bigbench, load_kmmlu};
use crate::model::Exaone4;
use crate::record::{Results, Variant};
use crate::report::study::ReportOptions;

// The options every experiment binary takes (flatten into its own clap `Args`). A plain comment:
// clap would show a doc comment here as every binary's description.
#[derive(clap::Args, Clone, Debug)]
pub struct StudyArgs {
    /// checkpoint directory (default: the shipped default model, data/default-model)
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_parser = crate::device::device_word)]
    pub device: String,
    /// auto (f32 on CPU, bf16 on CUDA), f32, bf16, f16
    #[arg(long, default_value = "auto", value_parser = crate::device::dtype_word)]
    pub dtype: String,
    /// where the report, charts and results.parquet go (default: reports/<experiment>)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// replace an existing report directory given with --out (the default
    /// reports/<experiment> is replaced only when it holds this experiment's own report)
    #[arg(long)]
    pub overwrite: bool,
    /// where kept checkpoints go, one directory per variant with its recipe.json [default:
    /// <out>/checkpoints]; given without --keep, every variant is kept
    #[arg(long)]
    pub checkpoints: Option<PathBuf>,
    /// which variants' checkpoints to keep: none, recommended (the report's pick), all (those
    /// made by a recipe) [default: recommended; all with --checkpoints]
    #[arg(long, value_enum)]
    pub keep: Option<Keep>,
    /// continue the study in --out: variants its results hold with the same recipe hash (and
    /// measured the same way) are carried over; the others are measured
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// calibration sequences (GPTQ, AWQ)
    #[arg(long, default_value_t = 32, value_parser = crate::study::at_least_one::<usize>)]
    pub calib_samples: usize,
    /// tokens per calibration sequence
    #[arg(long, default_value_t = 256, value_parser = crate::study::at_least_one::<usize>)]
    pub calib_len: usize,
    /// perplexity tokens (a prefix of the test split; at least 2: one predicted from another)
    #[arg(long, default_value_t = 8192, value_parser = crate::study::at_least::<2>)]
    pub eval_tokens: usize,
    /// sequences of 256 validation tokens for KL to the base
    #[arg(long, default_value_t = 16, value_parser = crate::study::at_least_one::<usize>)]
    pub kl_sequences: usize,
    /// multiple-choice items (half KMMLU, half BIG-bench)
    #[arg(long, default_value_t = 40)]
    pub mc_items: usize,
    /// generation-scored multiple-choice items, as the evaluation scores them (the shipped Korean
    /// items: KMMLU criminal law, then NSMC sentiment; 0: no such column); answers written to
    /// <out>/gen_mc/<variant>.jsonl
    #[arg(long, default_value_t = 40)]
    pub gen_mc: usize,
    /// the generated answers' token cap
    #[arg(long, default_value_t = 16, value_parser = crate::study::at_least_one::<u64>)]
    pub gen_mc_tokens: u64,
    /// timed decode repeats per variant (0: no speed columns)
    #[arg(long, default_value_t = 3)]
    pub speed_repeats: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// the checkpoint has random weights (a shape-only stand-in): the report flags every
    /// quality column as meaningless and recommends nothing
    #[arg(long)]
    pub random_weights: bool,
}

/// A study's starting point.
pub struct Study {
    pub args: StudyArgs,
    pub experiment: String,
    pub dir: PathBuf,
    pub base: Exaone4,
    pub train: TokenStream,
    pub val: TokenStream,
    pub calib: Vec<Vec<u32>>,
    pub suite: Suite,
    /// where tokenizer files for written checkpoints come from
    pub tok_dir: PathBuf,
    /// the checkpoint had no tokenizer; the default model's was used
    pub tokenizer_fell_back: bool,
    pub results: Results,
    /// where the report goes (checked before any work)
    pub out: PathBuf,
    /// what is kept, and where
    pub keep: Keep,
    pub(crate) ck_root: PathBuf,
    /// the builder of the variants made by recipes (`measure_recipe`)
    pub(crate) builder: Option<Builder>,
    /// every variant made by a recipe: its name, steps, plan hash and, when built in this run,
    /// its directory in the builder's work
    pub(crate) recipes: Vec<(String, Vec<Step>, String, Option<PathBuf>)>,
    /// the results `--resume` continues
    pub(crate) previous: Option<Results>,
    /// the hash of how variants are measured (settings, tokens, items): resumed rows need it
    pub(crate) suite_hash: String,
    /// the base model's identity, for the hashes of variants made in memory
    pub(crate) base_key: String,
    /// where in-memory variants are written to be measured
    scratch: tempfile::TempDir,
    /// seconds per stage (building, each measure) and, for a measure, its parts: printed and
    /// logged at the end
    pub(crate) stages: Vec<(String, f64, String)>,
    /// the speed term: each variant's shape projected on the evaluation's model and GPU
    pub l4: super::l4_speed::L4Speed,
    /// when the study began, and how many variants it will measure (the base included), for
    /// the estimate of the time left printed after each ([`Study::plan`])
    started: std::time::Instant,
    planned: Option<usize>,
    /// variants carried over by `--resume` (no time spent on them: left out of the pace)
    carried: usize,
    /// variants whose checkpoint held the same weights as a model measured before them in
    /// this run, and that model: their rows are its rows (`measure_recipe`)
    pub(crate) same_weights: Vec<(String, String)>,
}

/// How a report names the base model: by role for the shipped default model, relative to the
/// working directory when it lies below it, else as given — never a path of the machine that
/// made the report when it can be helped.
pub fn model_label(dir: &std::path::Path) -> String {
    if dir == default_model_dir() {
        return "data/default-model (the shipped default model)".into();
    }
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| dir.strip_prefix(cwd).ok().map(|r| r.to_path_buf()));
    rel.unwrap_or_else(|| dir.to_path_buf())
        .display()
        .to_string()
}

/// Whether the user's `--checkpoints` directory may receive the variants' checkpoints: absent,
/// empty, or (with `--overwrite`) holding model directories only — never the user's other files.
fn check_checkpoints_dir(dir: &std::path::Path, overwrite: bool) -> Result<()> {
    let entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    if entries.is_empty() {
        return Ok(());
    }
    let foreign = entries
        .iter()
        .find(|p| !(p.is_dir() && p.join("config.json").is_file()));
    match (foreign, overwrite) {
        (Some(f), _) => Err(Error::Flag(format!(
            "--checkpoints {}: holds {}, which is not a model directory; choose another directory",
            dir.display(),
            f.display()
        ))),
        (None, false) => Err(Error::Flag(format!(
            "--checkpoints {}: holds model directories already; pass --overwrite to replace those the study writes",
            dir.display()
        ))),
        (None, true) => Ok(()),
    }
}

/// Fails if the input `dir` (named by `flag`) lies inside the report folder `out` or the
/// checkpoints folder `ck_root`, which a study replaces or prunes.
pub(crate) fn refuse_input_in_outputs(
    dir: &std::path::Path,
    flag: &str,
    out: &std::path::Path,
    ck_root: &std::path::Path,
) -> Result<()> {
    for (o, what) in [(ck_root, "--checkpoints"), (out, "--out")] {
        crate::fs::refuse_overlap(o, &[dir], false).map_err(|_| {
            Error::Flag(format!(
                "{flag} {}: lies inside {what} {}, which the study replaces or prunes; copy the model elsewhere first",
                dir.display(),
                o.display()
            ))
        })?;
    }
    Ok(())
}

/// Whether `out` may receive the report of a benchmark binary (`experiments/bench_runtime`,
/// `serve_bench`): the studies' rule of [`check_report_dir`], where the default location is
/// `reports/<experiment>`.
pub fn check_report_out(out: &std::path::Path, experiment: &str, overwrite: bool) -> Result<()> {
    let default = out == std::path::Path::new("reports").join(experiment);
    check_report_dir(out, experiment, default, overwrite, false)
}

/// Whether `dir` may receive `experiment`'s report: it does not exist or is empty; or it holds a
/// report and the user asked to replace it (`overwrite`), or it is the default location and holds
/// this experiment's own earlier report (what rerunning the study regenerates).
fn check_report_dir(
    dir: &std::path::Path,
    experiment: &str,
    default: bool,
    overwrite: bool,
    resume: bool,
) -> Result<()> {
    // a run's temporaries (a killed run's are removed when the study starts) are not the user's
    let empty = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .all(|e| crate::fs::is_temporary(&e.file_name().to_string_lossy())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::Flag(format!(
                "--out {}: is a file, not a report directory",
                dir.display()
            )))
        }
        Err(e) => return Err(Error::io(dir, e)),
    };
    if empty {
        return Ok(());
    }
    let parquet = dir.join("results.parquet");
    let owner = Results::load(&parquet).ok().map(|r| r.experiment);
    // a report is what a study writes: a results.parquet it can read back (a README.md alone is
    // not one: it may be the user's)
    let is_report = owner.is_some();
    let ours = owner.as_deref() == Some(experiment);
    match (is_report, overwrite, default && ours) {
        (_, _, true) | (true, true, _) => Ok(()),
        (true, false, _) if resume && ours => Ok(()),
        (true, false, _) => Err(Error::Flag(format!(
            "--out {}: a report is already there ({}); pass {}--overwrite to replace it",
            dir.display(),
            owner
                .map(|o| format!("experiment `{o}`"))
                .unwrap_or_else(|| "README.md".into()),
            if ours {
                "--resume to continue it (variants already measured with the same recipe are kept) or "
            } else {
                ""
            }
        ))),
        (false, _, _) => Err(Error::Flag(format!(
            "--out {}: the directory holds files that are not a report; choose another --out",
            dir.display()
        ))),
    }
}

impl Study {
    pub fn load(experiment: &str, args: StudyArgs) -> Result<Self> {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("reports").join(experiment));
        check_report_dir(
            &out,
            experiment,
            args.out.is_none(),
            args.overwrite,
            args.resume,
        )?;
        if args.eval_tokens < 2 {
            return Err(Error::Flag(format!(
                "--eval-tokens {}: perplexity needs at least 2 tokens",
                args.eval_tokens
            )));
        }
        if let Some(ck) = &args.checkpoints {
            if args.keep == Some(Keep::None) {
                return Err(Error::Flag(format!(
                    "--checkpoints {} with --keep none: nothing would be kept there; drop one of them",
                    ck.display()
                )));
            }
            check_checkpoints_dir(ck, args.overwrite)?;
        }
        let device = crate::runtime::open_device(&args.device)?;
        let dtype = parse_dtype(&args.dtype, &device)?;
        let dir = args
            .model
            .clone()
            .map_or_else(crate::data::default_model, Ok)?;
        // a model inside the report or the checkpoints folder would be removed with what the
        // study replaces there (an unkept checkpoint, a replaced report)
        let ck_root = args
            .checkpoints
            .clone()
            .unwrap_or_else(|| out.join("checkpoints"));
        refuse_input_in_outputs(&dir, "--model", &out, &ck_root)?;
        // by role: the loader's own errors name the directory or file
        let base = crate::runtime::load_model(&dir, dtype, &device)
            .context(|| "loading the base model (--model)".to_string())?;
        // a checkpoint without a tokenizer (e.g. random weights) is measured with the default
        // model's token ids: speed is real, quality is not
        let (tok, fell_back) = crate::data::tokenizer_for_model(&dir)?;
        let tok_dir = if fell_back {
            default_model_dir()
        } else {
            dir.clone()
        };
        let (train, val, mut test) = default_splits(&tok, tok.token_id("[|endofturn|]"))?;
        let all = test.ids.len().max(1);
        test.ids.truncate(args.eval_tokens);
        test.bytes = (test.bytes as f64 * test.ids.len() as f64 / all as f64) as usize;
        let calib = samples(&train, args.calib_samples, args.calib_len, args.seed)
            .context(|| "--calib-samples × --calib-len".into())?;
        let kmmlu = data_dir().join("benchmarks/kmmlu_criminal_law_test.json");
        let mut mc = load_kmmlu(&kmmlu, "kmmlu_criminal_law").map_err(|e| Error::io(&kmmlu, e))?;
        mc.truncate(args.mc_items / 2);
        let bigbench = data_dir().join("benchmarks/bigbench_mc_subset.jsonl");
        let mut bb = load_bigbench(&bigbench).map_err(|e| Error::io(&bigbench, e))?;
        bb.truncate(args.mc_items - mc.len());
        mc.extend(bb);
        let mut suite = Suite::new(
            tok,
            test,
            samples(&val, args.kl_sequences, 256, args.seed + 1)
                .context(|| "--kl-sequences".into())?,
        );
        suite.mc_items = mc;
        suite.speed_repeats = args.speed_repeats;
        suite.legacy_prompts = LEGACY_PROMPTS.map(String::from).to_vec();
        // the prompts are rendered with the base's own chat template, as the evaluation does
        let (template, stop_ids) =
            crate::eval::generated::template_and_stops(&tok_dir, &suite.tokenizer)?;
        suite.template = template.clone();
        if args.gen_mc > 0 {
            use crate::eval::generated::GenMcOptions;
            suite.gen_mc = Some(super::suite::GenMcSuite {
                items: crate::study::serving::korean_mc_items(args.gen_mc)?,
                template,
                opts: GenMcOptions {
                    max_new_tokens: args.gen_mc_tokens as usize,
                    stop_ids,
                },
                samples: Some(out.join("gen_mc")),
            });
        }
        let results = Results::new(
            experiment,
            &format!("{} ({:?})", args.device, dtype),
            &model_label(&dir),
        );
        let keep = args.keep.unwrap_or(match args.checkpoints {
            Some(_) => Keep::All,
            None => Keep::Recommended,
        });
        let previous = match (args.resume, Results::load(&out.join("results.parquet"))) {
            (false, _) => None,
            (true, Ok(r)) if r.experiment == experiment => Some(r),
            (true, _) => {
                eprintln!(
                    "--resume: no results of {experiment} in {}; measuring every variant",
                    out.display()
                );
                None
            }
        };
        let suite_hash = suite.settings_hash(&results.device);
        let base_key = crate::compress::recipe::ModelId::of(&dir)
            .map(|id| format!("{} {}", id.config_hash, id.weights_hash))
            .unwrap_or_else(|_| model_label(&dir));
        // beside the report, not in the system's temp folder: a run killed by a signal leaves
        // it where the next run's clean-up (`fs::clean_stale`) finds and removes it
        for note in crate::fs::clean_stale(&out) {
            eprintln!("note: {note}");
        }
        let beside = crate::fs::parent_of(&out);
        std::fs::create_dir_all(beside).map_err(|e| Error::io(beside, e))?;
        let scratch = tempfile::Builder::new()
            .prefix(&crate::fs::partial_prefix(&out)?)
            .tempdir_in(beside)
            .map_err(|e| Error::io(beside, e))?;
        let t0 = std::time::Instant::now();
        let started = t0;
        let eff = super::l4_speed::efficiencies_on(base.device(), &results.env.gpu)?;
        let l4 = super::l4_speed::L4Speed::new(eff)?;
        let l4_secs = t0.elapsed().as_secs_f64();
        Ok(Self {
            experiment: experiment.into(),
            args,
            dir,
            base,
            train,
            val,
            calib,
            suite,
            tok_dir,
            tokenizer_fell_back: fell_back,
            results,
            out,
            keep,
            ck_root,
            builder: None,
            recipes: vec![],
            previous,
            suite_hash,
            base_key,
            scratch,
            stages: vec![("L4 projection's workload".into(), l4_secs, String::new())],
            l4,
            started,
            planned: None,
            carried: 0,
            same_weights: vec![],
        })
    }

    /// Says how many variants the study will measure, the base included: after each one it
    /// then prints how many are done and an estimate of the time left (at the run's mean pace
    /// per variant so far).
    pub fn plan(&mut self, variants: usize) {
        self.planned = Some(variants);
    }

    /// Writes, sizes and evaluates one variant (dense, written in bf16) against the base.
    pub fn measure(&mut self, variant: &Variant, model: &Exaone4) -> Result<()> {
        self.measure_written(variant, model, None)
    }

    /// Writes a quantized variant as its compressed-tensors checkpoint, sizes and evaluates it.
    pub fn measure_quantized(&mut self, variant: &Variant, q: &QuantizedModel) -> Result<()> {
        self.measure_written(variant, &q.model, Some(q))
    }

    fn measure_written(
        &mut self,
        variant: &Variant,
        model: &Exaone4,
        q: Option<&QuantizedModel>,
    ) -> Result<()> {
        let hash = variant_hash(&variant.method, &variant.params, &self.base_key);
        let variant = &self.with_hashes(variant, &hash);
        if self.resumed(&variant.name, &hash) {
            return self.save_progress();
        }
        let t0 = std::time::Instant::now();
        // made in memory: no recipe, so measured in a scratch directory and never kept
        let save = SaveTo {
            dir: self.scratch.path(),
            side_files_from: Some(self.tok_dir.clone()),
            remove_after: true,
            overwrite: true,
        };
        self.suite
            .measure(&mut self.results, variant, &self.base, model, q, &save)?;
        self.stage_measured(&variant.name, t0);
        self.save_progress()
    }

    /// `variant` with the hashes `--resume` compares in its params.
    pub(crate) fn with_hashes(&self, variant: &Variant, recipe_hash: &str) -> Variant {
        let mut params = match &variant.params {
            serde_json::Value::Object(m) => m.clone(),
            v => [("params".to_string(), v.clone())].into_iter().collect(),
        };
        params.insert("recipe_hash".into(), recipe_hash.into());
        params.insert("suite_hash".into(), self.suite_hash.clone().into());
        Variant::new(&variant.name, &variant.method, params.into())
    }

    /// With `--resume`: carries the variant's rows over from the results being resumed when
    /// its recipe and the measurement are unchanged (true), else false.
    pub(crate) fn resumed(&mut self, name: &str, recipe_hash: &str) -> bool {
        let Some(prev) = &self.previous else {
            return false;
        };
        match resumable(prev, name, recipe_hash, &self.suite_hash) {
            Some(rows) => {
                self.results.rows.extend(rows);
                self.carried += 1;
                // listed in the log with the stages, though this run spent no time on it
                let note = "measured in the run being resumed".to_string();
                self.stages.push((format!("resumed {name}"), 0.0, note));
                true
            }
            None => false,
        }
    }

    /// The stages timed so far, in order (e.g. `build pruned`, `measure pruned`).
    pub fn stages_run(&self) -> impl Iterator<Item = &str> + '_ {
        self.stages.iter().map(|s| s.0.as_str())
    }

    /// Records how long a stage took (from `t0`).
    pub fn stage(&mut self, what: &str, t0: std::time::Instant) {
        self.stages
            .push((what.to_string(), t0.elapsed().as_secs_f64(), String::new()));
    }

    /// Records how long measuring `variant` took (from `t0`), with the seconds of each part
    /// the suite timed.
    pub(crate) fn stage_measured(&mut self, variant: &str, t0: std::time::Instant) {
        let parts = match self.suite.parts.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => vec![],
        };
        let detail = parts
            .iter()
            .map(|(what, secs)| format!("{what} {secs:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.stages.push((
            format!("measure {variant}"),
            t0.elapsed().as_secs_f64(),
            detail,
        ));
    }

    /// Records one figure per layer of the base (`{metric}_layer_{i}`), e.g. a layer-drop score.
    pub fn record_per_layer(&mut self, metric: &str, values: &[f64], unit: &str) {
        for (i, v) in values.iter().enumerate() {
            let m = format!("{metric}_layer_{i}");
            self.results.rows.retain(|r| r.metric != m);
            self.results.add(&Variant::original(), &m, *v, None, unit);
        }
    }

    /// Loads a checkpoint directory as it is (compressed-tensors ones dequantized, W8A8/FP8
    /// activations quantized at run time) and evaluates it; size is the directory's, weight
    /// bytes per token follow its quantization_config.
    /// Fails if the input `dir` (named by `flag`) lies where this study writes or prunes.
    pub fn refuse_input_inside(&self, dir: &std::path::Path, flag: &str) -> Result<()> {
        refuse_input_in_outputs(dir, flag, &self.out, &self.ck_root)
    }

    pub fn measure_dir(&mut self, variant: &str, dir: &std::path::Path) -> Result<()> {
        let info = crate::checkpoint::Checkpoint::open(dir)?.quant_info()?;
        let method = match &info {
            Some(i) => i
                .scheme
                .map(|s| s.name())
                .unwrap_or_else(|| i.format.clone()),
            None => "dense".into(),
        };
        let id = crate::compress::recipe::ModelId::of(dir)?;
        let v = Variant::new(
            variant,
            method,
            serde_json::json!({"dir": dir.display().to_string()}),
        );
        let hash = variant_hash(&v.method, &serde_json::json!(id), &self.base_key);
        let v = self.with_hashes(&v, &hash);
        if self.resumed(variant, &hash) {
            return self.save_progress();
        }
        let t0 = std::time::Instant::now();
        self.evaluate_dir(&v, dir)?;
        self.stage_measured(variant, t0);
        self.save_progress()
    }

    /// Loads the checkpoint at `dir` as it is and evaluates it as `v`.
    pub(crate) fn evaluate_dir(&mut self, v: &Variant, dir: &std::path::Path) -> Result<()> {
        let ck = crate::checkpoint::Checkpoint::open(dir)?;
        let info = ck.quant_info()?;
        let mut model = crate::runtime::load_checkpoint(&ck, self.base.dtype(), self.base.device())
            .context(|| format!("loading {}", dir.display()))?;
        // W8A8/FP8 activations quantized at run time: the same values, computed row by row
        crate::eval::act_quant::install_cpu_act_quant(&mut model)?;
        let bits = |p: &str| -> Option<super::suite::StoredAs> {
            let i = info.as_ref()?;
            let s = i.scheme?;
            if !p.contains(".layers.") || i.ignore.iter().any(|x| x == p) {
                return None;
            }
            Some((
                s.weights.num_bits,
                super::suite::scale_group(s.weights.strategy),
            ))
        };
        let stored = Stored {
            size_bytes: super::suite::dir_bytes(dir),
            weight_bytes: super::suite::weight_bytes_per_token(&model, &bits),
            checkpoint: Some(dir),
        };
        eprintln!("evaluating {} ({})", v.name, v.method);
        self.suite
            .evaluate(&mut self.results, v, &self.base, &model, &stored)
    }

    /// Report options with the command line and the caveats every study carries.
    pub fn report_options(&self, title: &str, mut notes: Vec<String>) -> ReportOptions {
        if self.tokenizer_fell_back {
            notes.push("The checkpoint has no tokenizer: every text was tokenized with the default model's tokenizer (ids below 4096).".into());
        }
        for (name, same) in &self.same_weights {
            notes.push(format!("{name}: its recipe wrote the same weights as {same} (config and weights hashes equal), so its rows are {same}'s measurement, not a second one (only its size on disk is its own)."));
        }
        ReportOptions {
            title: title.into(),
            command: crate::report::shell_words(std::env::args()),
            notes,
            redact_timings: false,
            quality_meaningless: self.args.random_weights,
        }
    }

    /// Saves what has been measured so far as the study's results (`results.parquet` and
    /// `.csv`, the verdict on what is there) and its report (README.md, marked partial), each
    /// file atomically: a study stopped at any point leaves what it measured, and `--resume`
    /// continues from it.
    pub(crate) fn save_progress(&self) -> Result<()> {
        let mut r = self.results.clone();
        self.l4.add_rows(&mut r, "original")?;
        super::suite::add_scores(&mut r, "original");
        r.save(&self.out)?;
        let note = format!(
            "Partial results: {} variant(s) measured so far; the study is running or was stopped (rerun its command with `--resume` to continue). Charts are drawn when it is done.",
            r.variants().len()
        );
        let opts = self.report_options(&format!("{} (partial)", self.experiment), vec![note]);
        let md = crate::report::study::markdown(&r, &opts);
        crate::fs::write_atomic(&self.out.join("README.md"), md.as_bytes())?;
        if let Some(n) = self.planned {
            let k = r.variants().len();
            let secs = self.started.elapsed().as_secs_f64();
            // the pace of the variants this run built and measured: not of those carried over,
            // nor of the study's set-up (drop-one KL, the projection's workload), done once
            let measured = k.saturating_sub(self.carried);
            let busy: f64 = (self.stages.iter())
                .filter(|s| s.0.starts_with("build ") || s.0.starts_with("measure "))
                .map(|s| s.1)
                .sum();
            let left = busy / measured.max(1) as f64 * n.saturating_sub(k) as f64;
            match measured {
                0 => eprintln!("study: {k} of {n} variants carried over; the time left is estimated once this run has measured one"),
                _ => eprintln!("study: {k} of {n} variants measured in {secs:.0} s; about {left:.0} s left"),
            }
        }
        Ok(())
    }

    /// Adds the scores, keeps the checkpoints `--keep` asks for, writes results, charts and
    /// report, and prints the report and the command that rebuilds the recommended variant.
    pub fn finish(mut self, title: &str, notes: Vec<String>, log: &[String]) -> Result<()> {
        self.l4.add_rows(&mut self.results, "original")?;
        if let Some(rec) = super::suite::add_scores(&mut self.results, "original") {
            eprintln!("{}", rec.text);
        }
        let t0 = std::time::Instant::now();
        self.keep_checkpoints()?;
        self.stage("keep checkpoints", t0);
        let out = self.out.clone();
        self.results.save(&out)?;
        for ext in ["parquet", "csv"] {
            let _ = std::fs::remove_file(out.join(format!("results.partial.{ext}")));
        }
        let opts = self.report_options(title, notes);
        crate::report::study::write(&out, &self.results, &opts)?;
        let total: f64 = self.stages.iter().map(|s| s.1).sum();
        let mut lines = log.to_vec();
        lines.push(format!("stage seconds ({total:.1} s in all):"));
        for (what, secs, detail) in &self.stages {
            lines.push(match detail.is_empty() {
                true => format!("  {secs:8.1}  {what}"),
                false => format!("  {secs:8.1}  {what} ({detail})"),
            });
        }
        for l in &lines[log.len()..] {
            eprintln!("{l}");
        }
        crate::fs::write_atomic(&out.join("log.txt"), (lines.join("\n") + "\n").as_bytes())?;
        println!("{}", crate::report::study::markdown(&self.results, &opts));
        if let Some(cmd) = crate::report::study::rebuild_command(&self.results) {
            println!("Rebuild the recommended variant: {cmd}");
        }
        eprintln!("wrote {}", out.display());
        Ok(())
    }
}
