//! Runtime of a checkpoint and its compressed variants, ours beside HF transformers (same call,
//! same GPU): load time; prefill (forward + log-softmax) tokens/s at batch × length points; greedy
//! decode ms per step at batch 1 and 16 on the candle forward and on the decode engine (eager
//! launches and CUDA-graph replay; bf16 and W4A16 packed int4); W8A8 prefill on int8 tensor
//! cores; peak device memory. Warm-up, repeats, median and [max − min]. On CUDA it first checks
//! every kernel numerically against the f32 reference (runtime::check) and fails if one is off.
//!
//!   bench_runtime --model DIR [--w4a16 DIR] [--w8a8 DIR] --device cuda --hf-json hf.json

#[cfg(feature = "cuda")]
use std::path::Path;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor, D};
use clap::Parser;
use exaone_compress::device::parse_dtype;
use exaone_compress::eval::Timing;
use exaone_compress::record::Results;
use exaone_compress::{default_model_dir, Exaone4};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    /// a W4A16 (pack-quantized) compressed-tensors checkpoint of the same model
    #[arg(long)]
    w4a16: Option<PathBuf>,
    /// a W8A8 (int8, dynamic per-token activations) checkpoint of the same model
    #[arg(long)]
    w8a8: Option<PathBuf>,
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
    /// prompt tokens before decoding
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
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
    /// the command line to print in the report (default: this process's)
    #[arg(long)]
    command: Option<String>,
}

fn ids(b: usize, t: usize, vocab: usize, dev: &Device) -> candle_core::Result<Tensor> {
    let v: Vec<u32> = (0..b * t)
        .map(|i| (4 + (i * 7919) % (vocab - 4)) as u32)
        .collect();
    Tensor::from_vec(v, (b, t), dev)
}

fn point(p: &str) -> (usize, usize) {
    p.split_once('x')
        .and_then(|(b, t)| Some((b.parse().ok()?, t.parse().ok()?)))
        .unwrap_or((1, 512))
}

