//! The CLI's flag types and value parsers: every word and range is checked by clap while the
//! command line is parsed, with a message that names the flag, the value and what is allowed.

use std::ffi::OsStr;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::ValueEnum;
use exaone_compress::compress::prune::DropRule;
use exaone_compress::compress::quant::{awq::AwqConfig, gptq::GptqConfig};
use exaone_compress::compress::recipe;

/// A value parser from a function: the error reads `--flag value: why`; `values` lists the
/// accepted words (for `--help` and completion).
#[derive(Clone)]
pub struct Checked<T> {
    parse: fn(&str) -> Result<T, String>,
    values: fn() -> Vec<PossibleValue>,
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Checked<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let flag = arg
            .and_then(|a| a.get_long())
            .map_or("value".to_string(), |l| format!("--{l}"));
        let v = value.to_string_lossy();
        (self.parse)(&v).map_err(|why| {
            clap::Error::raw(ErrorKind::ValueValidation, format!("{flag} {v}: {why}\n"))
                .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        let v = (self.values)();
        (!v.is_empty()).then(|| Box::new(v.into_iter()) as Box<dyn Iterator<Item = _>>)
    }
}

/// A value parser from a checking function.
pub fn checked<T>(parse: fn(&str) -> Result<T, String>) -> Checked<T> {
    Checked {
        parse,
        values: Vec::new,
    }
}

/// A fixed set of words (a `ValueEnum`), named `WHAT` in messages.
pub trait Word: ValueEnum + Clone + Send + Sync + 'static {
    const WHAT: &'static str;
}

fn words<E: Word>() -> Vec<PossibleValue> {
    E::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .collect()
}

fn parse_word<E: Word>(s: &str) -> Result<E, String> {
    E::from_str(s, false).map_err(|_| {
        let names: Vec<String> = words::<E>()
            .iter()
            .map(|p| p.get_name().to_string())
            .collect();
        format!("unknown {} {s:?} (allowed: {})", E::WHAT, names.join(", "))
    })
}

/// The value parser of a [`Word`].
pub fn word<E: Word>() -> Checked<E> {
    Checked {
        parse: parse_word::<E>,
        values: words::<E>,
    }
}

/// `--scheme`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    /// int4 weights in groups, symmetric
    W4a16,
    /// int4 weights in groups, asymmetric (zero points)
    W4a16Asym,
    /// int8 weights per channel, int8 activations per token at run time
    W8a8,
    /// fp8 (e4m3) weights per channel, fp8 activations per token at run time
    Fp8,
}

impl Word for SchemeArg {
    const WHAT: &'static str = "scheme";
}

impl SchemeArg {
    pub fn name(self) -> &'static str {
        match self {
            Self::W4a16 => "w4a16",
            Self::W4a16Asym => "w4a16-asym",
            Self::W8a8 => "w8a8",
            Self::Fp8 => "fp8",
        }
    }
    /// Weights quantized in groups of input columns (`--group`, act-order `group`).
    pub fn grouped(self) -> bool {
        matches!(self, Self::W4a16 | Self::W4a16Asym)
    }
}

/// `--method`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// round to nearest (no calibration data)
    Rtn,
    /// GPTQ on calibration data
    Gptq,
    /// AWQ on calibration data (W4A16 only)
    Awq,
}

impl Word for MethodArg {
    const WHAT: &'static str = "method";
}

impl MethodArg {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rtn => "rtn",
            Self::Gptq => "gptq",
            Self::Awq => "awq",
        }
    }
}

/// `--actorder` (GPTQ)
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActOrderArg {
    /// columns visited by decreasing Hessian diagonal, groups in the original order (no g_idx)
    Static,
    /// groups formed in the permuted order (g_idx saved)
    Group,
}

impl Word for ActOrderArg {
    const WHAT: &'static str = "actorder";
}

/// `--dtype`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// f32 on the CPU, bf16 on a GPU
    Auto,
    #[value(alias = "float32")]
    F32,
    #[value(alias = "bfloat16")]
    Bf16,
    #[value(alias = "float16")]
    F16,
}

impl Word for DtypeArg {
    const WHAT: &'static str = "dtype";
}

