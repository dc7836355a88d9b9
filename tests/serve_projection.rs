//! The L4 projection of a serving run, end to end on the CPU: a real serving trace of a small
//! workload on a test fixture (`study::serving::run_cpu`) projected for bf16, W4A16, W8A8 and
//! FP8 (`project_l4`), its rows, the report's section; and the committed serve_bench run's
//! steps, replayed through the same runner, projected at the 1.2B shape.

mod common;

use std::path::Path;

use clap::Parser;
use exaone_compress::eval::projection::{
    kendall_tau_b, DeviceRates, Efficiencies, GpuSpec, StepLoad, StepTrace, VariantCost,
};
use exaone_compress::record::Results;
use exaone_compress::serve::{Request, Runner, SeqInput, StepExecutor, Workload};
use exaone_compress::study::serving::{self, project_l4, ServeArgs, VariantRun, L4_VARIANT};
use exaone_compress::Exaone4Config;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    serve: ServeArgs,
}

fn serve_args(extra: &[&str]) -> ServeArgs {
    let mut argv = vec!["test"];
    argv.extend(extra);
    Flags::parse_from(argv).serve
}

/// 10 requests of 5 to 59 prompt tokens (ids in the fixture's vocabulary), 6 new tokens each.
fn small_workload() -> Workload {
    let req = |i: usize| {
        let ids = (0..5 + 6 * i).map(|p| 4 + ((p * 37 + i * 11) % 500) as u32);
        Request::from_ids(format!("r{i}"), ids.collect(), 6)
    };
    Workload::new((0..10).map(req).collect())
}

