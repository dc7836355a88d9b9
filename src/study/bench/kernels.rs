//! Microbenchmarks under the model: device copy bandwidth (the ceiling for a decode step that
//! streams every weight once), and where a prefill's time goes — layers, lm_head + log-softmax,
//! the fused attention kernel over all layers, and the largest Linear as a bf16 and an int8
//! GEMM (CUDA builds).

use candle_core::Device;

use crate::Result;

/// Device-to-device copy bandwidth between two pre-allocated 1 GiB buffers (read + write
/// counted), GB/s; NaN off CUDA.
pub fn copy_bandwidth(device: &Device) -> Result<f64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let n = 1usize << 30;
        let src = d.alloc_zeros::<u8>(n)?;
        let mut dst = d.alloc_zeros::<u8>(n)?;
        let t = super::timed(2, 8, || {
            device.synchronize()?;
            let t0 = std::time::Instant::now();
            d.memcpy_dtod(&src, &mut dst)?;
            device.synchronize()?;
            Ok(2.0 * n as f64 / t0.elapsed().as_secs_f64() / 1e9)
        })?;
        return Ok(t.median);
    }
    let _ = device;
    Ok(f64::NAN)
}

#[cfg(feature = "cuda")]
impl super::Bench {
    /// A compressed checkpoint on the candle forward with its Linear kernels attached
    /// (`runtime::quantized::attach`): prefill at every point (no decode) and, with `breakdown`,
    /// where the largest point's time goes. Nothing is timed when no Linear took a kernel (e.g.
    /// fp8 on a GPU without fp8 tensor cores). Returns what was attached.
    pub fn candle_compressed(
        &self,
        r: &mut crate::record::Results,
        variant: &str,
        dir: &std::path::Path,
        dtype: candle_core::DType,
        device: &Device,
        breakdown: bool,
    ) -> Result<crate::runtime::quantized::Attached> {
        let ckpt = crate::Checkpoint::open(dir)?;
        let mut m = crate::runtime::load_checkpoint(&ckpt, dtype, device)?;
        let n = crate::runtime::quantized::attach(&mut m, &ckpt)?;
        eprintln!(
            "{variant}: {} Linears on int4, {} on int8, {} on fp8 kernels",
            n.int4, n.int8, n.fp8
        );
        if n.int4 + n.int8 + n.fp8 == 0 {
            return Ok(n);
        }
        self.candle(r, variant, &m, false)?;
        if let (true, Some(pt)) = (breakdown, self.args.prefill.last()) {
            self.prefill_breakdown(r, variant, &m, pt)?;
        }
        if n.int8 + n.fp8 > 0 {
            // the same prefill with every 8-bit product quantizing its own input: what the
            // quantized rows' hand-off from producer to product saves
            crate::runtime::quantized::set_handoff(false);
            let unfused = self.prefill(r, &format!("{variant}-own-quantizers"), &m);
            crate::runtime::quantized::set_handoff(true);
            unfused?;
        }
        Ok(n)
    }

    /// Where a prefill's time goes at point `pt`: the layers alone, the lm_head + log-softmax
    /// alone and attention alone (fused kernel, all layers), ms, with attention's TFLOP/s; then
    /// the largest Linear of a layer (gate/up) at this point's token count as cuBLAS bf16 and
    /// int8 GEMMs.
    pub fn prefill_breakdown(
        &self,
        r: &mut crate::record::Results,
        variant: &str,
        model: &crate::Exaone4,
        pt: &str,
    ) -> Result<()> {
        use candle_core::Tensor;
        use serde_json::json;

        use super::{ids, point, sync_ms};
        use crate::record::Variant;
        let (b, t) = point(pt);
        let device = model.device().clone();
        let c = &model.config;
        let x = ids(b, t, c.vocab_size, &device)?;
        let layers = self.timed(|| {
            sync_ms(&device, || {
                model.forward_hidden(&x, None)?;
                Ok(())
            })
        })?;
        let h = model.forward_hidden(&x, None)?;
        let head = self.timed(|| {
            sync_ms(&device, || {
                model.log_probs(&h)?;
                Ok(())
            })
        })?;
        let dt = model.dtype();
        let (nh, kvh, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let q = Tensor::randn(0f32, 1.0, (b, nh, t, d), &device)?.to_dtype(dt)?;
        let kv = Tensor::randn(0f32, 1.0, (b, kvh, t, d), &device)?.to_dtype(dt)?;
        let n = c.num_hidden_layers;
        let attn = self.timed(|| {
            sync_ms(&device, || {
                for _ in 0..n {
                    crate::runtime::fused_attention(&q, &kv, &kv)?;
                }
                Ok(())
            })
        })?;
        // causal attention: 2 matmuls of b·h·t²/2·d multiply-adds each
        let flops = 2.0 * 2.0 * (b * nh) as f64 * (t * t) as f64 / 2.0 * d as f64 * n as f64;
        let v = Variant::new(variant, "candle", json!({"point": pt}));
        for (what, tm) in [
            ("layers", &layers),
            ("lm_head + log-softmax", &head),
            ("attention kernel, all layers", &attn),
        ] {
            let metric = format!("breakdown_ms {pt}: {what}");
            r.add(&v, &metric, tm.median, Some(tm.max - tm.min), "ms");
        }
        let tflops = flops / attn.median / 1e9;
        r.add(
            &v,
            &format!("attention_tflops {pt}"),
            tflops,
            None,
            "TFLOP/s",
        );
        if let Device::Cuda(d) = &device {
            let (m, n, k) = (b * t, 2 * c.intermediate_size, c.hidden_size);
            let (bf, i8g, i8p) = crate::runtime::quantized::gemm_timings(d, m, n, k)?;
            let ops = 2.0 * (m * n * k) as f64;
            let q = Variant::new(variant, "cublas", json!({"m": m, "n": n, "k": k}));
            for (what, ms, unit) in [
                ("bf16", bf, "TFLOP/s"),
                ("int8 GEMM alone", i8g, "TOP/s"),
                ("int8 quantize + GEMM + epilogue", i8p, "TOP/s"),
            ] {
                let metric = format!("gemm_tflops {m}x{n}x{k}: {what}");
                r.add(&q, &metric, ops / ms / 1e9, None, unit);
            }
            eprintln!(
                "GEMM {m}x{n}x{k}: bf16 {bf:.3} ms, int8 GEMM {i8g:.3} ms, int8 path {i8p:.3} ms"
            );
        }
        eprintln!(
            "{variant} prefill {pt}: layers {:.1} ms, lm_head + log-softmax {:.1} ms, attention {:.1} ms ({:.0} TFLOP/s)",
            layers.median, head.median, attn.median, tflops
        );
        Ok(())
    }
}
