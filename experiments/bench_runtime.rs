//! Runtime on one checkpoint: load time, prefill (forward + log-softmax) tokens/s at several
//! batch × length points, decode time per token at several batch sizes; warm-up, repeats,
//! median and [min–max]. With `--hf-json` (from scripts/hf_bench.py, run in the same device
//! call) HF transformers' figures go in the same table and chart.
//!
//!   cargo run --release --features cuda --bin bench_runtime -- --model DIR --device cuda

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::{Tensor, D};
use clap::Parser;
use exaone_compress::device::{parse_device, parse_dtype};
use exaone_compress::eval::Timing;
use exaone_compress::record::Results;
use exaone_compress::report::chart::bars;
use exaone_compress::{default_model_dir, Exaone4};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "auto")]
    dtype: String,
    #[arg(long, default_value = "reports/bench_runtime")]
    out: PathBuf,
    /// prefill points, BATCHxLENGTH
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1x512,1x2048,8x512,8x2048"
    )]
    prefill: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    decode_batches: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// HF transformers' figures for the same points (scripts/hf_bench.py)
    #[arg(long)]
    hf_json: Option<PathBuf>,
    /// the device's name for the report (e.g. from nvidia-smi)
    #[arg(long, default_value = "")]
    device_name: String,
}

fn ids(b: usize, t: usize, vocab: usize, dev: &candle_core::Device) -> candle_core::Result<Tensor> {
    let v: Vec<u32> = (0..b * t)
        .map(|i| (4 + (i * 7919) % (vocab - 4)) as u32)
        .collect();
    Tensor::from_vec(v, (b, t), dev)
}