/// Runs `f` `warmup + repeats` times and keeps the repeats.
fn timed_n(warmup: usize, repeats: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Timing> {
    let mut v = vec![];
    for run in 0..warmup + repeats {
        let x = f()?;
        if run >= warmup {
            v.push(x);
        }
    }
    Ok(Timing::from(v))
}

fn timed(a: &Args, f: impl FnMut() -> Result<f64>) -> Result<Timing> {
    timed_n(a.warmup, a.repeats, f)
}

/// Peak device memory in use, sampled every 2 ms on a side thread (whole device: what
/// nvidia-smi shows, CUDA context included).
struct MemPeak {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl MemPeak {
    fn start(device: &Device) -> Option<Self> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(d) = device {
            use std::sync::atomic::Ordering;
            let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let (p, ctx) = (peak.clone(), d.cuda_stream().context().clone());
            std::thread::spawn(move || {
                if ctx.bind_to_thread().is_err() {
                    return;
                }
                use candle_core::cuda::cudarc::driver::result::mem_get_info;
                while let Ok((free, total)) = mem_get_info() {
                    p.fetch_max((total - free) as u64, Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
            return Some(Self { peak });
        }
        let _ = device;
        None
    }
    /// GiB at the peak since the last call.
    fn take(&self) -> f64 {
        let b = self.peak.swap(0, std::sync::atomic::Ordering::Relaxed);
        b as f64 / (1u64 << 30) as f64
    }
}

/// Prefill points and decode batches on the candle forward.
fn bench_candle(
    a: &Args,
    r: &mut Results,
    variant: &str,
    model: &Exaone4,
    mem: &Option<MemPeak>,
    decode: bool,
) -> Result<()> {
    let device = model.device().clone();
    let vocab = model.config.vocab_size;
    let p = json!({});
    exaone_compress::runtime::trim_freed_memory(&device)?;
    if let Some(m) = mem {
        m.take();
    }
    for pt in &a.prefill {
        let (b, t) = point(pt);
        let x = ids(b, t, vocab, &device)?;
        let tm = timed(a, || {
            device.synchronize()?;
            let t0 = Instant::now();
            let lp = model.log_probs(&model.forward_hidden(&x, None)?)?;
            let _ = lp.narrow(1, t - 1, 1)?.sum_all()?.to_scalar::<f32>()?;
            Ok((b * t) as f64 / t0.elapsed().as_secs_f64())
        })?;
        r.add(
            variant,
            "candle",
            &p,
            &format!("prefill_tok_s_{pt}"),
            tm.median,
            Some(tm.max - tm.min),
            "tokens/s",
        );
        eprintln!(
            "{variant} prefill {pt}: {:.0} tokens/s [{:.0}–{:.0}]",
            tm.median, tm.min, tm.max
        );
    }
    if let Some(m) = mem {
        r.add(
            variant,
            "candle",
            &p,
            "peak_gib_prefill",
            m.take(),
            None,
            "GiB",
        );
    }
    if !decode {
        return Ok(());
    }
    for &b in &a.decode_batches {
        let x = ids(b, a.prompt_len, vocab, &device)?;
        let tm = timed(a, || {
            let mut cache = model.new_cache(b, a.prompt_len + a.new_tokens + 1, vec![0; b])?;
            let h = model.forward_hidden(&x, Some(&mut cache))?;
            let mut next = model
                .logits(&h.narrow(1, a.prompt_len - 1, 1)?)?
                .argmax(D::Minus1)?;
            device.synchronize()?;
            let t0 = Instant::now();
            for _ in 0..a.new_tokens {
                let h = model.forward_hidden(&next.reshape((b, 1))?, Some(&mut cache))?;
                next = model.logits(&h)?.argmax(D::Minus1)?;
                let _ = next.to_vec2::<u32>()?;
            }
            Ok(t0.elapsed().as_secs_f64() / a.new_tokens as f64)
        })?;
        r.add(
            variant,
            "candle",
            &p,
            &format!("decode_ms_b{b}"),
            1e3 * tm.median,
            Some(1e3 * (tm.max - tm.min)),
            "ms/step",
        );
        eprintln!(
            "{variant} decode b{b}: {:.2} ms/step [{:.2}–{:.2}]",
            1e3 * tm.median,
            1e3 * tm.min,
            1e3 * tm.max
        );
    }
    if let Some(m) = mem {
        r.add(
            variant,
            "candle",
            &p,
            "peak_gib_decode",
            m.take(),
            None,
            "GiB",
        );
    }
    Ok(())
}

/// Greedy decode on the engine, eager and graph-replayed, and the weight bytes it reads per step.
#[cfg(feature = "cuda")]
fn bench_engine(
    a: &Args,
    r: &mut Results,
    variant: &str,
    dir: &Path,
    mem: &Option<MemPeak>,
) -> Result<()> {
    use exaone_compress::runtime::engine::DecodeEngine;
    let ckpt = exaone_compress::Checkpoint::open(dir)?;
    let vocab = ckpt.config.vocab_size;
    for &b in &a.decode_batches {
        let t0 = Instant::now();
        let mut e = DecodeEngine::load(&ckpt, 0, b, a.prompt_len + a.new_tokens + 1)?;
        let load_s = t0.elapsed().as_secs_f64();
        let prompts: Vec<Vec<u32>> = (0..b)
            .map(|r| {
                (0..a.prompt_len)
                    .map(|i| (4 + ((r * a.prompt_len + i) * 7919) % (vocab - 4)) as u32)
                    .collect()
            })
            .collect();
        for graph in [false, true] {
            let name = if graph {
                variant.to_string()
            } else {
                format!("{variant}-eager")
            };
            if let Some(m) = mem {
                m.take();
            }
            let tm = match timed(a, || {
                e.prefill(&prompts)?;
                e.synchronize()?;
                let t0 = Instant::now();
                for _ in 1..a.new_tokens {
                    e.step(graph)?;
                }
                Ok(t0.elapsed().as_secs_f64() / (a.new_tokens - 1) as f64)
            }) {
                Ok(t) => t,
                Err(err) if graph => {
                    eprintln!("{name} decode b{b}: CUDA graph failed ({err}); eager figures only");
                    continue;
                }
                Err(err) => return Err(err),
            };
            let p = json!({"graph": graph, "weights": e.info.weights});
            r.add(
                &name,
                "engine",
                &p,
                &format!("decode_ms_b{b}"),
                1e3 * tm.median,
                Some(1e3 * (tm.max - tm.min)),
                "ms/step",
            );
            if let Some(m) = mem {
                r.add(
                    &name,
                    "engine",
                    &p,
                    &format!("peak_gib_decode_b{b}"),
                    m.take(),
                    None,
                    "GiB",
                );
            }
            eprintln!(
                "{name} decode b{b}: {:.3} ms/step [{:.3}–{:.3}]",
                1e3 * tm.median,
                1e3 * tm.min,
                1e3 * tm.max
            );
        }
        r.add(
            variant,
            "engine",
            &json!({}),
            &format!("load_s_b{b}"),
            load_s,
            None,
            "s",
        );
        r.add(
            variant,
            "engine",
            &json!({"weights": e.info.weights, "batch": b}),
            &format!("weight_bytes_per_step_b{b}"),
            e.info.weight_bytes_per_step as f64,
            None,
            "bytes",
        );
        if b == 1 {
            e.prefill(&prompts)?;
            for (what, ms, n) in e.profile_step()? {
                r.add(
                    variant,
                    "engine",
                    &json!({"launches": n}),
                    &format!("profile_ms: {what}"),
                    ms,
                    None,
                    "ms",
                );
            }
        }
    }
    Ok(())
}

/// Device-to-device copy bandwidth between two pre-allocated 1 GiB buffers (read + write
/// counted), GB/s: the ceiling for a step that streams every weight once.
fn copy_bandwidth(device: &Device) -> Result<f64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let n = 1usize << 30;
        let src = d.alloc_zeros::<u8>(n)?;
        let mut dst = d.alloc_zeros::<u8>(n)?;
        let t = timed_n(2, 8, || {
            device.synchronize()?;
            let t0 = Instant::now();
            d.memcpy_dtod(&src, &mut dst)?;
            device.synchronize()?;
            Ok(2.0 * n as f64 / t0.elapsed().as_secs_f64() / 1e9)
        })?;
        return Ok(t.median);
    }
    let _ = device;
    Ok(f64::NAN)
}

/// Where a prefill's time goes: the whole forward + log-softmax, the layers alone, the
/// lm_head + log-softmax alone, and attention alone (fused kernel, all layers), ms.
#[cfg(feature = "cuda")]
fn prefill_breakdown(
    a: &Args,
    r: &mut Results,
    variant: &str,
    model: &Exaone4,
    pt: &str,
) -> Result<()> {
    let (b, t) = point(pt);
    let device = model.device().clone();
    let c = &model.config;
    let x = ids(b, t, c.vocab_size, &device)?;
    let sync_ms = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        device.synchronize()?;
        let t0 = Instant::now();
        f()?;
        device.synchronize()?;
        Ok(1e3 * t0.elapsed().as_secs_f64())
    };
    let layers = timed(a, || {
        sync_ms(&mut || {
            model.forward_hidden(&x, None)?;
            Ok(())
        })
    })?;
    let h = model.forward_hidden(&x, None)?;
    let head = timed(a, || {
        sync_ms(&mut || {
            model.log_probs(&h)?;
            Ok(())
        })
    })?;
    let dt = model.dtype();
    let q = Tensor::randn(
        0f32,
        1.0,
        (b, c.num_attention_heads, t, c.head_dim),
        &device,
    )?
    .to_dtype(dt)?;
    let kv = Tensor::randn(
        0f32,
        1.0,
        (b, c.num_key_value_heads, t, c.head_dim),
        &device,
    )?
    .to_dtype(dt)?;
    let n = c.num_hidden_layers;
    let attn = timed(a, || {
        sync_ms(&mut || {
            for _ in 0..n {
                exaone_compress::runtime::fused_attention(&q, &kv, &kv)?;
            }
            Ok(())
        })
    })?;
    // causal attention: 2 matmuls of b·h·t²/2·d multiply-adds each
    let flops = 2.0 * 2.0 * (b * c.num_attention_heads) as f64 * (t * t) as f64 / 2.0
        * c.head_dim as f64
        * n as f64;
    let p = json!({"point": pt});
    r.add(
        variant,
        "candle",
        &p,
        &format!("breakdown_ms {pt}: layers"),
        layers.median,
        Some(layers.max - layers.min),
        "ms",
    );
    r.add(
        variant,
        "candle",
        &p,
        &format!("breakdown_ms {pt}: lm_head + log-softmax"),
        head.median,
        Some(head.max - head.min),
        "ms",
    );
    r.add(
        variant,
        "candle",
        &p,
        &format!("breakdown_ms {pt}: attention kernel, all layers"),
        attn.median,
        Some(attn.max - attn.min),
        "ms",
    );
    r.add(
        variant,
        "candle",
        &p,
        &format!("attention_tflops {pt}"),
        flops / attn.median / 1e9,
        None,
        "TFLOP/s",
    );
    if let Device::Cuda(d) = &device {
        // the largest Linear of a layer (gate/up) at this point's token count
        let (m, n, k) = (b * t, 2 * c.intermediate_size, c.hidden_size);
        let (bf, i8g, i8p) = exaone_compress::runtime::quantized::gemm_timings(d, m, n, k)?;
        let ops = 2.0 * (m * n * k) as f64;
        let q = json!({"m": m, "n": n, "k": k});
        r.add(
            variant,
            "cublas",
            &q,
            &format!("gemm_tflops {m}x{n}x{k}: bf16"),
            ops / bf / 1e9,
            None,
            "TFLOP/s",
        );
        r.add(
            variant,
            "cublas",
            &q,
            &format!("gemm_tflops {m}x{n}x{k}: int8 GEMM alone"),
            ops / i8g / 1e9,
            None,
            "TOP/s",
        );
        r.add(
            variant,
            "cublas",
            &q,
            &format!("gemm_tflops {m}x{n}x{k}: int8 quantize + GEMM + epilogue"),
            ops / i8p / 1e9,
            None,
            "TOP/s",
        );
        eprintln!(
            "GEMM {m}x{n}x{k}: bf16 {bf:.3} ms, int8 GEMM {i8g:.3} ms, int8 path {i8p:.3} ms"
        );
    }
    eprintln!("{variant} prefill {pt}: layers {:.1} ms, lm_head + log-softmax {:.1} ms, attention {:.1} ms ({:.0} TFLOP/s)", layers.median, head.median, attn.median, flops / attn.median / 1e9);
    Ok(())
}

fn main() -> Result<()> {
    let a = Args::parse();
    let device = exaone_compress::runtime::open_device(&a.device)?;
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
    let mem = MemPeak::start(&device);
    #[allow(unused_mut)] // filled on CUDA builds only
    let mut checks: Vec<exaone_compress::runtime::Check> = vec![];
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        use exaone_compress::runtime::check;
        checks.extend(check::attention(&device)?);
        let mut graph_same = true;
        for b in [1, 2] {
            let (c, same) = check::engine(&dir, &device, "bf16", b)?;
            checks.push(c);
            graph_same &= same;
            if let Some(w4) = &a.w4a16 {
                let (c, same) = check::engine(w4, &device, "W4A16", b)?;
                checks.push(c);
                graph_same &= same;
            }
        }
        if let Some(w4) = &a.w4a16 {
            checks.push(check::linear_kernels(w4, &device, "W4A16")?);
        }
        if let Some(w8) = &a.w8a8 {
            checks.push(check::linear_kernels(w8, &device, "W8A8")?);
        }
        for c in &checks {
            eprintln!(
                "check {}: kernel {:.2e}, bf16 reference {:.2e}, top-1 {:.3} → {}",
                c.what,
                c.kernel_err,
                c.bf16_err,
                c.top1,
                if c.passes() { "ok" } else { "FAIL" }
            );
        }
        eprintln!("graph replay picks the same tokens as eager launches: {graph_same}");
        r.add(
            "checks",
            "runtime::check",
            &json!({}),
            "graph_equals_eager",
            graph_same as u8 as f64,
            None,
            "bool",
        );
    }
    let p = json!({});
    let loads = timed_n(0, 3, || {
        let t0 = Instant::now();
        let m = exaone_compress::runtime::load_model(&dir, dtype, &device)?;
        device.synchronize()?;
        drop(m);
        Ok(t0.elapsed().as_secs_f64())
    })?;
    r.add(
        "candle-bf16",
        "candle",
        &p,
        "load_s",
        loads.median,
        Some(loads.max - loads.min),
        "s",
    );
    {
        let model = exaone_compress::runtime::load_model(&dir, dtype, &device)?;
        bench_candle(&a, &mut r, "candle-bf16", &model, &mem, true)?;
        #[cfg(feature = "cuda")]
        if device.is_cuda() {
            if let Some(pt) = a.prefill.last() {
                prefill_breakdown(&a, &mut r, "candle-bf16", &model, pt)?;
            }
        }
    }
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        use exaone_compress::runtime::quantized::attach;
        exaone_compress::runtime::trim_freed_memory(&device)?;
        bench_engine(&a, &mut r, "engine-bf16", &dir, &mem)?;
        if let Some(w4) = &a.w4a16 {
            exaone_compress::runtime::trim_freed_memory(&device)?;
            bench_engine(&a, &mut r, "engine-w4a16", w4, &mem)?;
            let ckpt = exaone_compress::Checkpoint::open(w4)?;
            let mut m = exaone_compress::runtime::load_checkpoint(&ckpt, dtype, &device)?;
            attach(&mut m, &ckpt)?;
            bench_candle(&a, &mut r, "candle-w4a16", &m, &mem, false)?;
        }
        if let Some(w8) = &a.w8a8 {
            let ckpt = exaone_compress::Checkpoint::open(w8)?;
            let mut m = exaone_compress::runtime::load_checkpoint(&ckpt, dtype, &device)?;
            let n = attach(&mut m, &ckpt)?;
            eprintln!("W8A8: {} Linears on int8 tensor cores", n.int8);
            bench_candle(&a, &mut r, "candle-w8a8-int8", &m, &mem, false)?;
            if let Some(pt) = a.prefill.last() {
                prefill_breakdown(&a, &mut r, "candle-w8a8-int8", &m, pt)?;
            }
        }
    }
    let bw = copy_bandwidth(&device)?;
    r.add("device", "copy", &p, "copy_gb_s", bw, None, "GB/s");
    for c in &checks {
        let p = json!({"what": c.what});
        r.add(
            "checks",
            "runtime::check",
            &p,
            &format!("kernel_rel_err: {}", c.what),
            c.kernel_err,
            None,
            "",
        );
        r.add(
            "checks",
            "runtime::check",
            &p,
            &format!("bf16_rel_err: {}", c.what),
            c.bf16_err,
            None,
            "",
        );
        r.add(
            "checks",
            "runtime::check",
            &p,
            &format!("top1: {}", c.what),
            c.top1,
            None,
            "",
        );
    }
    if let Some(hf) = &a.hf_json {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hf)?)?;
        for (k, x) in v["metrics"].as_object().into_iter().flatten() {
            let method = format!("transformers {}", v["transformers"].as_str().unwrap_or(""));
            let (m, s, u) = (
                x["median"].as_f64().unwrap_or(f64::NAN),
                x["spread"].as_f64(),
                x["unit"].as_str().unwrap_or(""),
            );
            r.add("hf", &method, &p, k, m, s, u);
        }
    }
    r.save(&a.out)?;
    let command = a
        .command
        .clone()
        .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    exaone_compress::report::runtime::write(&r, &a.out, &command)?;
    let failed: Vec<_> = checks
        .iter()
        .filter(|c| !c.passes())
        .map(|c| c.what.clone())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("numerical checks failed: {failed:?}");
    }
    Ok(())
}
