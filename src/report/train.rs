//! The training report of a model: loss curve chart, final perplexities, samples.

use std::path::Path;

use candle_core::Device;

use super::chart::{Chart, Frame, LegendAt, LineChart, Series};
use super::environment_md;
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::record::{git_commit, Environment};
use crate::train::LogPoint;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub command: String,
    pub device: String,
    pub parameters: usize,
    pub tokens_seen: usize,
    pub train_secs: f64,
    pub train_tokens: usize,
    pub val_ppl: f64,
    pub test_ppl: f64,
    pub test_ppl_stderr_nll: f64,
    pub test_bits_per_byte: f64,
    pub unigram_test_ppl: f64,
    /// (prompt, greedy continuation)
    pub samples: Vec<(String, String)>,
    pub seed: u64,
    pub steps: usize,
    pub batch: usize,
    pub seq_len: usize,
    pub lr: f64,
}

/// What the report calls the device: `cpu`, or on an accelerator the `GPU_NAME` environment
/// variable when set (e.g. "NVIDIA H100 80GB HBM3"), else the `--device` flag as given.
pub fn device_label(device: &Device, flag: &str) -> String {
    if device.is_cpu() {
        "cpu".to_string()
    } else {
        std::env::var("GPU_NAME").unwrap_or_else(|_| flag.to_string())
    }
}

/// Writes `dir/{README.md, summary.json, train_log.csv, loss.png}`.
pub fn write(dir: &Path, s: &Summary, log: &[LogPoint]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("summary.json");
    let json = serde_json::to_string_pretty(s).map_err(|e| Error::json(&path, e))?;
    write_atomic(&path, (json + "\n").as_bytes())?;
    write_atomic(&dir.join("train_log.csv"), log_csv(log).as_bytes())?;
    let chart = dir.join("loss.png");
    loss_chart(&chart, log).map_err(|e| Error::Chart {
        path: chart.clone(),
        msg: e.to_string(),
    })?;
    write_atomic(&dir.join("README.md"), markdown(s).as_bytes())
}

/// The training log as CSV: one row per step, the validation loss where it was measured.
pub fn log_csv(log: &[LogPoint]) -> String {
    let mut csv = String::from("step,tokens,lr,loss,grad_norm,eval_loss,secs\n");
    for p in log {
        csv += &format!(
            "{},{},{:.6e},{:.5},{:.4},{},{:.2}\n",
            p.step,
            p.tokens,
            p.lr,
            p.loss,
            p.grad_norm,
            p.eval_loss.map(|e| format!("{e:.5}")).unwrap_or_default(),
            p.secs
        );
    }
    csv
}

/// The loss curve: the training loss (a running mean over 1% of the steps) and the validation
/// loss, against tokens seen.
fn loss_chart(path: &Path, log: &[LogPoint]) -> super::chart::ChartResult<()> {
    let train: Vec<(f64, f64)> = log
        .iter()
        .map(|p| (p.tokens as f64 / 1e6, p.loss))
        .collect();
    // a running mean makes the trend readable through batch noise
    let k = (log.len() / 100).max(1);
    let smooth: Vec<(f64, f64)> = train
        .windows(k)
        .map(|w| {
            (
                w[w.len() - 1].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect();
    let val: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|p| p.eval_loss.map(|e| (p.tokens as f64 / 1e6, e)))
        .collect();
    Chart::from(LineChart {
        frame: Frame::new("Default model: training loss"),
        x_label: "tokens seen (millions)".into(),
        y_label: "cross-entropy (nats/token)".into(),
        series: vec![
            Series {
                name: format!("train (running mean of {k} steps)"),
                points: smooth,
            },
            Series {
                name: "validation".into(),
                points: val,
            },
        ],
        log_y: false,
        legend: LegendAt::UpperRight,
    })
    .png(path)
    .map(|_| ())
}

/// The report's README.md, naming this process's environment (the report is written where the
/// model was trained).
pub fn markdown(s: &Summary) -> String {
    markdown_in(s, &Environment::capture(&s.device), &git_commit())
}

/// The report's README.md with the environment and commit given.
pub fn markdown_in(s: &Summary, env: &Environment, commit: &str) -> String {
    let mut md = String::new();
    md += "# The default model: training report\n\n";
    md += &format!(
        "A {:.2} M-parameter EXAONE 4 model trained from scratch on the shipped corpus (`data/text/`).\n\n",
        s.parameters as f64 / 1e6
    );
    md += &format!("Reproduce: `{}`\n\n", s.command);
    md += "| what | value |\n|---|---|\n";
    md += &format!("| device | {} |\n", s.device);
    md += &format!("| parameters | {} |\n", s.parameters);
    md += &format!(
        "| steps × batch × sequence | {} × {} × {} |\n",
        s.steps, s.batch, s.seq_len
    );
    md += &format!("| peak learning rate, seed | {:e}, {} |\n", s.lr, s.seed);
    md += &format!(
        "| tokens seen | {} ({:.1} passes over {} training tokens) |\n",
        s.tokens_seen,
        s.tokens_seen as f64 / s.train_tokens as f64,
        s.train_tokens
    );
    md += &format!(
        "| training time | {:.0} s ({:.0} tokens/s) |\n",
        s.train_secs,
        s.tokens_seen as f64 / s.train_secs
    );
    md += &format!("| validation perplexity | {:.2} |\n", s.val_ppl);
    md += &format!(
        "| **test perplexity** (bf16 weights as shipped, f32 compute, window 512 stride 256) | **{:.2}** (±{:.1}% from the window-to-window spread of the NLL) |\n",
        s.test_ppl,
        100.0 * s.test_ppl_stderr_nll
    );
    md += &format!("| test bits per byte | {:.3} |\n", s.test_bits_per_byte);
    md += &format!(
        "| unigram model of the same tokenizer, same test split | {:.1} |\n\n",
        s.unigram_test_ppl
    );
    md += &environment_md(env, commit, &s.device, &format!("`--seed {}`", s.seed));
    md += "![loss](loss.png)\n\n## Greedy samples\n\n| prompt | continuation |\n|---|---|\n";
    for (p, c) in &s.samples {
        md += &format!(
            "| {} | {} |\n",
            p.replace('\n', "⏎").replace('|', "\\|"),
            c.replace('\n', "⏎").replace('|', "\\|")
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_training_report_names_its_environment_and_seed() {
        let s = Summary {
            command: "train_default --seed 3".into(),
            device: "cpu".into(),
            parameters: 8_591_872,
            tokens_seen: 1000,
            train_secs: 1.0,
            train_tokens: 500,
            val_ppl: 40.0,
            test_ppl: 41.0,
            test_ppl_stderr_nll: 0.01,
            test_bits_per_byte: 1.5,
            unigram_test_ppl: 300.0,
            samples: vec![],
            seed: 3,
            steps: 10,
            batch: 2,
            seq_len: 50,
            lr: 1e-3,
        };
        let md = markdown_in(&s, &Environment::capture("cpu"), "abc1234");
        assert!(md.contains("## Environment"), "{md}");
        assert!(md.contains("| code | exaone-compress ") && md.contains(", commit abc1234 |"));
        assert!(md.contains("| seeds | `--seed 3` |"), "{md}");
    }
}
