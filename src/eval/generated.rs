//! Multiple choice scored from generated answers, as the evaluation scores it: each question is
//! rendered through the model's own chat template (thinking off, generation prompt on), the
//! model answers greedily up to a token cap — all items handed to the serving runner at once,
//! so the CUDA engine answers a thousand items in one continuous-batching run — and the answer
//! is read from the text by [`extract_choice`]'s documented rule; no answer counts as wrong.
//! Every item is kept (id, prompt, output, extracted letter, gold, correct) and can be written
//! as JSONL beside a report, like lm-evaluation-harness's sample logs.
//!
//! Log-likelihood scoring (`eval::tasks`) stays the second column: it needs no generation and
//! has less noise, but it is not what the evaluation measures.

use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use super::tasks::McItem;
use crate::error::{Error, Result};
use crate::model::chat_template::ChatTemplate;
use crate::model::{ChatMessage, Tokenizer};
use crate::serve::{Request, RunReport, Runner, StepExecutor, Workload};

/// The letters options are labelled with.
const LETTERS: &str = "ABCDEFGHIJ";

/// KMMLU-style JSON (`{question, answer (1–4), A, B, C, D}`) as questions with their options'
/// texts, for answering in words (`eval::tasks::load_kmmlu` gives the log-likelihood form,
/// whose prompt already lists the options and whose choices are the letters).
pub fn load_kmmlu_questions(path: &Path, task: &str) -> Result<Vec<McItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
    let arr = v
        .as_array()
        .ok_or_else(|| Error::Invalid(format!("{}: expected a JSON array", path.display())))?;
    arr.iter()
        .enumerate()
        .map(|(i, q)| {
            let bad = |m: &str| Error::Invalid(format!("{}: item {i}: {m}", path.display()));
            let ans = q["answer"].as_u64().ok_or_else(|| bad("no answer"))? as usize;
            if !(1..=4).contains(&ans) {
                return Err(bad(&format!("answer {ans} not in 1..=4")));
            }
            let field = |k: &str| {
                q[k].as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("no string `{k}`")))
            };
            Ok(McItem {
                task: task.to_string(),
                prompt: field("question")?,
                choices: ["A", "B", "C", "D"]
                    .map(field)
                    .into_iter()
                    .collect::<Result<_>>()?,
                label: ans - 1,
            })
        })
        .collect()
}

/// The instruction under the options, in the question's language.
fn instruction(korean: bool, n: usize) -> String {
    let letters: Vec<String> = LETTERS.chars().take(n).map(String::from).collect();
    if korean {
        format!(
            "위 문제의 정답을 {} 중 하나의 알파벳으로만 답하세요.",
            letters.join(", ")
        )
    } else {
        format!(
            "Answer with the letter of the correct option only ({}).",
            letters.join(", ")
        )
    }
}

fn is_hangul(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

/// The user turn of an item: the question, its options as `A. …` lines, the instruction.
pub fn question_text(item: &McItem) -> Result<String> {
    let n = item.choices.len();
    if n < 2 || n > LETTERS.len() {
        return Err(Error::Invalid(format!(
            "multiple choice: an item of task `{}` has {n} options (2 to {})",
            item.task,
            LETTERS.len()
        )));
    }
    let mut s = format!("{}\n\n", item.prompt.trim());
    for (c, o) in LETTERS.chars().zip(&item.choices) {
        s.push_str(&format!("{c}. {}\n", o.trim()));
    }
    s.push('\n');
    s.push_str(&instruction(item.prompt.chars().any(is_hangul), n));
    Ok(s)
}

/// The answer a generated `output` gives among `n` options, by the first rule that decides:
/// 1. an explicit marker — `정답`, `답`, `answer` (any case), then optional `은/는/is/:`, then a
///    capital letter, optionally in parentheses: `정답은 (B)`, `answer: C`;
/// 2. the output opens with a letter standing alone (after spaces, `*`, `(` or `[`): `B.`,
///    `(C) …`, `**D**`;
/// 3. exactly one distinct letter among the options stands alone anywhere in the output;
/// 4. exactly one option's text appears in the output;
///
/// otherwise none (the item counts as wrong). Letters beyond the options never count.
pub fn extract_choice(output: &str, options: &[String]) -> Option<usize> {
    static MARKER: OnceLock<Regex> = OnceLock::new();
    static OPENING: OnceLock<Regex> = OnceLock::new();
    static ALONE: OnceLock<Regex> = OnceLock::new();
    let marker = MARKER.get_or_init(|| {
        Regex::new(
            r"(?:정답|답|(?i:answer))\s*(?:은|는|(?i:is)|:|：)?\s*[:：]?\s*[\(\[]?\s*([A-J])(?:[^A-Za-z]|$)",
        )
            .expect("a valid pattern")
    });
    let opening = OPENING.get_or_init(|| {
        Regex::new(r"^[\s\*\(\[]*([A-J])(?:[^A-Za-z0-9]|$)").expect("a valid pattern")
    });
    let alone = ALONE.get_or_init(|| {
        Regex::new(r"(?:^|[^A-Za-z])([A-J])(?:[^A-Za-z]|$)").expect("a valid pattern")
    });
    let n = options.len().min(LETTERS.len());
    let index = |c: &str| {
        let i = LETTERS.find(c.to_ascii_uppercase().as_str())?;
        (i < n).then_some(i)
    };
    if let Some(i) = marker
        .captures_iter(output)
        .find_map(|c| index(c.get(1)?.as_str()))
    {
        return Some(i);
    }
    if let Some(i) = opening
        .captures(output)
        .and_then(|c| index(c.get(1)?.as_str()))
    {
        return Some(i);
    }
    let mut letters: Vec<usize> = alone
        .captures_iter(output)
        .filter_map(|c| index(c.get(1)?.as_str()))
        .collect();
    letters.sort_unstable();
    letters.dedup();
    if letters.len() == 1 {
        return Some(letters[0]);
    }
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = squash(output);
    let hits: Vec<usize> = options
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            let o = squash(o);
            !o.is_empty() && text.contains(&o)
        })
        .map(|(i, _)| i)
        .collect();
    (hits.len() == 1).then(|| hits[0])
}

