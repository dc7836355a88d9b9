//! The serving runner: its greedy tokens equal the plain forward's for every request (f32 CPU,
//! full and hybrid sliding-window fixtures, ragged prompts, chunked prefill, preemption), the
//! scheduler keeps its invariants, bad requests fail alone, and workloads round-trip and are
//! seeded.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device};
use exaone_compress::checkpoint::load_model;
use exaone_compress::model::{generate, Exaone4, GenerateOptions};
use exaone_compress::record::{Results, Variant};
use exaone_compress::serve::workload::{long_context_qa, multi_turn_chat, multiple_choice};
use exaone_compress::serve::{
    CpuExecutor, Finish, GenOptions, KvSpec, Request, RunReport, Runner, Scheduler,
    SchedulerConfig, SeqInput, Sources, StepExecutor, Workload,
};

fn model(name: &str) -> Exaone4 {
    load_model(&common::fixture(name), DType::F32, &Device::Cpu).unwrap()
}

/// Deterministic ids in 4..vocab (an LCG), different per `salt`.
fn ids(len: usize, salt: u64, vocab: u32) -> Vec<u32> {
    let mut x = salt
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            4 + ((x >> 33) as u32) % (vocab - 4)
        })
        .collect()
}

/// Ragged prompts (1 to 61 tokens: past the hybrid fixture's window of 8), a different
/// max_new_tokens each.
fn ragged(vocab: u32) -> Workload {
    let shape = [
        (23, 6),
        (1, 9),
        (61, 4),
        (9, 12),
        (40, 1),
        (17, 7),
        (33, 10),
    ];
    Workload::new(
        shape
            .iter()
            .enumerate()
            .map(|(i, &(len, new))| {
                Request::from_ids(format!("r{i}"), ids(len, i as u64, vocab), new)
            })
            .collect(),
    )
}

fn reference(m: &Exaone4, r: &Request) -> Vec<u32> {
    let opts = GenerateOptions::greedy(r.max_new_tokens, r.stop_ids.clone());
    generate(m, std::slice::from_ref(&r.prompt_ids), &opts).unwrap()[0].clone()
}

fn run(m: &Exaone4, w: &Workload, cfg: SchedulerConfig) -> RunReport {
    let mut runner = Runner::new(CpuExecutor::new(m), cfg, m.config.vocab_size);
    runner.check_invariants = true;
    let rep = runner.run(w).unwrap();
    assert_eq!(
        runner.executor.live(),
        0,
        "every sequence's KV was released"
    );
    rep
}

fn assert_matches_generate(m: &Exaone4, w: &Workload, rep: &RunReport, what: &str) {
    assert_eq!(rep.requests.len(), w.len());
    for (r, got) in w.requests.iter().zip(&rep.requests) {
        assert!(got.error.is_none(), "{what}: {}: {:?}", r.id, got.error);
        let want = reference(m, r);
        assert!(!want.is_empty());
        assert_eq!(got.output, want, "{what}: request {}", r.id);
        assert_eq!(got.output_len, want.len());
    }
}

fn config(m: &Exaone4, budget: usize, block: usize, blocks: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 256,
        max_num_batched_tokens: budget,
        block_size: block,
        num_blocks: blocks,
        max_model_len: m.config.max_position_embeddings,
    }
}

