//! Multiple choice scored from generated answers: the documented extraction rule on answers as
//! models write them, and a pass over shipped KMMLU items on the default model through the
//! serving runner (prompts rendered by the model's own chat template, per-item records that
//! agree with the accuracy, the token cap and stop ids honoured).

use exaone_compress::eval::generated::{extract_choice, load_kmmlu_questions, score, GenMcOptions};
use exaone_compress::model::chat_template::ChatTemplate;
use exaone_compress::model::generate::GenerationConfig;
use exaone_compress::model::Tokenizer;
use exaone_compress::serve::{CpuExecutor, Runner, SchedulerConfig};
use exaone_compress::{data, Checkpoint};

fn opts4() -> Vec<String> {
    ["사과", "배", "포도", "수박"].map(String::from).to_vec()
}

#[test]
fn extraction_follows_the_documented_rule() {
    let o = opts4();
    let cases: &[(&str, Option<usize>)] = &[
        ("정답은 B입니다.", Some(1)),
        ("정답: (C)", Some(2)),
        ("답은 D", Some(3)),
        ("Answer: A", Some(0)),
        ("the answer is C.", Some(2)),
        ("B. 배가 맞습니다", Some(1)),
        ("(A) 사과", Some(0)),
        ("**D**", Some(3)),
        ("D", Some(3)),
        ("저는 C가 맞다고 생각합니다", Some(2)),
        ("정답은 포도입니다", Some(2)),
        // two letters, neither marked nor opening the answer: undecided
        ("아마 A 아니면 B", None),
        // an opening letter decides before the letters after it
        ("A 아니면 B", Some(0)),
        // a letter beyond the options never counts
        ("정답은 E", None),
        ("모르겠습니다", None),
        ("", None),
        // letters inside words are not answers
        ("Because Apples", None),
    ];
    for (out, want) in cases {
        assert_eq!(extract_choice(out, &o), *want, "output {out:?}");
    }
    // two options' texts: undecided
    assert_eq!(extract_choice("사과와 배", &o), None);
}

#[test]
fn a_pass_over_kmmlu_items_on_the_default_model() {
    let dir = data::default_model_dir();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let model = ckpt
        .load_model(candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let template = ChatTemplate::from_dir(&dir).unwrap();
    let items: Vec<_> = load_kmmlu_questions(
        &data::data_dir().join("benchmarks/kmmlu_criminal_law_test.json"),
        "kmmlu",
    )
    .unwrap()
    .into_iter()
    .take(6)
    .collect();
    let mut stop = GenerationConfig::try_from_dir(&dir).unwrap().eos_ids;
    stop.extend(tok.token_id("[|endofturn|]"));
    let opts = GenMcOptions {
        max_new_tokens: 12,
        stop_ids: stop.clone(),
    };
    let cfg = SchedulerConfig {
        max_num_seqs: 4,
        max_num_batched_tokens: 512,
        block_size: 16,
        num_blocks: 1024,
        max_model_len: 4096,
    };
    let mut runner = Runner::new(CpuExecutor::new(&model), cfg, model.config.vocab_size);
    runner.check_invariants = true;
    let r = score(&mut runner, &items, &template, &tok, &opts).unwrap();
    assert_eq!(r.items.len(), items.len());
    let correct = r.items.iter().filter(|i| i.correct).count();
    assert!((r.accuracy - correct as f64 / items.len() as f64).abs() < 1e-12);
    assert_eq!(
        r.no_answer,
        r.items.iter().filter(|i| i.extracted.is_none()).count()
    );
    for (it, item) in r.items.iter().zip(&items) {
        // the model's own template, the question and its options in the prompt
        assert!(it.prompt.contains("[|user|]") && it.prompt.contains("[|assistant|]"));
        assert!(it.prompt.contains(item.prompt.trim()));
        assert!(it
            .prompt
            .contains(&format!("D. {}", item.choices[3].trim())));
        assert!(it.output_tokens >= 1 && it.output_tokens <= opts.max_new_tokens);
        assert_eq!(it.gold, ["A", "B", "C", "D"][item.label]);
        assert_eq!(
            it.correct,
            it.extracted.as_deref() == Some(it.gold.as_str())
        );
        assert_eq!(
            extract_choice(&it.output, &item.choices).map(|i| ["A", "B", "C", "D"][i].to_string()),
            it.extracted
        );
    }
    // a stop id ends generation: it can only be the last token
    for req in &r.run.requests {
        for (k, t) in req.output.iter().enumerate() {
            if stop.contains(t) {
                assert_eq!(
                    k + 1,
                    req.output.len(),
                    "{}: generation went on after a stop id",
                    req.id
                );
            }
        }
    }
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("samples.jsonl");
    r.write_jsonl(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), items.len());
    for (l, it) in lines.iter().zip(&r.items) {
        assert_eq!(l["id"], it.id.as_str());
        assert_eq!(l["output"], it.output.as_str());
        assert_eq!(l["correct"], it.correct);
    }
}
