//! The L4 projection of a serving run (issue #15 item 3): every variant's measured step trace
//! (batch, context read, prefill tokens and attention pairs per step) projected on the L4's
//! datasheet ([`GpuSpec::l4`]) with kernel efficiencies carried from this run's device, as rows:
//!
//! | variant | metric | what |
//! |---|---|---|
//! | each scheme | `l4_<tag>_secs_per_token`, `_tokens_per_sec` | projected T on the L4 and its inverse |
//! | each scheme | `l4_<tag>_speed_norm`, `_speedup` | `(T_bf16 − T) ÷ T_bf16` (target.md), `T_bf16 ÷ T` |
//! | each scheme | `l4_<tag>_memory_bound_share`, `_prefill_share`, `_own_trace`, `_score` | time set by bytes; time in steps with prefill; 1 if its own run's steps (0: bf16's); `½ + ½·SpeedNorm` (accuracy kept) |
//! | each scheme | `l4_weight_bytes`, `public_score_lo`, `_hi` | bytes read per step; target.md's reported Score |
//! | fp8 | `l4_<tag>_speed_norm_no_fp8_cores` | SpeedNorm were the L4's fp8 GEMMs at the bf16 rate |
//! | `l4_projection` | `l4_eff_*`, `l4_mem_bw`, `l4_*_flops`, `l4_step_overhead_s` | the GPU as projected (params: where the efficiencies came from) |
//! | `l4_projection` | `l4_<tag>_steps`, `_prefill_steps`, `_decode_batch_mean`, `_decode_kv_bytes_mean` | the bf16 trace |
//! | `l4_projection` | `l4_<tag>_pairs`, `_pairs_agree`, `_kendall_tau_b`, `_bar_met`, `l4_<tag>_pair: <text>` | the ranking against the public results (pair rows: 1 alike, 0 not) |
//!
//! Schemes ([`L4_SCHEMES`]): bf16 (the base), W4A16 (int4, groups of 128), W8A8 int8 and FP8,
//! all over the bf16 run's config, lm_head and embedding bf16. A scheme the run did not execute
//! (FP8 always: the engine has no FP8 path) is projected on the bf16 run's steps, and says so.

use serde_json::json;

use crate::error::{Error, Result};
use crate::eval::projection::{
    compare_with_public, project_each, step_time, Efficiencies, GpuSpec, Projection, Roofline,
    StepTrace, VariantCost, PUBLIC_RESULTS,
};
use crate::model::Exaone4Config;
use crate::record::{Results, Variant};

/// The schemes projected, the base first.
pub const L4_SCHEMES: [&str; 4] = ["bf16", "w4a16", "w8a8", "fp8"];
/// The variant whose rows describe the projection itself.
pub const L4_VARIANT: &str = "l4_projection";
/// How a step's kernels share the L4: in sequence (Linears, lm_head, attention each at the
/// slower of its bytes and its FLOPs), as the engine's eager profile shows them.
const ROOFLINE: Roofline = Roofline::PerKernel;

/// One variant's serving runs: its label (a scheme word of [`L4_SCHEMES`]), its model's config
/// and the measured steps of each timed run, by tag (`mc_c256`, `long_c256`).
#[derive(Clone, Debug)]
pub struct VariantRun {
    pub label: String,
    pub config: Exaone4Config,
    pub traces: Vec<(String, StepTrace)>,
}

impl VariantRun {
    fn trace(&self, tag: &str) -> Option<&StepTrace> {
        self.traces.iter().find(|(t, _)| t == tag).map(|(_, t)| t)
    }
}