fn greedy_equals_plain_forward(fixture: &str) {
    let m = model(fixture);
    let vocab = m.config.vocab_size as u32;
    let mut w = ragged(vocab);
    // a stop id that fires: request 3 stops at the 3rd token of its own continuation
    let plain = reference(&m, &w.requests[3]);
    w.requests[3].stop_ids = vec![plain[2]];
    let stop_at = plain.iter().position(|&t| t == plain[2]).unwrap() + 1;

    // 1. vLLM's defaults: whole prompts in one step, no pressure
    let rep = run(
        &m,
        &w,
        SchedulerConfig::vllm_defaults(1024, m.config.max_position_embeddings),
    );
    assert_matches_generate(&m, &w, &rep, "defaults");
    assert_eq!(rep.requests[3].output_len, stop_at);
    assert_eq!(rep.requests[3].finish, Some(Finish::Stop));
    assert_eq!(rep.totals.preemptions, 0);
    assert_eq!(
        rep.steps[0].seqs,
        w.len(),
        "every request admitted in the first step"
    );
    let prompts: usize = w.requests.iter().map(|r| r.prompt_ids.len()).sum();
    assert_eq!(rep.totals.prefill_tokens, prompts);
    let outs: usize = rep.requests.iter().map(|r| r.output_len - 1).sum();
    assert_eq!(
        rep.totals.decode_tokens, outs,
        "one decode token per output after the first"
    );

    // 2. a budget of 7 tokens: prompts are prefilled in chunks, mixed with decodes
    let rep = run(&m, &w, config(&m, 7, 16, 1024));
    assert_matches_generate(&m, &w, &rep, "chunked prefill");
    assert!(rep
        .steps
        .iter()
        .all(|s| s.prefill_tokens + s.decode_tokens <= 7));
    assert!(rep
        .steps
        .iter()
        .any(|s| s.prefill_tokens > 0 && s.decode_tokens > 0));
    assert!(
        rep.requests[2].first_step.unwrap() + 8 <= rep.requests[2].last_step.unwrap(),
        "a 61-token prompt takes ≥ 9 steps of 7 tokens"
    );

    // 3. long outputs that outgrow a pool of 16 blocks of 4 tokens (each request alone needs
    //    at most 11): preemption by recompute, outputs unchanged
    let shape = [(5, 20), (12, 28), (7, 25), (10, 30), (3, 22), (9, 26)];
    let p = Workload::new(
        shape
            .iter()
            .enumerate()
            .map(|(i, &(len, new))| {
                Request::from_ids(format!("p{i}"), ids(len, 50 + i as u64, vocab), new)
            })
            .collect(),
    );
    let rep = run(&m, &p, config(&m, 64, 4, 16));
    assert_matches_generate(&m, &p, &rep, "preemption");
    assert!(rep.totals.preemptions > 0, "a small pool must preempt");
    assert_eq!(
        rep.requests.iter().map(|r| r.preemptions).sum::<usize>(),
        rep.totals.preemptions
    );
    let prompts: usize = p.requests.iter().map(|r| r.prompt_ids.len()).sum();
    assert!(
        rep.totals.prefill_tokens > prompts,
        "preempted work is recomputed"
    );
    assert!(rep.steps.iter().all(|s| s.kv_blocks_used <= 16));
}

#[test]
fn runner_greedy_equals_plain_forward_full_tied() {
    greedy_equals_plain_forward("full_tied");
}

#[test]
fn runner_greedy_equals_plain_forward_hybrid_untied() {
    greedy_equals_plain_forward("hybrid_untied");
}

#[test]
fn bad_requests_fail_alone() {
    let m = model("full_tied");
    let vocab = m.config.vocab_size as u32;
    let ctx = m.config.max_position_embeddings;
    let mut w = ragged(vocab);
    w.requests.truncate(3);
    w.requests
        .push(Request::from_ids("too-long", ids(ctx + 1, 9, vocab), 4));
    w.requests
        .push(Request::from_ids("bad-id", vec![5, vocab + 3, 7], 4));
    w.requests
        .push(Request::from_ids("pool", ids(70, 11, vocab), 30));
    w.requests.push(Request::from_ids("empty", vec![], 4));
    // 6 blocks of 16 = 96 tokens: "pool" needs 70 + 29
    let rep = run(&m, &w, config(&m, 8192, 16, 6));
    let err = |i: usize| rep.requests[i].error.clone().unwrap_or_default();
    assert!(
        err(3).contains("too-long") && err(3).contains("max_model_len"),
        "{}",
        err(3)
    );
    assert!(
        err(4).contains("bad-id") && err(4).contains("vocabulary"),
        "{}",
        err(4)
    );
    assert!(
        err(5).contains("`pool`") && err(5).contains("KV blocks"),
        "{}",
        err(5)
    );
    assert!(err(6).contains("empty"), "{}", err(6));
    assert!(rep.requests[3..].iter().all(|r| r.output.is_empty()));
    assert_eq!(rep.totals.errors, 4);
    let ok = Workload::new(w.requests[..3].to_vec());
    let rep_ok = RunReport {
        requests: rep.requests[..3].to_vec(),
        ..rep.clone()
    };
    assert_matches_generate(&m, &ok, &rep_ok, "beside bad requests");
    assert_eq!(
        rep.totals.generated_tokens,
        rep.requests[..3]
            .iter()
            .map(|r| r.output_len)
            .sum::<usize>()
    );
}

