//! Prefill throughput on the candle forward: forward + log-softmax over a whole batch of
//! prompts, tokens/s at each `BATCHxLENGTH` point.

use std::time::Instant;

use serde_json::json;

use super::{ids, point, Bench};
use crate::model::Exaone4;
use crate::record::{Results, Variant};
use crate::Result;

impl Bench {
    /// `prefill_tok_s_{point}` for every point, then `peak_gib_prefill`.
    pub fn prefill(&self, r: &mut Results, variant: &str, model: &Exaone4) -> Result<()> {
        let device = model.device().clone();
        let vocab = model.config.vocab_size;
        let v = Variant::new(variant, "candle", json!({}));
        for pt in &self.args.prefill {
            let (b, t) = point(pt);
            let x = ids(b, t, vocab, &device)?;
            let tm = self.timed(|| {
                device.synchronize()?;
                let t0 = Instant::now();
                let lp = model.log_probs(&model.forward_hidden(&x, None)?)?;
                let _ = lp.narrow(1, t - 1, 1)?.sum_all()?.to_scalar::<f32>()?;
                Ok((b * t) as f64 / t0.elapsed().as_secs_f64())
            })?;
            r.add(
                &v,
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
        self.record_peak(r, &v, "peak_gib_prefill");
        Ok(())
    }
}
