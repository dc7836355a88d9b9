//! The tokenizer (`tokenizer.json` through the `tokenizers` crate) and EXAONE 4's built-in chat
//! format; a model directory's own template is rendered by [`super::chat_template`].

use std::path::Path;

use crate::error::{Error, Result};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn user(content: &str) -> Self {
        Self::new("user", content)
    }
    pub fn system(content: &str) -> Self {
        Self::new("system", content)
    }
    pub fn assistant(content: &str) -> Self {
        Self::new("assistant", content)
    }
}

/// EXAONE 4's chat format: each turn `[|role|]\n{content}[|endofturn|]\n`, no BOS; assistant
/// turns carry an empty think block; the generation prompt opens the assistant turn with an
/// empty (non-reasoning) or open (reasoning) think block.
pub fn apply_chat_template(
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    enable_thinking: bool,
) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str(&format!("[|{}|]\n", m.role));
        if m.role == "assistant" && !m.content.starts_with("<think>") {
            s.push_str("<think>\n\n</think>\n\n");
        }
        s.push_str(&m.content);
        s.push_str("[|endofturn|]\n");
    }
    if add_generation_prompt {
        s.push_str("[|assistant|]\n<think>\n");
        if !enable_thinking {
            s.push_str("\n</think>\n\n");
        }
    }
    s
}

/// A loaded `tokenizer.json`.
pub struct Tokenizer {
    pub inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| {
            Error::Invalid(format!("{}: cannot load tokenizer: {e}", path.display()))
        })?;
        Ok(Self { inner })
    }

    /// Encodes text without adding special tokens (EXAONE 4 adds no BOS; special tokens written
    /// in the text, like `[|user|]`, are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::Invalid(format!("tokenizer: {e}")))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Chat-templated prompt ids for a single user message.
    pub fn chat_prompt(&self, messages: &[ChatMessage], enable_thinking: bool) -> Result<Vec<u32>> {
        self.encode(&apply_chat_template(messages, true, enable_thinking))
    }
}

/// EXAONE 4's special tokens by name, in the order the default model's tokenizer gives them ids.
pub const SPECIAL_TOKENS: &[&str] = &[
    "[PAD]",
    "[BOS]",
    "[EOS]",
    "[UNK]",
    "</tool_call>",
    "<tool_call>",
    "</tool_result>",
    "<tool_result>",
    "</think>",
    "<think>",
    "[|system|]",
    "[|tool|]",
    "[|assistant|]",
    "[|user|]",
    "[|endofturn|]",
];

/// The chat template as Jinja, for `tokenizer_config.json`: the same format as
/// [`apply_chat_template`] (checked against transformers' rendering on the GPU machine).
pub const CHAT_TEMPLATE_JINJA: &str = "{%- for m in messages -%}\
{{- '[|' + m['role'] + '|]\\n' -}}\
{%- if m['role'] == 'assistant' and not m['content'].startswith('<think>') -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}\
{{- m['content'] + '[|endofturn|]\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '[|assistant|]\\n<think>\\n' -}}\
{%- if not (enable_thinking is defined and enable_thinking) -%}{{- '\\n</think>\\n\\n' -}}{%- endif -%}\
{%- endif -%}";

/// Trains a byte-level BPE (GPT-2 style, no prefix space, as EXAONE's) on text files and writes
/// `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `out_dir`.
pub fn train_bpe(
    files: &[std::path::PathBuf],
    vocab_size: usize,
    out_dir: &Path,
) -> Result<Tokenizer> {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, TokenizerBuilder};
    let err = |e: tokenizers::Error| Error::Invalid(format!("tokenizer training: {e}"));
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(true)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|s| AddedToken::from(*s, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let bl = ByteLevel::new(false, true, true);
    let mut tk = TokenizerBuilder::<
        BPE,
        tokenizers::NormalizerWrapper,
        ByteLevel,
        ByteLevel,
        ByteLevel,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(bl))
    .with_post_processor(Some(bl))
    .with_decoder(Some(bl))
    .build()
    .map_err(err)?;
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    tk.train_from_files(&mut trainer, files).map_err(err)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let path = out_dir.join("tokenizer.json");
    crate::fs::write_output_via_path(&path, true, |tmp| tk.save(tmp, false).map_err(err))?;
    let cfg = serde_json::json!({
        "add_bos_token": false,
        "add_eos_token": false,
        "bos_token": "[BOS]",
        "eos_token": "[|endofturn|]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "clean_up_tokenization_spaces": false,
        "model_max_length": 65536,
        "tokenizer_class": "GPT2Tokenizer",
        "chat_template": CHAT_TEMPLATE_JINJA,
    });
    let p = out_dir.join("tokenizer_config.json");
    crate::fs::write_atomic(
        &p,
        (serde_json::to_string_pretty(&cfg).expect("json") + "\n").as_bytes(),
    )?;
    let st = serde_json::json!({"bos_token": "[BOS]", "eos_token": "[|endofturn|]", "pad_token": "[PAD]", "unk_token": "[UNK]"});
    let p = out_dir.join("special_tokens_map.json");
    crate::fs::write_atomic(
        &p,
        (serde_json::to_string_pretty(&st).expect("json") + "\n").as_bytes(),
    )?;
    Tokenizer::from_dir(out_dir)
}

/// [`train_bpe`] on documents in memory: they are written one a line (joined by `\n`) to a
/// temporary file that the trainer reads.
pub fn train_bpe_on_documents(
    documents: &[String],
    vocab_size: usize,
    out_dir: &Path,
) -> Result<Tokenizer> {
    let tmp = tempfile::NamedTempFile::new().map_err(|e| Error::io(&std::env::temp_dir(), e))?;
    std::fs::write(tmp.path(), documents.join("\n")).map_err(|e| Error::io(tmp.path(), e))?;
    train_bpe(&[tmp.path().to_path_buf()], vocab_size, out_dir)
}