/// A stand-in model: the next token is a hash of every token before it, so any wrong token,
/// position or lost KV changes the outputs; its KV is the list of tokens it was fed.
struct HashExecutor {
    kv: HashMap<usize, Vec<u32>>,
    vocab: u32,
}

impl StepExecutor for HashExecutor {
    fn execute(&mut self, inputs: &[SeqInput]) -> exaone_compress::Result<Vec<Option<u32>>> {
        Ok(inputs
            .iter()
            .map(|x| {
                let kv = self.kv.entry(x.seq).or_default();
                assert_eq!(
                    kv.len(),
                    x.start,
                    "sequence {} resumed at the wrong token",
                    x.seq
                );
                assert!(
                    x.block_table.len() * 4 >= x.start + x.tokens.len(),
                    "too few blocks"
                );
                kv.extend_from_slice(x.tokens);
                x.sample.then(|| {
                    let h = kv
                        .iter()
                        .fold(17u64, |h, &t| h.wrapping_mul(31).wrapping_add(t as u64));
                    4 + (h % (self.vocab as u64 - 4)) as u32
                })
            })
            .collect())
    }
    fn release(&mut self, seq: usize) {
        self.kv.remove(&seq);
    }
}

fn many(n: usize, vocab: u32) -> Workload {
    Workload::new(
        (0..n)
            .map(|i| {
                let len = 1 + (i * 37) % 90;
                Request::from_ids(
                    format!("q{i}"),
                    ids(len, 100 + i as u64, vocab),
                    1 + (i * 13) % 30,
                )
            })
            .collect(),
    )
}

fn tight(seqs: usize, budget: usize, blocks: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: seqs,
        max_num_batched_tokens: budget,
        block_size: 4,
        num_blocks: blocks,
        max_model_len: 4096,
    }
}

#[test]
fn scheduler_invariants_hold_under_pressure() {
    let vocab = 512;
    let w = many(60, vocab);
    let exec = || HashExecutor {
        kv: HashMap::new(),
        vocab,
    };
    // unconstrained: the outputs every constrained run must reproduce
    let mut free = Runner::new(exec(), tight(256, 100_000, 100_000), vocab as usize);
    let want = free.run(&w).unwrap();
    assert_eq!(want.totals.preemptions, 0);

    let cfg = tight(8, 32, 40);
    let mut sched = Scheduler::new(cfg.clone()).unwrap();
    for r in &w.requests {
        sched.add(r, vocab as usize);
    }
    let mut ex = exec();
    let (mut preempted, mut steps, mut refills, mut refill_due) = (0, 0, 0, false);
    while sched.has_unfinished() {
        let running_before = sched.running().to_vec();
        let step = sched.schedule();
        steps += 1;
        assert!(steps < 100_000, "no progress");
        assert!(!step.chunks.is_empty());
        assert!(
            step.tokens() <= cfg.max_num_batched_tokens,
            "budget exceeded"
        );
        assert!(sched.running().len() <= cfg.max_num_seqs);
        // decodes come before any prefill chunk
        let first_prefill = step
            .chunks
            .iter()
            .position(|c| !c.decode)
            .unwrap_or(step.chunks.len());
        assert!(
            step.chunks[first_prefill..].iter().all(|c| !c.decode),
            "step {}",
            step.index
        );
        // a running sequence that was not preempted is scheduled whenever budget is left over
        if step.tokens() < cfg.max_num_batched_tokens {
            for s in running_before
                .iter()
                .filter(|s| !step.preempted.contains(s))
            {
                assert!(
                    step.chunks.iter().any(|c| c.seq == *s),
                    "running seq {s} starved"
                );
            }
        }
        sched.check().unwrap();
        preempted += step.preempted.len();
        for &p in &step.preempted {
            ex.release(p);
        }
        let inputs = exaone_compress::serve::runner::inputs(&sched, &step);
        let out = ex.execute(&inputs).unwrap();
        let finished = sched.update(&step, &out).unwrap();
        for &f in &finished {
            ex.release(f);
            assert!(
                sched.pool().table(f).is_empty(),
                "finished seq {f} keeps blocks"
            );
        }
        sched.check().unwrap();
        // continuous batching: a finished sequence's place is taken at the very next step
        let admitted = step
            .chunks
            .iter()
            .filter(|c| !running_before.contains(&c.seq))
            .count();
        if refill_due && admitted > 0 {
            refills += 1;
        }
        refill_due = !finished.is_empty() && sched.num_waiting() > 0;
    }
    assert!(refills > 0, "freed slots are refilled at the next step");
    assert!(
        preempted > 0,
        "40 blocks of 4 tokens for 8 sequences must preempt"
    );
    assert_eq!(sched.preemptions(), preempted);
    assert_eq!(sched.pool().num_used(), 0, "every block freed at the end");
    assert!(sched.pool().peak_used() <= 40);
    sched.pool().check().unwrap();
    assert!(ex.kv.is_empty());
    for (i, s) in sched.seqs().iter().enumerate() {
        assert_eq!(
            s.output(),
            want.requests[i].output.as_slice(),
            "request {}",
            s.id
        );
        assert_eq!(s.output().len(), w.requests[i].max_new_tokens);
    }
    // the runner under the same limits, invariants checked after every step
    let mut r = Runner::new(exec(), cfg, vocab as usize);
    r.check_invariants = true;
    let rep = r.run(&w).unwrap();
    assert!(rep.totals.preemptions > 0);
    assert!(rep
        .steps
        .iter()
        .all(|s| s.seqs <= 8 && s.kv_blocks_used <= 40));
    for (a, b) in rep.requests.iter().zip(&want.requests) {
        assert_eq!(a.output, b.output);
    }
}