fn config_1_2b() -> Exaone4Config {
    Exaone4Config::from_value(serde_json::json!({
        "architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4", "bos_token_id": 1,
        "eos_token_id": 361, "pad_token_id": 0, "head_dim": 64, "hidden_act": "silu",
        "hidden_size": 2048, "intermediate_size": 4096, "num_hidden_layers": 30,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 102400,
        "layer_types": vec!["full_attention"; 30], "max_position_embeddings": 65536,
        "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null,
        "rope_scaling": {"factor": 16.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "tie_word_embeddings": true, "torch_dtype": "bfloat16"
    }))
    .unwrap()
}

fn sn(r: &Results, v: &str, tag: &str) -> f64 {
    r.get(v, &format!("l4_{tag}_speed_norm")).unwrap()
}

fn t(r: &Results, v: &str, tag: &str) -> f64 {
    r.get(v, &format!("l4_{tag}_secs_per_token")).unwrap()
}

#[test]
fn a_cpu_serving_trace_is_projected_on_the_l4_and_reported() {
    let dir = common::fixture("full_tied");
    let a = serve_args(&[
        "--concurrency",
        "3,8",
        "--repeats",
        "1",
        "--b1-tokens",
        "0",
        "--max-num-batched-tokens",
        "48",
        "--max-model-len",
        "128",
    ]);
    let w = small_workload();
    let mut r = Results::new("serve_bench", "cpu", "full_tied fixture");
    let run = serving::run_cpu(&mut r, "bf16", &dir, &a, &w).unwrap();
    assert_eq!(
        run.traces.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        ["mc_c3", "mc_c8"],
        "tagged by the --workload flag"
    );
    for (tag, trace) in &run.traces {
        let g = |m: &str| r.get("bf16", &format!("serve_{tag}_{m}")).unwrap() as usize;
        // the trace is the run's: one load per step, the run's tokens, its generated count
        assert_eq!(trace.steps.len(), g("steps"), "{tag}");
        assert_eq!(trace.generated_tokens, g("generated_tokens"));
        assert_eq!(trace.generated_tokens, 60);
        let sum = trace.steps.iter().fold(StepLoad::default(), |a, &b| a + b);
        assert_eq!(sum.prefill_tokens, g("prefill_tokens"));
        assert_eq!(sum.decode_rows, g("decode_tokens"));
        assert_eq!(
            sum.prefill_tokens,
            (0..10).map(|i| 5 + 6 * i).sum::<usize>()
        );
        assert!(trace.steps.iter().all(|s| s.tokens() <= 48));
        // causal attention: every prompt chunk's pairs at least its tokens
        assert!(trace
            .steps
            .iter()
            .all(|s| s.attn_pairs >= s.tokens() as u64));
    }
    // on the fixture's own (tiny) shape: the step overhead dominates, but fewer bytes still win
    let mut tiny = r.clone();
    let eff = Efficiencies::assumed("a CPU test");
    project_l4(&mut tiny, std::slice::from_ref(&run), &eff).unwrap();
    let tag = "mc_c8";
    assert_eq!(sn(&tiny, "bf16", tag), 0.0);
    assert!(t(&tiny, "w8a8", tag) < t(&tiny, "bf16", tag));
    assert!(t(&tiny, "w4a16", tag) < t(&tiny, "w8a8", tag));

    // the same measured steps at the 1.2B shape
    let big = VariantRun {
        config: config_1_2b(),
        ..run.clone()
    };
    let out = project_l4(&mut r, std::slice::from_ref(&big), &eff).unwrap();
    assert_eq!(out.len(), 2);
    let me = |m: &str| r.get(L4_VARIANT, &format!("l4_{tag}_{m}")).unwrap();
    assert_eq!(me("steps") as usize, big.traces[1].1.steps.len());
    assert_eq!(me("generated_tokens"), 60.0);
    assert_eq!(sn(&r, "bf16", tag), 0.0, "SpeedNorm of the base");
    assert_eq!(r.get("bf16", &format!("l4_{tag}_speedup")), Some(1.0));
    let bytes = |v: &str| r.get(v, "l4_weight_bytes").unwrap();
    let linears = |v: &str| bytes(v) - 2.0 * 102400.0 * 2048.0;
    assert!((linears("w8a8") / linears("bf16") - 0.5).abs() < 0.01);
    assert!(
        t(&r, "w8a8", tag) < t(&r, "bf16", tag),
        "W8A8's Linears are half the bytes and its GEMMs twice the rate"
    );
    // SpeedNorm, speed-up and T agree; T × tokens/s = 1
    for v in ["w4a16", "w8a8", "fp8"] {
        let s = sn(&r, v, tag);
        let up = r.get(v, &format!("l4_{tag}_speedup")).unwrap();
        assert!((s - (1.0 - 1.0 / up)).abs() < 1e-12, "{v}");
        let tps = r.get(v, &format!("l4_{tag}_tokens_per_sec")).unwrap();
        assert!((t(&r, v, tag) * tps - 1.0).abs() < 1e-12);
        assert_eq!(r.get(v, &format!("l4_{tag}_score")), Some(0.5 + 0.5 * s));
    }
    // only bf16 ran: the others are projected on its steps, and say so
    let own = |v: &str| r.get(v, &format!("l4_{tag}_own_trace")).unwrap();
    assert_eq!((own("bf16"), own("w8a8"), own("fp8")), (1.0, 0.0, 0.0));
    assert!(r
        .variant("fp8")
        .unwrap()
        .params
        .to_string()
        .contains("not run"));
    // FP8 is W8A8's bytes at the same rate on the L4's datasheet; without fp8 cores, never
    // faster (at these small batches every step is memory-bound, so no slower either)
    assert!((sn(&r, "fp8", tag) - sn(&r, "w8a8", tag)).abs() < 1e-12);
    let no_cores = r.get("fp8", &format!("l4_{tag}_speed_norm_no_fp8_cores"));
    assert!(no_cores.unwrap() <= sn(&r, "fp8", tag));
    // the ranking rows: 6 pairs of 4 schemes, one row each
    assert_eq!(me("pairs"), 6.0);
    let pair_rows = r
        .rows
        .iter()
        .filter(|x| x.variant == L4_VARIANT && x.metric.starts_with(&format!("l4_{tag}_pair: ")));
    assert_eq!(pair_rows.clone().count(), 6);
    assert_eq!(pair_rows.map(|x| x.value).sum::<f64>(), me("pairs_agree"));
    assert_eq!(r.get("w8a8", "public_score_hi"), Some(0.633));

    // the report's section, redrawn from the saved results alone
    let out_dir = tempfile::tempdir().unwrap();
    r.save(out_dir.path()).unwrap();
    let back = Results::load(&out_dir.path().join("results.parquet")).unwrap();
    exaone_compress::report::serve::write(&back, out_dir.path(), "test").unwrap();
    let md = std::fs::read_to_string(out_dir.path().join("README.md")).unwrap();
    let section = &md[md.find("## L4 projection").expect("the section")..];
    assert!(
        section.contains("Workload `mc_c8`"),
        "the highest concurrency"
    );
    for v in [
        "| bf16 | its run |",
        "| w4a16 | bf16's run |",
        "| fp8 | bf16's run |",
    ] {
        assert!(section.contains(v), "{v} in\n{section}");
    }
    assert!(section.contains("assumed (a CPU test)"));
    assert!(section.contains("| 0.62–0.633 |") && section.contains("| ≈0.49 |"));
    assert!(section.contains(&format!("orders {} of 6 pairs", me("pairs_agree"))));
    assert!(section.contains("| mc_c3 |"), "the other workload");
    assert!(out_dir.path().join("l4_projection.png").exists());
}

/// An executor that computes nothing: each sampled row gets id 5 (the committed run's requests
/// have no stop ids, so the steps are the scheduler's alone).
struct Nothing;

impl StepExecutor for Nothing {
    fn execute(&mut self, inputs: &[SeqInput]) -> exaone_compress::Result<Vec<Option<u32>>> {
        Ok(inputs.iter().map(|x| x.sample.then_some(5)).collect())
    }
    fn release(&mut self, _: usize) {}
}

#[test]
fn the_committed_serve_bench_steps_projected_at_the_1_2b_shape() {
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/serve_bench/results.parquet");
    let c = Results::load(&committed).unwrap();
    // its workload and pool: mc, 256 requests × 256 new tokens, seed 0, max_num_seqs 256
    let a = serve_args(&[]);
    let w = serving::workload(&a).unwrap();
    let blocks = c.get("bf16", "serve_kv_blocks").unwrap() as usize;
    let mut runner = Runner::new(Nothing, serving::scheduler(&a, 256, blocks), 102400);
    let rep = runner.run(&w).unwrap();
    let g = |m: &str| c.get("bf16", &format!("serve_mc_c256_{m}")).unwrap() as usize;
    assert_eq!(
        rep.totals.steps,
        g("steps"),
        "the committed run's step count"
    );
    assert_eq!(rep.totals.prefill_tokens, g("prefill_tokens"));
    assert_eq!(rep.totals.generated_tokens, g("generated_tokens"));
    let trace = StepTrace::from_run(&rep).unwrap();
    let run = VariantRun {
        label: "bf16".into(),
        config: config_1_2b(),
        traces: vec![("mc_c256".into(), trace)],
    };
    // the committed W4A16 and W8A8 checkpoints' bytes per step are the cost model's
    for v in ["bf16", "w4a16", "w8a8"] {
        let cost = VariantCost::from_word(v, &run.config, v)
            .unwrap()
            .weight_bytes();
        let measured = c.get(v, "weight_bytes_per_step").unwrap();
        assert!(
            (cost / measured - 1.0).abs() < 1e-3,
            "{v}: {cost} vs {measured}"
        );
    }
    let h200 = |bw: f64, bf: f64, i8: f64| DeviceRates {
        name: "NVIDIA H200".into(),
        copy_bandwidth: bw,
        bf16_flops: bf,
        int8_ops: Some(i8),
    };
    let cases = [
        (
            "assumed",
            Efficiencies::assumed("no rates in the committed results"),
        ),
        // typical H200 figures (not this run's: its results lack them), as a sensitivity
        (
            "H200-like",
            Efficiencies::carried(&h200(3.9e12, 700e12, 1200e12)),
        ),
    ];
    for (what, eff) in cases {
        let mut r = c.clone();
        let p = project_l4(&mut r, std::slice::from_ref(&run), &eff).unwrap();
        let me = |m: &str| r.get(L4_VARIANT, &format!("l4_mc_c256_{m}")).unwrap();
        eprintln!(
            "{what} ({}): {} steps ({} prefill), decode batch {:.0}, KV {:.2} GB/step; {} of 6 pairs alike, τ-b {:.2}, bar met {}",
            eff.source,
            me("steps"),
            me("prefill_steps"),
            me("decode_batch_mean"),
            me("decode_kv_bytes_mean") / 1e9,
            me("pairs_agree"),
            me("kendall_tau_b"),
            me("bar_met")
        );
        for x in &p[0].1 {
            eprintln!(
                "  {:5} T = {:6.2} µs/token, {:6.0} tokens/s, SpeedNorm {:+.3}, memory-bound {:.0}%",
                x.name,
                x.secs_per_token * 1e6,
                x.tokens_per_sec,
                x.speed_norm,
                100.0 * x.memory_bound_share
            );
        }
        let s = |v: &str| sn(&r, v, "mc_c256");
        // decode steps read ≈ 10 GB of KV against 2.56 GB of weights: every quantized scheme
        // gains, but less than its weight bytes would say alone
        assert!(s("w8a8") > 0.0 && s("w4a16") > 0.0, "{what}");
        assert!(s("w8a8") < 1.0 - 1.49 / 2.56);
        // at a batch of ≈250 the L4 sits at its ridge: decode Linears are compute-bound in
        // bf16, so int8's rate counts there and W8A8 leads W4A16 (which computes at bf16's)
        assert!(s("w8a8") > s("w4a16"), "{what}");
        assert_eq!(
            s("fp8"),
            s("w8a8"),
            "the datasheet's fp8 rate is its int8 rate"
        );
        let no_cores = r.get("fp8", "l4_mc_c256_speed_norm_no_fp8_cores").unwrap();
        assert!(no_cores < s("fp8") && no_cores > 0.0, "{what}: {no_cores}");
        assert_eq!(
            r.get(L4_VARIANT, "l4_mc_c256_bar_met"),
            Some(0.0),
            "FP8 > base"
        );
        let l4 = GpuSpec::l4().with_efficiencies(&eff);
        assert!(l4.check().is_ok());
        // the report explains, with figures, why the physics puts FP8 above the base
        let md = exaone_compress::report::serve::markdown(&r, "test");
        let section = &md[md.find("## L4 projection").unwrap()..md.find("## Other runs").unwrap()];
        eprintln!("{section}");
        assert!(
            section.contains("**Bar** (W8A8 int8 > GPTQ W4A16 > base ≥ FP8 in SpeedNorm): not met")
        );
        assert!(section.contains(&format!("- FP8 above the base ({:.3}", s("fp8"))));
        assert!(section.contains(&format!("projects {no_cores:.3}")));
        // the committed results carry device rows for the projection too: the source is found
        assert!(
            section.contains(&format!("Where they come from: {}.", eff.source)),
            "{what}"
        );
    }
}

#[test]
fn kendall_tau_b_counts_level_pairs_as_ties() {
    assert_eq!(kendall_tau_b(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], 0.0), 1.0);
    assert_eq!(kendall_tau_b(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0], 0.0), -1.0);
    // one tie on one side: (C − D) / √((3 − 0)(3 − 1)) = 2 / √6
    let t = kendall_tau_b(&[1.0, 2.0, 3.0], &[1.0, 1.01, 3.0], 0.02);
    assert!((t - 2.0 / 6f64.sqrt()).abs() < 1e-12);
    assert!(kendall_tau_b(&[1.0, 1.0], &[1.0, 2.0], 0.0).is_nan());
}