/// Projects every scheme of [`L4_SCHEMES`] on the L4 for every tag the bf16 run measured, and
/// records the rows of the module doc. Returns the projections by tag. Errors: no bf16 run, an
/// invalid efficiency, a trace without steps.
pub fn project_l4(
    r: &mut Results,
    runs: &[VariantRun],
    eff: &Efficiencies,
) -> Result<Vec<(String, Vec<Projection>)>> {
    let Some(base) = runs.iter().find(|x| x.label == "bf16") else {
        return Err(Error::Invalid(
            "L4 projection: no bf16 run to be the base".into(),
        ));
    };
    let gpu = GpuSpec::l4().with_efficiencies(eff);
    gpu.check()?;
    // a projection replaces an earlier one (results loaded from a run, projected again)
    r.rows.retain(|x| {
        x.variant != L4_VARIANT
            && !x.metric.starts_with("l4_")
            && !x.metric.starts_with("public_score_")
    });
    let costs = L4_SCHEMES
        .iter()
        .map(|w| VariantCost::from_word(w, &base.config, w))
        .collect::<Result<Vec<_>>>()?;
    let me = Variant::new(
        L4_VARIANT,
        "l4 projection",
        json!({ "gpu": gpu.name, "efficiencies": eff.source, "roofline": "per kernel" }),
    );
    record_gpu(r, &me, &gpu);
    let variant_of = |r: &Results, w: &str| {
        r.variant(w).unwrap_or_else(|| {
            let trace = "the bf16 run's steps (not run)";
            Variant::new(w, "l4 projection", json!({ "scheme": w, "trace": trace }))
        })
    };
    for (w, c) in L4_SCHEMES.iter().zip(&costs) {
        let v = variant_of(r, w);
        r.add(&v, "l4_weight_bytes", c.weight_bytes(), None, "B");
        if let Some(&(_, _, lo, hi)) = PUBLIC_RESULTS.iter().find(|p| p.0 == *w) {
            r.add(&v, "public_score_lo", lo, None, "");
            r.add(&v, "public_score_hi", hi, None, "");
        }
    }
    let mut out = vec![];
    for (tag, bt) in &base.traces {
        let traces: Vec<(&StepTrace, bool)> = L4_SCHEMES
            .iter()
            .map(|w| {
                match runs
                    .iter()
                    .find(|x| x.label == *w)
                    .and_then(|x| x.trace(tag))
                {
                    Some(t) => (t, true),
                    None => (bt, false),
                }
            })
            .collect();
        let pairs: Vec<_> = costs.iter().zip(&traces).map(|(c, t)| (c, t.0)).collect();
        let p = project_each(&gpu, &pairs, ROOFLINE)?;
        let m = |x: &str| format!("l4_{tag}_{x}");
        for (((w, x), t), c) in L4_SCHEMES.iter().zip(&p).zip(&traces).zip(&costs) {
            let own = &t.1;
            let v = variant_of(r, w);
            r.add(&v, &m("secs_per_token"), x.secs_per_token, None, "s");
            r.add(&v, &m("tokens_per_sec"), x.tokens_per_sec, None, "tokens/s");
            r.add(&v, &m("speed_norm"), x.speed_norm, None, "");
            let speedup = p[0].secs_per_token / x.secs_per_token;
            r.add(&v, &m("speedup"), speedup, None, "×");
            r.add(&v, &m("memory_bound_share"), x.memory_bound_share, None, "");
            let prefill = t.0.steps.iter().filter(|s| s.prefill_tokens > 0);
            let secs: f64 = prefill.map(|s| step_time(&gpu, c, s, ROOFLINE).secs).sum();
            r.add(&v, &m("prefill_share"), secs / x.secs, None, "");
            r.add(&v, &m("own_trace"), f64::from(u8::from(*own)), None, "bool");
            r.add(&v, &m("score"), 0.5 + 0.5 * x.speed_norm, None, "");
        }
        // FP8 were the L4's fp8 GEMMs to run at the bf16 rate: the explanation's figure
        let no_fp8 = GpuSpec {
            fp8_flops: None,
            ..gpu.clone()
        };
        let q = project_each(&no_fp8, &[pairs[0], pairs[3]], ROOFLINE)?;
        let v = variant_of(r, "fp8");
        r.add(&v, &m("speed_norm_no_fp8_cores"), q[1].speed_norm, None, "");
        record_trace(r, &me, tag, bt, &costs[0]);
        record_ranking(r, &me, tag, &p)?;
        out.push((tag.clone(), p));
    }
    Ok(out)
}