#[test]
fn totals_and_results_rows() {
    let vocab = 512;
    let w = many(20, vocab);
    let mut r = Runner::new(
        HashExecutor {
            kv: HashMap::new(),
            vocab,
        },
        tight(4, 16, 64),
        vocab as usize,
    );
    let rep = r.run(&w).unwrap();
    let t = &rep.totals;
    let gen: usize = w.requests.iter().map(|r| r.max_new_tokens).sum();
    assert_eq!(t.generated_tokens, gen);
    assert!((t.secs_per_token * gen as f64 - t.generation_secs).abs() < 1e-12);
    assert!(t.prefill_share > 0.0 && t.prefill_share <= 1.0);
    assert_eq!(t.max_batch, 4);
    assert_eq!(t.steps, rep.steps.len());
    let mut res = Results::new("serve_test", "cpu", "hash");
    let v = Variant::original();
    rep.record(&mut res, &v, "mc");
    assert_eq!(
        res.get("original", "serve_mc_secs_per_token"),
        Some(t.secs_per_token)
    );
    assert_eq!(
        res.get("original", "serve_mc_generated_tokens"),
        Some(gen as f64)
    );
    assert_eq!(
        res.get("original", "serve_mc_preemptions"),
        Some(t.preemptions as f64)
    );
    assert_eq!(
        res.spread("original", "serve_mc_output_len_mean"),
        Some(t.output_len_std)
    );
    let dir = tempfile::tempdir().unwrap();
    rep.write_json(&dir.path().join("run.json")).unwrap();
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap())
            .unwrap();
    assert_eq!(back["steps"].as_array().unwrap().len(), rep.steps.len());
}

#[test]
fn kv_budget_to_blocks() {
    let m = model("full_tied");
    let s = KvSpec::from_config(&m.config, DType::F32, 16);
    // 3 layers × 2 × 2 kv heads × 16 head_dim × 16 tokens × 4 bytes
    assert_eq!(s.bytes_per_block(), 3 * 2 * 2 * 16 * 16 * 4);
    assert_eq!(s.num_blocks(10 * 12_288, 0.85).unwrap(), 8);
    assert!(s.num_blocks(1 << 20, 0.0).is_err());
}