#[test]
fn efficiencies_carry_as_fractions_of_the_measuring_devices_peaks() {
    let m = DeviceRates {
        name: "NVIDIA H200".into(),
        copy_bandwidth: 3.84e12,
        bf16_flops: 742.125e12,
        int8_ops: Some(989.5e12),
    };
    let e = Efficiencies::carried(&m);
    assert!((e.bandwidth - 0.8).abs() < 1e-12 && (e.bf16 - 0.75).abs() < 1e-12);
    assert!((e.int8.unwrap() - 0.5).abs() < 1e-12);
    assert!(
        e.source.starts_with("measured on NVIDIA H200"),
        "{}",
        e.source
    );
    let l4 = GpuSpec::l4().with_efficiencies(&e);
    assert!((l4.bandwidth() - 240e9).abs() < 1.0);
    use exaone_compress::eval::projection::Rate;
    assert!((l4.rate(Rate::Int8) - 121.25e12).abs() < 1e3);
    assert!(
        (l4.rate(Rate::Fp8) - 0.75 * 242.5e12).abs() < 1e3,
        "fp8 at bf16's fraction"
    );
    // faster than the datasheet: capped at 1; an unknown device or no rate: assumed, saying why
    let fast = Efficiencies::carried(&DeviceRates {
        copy_bandwidth: 9e12,
        ..m.clone()
    });
    assert_eq!(fast.bandwidth, 1.0);
    let unknown = Efficiencies::carried(&DeviceRates {
        name: "NVIDIA L40S".into(),
        ..m.clone()
    });
    assert!(unknown.source.contains("no datasheet") && unknown.int8.is_none());
    let nan = Efficiencies::carried(&DeviceRates {
        copy_bandwidth: f64::NAN,
        ..m
    });
    assert!(nan.source.starts_with("assumed"));
    // names as nvidia-smi gives them
    assert_eq!(GpuSpec::datasheet("NVIDIA L4").unwrap().mem_bw, 300e9);
    assert!(GpuSpec::datasheet("NVIDIA L40S").is_none());
    assert_eq!(
        GpuSpec::datasheet("NVIDIA H100 80GB HBM3").unwrap().mem_bw,
        3.35e12
    );
    assert!(GpuSpec::datasheet("NVIDIA H100 PCIe").is_none());
}

#[test]
fn projecting_without_a_bf16_run_fails_and_says_why() {
    let run = VariantRun {
        label: "w8a8".into(),
        config: config_1_2b(),
        traces: vec![(
            "mc_c1".into(),
            StepTrace::new(vec![StepLoad::decode(1, 10)], 1).unwrap(),
        )],
    };
    let mut r = Results::new("serve_bench", "cpu", "x");
    let e = project_l4(&mut r, &[run], &Efficiencies::assumed("test")).unwrap_err();
    assert!(e.to_string().contains("no bf16 run"), "{e}");
}
