//! A workload: the requests handed to the engine at once, as the evaluation hands its whole
//! benchmark to vLLM's offline `LLM`. Stored as JSONL (one request a line) so the same requests
//! can be replayed by this runner and by a Python reference on the GPU machine; generated,
//! seeded, in the evaluation's three shapes from the text this crate ships.

use std::collections::HashSet;
use std::path::Path;

use rand::{rngs::StdRng, Rng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::tokenizer::apply_chat_template;
use crate::model::{ChatMessage, Tokenizer};

/// One turn of a chat request, as it is written in the JSONL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

/// One request. A line gives either `prompt_ids` or `messages`; messages are rendered by the
/// model's chat template (with the generation prompt, thinking off) when the workload is
/// loaded, so the runner only ever sees ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub id: String,
    /// the shape it stands for (`mc`, `long_qa`, `chat`, …), for per-shape figures
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_ids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Turn>>,
    pub max_new_tokens: usize,
    /// generation stops after emitting any of these (the stop id is part of the output)
    #[serde(default)]
    pub stop_ids: Vec<u32>,
}

impl Request {
    /// A request from ids, for tests and programmatic workloads.
    pub fn from_ids(id: impl Into<String>, prompt_ids: Vec<u32>, max_new_tokens: usize) -> Self {
        Self {
            id: id.into(),
            kind: String::new(),
            prompt_ids,
            messages: None,
            max_new_tokens,
            stop_ids: vec![],
        }
    }

    /// Whether the model can take this request: a prompt, every id (prompt and stop) inside
    /// the vocabulary. The error names the request and the offending id.
    pub fn check(&self, vocab_size: usize) -> Result<()> {
        if self.prompt_ids.is_empty() {
            return Err(Error::Invalid(format!(
                "request `{}`: empty prompt (give prompt_ids, or messages and a tokenizer)",
                self.id
            )));
        }
        for (what, ids) in [("prompt", &self.prompt_ids), ("stop", &self.stop_ids)] {
            if let Some((i, &t)) = ids
                .iter()
                .enumerate()
                .find(|(_, &t)| t as usize >= vocab_size)
            {
                return Err(Error::Invalid(format!(
                    "request `{}`: {what} id {t} (index {i}) is outside the vocabulary (vocab_size {vocab_size})",
                    self.id
                )));
            }
        }
        Ok(())
    }

    /// Renders `messages` into `prompt_ids` with the chat template, where ids are not given.
    fn render(&mut self, tok: Option<&Tokenizer>) -> Result<()> {
        let Some(msgs) = &self.messages else {
            return Ok(());
        };
        if !self.prompt_ids.is_empty() {
            return Ok(());
        }
        let tok = tok.ok_or_else(|| {
            Error::Invalid(format!(
                "request `{}` gives messages but no tokenizer was supplied to render them",
                self.id
            ))
        })?;
        let turns: Vec<ChatMessage> = msgs
            .iter()
            .map(|t| ChatMessage::new(&t.role, &t.content))
            .collect();
        self.prompt_ids = tok
            .chat_prompt(&turns, false)
            .map_err(|e| Error::Invalid(format!("request `{}`: {e}", self.id)))?;
        Ok(())
    }
}

/// The requests of one run, in arrival order (all arrive at time 0, as in the evaluation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    pub requests: Vec<Request>,
}

impl Workload {
    pub fn new(requests: Vec<Request>) -> Self {
        Self { requests }
    }

    /// Reads a JSONL workload; chat messages are rendered with `tok`. Errors name the file and
    /// line (bad JSON, unknown field, duplicate id, messages without a tokenizer).
    pub fn from_jsonl(path: &Path, tok: Option<&Tokenizer>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse_jsonl(&text, &path.display().to_string(), tok)
    }