#[test]
fn workload_jsonl_round_trip_and_errors() {
    let tok =
        exaone_compress::model::Tokenizer::from_dir(&exaone_compress::data::default_model_dir())
            .unwrap();
    let mut w = many(5, 512);
    w.requests[1].kind = "mc".into();
    w.requests[2].stop_ids = vec![14, 7];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.jsonl");
    w.write_jsonl(&path, false).unwrap();
    assert_eq!(Workload::from_jsonl(&path, None).unwrap(), w);

    let chat =
        r#"{"id":"c1","messages":[{"role":"user","content":"안녕하세요"}],"max_new_tokens":3}"#;
    let got = Workload::parse_jsonl(chat, "chat.jsonl", Some(&tok)).unwrap();
    let want = tok
        .chat_prompt(
            &[exaone_compress::model::ChatMessage::user("안녕하세요")],
            false,
        )
        .unwrap();
    assert_eq!(got.requests[0].prompt_ids, want);
    let e = Workload::parse_jsonl(chat, "chat.jsonl", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("chat.jsonl:1") && e.contains("`c1`"), "{e}");
    let bad = "{\"id\":\"a\",\"prompt_ids\":[1],\"max_new_tokens\":1}\n{\"id\":\"b\",\"prompt\":[1],\"max_new_tokens\":1}";
    let e = Workload::parse_jsonl(bad, "bad.jsonl", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.jsonl:2") && e.contains("prompt"), "{e}");
    let dup = "{\"id\":\"a\",\"prompt_ids\":[1],\"max_new_tokens\":1}\n{\"id\":\"a\",\"prompt_ids\":[2],\"max_new_tokens\":1}";
    let e = Workload::parse_jsonl(dup, "dup.jsonl", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dup.jsonl:2") && e.contains("twice"), "{e}");
    let mut v = w.clone();
    v.requests[4].prompt_ids[0] = 600;
    let e = v.validate(512).unwrap_err().to_string();
    assert!(e.contains("`q4`") && e.contains("600"), "{e}");
    w.validate(512).unwrap();
}

#[test]
fn generated_workloads_are_seeded_and_shaped() {
    let tok =
        exaone_compress::model::Tokenizer::from_dir(&exaone_compress::data::default_model_dir())
            .unwrap();
    let src = Sources::shipped("test").unwrap();
    let opts = |n, seed| GenOptions {
        n,
        seed,
        max_new_tokens: 256,
        stop_ids: vec![],
    };
    let vocab = tok.vocab_size();
    let pre = tok.encode("[|user|]\n").unwrap();

    let a = multiple_choice(&src, &tok, &opts(12, 1)).unwrap();
    assert_eq!(
        a,
        multiple_choice(&src, &tok, &opts(12, 1)).unwrap(),
        "same seed, same workload"
    );
    assert_ne!(a, multiple_choice(&src, &tok, &opts(12, 2)).unwrap());
    let lens: Vec<usize> = a.requests.iter().map(|r| r.prompt_ids.len()).collect();
    assert!(lens.iter().all(|&l| (150..=600).contains(&l)), "{lens:?}");
    assert!(
        lens.iter().min() != lens.iter().max(),
        "lengths vary: {lens:?}"
    );
    assert!(a
        .requests
        .iter()
        .all(|r| r.kind == "mc" && r.prompt_ids.starts_with(&pre)));
    let text = tok.decode(&a.requests[0].prompt_ids, false).unwrap();
    assert!(
        text.contains("정답") && text.contains("[|assistant|]"),
        "{text}"
    );

    let l = long_context_qa(&src, &tok, &opts(2, 3)).unwrap();
    assert_eq!(l, long_context_qa(&src, &tok, &opts(2, 3)).unwrap());
    assert!(l
        .requests
        .iter()
        .all(|r| (2048..=8192).contains(&r.prompt_ids.len())));

    let c = multi_turn_chat(&src, &tok, &opts(4, 5)).unwrap();
    assert_eq!(c, multi_turn_chat(&src, &tok, &opts(4, 5)).unwrap());
    let text = tok.decode(&c.requests[0].prompt_ids, false).unwrap();
    assert!(text.matches("[|user|]").count() >= 2, "multi-turn: {text}");
    for w in [&a, &l, &c] {
        w.validate(vocab).unwrap();
        assert!(w.requests.iter().all(|r| r.max_new_tokens == 256));
    }
}

#[test]
fn a_pool_of_the_workloads_kv_blocks_holds_every_request_whole() {
    use exaone_compress::serve::{Request, Workload};
    let w = Workload::new(vec![
        Request::from_ids("a", vec![1; 15], 1),
        Request::from_ids("b", vec![1; 16], 1),
        Request::from_ids("c", vec![1; 40], 8),
    ]);
    // 16 → 1 block, 17 → 2, 48 → 3
    assert_eq!(w.kv_blocks(16), 6);
    assert_eq!(w.kv_blocks(1), 16 + 17 + 48);
    assert_eq!(Workload::new(vec![]).kv_blocks(16), 0);
}