fn record_gpu(r: &mut Results, me: &Variant, gpu: &GpuSpec) {
    r.add(me, "l4_mem_bw", gpu.mem_bw, None, "B/s");
    r.add(me, "l4_bf16_flops", gpu.bf16_flops, None, "FLOP/s");
    for (name, x) in [
        ("l4_int8_ops", gpu.int8_ops),
        ("l4_fp8_flops", gpu.fp8_flops),
    ] {
        if let Some(x) = x {
            r.add(me, name, x, None, "OP/s");
        }
    }
    r.add(me, "l4_eff_bandwidth", gpu.eff_bw, None, "");
    r.add(me, "l4_eff_bf16", gpu.eff_tc, None, "");
    r.add(
        me,
        "l4_eff_int8",
        gpu.eff_int8.unwrap_or(gpu.eff_tc),
        None,
        "",
    );
    r.add(me, "l4_step_overhead_s", gpu.step_overhead_s, None, "s");
}

/// The bf16 trace's shape: steps, prefill steps, and its decode-only steps' mean batch and mean
/// KV bytes read (bf16 KV).
fn record_trace(r: &mut Results, me: &Variant, tag: &str, t: &StepTrace, bf16: &VariantCost) {
    let m = |x: &str| format!("l4_{tag}_{x}");
    let (prefill, decode) = t.split();
    r.add(me, &m("steps"), t.steps.len() as f64, None, "");
    r.add(me, &m("prefill_steps"), prefill as f64, None, "");
    r.add(
        me,
        &m("generated_tokens"),
        t.generated_tokens as f64,
        None,
        "tokens",
    );
    let dec = t.steps.iter().filter(|s| s.prefill_tokens == 0);
    let (rows, kv) = dec.fold((0.0, 0.0), |(a, b), s| {
        (a + s.decode_rows as f64, b + s.kv_tokens_read as f64)
    });
    if decode > 0 {
        let n = decode as f64;
        r.add(me, &m("decode_batch_mean"), rows / n, None, "seqs");
        let bytes = kv / n * bf16.kv_bytes_per_token;
        r.add(me, &m("decode_kv_bytes_mean"), bytes, None, "B");
    }
}

/// The projected order against the public one (PerfNorm 1 for every scheme: the projection is
/// of speed), and the bar: W8A8 > W4A16 > bf16 ≥ FP8 in SpeedNorm.
fn record_ranking(r: &mut Results, me: &Variant, tag: &str, p: &[Projection]) -> Result<()> {
    let m = |x: &str| format!("l4_{tag}_{x}");
    let c = compare_with_public(p, &[])?;
    let pairs = c.agree.len() + c.disagree.len();
    r.add(me, &m("pairs"), pairs as f64, None, "");
    r.add(me, &m("pairs_agree"), c.agree.len() as f64, None, "");
    r.add(me, &m("kendall_tau_b"), c.kendall_tau_b, None, "");
    for a in &c.agree {
        r.add(me, &format!("{}: {a}", m("pair")), 1.0, None, "bool");
    }
    for d in &c.disagree {
        r.add(me, &format!("{}: {d}", m("pair")), 0.0, None, "bool");
    }
    let s = |k: &str| p.iter().find(|x| x.kind == k).map(|x| x.speed_norm);
    let met = match (s("w8a8"), s("w4a16"), s("bf16"), s("fp8")) {
        (Some(w8), Some(w4), Some(b), Some(f8)) => w8 > w4 && w4 > b && b >= f8,
        _ => false,
    };
    r.add(me, &m("bar_met"), f64::from(u8::from(met)), None, "bool");
    Ok(())
}