    /// [`from_jsonl`](Self::from_jsonl) on text; `origin` names it in errors.
    pub fn parse_jsonl(text: &str, origin: &str, tok: Option<&Tokenizer>) -> Result<Self> {
        let mut requests = vec![];
        let mut ids = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut r: Request = serde_json::from_str(line)
                .map_err(|e| Error::Invalid(format!("{origin}:{}: {e}", i + 1)))?;
            if !ids.insert(r.id.clone()) {
                return Err(Error::Invalid(format!(
                    "{origin}:{}: request id `{}` is used twice",
                    i + 1,
                    r.id
                )));
            }
            r.render(tok)
                .map_err(|e| Error::Invalid(format!("{origin}:{}: {e}", i + 1)))?;
            requests.push(r);
        }
        Ok(Self { requests })
    }

    /// One JSON object a line, in order.
    pub fn to_jsonl(&self) -> String {
        let mut s = String::new();
        for r in &self.requests {
            s.push_str(&serde_json::to_string(r).expect("a request serializes"));
            s.push('\n');
        }
        s
    }

    /// Writes the JSONL atomically (a reader never sees half a workload), replacing a file
    /// already at `path` only when `replace`.
    pub fn write_jsonl(&self, path: &Path, replace: bool) -> Result<()> {
        let bytes = self.to_jsonl();
        if replace {
            crate::fs::write_atomic(path, bytes.as_bytes())
        } else {
            crate::fs::write_new(path, bytes.as_bytes())
        }
    }

    /// Every request checked against the vocabulary, ids unique; the first fault, named.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        let mut seen = HashSet::new();
        for r in &self.requests {
            if !seen.insert(&r.id) {
                return Err(Error::Invalid(format!(
                    "request id `{}` is used twice",
                    r.id
                )));
            }
            r.check(vocab_size)?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
    /// Prompt tokens over all requests: the prefill work a run must do at least.
    pub fn prompt_tokens(&self) -> usize {
        self.requests.iter().map(|r| r.prompt_ids.len()).sum()
    }

    /// KV blocks of `block_size` tokens that hold every request at once, each at its full length
    /// (prompt and token cap): a pool this large never preempts.
    pub fn kv_blocks(&self, block_size: usize) -> usize {
        let bs = block_size.max(1);
        let per = |r: &Request| (r.prompt_ids.len() + r.max_new_tokens).div_ceil(bs);
        self.requests.iter().map(per).sum()
    }

    /// Appends another workload's requests (e.g. the three shapes into one evaluation mix).
    pub fn extend(&mut self, other: Workload) {
        self.requests.extend(other.requests);
    }
}

/// A benchmark question as the multiple-choice shape uses it.
#[derive(Clone, Debug)]
pub struct McSource {
    pub question: String,
    pub options: Vec<String>,
    /// index of the right option
    pub answer: usize,
}

/// The shipped text the generators draw from: KMMLU items (`data/benchmarks/`) and the Korean
/// documents of a corpus split (`data/text/`).
#[derive(Clone, Debug)]
pub struct Sources {
    pub mc: Vec<McSource>,
    pub korean: Vec<String>,
}

