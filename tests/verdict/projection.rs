//! The L4 projection: the cost model on the 1.2B shapes, step loads, rankings in the memory-
//! and compute-bound regimes, monotonicity, and the comparison with the public results.

use super::*;

fn config_1_2b() -> Exaone4Config {
    Exaone4Config::from_value(json!({
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

fn variants() -> Vec<VariantCost> {
    let cfg = config_1_2b();
    ["bf16", "w4a16", "w8a8", "fp8"]
        .iter()
        .map(|w| VariantCost::from_word(w, &cfg, w).unwrap())
        .collect()
}

fn run(trace: &StepTrace, gpu: &GpuSpec) -> Vec<Projection> {
    let v = variants();
    project(gpu, &v[0], &v[1..], trace, Roofline::WholeStep).unwrap()
}

fn config(max_seqs: usize, budget: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: max_seqs,
        max_num_batched_tokens: budget,
        block_size: 16,
        num_blocks: 1 << 20,
        max_model_len: 65536,
    }
}

fn by_name<'a>(p: &'a [Projection], n: &str) -> &'a Projection {
    p.iter().find(|x| x.name == n).unwrap()
}

#[test]
fn cost_model_matches_the_1_2b_shapes() {
    let cfg = config_1_2b();
    let v = variants();
    assert_eq!(
        v[0].kv_bytes_per_token, 61_440.0,
        "target.md: 30 × 2 × 8 × 64 × 2 B"
    );
    // bf16 weights: 2 B for every parameter but the norms (the tied lm_head is the embedding)
    let norms = 30 * (2 * 64 + 2 * 2048) + 2048;
    assert_eq!(
        v[0].weight_bytes(),
        2.0 * (cfg.num_parameters() - norms) as f64
    );
    assert_eq!(v[0].linears.len(), 120);
    let kinds: Vec<&str> = v.iter().map(|x| x.kind()).collect();
    assert_eq!(kinds, ["bf16", "w4a16", "w8a8", "fp8"]);
    // W4A16 g128: 0.5 B per weight + a bf16 scale per 128 inputs; W8A8: 1 B + a scale per row
    let q = &v[1].linears[0];
    assert_eq!((q.in_features, q.out_features), (2048, 3072));
    assert_eq!(q.weight_bytes, 2048.0 * 3072.0 * 0.5 + 3072.0 * 16.0 * 2.0);
    assert_eq!(v[2].linears[0].weight_bytes, 2048.0 * 3072.0 + 3072.0 * 2.0);
    assert_eq!(
        v[1].lm_head.weight_bytes,
        2.0 * 102400.0 * 2048.0,
        "lm_head stays bf16"
    );
    // FLOPs per token: 2·(Linear + lm_head params) + attention over the context
    let params = (cfg.num_parameters() - norms) as f64;
    assert_eq!(v[0].flops_per_token(0), 2.0 * params);
    assert_eq!(
        v[0].flops_per_token(1000) - v[0].flops_per_token(0),
        1000.0 * 4.0 * 30.0 * 2048.0
    );
    invalid(parse_scheme_word("int3"), "int3");
    invalid(v[1].clone().keep_bf16(&[30]), "30");
}

#[test]
fn step_loads_count_chunks_exactly() {
    let c = StepLoad::chunk(0, 4, false);
    assert_eq!(
        (
            c.prefill_tokens,
            c.decode_rows,
            c.kv_tokens_read,
            c.attn_pairs
        ),
        (4, 0, 4, 10)
    );
    let d = StepLoad::decode(3, 5);
    assert_eq!(
        (d.decode_rows, d.seqs, d.kv_tokens_read, d.attn_pairs),
        (3, 3, 15, 15)
    );
    let step = Step {
        index: 0,
        chunks: vec![
            Chunk {
                seq: 0,
                start: 0,
                end: 4,
                sample: true,
                decode: false,
            },
            Chunk {
                seq: 1,
                start: 9,
                end: 10,
                sample: true,
                decode: true,
            },
        ],
        preempted: vec![],
    };
    let s = StepLoad::from_step(&step);
    assert_eq!(
        (
            s.prefill_tokens,
            s.decode_rows,
            s.seqs,
            s.kv_tokens_read,
            s.attn_pairs
        ),
        (4, 1, 2, 14, 20)
    );
    // the scheduler's plan of a uniform workload: every prompt token prefilled once, every other
    // output decoded (the first comes from the prefill)
    let t = StepTrace::uniform(20, 100, 30, config(8, 256)).unwrap();
    assert_eq!(t.generated_tokens, 600);
    assert_eq!(
        t.steps.iter().map(|s| s.prefill_tokens).sum::<usize>(),
        2000
    );
    assert_eq!(
        t.steps.iter().map(|s| s.decode_rows).sum::<usize>(),
        20 * 29
    );
    assert!(t.steps.iter().all(|s| s.tokens() <= 256 && s.seqs <= 8));
    invalid(
        StepTrace::new(vec![StepLoad::decode(1, 1)], 0),
        "T is undefined",
    );
}

#[test]
fn memory_bound_batch_one_decode_ranks_w4a16_fastest() {
    let trace = StepTrace::uniform(1, 128, 256, config(256, 8192)).unwrap();
    let p = run(&trace, &GpuSpec::l4());
    for x in &p {
        eprintln!(
            "batch-1: {} T = {:.3} ms/token, SpeedNorm {:.3}, memory-bound {:.2}",
            x.name,
            1e3 * x.secs_per_token,
            x.speed_norm,
            x.memory_bound_share
        );
    }
    let s = |n| by_name(&p, n).speed_norm;
    assert_eq!(s("bf16"), 0.0);
    assert!(s("w4a16") > s("w8a8") && s("w8a8") > 0.0, "{p:?}");
    assert!(s("fp8") > 0.0 && (s("fp8") - s("w8a8")).abs() < 0.01);
    assert!(
        p.iter().all(|x| x.memory_bound_share > 0.95),
        "batch-1 decode is memory bound"
    );
    // the bf16 step reads ≈ 2.56 GB: at 80% of 300 GB/s ≈ 10.7 ms per token, plus overhead
    assert_close!(
        by_name(&p, "bf16").secs_per_token,
        2.56e9 / 240e9 + 2e-4,
        0.05
    );
}

#[test]
fn compute_bound_large_batch_ranks_w8a8_above_w4a16() {
    // long prompts, one output each: 8192-token prefill steps
    let trace = StepTrace::uniform(64, 2048, 1, config(256, 8192)).unwrap();
    let p = run(&trace, &GpuSpec::l4());
    for x in &p {
        eprintln!(
            "prefill: {} SpeedNorm {:.3}, memory-bound {:.2}",
            x.name, x.speed_norm, x.memory_bound_share
        );
    }
    let s = |n| by_name(&p, n).speed_norm;
    assert!(
        s("w8a8") > s("w4a16") + 0.2,
        "int8 tensor cores at twice the bf16 rate: {p:?}"
    );
    assert!(s("w4a16").abs() < 0.05, "W4A16 computes at the bf16 rate");
    assert!(
        p.iter().all(|x| x.memory_bound_share < 0.05),
        "prefill is compute bound"
    );
    // without fp8 tensor cores FP8 falls back to bf16 and loses its lead
    let no_fp8 = GpuSpec {
        fp8_flops: None,
        ..GpuSpec::l4()
    };
    let q = run(&trace, &no_fp8);
    assert!(by_name(&q, "fp8").speed_norm < by_name(&p, "fp8").speed_norm - 0.2);
}

#[test]
fn more_bytes_or_less_bandwidth_is_never_faster() {
    let cfg = config_1_2b();
    let w4 = VariantCost::from_word("w4a16", &cfg, "w4a16").unwrap();
    let loads = [
        StepLoad::decode(1, 100),
        StepLoad::decode(64, 1000),
        StepLoad::decode(256, 4000),
        StepLoad::chunk(0, 8192, false),
        StepLoad::chunk(4000, 8000, false) + StepLoad::decode(100, 3000),
    ];
    let gpu = GpuSpec::l4();
    for load in &loads {
        let mut last = 0.0;
        for keep in [0, 1, 5, 15, 30] {
            let layers: Vec<usize> = (0..keep).collect();
            let v = w4.clone().keep_bf16(&layers).unwrap();
            let t = step_time(&gpu, &v, load, Roofline::WholeStep);
            assert!(t.secs >= last, "{keep} bf16 layers faster on {load:?}");
            last = t.secs;
            let per_kernel = step_time(&gpu, &v, load, Roofline::PerKernel);
            assert!(
                per_kernel.secs >= t.secs - 1e-15,
                "kernels in sequence are never faster"
            );
        }
        // more context read → not faster; more bandwidth → not slower
        let mut longer = *load;
        longer.kv_tokens_read += 10_000;
        longer.attn_pairs += 10_000;
        assert!(
            step_time(&gpu, &w4, &longer, Roofline::WholeStep).secs
                >= step_time(&gpu, &w4, load, Roofline::WholeStep).secs
        );
        let faster = GpuSpec {
            mem_bw: 2.0 * gpu.mem_bw,
            ..gpu.clone()
        };
        assert!(
            step_time(&faster, &w4, load, Roofline::WholeStep).secs
                <= step_time(&gpu, &w4, load, Roofline::WholeStep).secs
        );
    }
    let v = variants();
    let bytes: Vec<f64> = v.iter().map(|x| x.weight_bytes()).collect();
    assert!(bytes[1] < bytes[2] && bytes[2] == bytes[3] && bytes[3] < bytes[0]);
    invalid(
        project(
            &GpuSpec {
                eff_bw: 0.0,
                ..GpuSpec::l4()
            },
            &v[0],
            &v[1..],
            &StepTrace::new(vec![StepLoad::decode(1, 1)], 1).unwrap(),
            Roofline::WholeStep,
        ),
        "efficiencies",
    );
}

fn fake(name: &str, s: f64) -> Projection {
    Projection {
        name: name.into(),
        kind: name.into(),
        weight_bytes: 0.0,
        secs: 1.0,
        secs_per_token: 1.0,
        tokens_per_sec: 1.0,
        speed_norm: s,
        memory_bound_share: 0.0,
    }
}

#[test]
fn comparison_with_public_results_names_agreements_and_disagreements() {
    // SpeedNorms the public scores would imply with W4A16 losing 6% accuracy: all agree
    let p = [
        fake("bf16", 0.0),
        fake("w8a8", 0.25),
        fake("w4a16", 0.2),
        fake("fp8", 0.0),
    ];
    let c = compare_with_public(&p, &[("w4a16", 0.94)]).unwrap();
    assert_eq!(c.agree.len(), 6, "{}", c.text);
    assert!(c.disagree.is_empty());
    assert!(
        c.text
            .contains("ranks them as w8a8 (0.625) > w4a16 (0.570) > bf16 (0.500) ≈ fp8"),
        "{}",
        c.text
    );
    // a projection where FP8 is as fast as W8A8 disagrees on FP8
    let p = [
        fake("bf16", 0.0),
        fake("w8a8", 0.25),
        fake("w4a16", 0.2),
        fake("fp8", 0.25),
    ];
    let c = compare_with_public(&p, &[("w4a16", 0.94)]).unwrap();
    assert_eq!(c.agree.len() + c.disagree.len(), 6);
    assert!(
        c.disagree.iter().any(|d| d.starts_with("w8a8 vs fp8")),
        "{:?}",
        c.disagree
    );
    assert!(c
        .disagree
        .iter()
        .any(|d| d.contains("bf16") && d.contains("fp8")));
    assert!(c.text.contains("disagrees on"));
    // a SpeedNorm below what the public score implies is called out
    let p = [fake("bf16", 0.0), fake("w8a8", 0.05)];
    let c = compare_with_public(&p, &[]).unwrap();
    assert!(c.text.contains("below the 0.240"), "{}", c.text);
    invalid(compare_with_public(&p[..1], &[]), "at least 2");
}

#[test]
fn projection_of_an_evaluation_like_workload_is_printed_beside_the_public_results() {
    // 256 requests at a time, prompts of 1,000 tokens, answers of 400: the shape target.md
    // describes (whole benchmark handed to vLLM at once)
    let trace = StepTrace::uniform(512, 1000, 400, config(256, 8192)).unwrap();
    let p = run(&trace, &GpuSpec::l4());
    let c = compare_with_public(&p, &[]).unwrap();
    eprintln!("{}", c.text);
    for x in &p {
        eprintln!(
            "eval-like: {} T = {:.1} µs/token, SpeedNorm {:.3}, memory-bound {:.2}",
            x.name,
            1e6 * x.secs_per_token,
            x.speed_norm,
            x.memory_bound_share
        );
    }
    assert_eq!(p.len(), 4);
    assert!(p
        .iter()
        .all(|x| x.secs_per_token.is_finite() && x.secs_per_token > 0.0));
    assert!(by_name(&p, "w8a8").speed_norm > 0.0 && by_name(&p, "w4a16").speed_norm > 0.0);
}
