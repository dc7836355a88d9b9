//! Results as data: one long table (a row per variant × metric) with everything needed to
//! regenerate a report from the file alone — what produced the number, where, when, and how
//! noisy it is. Stored as parquet (and CSV for humans) through polars.
//!
//! Schema (all columns always present):
//! | column | type | meaning |
//! |---|---|---|
//! | experiment | str | e.g. `eight_cases` |
//! | variant | str | e.g. `pruned+quantized` |
//! | method | str | the pipeline, e.g. `drop[kl,1] → gptq[W4A16-g128-sym]` |
//! | params | str | JSON of the method's parameters |
//! | metric | str | e.g. `test_ppl`, `kl_mean`, `decode_ms_per_token` |
//! | value | f64 | the figure |
//! | spread | f64 (null) | its uncertainty: a standard error, or (max−min) of repeats |
//! | unit | str | e.g. `ms`, `nats`, `MiB`, `` |
//! | device | str | where it was measured |
//! | model | str | the base model directory |
//! | commit | str | git commit of the code |
//! | timestamp | str | RFC 3339 UTC |
//! | environment | str | JSON of [`Environment`]: versions, CPU/GPU, threads, seeds (absent in older files) |

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::fs::write_atomic_all;

#[derive(Clone, Debug)]
pub struct Row {
    pub variant: String,
    pub method: String,
    pub params: String,
    pub metric: String,
    pub value: f64,
    pub spread: Option<f64>,
    pub unit: String,
}

/// What a result row is about: a model variant — its name, the recipe that made it (the
/// ordered steps, e.g. `drop[8] → gptq W4A16`) and every parameter of those steps. Results,
/// reports and recommendations all name variants through this one type.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub name: String,
    /// the steps, in order, as the `method` column shows them
    pub method: String,
    /// the steps' parameters (JSON), as the `params` column stores them
    pub params: serde_json::Value,
}

impl Variant {
    pub fn new(
        name: impl Into<String>,
        method: impl Into<String>,
        params: serde_json::Value,
    ) -> Self {
        Self {
            name: name.into(),
            method: method.into(),
            params,
        }
    }

    /// The unchanged base model.
    pub fn original() -> Self {
        Self::new("original", "none", serde_json::json!({}))
    }

    /// A name usable as a directory name (`+`, spaces, brackets and slashes become `_`).
    pub fn dir_name(&self) -> String {
        self.name.replace(['+', ' ', '(', ')', '/'], "_")
    }
}

/// A table under construction, with the context every row shares.
#[derive(Clone, Debug)]
pub struct Results {
    pub experiment: String,
    pub device: String,
    pub model: String,
    pub commit: String,
    pub timestamp: String,
    /// the code and machine that measured (captured by [`Results::new`])
    pub env: Environment,
    pub rows: Vec<Row>,
}

/// What measured a table besides the commit: this crate's and its key dependencies' versions,
/// the compiler, the machine (CPU model, GPU name, threads, OS) and the seeds the run recorded.
/// Captured when the table is created and stored with it (the `environment` column), so a
/// report regenerated elsewhere still names the machine that measured.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Environment {
    /// this crate's version (Cargo.toml)
    pub version: String,
    /// key dependencies as locked when the binary was built (Cargo.lock), name → version
    pub crates: BTreeMap<String, String>,
    /// the compiler that built the binary
    pub rustc: String,
    /// the CPU's model name (`/proc/cpuinfo`), else the architecture
    pub cpu: String,
    /// logical CPUs available to the process
    pub cores: usize,
    /// threads in rayon's pool (candle's CPU kernels and our parallel loops)
    pub threads: usize,
    /// the GPU's name (`GPU_NAME`, else `nvidia-smi`); empty on a CPU run or where unknown
    pub gpu: String,
    /// operating system and architecture, e.g. `linux x86_64`
    pub os: String,
    /// seeds the run recorded ([`Results::record_seed`]): what each seeds → its value
    pub seeds: BTreeMap<String, u64>,
}

/// The dependencies whose versions results record (emitted from Cargo.lock by build.rs).
const LOCKED: [(&str, &str); 4] = [
    ("candle-core", env!("EXAONE_COMPRESS_DEP_CANDLE_CORE")),
    ("polars", env!("EXAONE_COMPRESS_DEP_POLARS")),
    ("safetensors", env!("EXAONE_COMPRESS_DEP_SAFETENSORS")),
    ("tokenizers", env!("EXAONE_COMPRESS_DEP_TOKENIZERS")),
];