impl Sources {
    /// KMMLU criminal law items and the Korean, non-chat documents of `split`.
    pub fn shipped(split: &str) -> Result<Self> {
        let path = crate::data::data_dir().join("benchmarks/kmmlu_criminal_law_test.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
        let mut mc = vec![];
        for (i, item) in v.iter().enumerate() {
            let s = |k: &str| item.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let (Some(question), Some(a), Some(b), Some(c), Some(d)) =
                (s("question"), s("A"), s("B"), s("C"), s("D"))
            else {
                return Err(Error::Invalid(format!(
                    "{}: item {i} lacks a string question or option A–D",
                    path.display()
                )));
            };
            let answer = item.get("answer").and_then(|x| x.as_u64()).unwrap_or(1);
            mc.push(McSource {
                question,
                options: vec![a, b, c, d],
                answer: (answer.clamp(1, 4) - 1) as usize,
            });
        }
        let korean: Vec<String> = crate::data::split_documents(split)?
            .into_iter()
            .filter(|d| !d.contains("[|") && d.chars().any(is_hangul))
            .collect();
        if mc.is_empty() || korean.is_empty() {
            return Err(Error::Invalid(format!(
                "shipped text: {} benchmark items, {} Korean documents in split `{split}`: both must be non-empty",
                mc.len(),
                korean.len()
            )));
        }
        Ok(Self { mc, korean })
    }
}

fn is_hangul(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

/// What every generator takes: how many requests, the seed (same seed → same workload), the
/// generation limits.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub n: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
    pub stop_ids: Vec<u32>,
}

/// The chat template around one user message, as ids: (before the content, after it).
fn template_ids(tok: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>)> {
    const MARK: &str = "\u{1}SPLIT\u{1}";
    let s = apply_chat_template(&[ChatMessage::user(MARK)], true, false);
    let (a, b) = s.split_once(MARK).expect("the template keeps the content");
    Ok((tok.encode(a)?, tok.encode(b)?))
}

/// Where a whole document lies in a run of corpus ids.
struct DocSpan {
    doc: usize,
    end: usize,
}

/// Ids of Korean documents from a random start, joined by newlines, until `need` ids (wrapping
/// around the corpus); also where each whole document ends in the ids.
fn corpus_ids(
    src: &Sources,
    tok: &Tokenizer,
    need: usize,
    rng: &mut StdRng,
) -> Result<(Vec<u32>, Vec<DocSpan>)> {
    let nl = tok.encode("\n")?;
    let mut ids = vec![];
    let mut spans = vec![];
    let mut d = rng.random_range(0..src.korean.len());
    let mut docs = 0;
    while ids.len() < need {
        let e = tok.encode(&src.korean[d])?;
        spans.push(DocSpan {
            doc: d,
            end: ids.len() + e.len(),
        });
        ids.extend(e);
        ids.extend(&nl);
        d = (d + 1) % src.korean.len();
        docs += 1;
        if docs > 4 * src.korean.len() + need {
            return Err(Error::Invalid(format!(
                "the Korean corpus tokenizes to nothing: cannot fill {need} tokens"
            )));
        }
    }
    Ok((ids, spans))
}

fn mc_block(item: &McSource, with_answer: bool) -> String {
    let mut s = format!("문제: {}\n", item.question.trim());
    for (k, o) in item.options.iter().enumerate() {
        s.push_str(&format!("{}. {}\n", (b'A' + k as u8) as char, o.trim()));
    }
    s.push_str("정답:");
    if with_answer {
        s.push_str(&format!(" {}\n\n", (b'A' + item.answer as u8) as char));
    }
    s
}

fn request(kind: &str, i: usize, prompt_ids: Vec<u32>, opts: &GenOptions) -> Request {
    Request {
        id: format!("{kind}-{i:04}"),
        kind: kind.into(),
        prompt_ids,
        messages: None,
        max_new_tokens: opts.max_new_tokens,
        stop_ids: opts.stop_ids.clone(),
    }
}

/// Korean multiple choice as KMMLU is served: a chat-templated prompt of 150–600 tokens (the
/// target length uniform in that range) — an instruction, solved example questions and
/// reference text from the corpus as filler, then the question with options A–D. A question
/// too long for its target keeps its end (the options) within 600 tokens.
pub fn multiple_choice(src: &Sources, tok: &Tokenizer, opts: &GenOptions) -> Result<Workload> {
    const LO: usize = 150;
    const HI: usize = 600;
    let mut rng = crate::data::rng(opts.seed);
    let (pre, post) = template_ids(tok)?;
    let head = tok.encode("다음 객관식 문제의 정답을 A, B, C, D 중에서 고르세요.\n\n")?;
    let mut out = vec![];
    for i in 0..opts.n {
        let target = rng.random_range(LO..=HI);
        let q = rng.random_range(0..src.mc.len());
        let mut body = tok.encode(&format!("\n\n{}", mc_block(&src.mc[q], false)))?;
        let fixed = pre.len() + head.len() + post.len();
        if fixed + body.len() > HI {
            body.drain(..fixed + body.len() - HI);
        }
        let room = target.saturating_sub(fixed + body.len());
        // filler: solved examples (other questions), then corpus text
        let mut filler = vec![];
        while filler.len() < room {
            if src.mc.len() > 1 {
                let k = (q + 1 + rng.random_range(0..src.mc.len() - 1)) % src.mc.len();
                filler.extend(tok.encode(&mc_block(&src.mc[k], true))?);
            }
            if src.mc.len() < 2 || rng.random_bool(0.3) {
                let (c, _) = corpus_ids(src, tok, room.saturating_sub(filler.len()), &mut rng)?;
                filler.extend(c);
            }
        }
        filler.truncate(room);
        let mut ids = pre.clone();
        ids.extend(&head);
        ids.extend(filler);
        ids.extend(body);
        ids.extend(&post);
        out.push(request("mc", i, ids, opts));
    }
    Ok(Workload::new(out))
}

/// Long-context QA as Ko-LongRAG is served: 2k–8k tokens (uniform) of consecutive Korean
/// documents, then a question about one sentence in them.
pub fn long_context_qa(src: &Sources, tok: &Tokenizer, opts: &GenOptions) -> Result<Workload> {
    const LO: usize = 2048;
    const HI: usize = 8192;
    let mut rng = crate::data::rng(opts.seed);
    let (pre, post) = template_ids(tok)?;
    let head = tok.encode("다음 문서를 읽고 마지막 질문에 답하세요.\n\n")?;
    let mut out = vec![];
    for i in 0..opts.n {
        let target = rng.random_range(LO..=HI);
        let (ctx, spans) = corpus_ids(src, tok, target, &mut rng)?;
        // the question quotes a document that will survive truncation
        let guess =
            tok.encode("\n\n질문: 문서에서 다음 문장 바로 뒤에 오는 문장은 무엇입니까?\n\"\"")?;
        let room0 = target.saturating_sub(pre.len() + head.len() + post.len() + guess.len());
        let whole: Vec<_> = spans.iter().filter(|s| s.end < room0 / 2).collect();
        let quoted = match whole.is_empty() {
            true => &src.korean[spans[0].doc],
            false => &src.korean[whole[rng.random_range(0..whole.len())].doc],
        };
        let quoted: String = quoted.chars().take(200).collect();
        let question = tok.encode(&format!(
            "\n\n질문: 문서에서 다음 문장 바로 뒤에 오는 문장은 무엇입니까?\n\"{quoted}\""
        ))?;
        let fixed = pre.len() + head.len() + question.len() + post.len();
        let mut ctx = ctx;
        ctx.truncate(target.saturating_sub(fixed));
        let mut ids = pre.clone();
        ids.extend(&head);
        ids.extend(ctx);
        ids.extend(question);
        ids.extend(&post);
        out.push(request("long_qa", i, ids, opts));
    }
    Ok(Workload::new(out))
}

/// Multi-turn chat as KoMT-Bench is served: 1–3 earlier exchanges (user asks about a corpus
/// document, the assistant's reply is the next document), then a new user turn; rendered with
/// the chat template, lengths as the text falls.
pub fn multi_turn_chat(src: &Sources, tok: &Tokenizer, opts: &GenOptions) -> Result<Workload> {
    const ASKS: [&str; 4] = [
        "다음 글을 요약해 주세요: ",
        "이 글에 대해 어떻게 생각하세요? ",
        "다음 글을 이어서 써 주세요: ",
        "다음 글의 요점을 설명해 주세요: ",
    ];
    let mut rng = crate::data::rng(opts.seed);
    let n_docs = src.korean.len();
    let mut out = vec![];
    for i in 0..opts.n {
        let exchanges = rng.random_range(1..=3);
        let mut d = rng.random_range(0..n_docs);
        let mut msgs = vec![];
        for _ in 0..exchanges {
            let ask = ASKS[rng.random_range(0..ASKS.len())];
            msgs.push(ChatMessage::user(&format!("{ask}{}", src.korean[d])));
            msgs.push(ChatMessage::assistant(&src.korean[(d + 1) % n_docs]));
            d = (d + 2) % n_docs;
        }
        let ask = ASKS[rng.random_range(0..ASKS.len())];
        msgs.push(ChatMessage::user(&format!("{ask}{}", src.korean[d])));
        out.push(request("chat", i, tok.chat_prompt(&msgs, false)?, opts));
    }
    Ok(Workload::new(out))
}