fn main() -> Result<()> {
    let a = Args::parse();
    let device = parse_device(&a.device)?;
    let dtype = parse_dtype(&a.dtype, &device)?;
    let dir = a.model.clone().unwrap_or_else(default_model_dir);
    let name = if a.device_name.is_empty() {
        a.device.clone()
    } else {
        a.device_name.clone()
    };
    let mut r = Results::new(
        "bench_runtime",
        &format!("{name} ({dtype:?})"),
        &dir.display().to_string(),
    );
    let p = json!({});
    let mut loads = vec![];
    for _ in 0..3 {
        let t0 = Instant::now();
        let m = Exaone4::from_dir(&dir, dtype, &device)?;
        device.synchronize()?;
        loads.push(t0.elapsed().as_secs_f64());
        drop(m);
    }
    let l = Timing::from(loads);
    r.add(
        "ours",
        "candle",
        &p,
        "load_s",
        l.median,
        Some(l.max - l.min),
        "s",
    );
    let model = Exaone4::from_dir(&dir, dtype, &device)?;
    let vocab = model.config.vocab_size;
    for pt in &a.prefill {
        let (b, t) = pt
            .split_once('x')
            .map(|(b, t)| (b.parse().unwrap_or(1), t.parse().unwrap_or(512)))
            .unwrap_or((1, 512));
        let x = ids(b, t, vocab, &device)?;
        let mut v = vec![];
        for run in 0..a.warmup + a.repeats {
            device.synchronize()?;
            let t0 = Instant::now();
            let lp = candle_nn::ops::log_softmax(&model.forward(&x, None)?, D::Minus1)?;
            let _ = lp
                .narrow(1, t - 1, 1)?
                .sum_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_scalar::<f32>()?;
            if run >= a.warmup {
                v.push((b * t) as f64 / t0.elapsed().as_secs_f64());
            }
        }
        let tm = Timing::from(v);
        r.add(
            "ours",
            "candle",
            &p,
            &format!("prefill_tok_s_{pt}"),
            tm.median,
            Some(tm.max - tm.min),
            "tokens/s",
        );
        eprintln!(
            "prefill {pt}: {:.0} tokens/s [{:.0}–{:.0}]",
            tm.median, tm.min, tm.max
        );
    }
    for &b in &a.decode_batches {
        let x = ids(b, 128, vocab, &device)?;
        let mut v = vec![];
        for run in 0..a.warmup + a.repeats {
            let mut cache = model.new_cache(b, 128 + a.new_tokens + 1, vec![0; b])?;
            let h = model.forward_hidden(&x, Some(&mut cache))?;
            let mut next = model.logits(&h.narrow(1, 127, 1)?)?.argmax(D::Minus1)?;
            device.synchronize()?;
            let t0 = Instant::now();
            for _ in 0..a.new_tokens {
                let h = model.forward_hidden(&next.reshape((b, 1))?, Some(&mut cache))?;
                next = model.logits(&h)?.argmax(D::Minus1)?;
                let _ = next
                    .to_dtype(candle_core::DType::F32)?
                    .sum_all()?
                    .to_scalar::<f32>()?;
            }
            if run >= a.warmup {
                v.push(t0.elapsed().as_secs_f64() / a.new_tokens as f64);
            }
        }
        let tm = Timing::from(v);
        r.add(
            "ours",
            "candle",
            &p,
            &format!("decode_ms_b{b}"),
            1e3 * tm.median,
            Some(1e3 * (tm.max - tm.min)),
            "ms/step",
        );
        eprintln!(
            "decode batch {b}: {:.2} ms/step [{:.2}–{:.2}] = {:.0} tokens/s",
            1e3 * tm.median,
            1e3 * tm.min,
            1e3 * tm.max,
            b as f64 / tm.median
        );
    }
    if let Some(hf) = &a.hf_json {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hf)?)?;
        for (k, x) in v["metrics"].as_object().into_iter().flatten() {
            r.add(
                "hf",
                &format!("transformers {}", v["transformers"].as_str().unwrap_or("")),
                &p,
                k,
                x["median"].as_f64().unwrap_or(f64::NAN),
                x["spread"].as_f64(),
                x["unit"].as_str().unwrap_or(""),
            );
        }
    }
    r.save(&a.out)?;
    let mut md = format!("# Runtime: ours vs HF transformers\n\nModel `{}`, device {}, commit {}, {}.\n\nCommand: `{}`\n\n| metric | ours (median [spread]) | HF (median [spread]) | ours ÷ HF |\n|---|---|---|---|\n", dir.display(), r.device, r.commit, r.timestamp, std::env::args().collect::<Vec<_>>().join(" "));
    let mut chart = vec![];
    for row in r.rows.iter().filter(|x| x.variant == "ours") {
        let hf = r.get("hf", &row.metric);
        let ratio = hf.map(|h| {
            if row.metric.starts_with("prefill") {
                row.value / h
            } else {
                h / row.value
            }
        });
        md += &format!(
            "| {} ({}) | {:.3} [{:.3}] | {} | {} |\n",
            row.metric,
            row.unit,
            row.value,
            row.spread.unwrap_or(0.0),
            hf.map(|h| format!("{h:.3} [{:.3}]", r.spread("hf", &row.metric).unwrap_or(0.0)))
                .unwrap_or("–".into()),
            ratio
                .map(|x| format!("{x:.2}× (speed)"))
                .unwrap_or("–".into())
        );
        if let Some(x) = ratio {
            chart.push((
                row.metric
                    .replace("prefill_tok_s_", "prefill ")
                    .replace("decode_ms_", "decode "),
                x,
            ));
        }
    }
    md += "\nSpreads are max − min over the repeats (load: 3 loads). Prefill is forward + log-softmax over all positions; decode is a greedy step (forward of one token per row + lm_head + argmax read back).\n";
    if !chart.is_empty() {
        bars(
            &a.out.join("speedup.png"),
            "Ours vs HF transformers (speed ratio, >1 = ours faster)",
            "point",
            "ratio",
            &chart,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        md += "\n![speed ratio](speedup.png)\n";
    }
    std::fs::write(a.out.join("README.md"), md)?;
    Ok(())
}