impl Environment {
    /// This process's environment; `device` is the results' device label (`cpu (F32)`,
    /// `cuda:1 (BF16)`, a GPU's name): a GPU is looked up only when it is not a CPU run.
    pub fn capture(device: &str) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").into(),
            crates: LOCKED
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            rustc: env!("EXAONE_COMPRESS_RUSTC").into(),
            cpu: cpu_model(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            threads: rayon::current_num_threads(),
            gpu: if device.trim_start().to_lowercase().starts_with("cpu") {
                String::new()
            } else {
                gpu_name(device)
            },
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            seeds: BTreeMap::new(),
        }
    }

    /// Whether nothing was recorded (results written before the environment was).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The CPU's model name: `/proc/cpuinfo` on Linux, `sysctl` on macOS, else the architecture.
fn cpu_model() -> String {
    let linux = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
    });
    let mac = || {
        std::process::Command::new("sysctl")
            .args(["-n", "machdep.cpu.brand_string"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    linux
        .or_else(|| {
            if cfg!(target_os = "macos") {
                mac()
            } else {
                None
            }
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The GPU's name: `GPU_NAME` when set, else `nvidia-smi`'s for the ordinal in `device`
/// (`cuda:N`, through `CUDA_VISIBLE_DEVICES`); empty when neither answers.
fn gpu_name(device: &str) -> String {
    if let Ok(n) = std::env::var("GPU_NAME") {
        return n;
    }
    let ordinal: usize = device
        .split_once("cuda:")
        .and_then(|(_, r)| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
        })
        .unwrap_or(0);
    let physical = std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .and_then(|v| v.split(',').nth(ordinal).map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| ordinal.to_string());
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i", &physical])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The commit of the code that is running (short): `EXAONE_COMPRESS_COMMIT` if set, else the
/// commit the binary was built from (`+changes` when the tree had uncommitted edits).
pub fn git_commit() -> String {
    std::env::var("EXAONE_COMPRESS_COMMIT")
        .unwrap_or_else(|_| env!("EXAONE_COMPRESS_BUILD_COMMIT").to_string())
}

/// Now, as RFC 3339 UTC (seconds).
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Results {
    pub fn new(experiment: &str, device: &str, model: &str) -> Self {
        Self {
            experiment: experiment.into(),
            device: device.into(),
            model: model.into(),
            commit: git_commit(),
            timestamp: now_utc(),
            env: Environment::capture(device),
            rows: vec![],
        }
    }

    /// Records a seed the run used (`what` it seeds, e.g. `--seed`), for the reports.
    pub fn record_seed(&mut self, what: &str, seed: u64) {
        self.env.seeds.insert(what.to_string(), seed);
    }

    /// Records `metric` = `value` (± `spread`, in `unit`) for `variant`.
    pub fn add(
        &mut self,
        variant: &Variant,
        metric: &str,
        value: f64,
        spread: Option<f64>,
        unit: &str,
    ) {
        self.rows.push(Row {
            variant: variant.name.clone(),
            method: variant.method.clone(),
            params: variant.params.to_string(),
            metric: metric.into(),
            value,
            spread,
            unit: unit.into(),
        });
    }

    /// The value of `metric` for `variant`, if recorded.
    pub fn get(&self, variant: &str, metric: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.variant == variant && r.metric == metric)
            .map(|r| r.value)
    }

    pub fn spread(&self, variant: &str, metric: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.variant == variant && r.metric == metric)
            .and_then(|r| r.spread)
    }

    /// Variants in the order first recorded.
    pub fn variants(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![];
        for r in &self.rows {
            if !v.contains(&r.variant) {
                v.push(r.variant.clone());
            }
        }
        v
    }

    pub fn method_of(&self, variant: &str) -> String {
        self.rows
            .iter()
            .find(|r| r.variant == variant)
            .map(|r| r.method.clone())
            .unwrap_or_default()
    }

    /// The variant as first recorded (name, method, params), if any row names it.
    pub fn variant(&self, name: &str) -> Option<Variant> {
        self.rows
            .iter()
            .find(|r| r.variant == name)
            .map(|r| Variant {
                name: r.variant.clone(),
                method: r.method.clone(),
                params: serde_json::from_str(&r.params).unwrap_or(serde_json::Value::Null),
            })
    }

    pub fn to_dataframe(&self) -> PolarsResult<DataFrame> {
        let n = self.rows.len();
        let col = |f: &dyn Fn(&Row) -> String| -> Vec<String> { self.rows.iter().map(f).collect() };
        df!(
            "experiment" => vec![self.experiment.clone(); n],
            "variant" => col(&|r| r.variant.clone()),
            "method" => col(&|r| r.method.clone()),
            "params" => col(&|r| r.params.clone()),
            "metric" => col(&|r| r.metric.clone()),
            "value" => self.rows.iter().map(|r| r.value).collect::<Vec<f64>>(),
            "spread" => self.rows.iter().map(|r| r.spread).collect::<Vec<Option<f64>>>(),
            "unit" => col(&|r| r.unit.clone()),
            "device" => vec![self.device.clone(); n],
            "model" => vec![self.model.clone(); n],
            "commit" => vec![self.commit.clone(); n],
            "timestamp" => vec![self.timestamp.clone(); n],
            "environment" => vec![serde_json::to_string(&self.env).unwrap_or_default(); n],
        )
    }

    /// Writes `dir/results.parquet` and `dir/results.csv`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_as(dir, "results")
    }

    /// Writes `dir/{stem}.parquet` and `dir/{stem}.csv` atomically as a pair
    /// ([`write_atomic_all`]): a failure leaves both old files as they were.
    pub fn save_as(&self, dir: &Path, stem: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut df = self.to_dataframe()?;
        let (mut parquet, mut csv) = (Vec::new(), Vec::new());
        ParquetWriter::new(&mut parquet).finish(&mut df)?;
        CsvWriter::new(&mut csv).finish(&mut df)?;
        write_atomic_all(&[
            (&dir.join(format!("{stem}.parquet")), &parquet),
            (&dir.join(format!("{stem}.csv")), &csv),
        ])
    }

    /// Reads a results.parquet back (for regenerating a report from the file alone).
    pub fn load(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let df = ParquetReader::new(file).finish()?;
        let s = |c: &str| -> Result<Vec<String>> {
            Ok(df
                .column(c)?
                .str()?
                .iter()
                .map(|x| x.unwrap_or("").to_string())
                .collect())
        };
        let (variant, method, params, metric, unit) = (
            s("variant")?,
            s("method")?,
            s("params")?,
            s("metric")?,
            s("unit")?,
        );
        let value: Vec<f64> = df
            .column("value")?
            .f64()?
            .iter()
            .map(|x| x.unwrap_or(f64::NAN))
            .collect();
        let spread: Vec<Option<f64>> = df.column("spread")?.f64()?.iter().collect();
        let first = |c: &str| -> Result<String> { Ok(s(c)?.first().cloned().unwrap_or_default()) };
        let rows = (0..value.len())
            .map(|i| Row {
                variant: variant[i].clone(),
                method: method[i].clone(),
                params: params[i].clone(),
                metric: metric[i].clone(),
                value: value[i],
                spread: spread[i],
                unit: unit[i].clone(),
            })
            .collect();
        // absent in results written before it was recorded
        let env = match df.column("environment") {
            Ok(_) => serde_json::from_str(&first("environment")?).unwrap_or_default(),
            Err(_) => Environment::default(),
        };
        Ok(Self {
            experiment: first("experiment")?,
            device: first("device")?,
            model: first("model")?,
            commit: first("commit")?,
            timestamp: first("timestamp")?,
            env,
            rows,
        })
    }
}

impl Results {
    /// evcxr (Jupyter) rich display: the table as HTML.
    pub fn evcxr_display(&self) {
        let mut h = String::from("<table><tr><th>variant</th><th>metric</th><th>value</th><th>spread</th><th>unit</th></tr>");
        for r in &self.rows {
            h += &format!(
                "<tr><td>{}</td><td>{}</td><td>{:.5}</td><td>{}</td><td>{}</td></tr>",
                r.variant,
                r.metric,
                r.value,
                r.spread.map(|s| format!("{s:.5}")).unwrap_or_default(),
                r.unit
            );
        }
        h += "</table>";
        println!("EVCXR_BEGIN_CONTENT text/html\n{h}\nEVCXR_END_CONTENT");
    }
}