/// How the items are asked.
#[derive(Clone, Debug)]
pub struct GenMcOptions {
    /// the answer's token cap
    pub max_new_tokens: usize,
    /// generation stops after any of these (the model's eos and end-of-turn ids)
    pub stop_ids: Vec<u32>,
}

/// One item as answered.
#[derive(Clone, Debug, Serialize)]
pub struct GenMcItem {
    pub id: String,
    pub task: String,
    pub prompt: String,
    pub output: String,
    pub output_tokens: usize,
    /// the letter read from the output, if any
    pub extracted: Option<String>,
    pub gold: String,
    pub correct: bool,
}

/// A generation-scored pass: the items, the accuracy, and the serving run behind it.
#[derive(Clone, Debug)]
pub struct GenMcResult {
    pub items: Vec<GenMcItem>,
    pub accuracy: f64,
    pub no_answer: usize,
    pub run: RunReport,
}

impl GenMcResult {
    /// Which items were answered correctly, in order (for `eval::paired::paired_accuracy`).
    pub fn correct(&self) -> Vec<bool> {
        self.items.iter().map(|i| i.correct).collect()
    }

    /// The items as JSONL (one object a line), written atomically.
    pub fn write_jsonl(&self, path: &Path) -> Result<()> {
        let mut s = String::new();
        for i in &self.items {
            s.push_str(&serde_json::to_string(i).expect("an item serializes"));
            s.push('\n');
        }
        crate::fs::write_atomic(path, s.as_bytes())
    }
}

/// The chat template and stop ids a model directory asks with: its own template and
/// generation config (eos ids) plus `[|endofturn|]`; the default model's where the directory
/// has no template (shape-only checkpoints).
pub fn template_and_stops(dir: &Path, tok: &Tokenizer) -> Result<(ChatTemplate, Vec<u32>)> {
    let source =
        if dir.join("tokenizer_config.json").exists() || dir.join("chat_template.jinja").exists() {
            dir.to_path_buf()
        } else {
            crate::data::default_model_dir()
        };
    let template = ChatTemplate::from_dir(&source)?;
    let mut stop = crate::model::generate::GenerationConfig::try_from_dir(&source)?.eos_ids;
    stop.extend(tok.token_id("[|endofturn|]"));
    stop.dedup();
    Ok((template, stop))
}

/// The rendered prompts (text) and the workload (one request per item, in order).
pub fn workload(
    items: &[McItem],
    template: &ChatTemplate,
    tok: &Tokenizer,
    opts: &GenMcOptions,
) -> Result<(Vec<String>, Workload)> {
    let kwargs = serde_json::Map::from_iter([(
        "enable_thinking".to_string(),
        serde_json::Value::Bool(false),
    )]);
    let mut prompts = Vec::with_capacity(items.len());
    let mut requests = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.label >= item.choices.len() {
            return Err(Error::Invalid(format!(
                "multiple choice: item {i} of task `{}` has answer {} of {} options",
                item.task,
                item.label,
                item.choices.len()
            )));
        }
        let text = template.render(&[ChatMessage::user(&question_text(item)?)], true, &kwargs)?;
        let mut r = Request::from_ids(
            format!("mc-{i:04}"),
            tok.encode(&text)?,
            opts.max_new_tokens,
        );
        r.kind = item.task.clone();
        r.stop_ids = opts.stop_ids.clone();
        prompts.push(text);
        requests.push(r);
    }
    Ok((prompts, Workload::new(requests)))
}

/// Asks every item at once on `runner` and scores the answers.
pub fn score<E: StepExecutor>(
    runner: &mut Runner<E>,
    items: &[McItem],
    template: &ChatTemplate,
    tok: &Tokenizer,
    opts: &GenMcOptions,
) -> Result<GenMcResult> {
    let (prompts, w) = workload(items, template, tok, opts)?;
    let run = runner.run(&w)?;
    let mut out = Vec::with_capacity(items.len());
    for ((item, prompt), (req, res)) in items
        .iter()
        .zip(prompts)
        .zip(w.requests.iter().zip(&run.requests))
    {
        if let Some(e) = &res.error {
            return Err(Error::Invalid(format!("{}: {e}", req.id)));
        }
        let ids: Vec<u32> = res
            .output
            .iter()
            .copied()
            .filter(|t| !opts.stop_ids.contains(t))
            .collect();
        let output = tok.decode(&ids, true)?;
        let got = extract_choice(&output, &item.choices);
        let letter = |i: usize| LETTERS[i..i + 1].to_string();
        out.push(GenMcItem {
            id: req.id.clone(),
            task: item.task.clone(),
            prompt,
            output,
            output_tokens: res.output_len,
            extracted: got.map(letter),
            gold: letter(item.label),
            correct: got == Some(item.label),
        });
    }
    let n = out.len().max(1) as f64;
    Ok(GenMcResult {
        accuracy: out.iter().filter(|i| i.correct).count() as f64 / n,
        no_answer: out.iter().filter(|i| i.extracted.is_none()).count(),
        items: out,
        run,
    })
}