impl DtypeArg {
    /// The word `exaone_compress::device::parse_dtype` reads.
    pub fn word(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

/// `--rule KIND:N`: uniform, first, last, bi (Block Influence), kl (measured KL).
pub fn rule(s: &str) -> Result<DropRule, String> {
    let (kind, n) = s
        .split_once(':')
        .ok_or("expected KIND:N with KIND one of uniform, first, last, bi, kl")?;
    let n: usize = n
        .parse()
        .map_err(|_| format!("N {n:?} must be a whole number of layers"))?;
    if n == 0 {
        return Err("N = 0 drops no layer: drop at least 1".into());
    }
    Ok(match kind {
        "uniform" => DropRule::Uniform(n),
        "first" => DropRule::First(n),
        "last" => DropRule::Last(n),
        "bi" => DropRule::BlockInfluence(n),
        "kl" => DropRule::MeasuredKl(n),
        other => {
            return Err(format!(
                "unknown rule {other:?} (allowed: uniform, first, last, bi, kl)"
            ))
        }
    })
}

/// A whole number ≥ 1 (`--group`, `--calib-len`, `--calib-samples`, `--max-new-tokens`).
/// Where `package` writes: a name ending in .zip, since a zip is what it writes and what the
/// evaluation takes.
pub fn zip_path(s: &str) -> Result<std::path::PathBuf, String> {
    let p = std::path::PathBuf::from(s);
    match p.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("zip") => Ok(p),
        _ => Err("package writes a zip archive: give a name ending in .zip".into()),
    }
}

/// A command line to print in a report: not blank.
pub fn command_line(s: &str) -> Result<String, String> {
    match s.trim().is_empty() {
        true => Err("the command line that produced the results, not an empty one".into()),
        false => Ok(s.to_string()),
    }
}

pub fn at_least_one(s: &str) -> Result<usize, String> {
    exaone_compress::study::at_least_one(s)
}

/// `--group`: a group holds at least 1 input column.
pub fn group(s: &str) -> Result<usize, String> {
    match at_least_one(s) {
        Err(e) if e.starts_with("must") => Err("a group holds at least 1 input column".into()),
        r => r,
    }
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>().map_err(|e| format!("not a number ({e})"))
}

/// `--temperature`: finite and > 0.
pub fn temperature(s: &str) -> Result<f64, String> {
    let t = number(s)?;
    exaone_compress::model::generate::check_sampling(Some(t), None, "temperature", "")
        .map(|_| t)
        .map_err(|_| "must be a finite number > 0 (use --greedy for 0)".into())
}

/// `--top-p`: in (0, 1].
pub fn top_p(s: &str) -> Result<f64, String> {
    let p = number(s)?;
    exaone_compress::model::generate::check_sampling(None, Some(p), "", "top_p")
        .map(|_| p)
        .map_err(|_| "must lie in (0, 1]".into())
}

/// A number in `r`.
fn ranged<T>(s: &str, r: RangeInclusive<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display,
    T::Err: Display,
{
    let v: T = s.parse().map_err(|e| format!("not a number ({e})"))?;
    if r.contains(&v) {
        Ok(v)
    } else {
        Err(format!("must lie in {}..={}", r.start(), r.end()))
    }
}

/// `--damp` (GPTQ): a fraction of mean(diag H).
pub fn damp(s: &str) -> Result<f64, String> {
    ranged(s, recipe::GPTQ_DAMP)
}

/// `--block` (GPTQ): columns per lazy-update block.
pub fn block(s: &str) -> Result<usize, String> {
    ranged(s, recipe::GPTQ_BLOCK)
}

/// `--max-damp-retries` (GPTQ).
pub fn damp_retries(s: &str) -> Result<usize, String> {
    ranged(s, recipe::GPTQ_DAMP_RETRIES)
}

/// `--awq-grid`: scale ratios tried.
pub fn awq_grid(s: &str) -> Result<usize, String> {
    ranged(s, recipe::AWQ_GRID)
}

/// `--clip-steps` (AWQ): 0 turns clipping off.
pub fn clip_steps(s: &str) -> Result<usize, String> {
    ranged(s, recipe::AWQ_CLIP_STEPS)
}

/// `--clip-rows` (AWQ).
pub fn clip_rows(s: &str) -> Result<usize, String> {
    ranged(s, recipe::AWQ_CLIP_ROWS)
}

/// `--steps` (distill).
pub fn steps(s: &str) -> Result<usize, String> {
    ranged(s, 1..=10_000_000)
}

/// `--lr`: in (0, 1].
pub fn lr(s: &str) -> Result<f64, String> {
    // one message for both ends: "0..=1" would suggest 0 is allowed
    match ranged(s, 0.0..=1.0) {
        Ok(v) if v > 0.0 => Ok(v),
        Err(e) if e.starts_with("not a number") => Err(e),
        _ => Err("must be > 0 and at most 1".into()),
    }
}

/// A fraction in [0, 1] (`--min-lr-ratio`, `--weight-decay`).
pub fn unit(s: &str) -> Result<f64, String> {
    ranged(s, 0.0..=1.0)
}

/// `--grad-clip`: 0 (none) or more.
pub fn grad_clip(s: &str) -> Result<f64, String> {
    ranged(s, 0.0..=1e6)
}

/// `--temperature` of distillation.
pub fn kd_temperature(s: &str) -> Result<f64, String> {
    ranged(s, 1e-3..=100.0)
}

/// `--batch` (distill): windows per step.
pub fn batch(s: &str) -> Result<usize, String> {
    ranged(s, 1..=4096)
}

/// `--train`: a parameter group the student trains.
pub fn param_group(s: &str) -> Result<String, String> {
    recipe::parse_group(s, None)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string().replace(&format!("train {s:?}: "), ""))
}

/// Where calibration samples come from.
pub struct Calib {
    pub file: Option<PathBuf>,
    pub n: usize,
    pub len: usize,
    /// wrap plain texts as user turns of the chat template
    pub chat: bool,
    /// seed of the windows drawn
    pub seed: u64,
}

/// The `quantize` subcommand's flags beside the model.
pub struct QuantizeFlags {
    pub scheme: SchemeArg,
    pub method: MethodArg,
    pub group: usize,
    pub actorder: Option<ActOrderArg>,
    pub calib: Calib,
    pub gptq: GptqConfig,
    pub awq: AwqConfig,
    /// Linears left dense besides lm_head
    pub ignore: Vec<String>,
    pub out: PathBuf,
    pub overwrite: bool,
}

/// Flags that do not go together (they would be ignored, or have no meaning): what is allowed.
pub fn quantize_combination(
    f: &QuantizeFlags,
    group_given: bool,
    calib_given: &[&str],
) -> Result<(), String> {
    let (s, m) = (f.scheme.name(), f.method.name());
    if f.method == MethodArg::Awq && !f.scheme.grouped() {
        return Err(format!(
            "--method awq --scheme {s}: AWQ quantizes W4A16 only (--scheme w4a16 or w4a16-asym); for {s} use --method rtn or gptq"
        ));
    }
    if f.actorder.is_some() && f.method != MethodArg::Gptq {
        return Err(format!(
            "--actorder with --method {m}: act-order is a GPTQ setting (--method gptq); {m} would ignore it"
        ));
    }
    if f.actorder == Some(ActOrderArg::Group) && !f.scheme.grouped() {
        return Err(format!(
            "--actorder group with --scheme {s}: {s} quantizes whole output channels, so there are no groups to reorder; use --actorder static, or a W4A16 scheme"
        ));
    }
    if group_given && !f.scheme.grouped() {
        return Err(format!(
            "--group with --scheme {s}: {s} quantizes whole output channels; --group applies to w4a16 and w4a16-asym"
        ));
    }
    if !calib_given.is_empty() && f.method == MethodArg::Rtn {
        return Err(format!(
            "{} with --method rtn: RTN uses no calibration data; calibration flags go with --method gptq or awq",
            calib_given.join(", ")
        ));
    }
    Ok(())
}

/// Method settings given with another method, or clipping settings with clipping off: what is
/// allowed. `gptq_given` / `awq_given` name the GPTQ-only / AWQ-only flags given.
pub fn settings_combination(
    f: &QuantizeFlags,
    gptq_given: &[&str],
    awq_given: &[&str],
    clip_rows_given: bool,
) -> Result<(), String> {
    let m = f.method.name();
    for (given, method, what) in [
        (gptq_given, MethodArg::Gptq, "a GPTQ"),
        (awq_given, MethodArg::Awq, "an AWQ"),
    ] {
        if !given.is_empty() && f.method != method {
            let (what, them) = match given.len() {
                1 => (format!("{what} setting"), "it"),
                _ => (
                    format!("{} settings", what.split(' ').next_back().unwrap_or(what)),
                    "them",
                ),
            };
            return Err(format!(
                "{} with --method {m}: {what} (--method {}); {m} would ignore {them}",
                given.join(", "),
                method.name()
            ));
        }
    }
    if clip_rows_given && f.awq.clip_steps == 0 {
        return Err(
            "--clip-rows with --clip-steps 0: clipping is off, so no rows are used; give --clip-steps 1 or more, or leave out --clip-rows".into(),
        );
    }
    Ok(())
}
