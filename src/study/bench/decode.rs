//! Greedy decode, ms per step after a `prompt_len` prompt: on the candle forward (KV cache,
//! argmax read back each step) and on the runtime's decode engine (CUDA builds: eager launches
//! and CUDA-graph replay, its load time, the weight bytes a step reads and a per-kernel profile).

use std::time::Instant;

use candle_core::D;
use serde_json::json;

use super::{ids, Bench};
use crate::model::Exaone4;
use crate::record::{Results, Variant};
use crate::Result;

impl Bench {
    /// `decode_ms_b{b}` for every decode batch on the candle forward, then `peak_gib_decode`.
    pub fn candle_decode(&self, r: &mut Results, variant: &str, model: &Exaone4) -> Result<()> {
        let device = model.device().clone();
        let a = &self.args;
        let v = Variant::new(variant, "candle", json!({}));
        for &b in &a.decode_batches {
            let x = ids(b, a.prompt_len, model.config.vocab_size, &device)?;
            let tm = self.timed(|| {
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
                &v,
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
        self.record_peak(r, &v, "peak_gib_decode");
        Ok(())
    }

    /// Greedy decode on the engine for every decode batch, graph-replayed (`variant`) and eager
    /// (`{variant}-eager`), with peak memory; its load time and weight bytes per step; at batch
    /// 1 the per-kernel profile of one step.
    #[cfg(feature = "cuda")]
    pub fn engine(&self, r: &mut Results, variant: &str, dir: &std::path::Path) -> Result<()> {
        use crate::model::generate::synthetic_ids;
        use crate::runtime::engine::DecodeEngine;
        let a = &self.args;
        let ckpt = crate::Checkpoint::open(dir)?;
        let vocab = ckpt.config.vocab_size;
        for &b in &a.decode_batches {
            let t0 = Instant::now();
            let mut e = DecodeEngine::load(&ckpt, 0, b, a.prompt_len + a.new_tokens + 1)?;
            let load_s = t0.elapsed().as_secs_f64();
            let prompts: Vec<Vec<u32>> = (0..b)
                .map(|row| synthetic_ids(vocab, a.prompt_len, row * a.prompt_len))
                .collect();
            // eager, graph, and — where the GPU has them — the graph without programmatic
            // launches (each kernel waits for the previous one to finish before it starts)
            let mut modes = vec![(false, true), (true, true)];
            if e.programmatic_supported()? {
                modes.push((true, false));
            }
            for (graph, programmatic) in modes {
                let name = match (graph, programmatic) {
                    (false, _) => format!("{variant}-eager"),
                    (true, true) => variant.to_string(),
                    (true, false) => format!("{variant}-serial"),
                };
                if let Some(m) = &self.mem {
                    m.take();
                }
                if !programmatic {
                    crate::runtime::set_programmatic_launch(false);
                    e.recapture();
                }
                let timed = self.timed(|| {
                    e.prefill(&prompts)?;
                    e.synchronize()?;
                    let t0 = Instant::now();
                    for _ in 1..a.new_tokens {
                        e.step(graph)?;
                    }
                    Ok(t0.elapsed().as_secs_f64() / (a.new_tokens - 1) as f64)
                });
                if !programmatic {
                    crate::runtime::set_programmatic_launch(true);
                    e.recapture();
                }
                let tm = match timed {
                    Ok(t) => t,
                    Err(err) if graph => {
                        eprintln!(
                            "{name} decode b{b}: CUDA graph failed ({err}); eager figures only"
                        );
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                let p = json!({"graph": graph, "programmatic": programmatic, "weights": e.info.weights});
                let v = Variant::new(name.as_str(), "engine", p);
                r.add(
                    &v,
                    &format!("decode_ms_b{b}"),
                    1e3 * tm.median,
                    Some(1e3 * (tm.max - tm.min)),
                    "ms/step",
                );
                self.record_peak(r, &v, &format!("peak_gib_decode_b{b}"));
                eprintln!(
                    "{name} decode b{b}: {:.3} ms/step [{:.3}–{:.3}]",
                    1e3 * tm.median,
                    1e3 * tm.min,
                    1e3 * tm.max
                );
            }
            r.add(
                &Variant::new(variant, "engine", json!({})),
                &format!("load_s_b{b}"),
                load_s,
                None,
                "s",
            );
            r.add(
                &Variant::new(
                    variant,
                    "engine",
                    json!({"weights": e.info.weights, "batch": b}),
                ),
                &format!("weight_bytes_per_step_b{b}"),
                e.info.weight_bytes_per_step as f64,
                None,
                "bytes",
            );
            if b == 1 {
                e.prefill(&prompts)?;
                for (what, ms, n) in e.profile_step()? {
                    r.add(
                        &Variant::new(variant, "engine", json!({"launches": n})),
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
}
