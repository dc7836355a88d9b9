//! The training report of a model: loss curve chart, final perplexities, samples.

use std::path::Path;

use super::chart::{line_chart, Series};
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

/// Writes `dir/{README.md, summary.json, train_log.csv, loss.png}`.
pub fn write(dir: &Path, s: &Summary, log: &[LogPoint]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(s)? + "\n",
    )?;
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
    std::fs::write(dir.join("train_log.csv"), csv)?;
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
    line_chart(
        &dir.join("loss.png"),
        "Default model: training loss",
        "tokens seen (millions)",
        "cross-entropy (nats/token)",
        &[
            Series {
                name: format!("train (running mean of {k} steps)"),
                points: smooth,
            },
            Series {
                name: "validation".into(),
                points: val,
            },
        ],
        false,
    )
    .map_err(|e| anyhow::anyhow!("loss chart: {e}"))?;
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
    md += "![loss](loss.png)\n\n## Greedy samples\n\n| prompt | continuation |\n|---|---|\n";
    for (p, c) in &s.samples {
        md += &format!(
            "| {} | {} |\n",
            p.replace('\n', "⏎").replace('|', "\\|"),
            c.replace('\n', "⏎").replace('|', "\\|")
        );
    }
    std::fs::write(dir.join("README.md"), md)?;
    Ok(())
}
