//! A model directory's own chat template, rendered as transformers renders it.

use std::path::Path;

use super::tokenizer::{apply_chat_template, ChatMessage};
use crate::error::{Error, Result};

/// A model directory's chat template, rendered as transformers renders it: Jinja (here
/// minijinja) with `trim_blocks`, `lstrip_blocks` and loop controls; Python's string and dict
/// methods (`.strip()`, `.startswith()`, `.split()`, `.items()`, …); transformers' `tojson`
/// (`json.dumps`: `", "`/`": "` separators, `ensure_ascii`, `indent`, `sort_keys`), its
/// `raise_exception` and `strftime_now`; and its variables: `messages`, `tools`, `documents`,
/// `add_generation_prompt`, the special tokens (`bos_token`, `eos_token`, …) and any extra
/// keyword arguments (`enable_thinking`, …). Booleans and none print as Python prints them.
/// A directory without a template gets the built-in EXAONE 4 format ([`apply_chat_template`]).
#[derive(Clone)]
pub struct ChatTemplate {
    jinja: Option<minijinja::Environment<'static>>,
    /// a `tool_use` template beside `default` (the named-templates form)
    has_tool_use: bool,
    specials: serde_json::Map<String, serde_json::Value>,
    origin: String,
}

/// The special-token attributes transformers passes to a template (its `special_tokens_map`).
const SPECIAL_TOKEN_KEYS: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
    "additional_special_tokens",
];

impl ChatTemplate {
    /// The built-in EXAONE 4 format ([`apply_chat_template`]).
    pub fn builtin() -> Self {
        Self {
            jinja: None,
            has_tool_use: false,
            specials: Default::default(),
            origin: "the built-in EXAONE 4 chat format".into(),
        }
    }

    /// The template of a model directory, looked up as transformers does: `chat_template.jinja`,
    /// else `tokenizer_config.json`'s `chat_template` (a string, or a list of
    /// `{"name", "template"}`: `default`, and `tool_use` when tools are given); special tokens
    /// from `tokenizer_config.json` (then `special_tokens_map.json`). No template: the built-in
    /// format. A template that does not compile is an error naming its file.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("tokenizer_config.json");
        let read_json = |p: &Path| -> Result<Option<serde_json::Value>> {
            match std::fs::read_to_string(p) {
                Ok(s) => Ok(Some(
                    serde_json::from_str(&s).map_err(|e| Error::json(p, e))?,
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(p, e)),
            }
        };
        let cfg = read_json(&cfg_path)?.unwrap_or_default();
        let map = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or_default();
        let mut specials = serde_json::Map::new();
        for key in SPECIAL_TOKEN_KEYS {
            let v = cfg.get(*key).or_else(|| map.get(*key));
            if let Some(v) = v.and_then(token_text) {
                specials.insert(key.to_string(), v);
            }
        }
        let jinja_path = dir.join("chat_template.jinja");
        let (templates, origin) = match std::fs::read_to_string(&jinja_path) {
            Ok(s) => (vec![("default".to_string(), s)], jinja_path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bad = |msg: &str| {
                    Error::Invalid(format!("{}: chat_template: {msg}", cfg_path.display()))
                };
                match cfg.get("chat_template") {
                    None | Some(serde_json::Value::Null) => {
                        return Ok(Self {
                            specials,
                            ..Self::builtin()
                        })
                    }
                    Some(serde_json::Value::String(s)) => {
                        (vec![("default".to_string(), s.clone())], cfg_path.clone())
                    }
                    Some(serde_json::Value::Array(list)) => {
                        let named = list
                            .iter()
                            .map(|t| {
                                let name = t.get("name").and_then(|n| n.as_str());
                                let text = t.get("template").and_then(|n| n.as_str());
                                Some((name?.to_string(), text?.to_string()))
                            })
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| {
                                bad("every entry of the list needs string \"name\" and \"template\"")
                            })?;
                        if !named.iter().any(|(n, _)| n == "default") {
                            return Err(bad(
                                "a list of named templates needs one named \"default\"",
                            ));
                        }
                        (named, cfg_path.clone())
                    }
                    Some(_) => return Err(bad("expected a string or a list of named templates")),
                }
            }
            Err(e) => return Err(Error::io(&jinja_path, e)),
        };
        let origin = origin.display().to_string();
        let env = jinja_environment(templates.clone())
            .map_err(|e| Error::Invalid(format!("{origin}: chat template: {e:#}")))?;
        Ok(Self {
            jinja: Some(env),
            has_tool_use: templates.iter().any(|(n, _)| n == "tool_use"),
            specials,
            origin,
        })
    }

    /// A template given as text (special tokens: none unless passed as keyword arguments).
    pub fn from_source(source: &str) -> Result<Self> {
        let env = jinja_environment(vec![("default".into(), source.into())])
            .map_err(|e| Error::Invalid(format!("chat template: {e:#}")))?;
        Ok(Self {
            jinja: Some(env),
            has_tool_use: false,
            specials: Default::default(),
            origin: "the given chat template".into(),
        })
    }

    /// Whether this is the built-in format (the directory had no template).
    pub fn is_builtin(&self) -> bool {
        self.jinja.is_none()
    }

    /// Where the template came from (a file, or the built-in format).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders role/content turns; `kwargs` are the extra template variables transformers
    /// passes through (`{"enable_thinking": true}`, …).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let msgs: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect();
        self.render_json(&msgs, None, add_generation_prompt, kwargs)
    }

    /// Renders messages given as JSON objects, as transformers' `apply_chat_template(messages,
    /// tools=tools, add_generation_prompt=…, tokenize=False, **kwargs)` does: keys whose value
    /// is null are dropped, and `reasoning_content` / `thinking` / `reasoning` are copied under
    /// `reasoning_content` and `thinking`.
    pub fn render_json(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        use serde_json::Value as J;
        if messages.is_empty() {
            return Err(Error::Invalid(
                "chat template: the conversation holds no message".into(),
            ));
        }
        let mut chat = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let J::Object(m) = m else {
                return Err(Error::Invalid(format!(
                    "chat template: message {i} is not a JSON object"
                )));
            };
            let mut m: serde_json::Map<String, J> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let reasoning = ["reasoning_content", "thinking", "reasoning"]
                .iter()
                .find_map(|k| m.get(*k).cloned());
            if let Some(r) = reasoning {
                let mut aliased = serde_json::Map::new();
                aliased.insert("thinking".into(), r.clone());
                aliased.extend(m);
                aliased.insert("reasoning_content".into(), r);
                m = aliased;
            }
            chat.push(J::Object(m));
        }
        let Some(env) = &self.jinja else {
            return builtin_render(&chat, tools, add_generation_prompt, kwargs);
        };
        let mut ctx = self.specials.clone();
        ctx.extend(kwargs.iter().map(|(k, v)| (k.clone(), v.clone())));
        ctx.insert("messages".into(), J::Array(chat));
        ctx.insert(
            "tools".into(),
            tools.map_or(J::Null, |t| J::Array(t.to_vec())),
        );
        ctx.insert("documents".into(), J::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            J::Bool(add_generation_prompt),
        );
        let name = if tools.is_some() && self.has_tool_use {
            "tool_use"
        } else {
            "default"
        };
        let err =
            |e: minijinja::Error| Error::Invalid(format!("{}: chat template: {e:#}", self.origin));
        env.get_template(name)
            .map_err(err)?
            .render(minijinja::Value::from_serialize(&ctx))
            .map_err(err)
    }
}

/// A special token's text: a string, or an `AddedToken` object's `content` (lists kept as lists).
fn token_text(v: &serde_json::Value) -> Option<serde_json::Value> {
    match v {
        serde_json::Value::String(_) => Some(v.clone()),
        serde_json::Value::Object(o) => o.get("content").filter(|c| c.is_string()).cloned(),
        serde_json::Value::Array(a) => Some(serde_json::Value::Array(
            a.iter().filter_map(token_text).collect(),
        )),
        _ => None,
    }
}

/// The built-in format on normalised JSON messages: role/content strings only, no tools.
fn builtin_render(
    chat: &[serde_json::Value],
    tools: Option<&[serde_json::Value]>,
    add_generation_prompt: bool,
    kwargs: &serde_json::Map<String, serde_json::Value>,
) -> Result<String> {
    if tools.is_some_and(|t| !t.is_empty()) {
        return Err(Error::Invalid(
            "the built-in EXAONE 4 chat format has no tool section: give the model directory a chat template (chat_template.jinja)".into(),
        ));
    }
    let mut msgs = Vec::with_capacity(chat.len());
    for (i, m) in chat.iter().enumerate() {
        let field = |k: &str| m.get(k).and_then(|v| v.as_str());
        match (field("role"), field("content")) {
            (Some(r), Some(c)) => msgs.push(ChatMessage::new(r, c)),
            _ => {
                return Err(Error::Invalid(format!(
                    "message {i}: the built-in EXAONE 4 chat format needs string \"role\" and \"content\""
                )))
            }
        }
    }
    // truthiness as Jinja judges it
    let thinking = kwargs
        .get("enable_thinking")
        .is_some_and(|v| minijinja::Value::from_serialize(v).is_true());
    Ok(apply_chat_template(&msgs, add_generation_prompt, thinking))
}

/// The Jinja environment transformers renders chat templates in, holding `templates`.
fn jinja_environment(
    templates: Vec<(String, String)>,
) -> std::result::Result<minijinja::Environment<'static>, minijinja::Error> {
    use minijinja::{Error as JErr, ErrorKind, Value};
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, state, value| {
        let py = match (value.kind(), value.is_true()) {
            (minijinja::value::ValueKind::Bool, true) => "True",
            (minijinja::value::ValueKind::Bool, false) => "False",
            (minijinja::value::ValueKind::None, _) => "None",
            _ => return minijinja::escape_formatter(out, state, value),
        };
        out.write_str(py)
            .map_err(|_| JErr::new(ErrorKind::WriteFailure, "writing the template output"))
    });
    env.add_filter("tojson", py_tojson);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<Value, JErr> {
            Err(JErr::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function(
        "strftime_now",
        |fmt: String| -> std::result::Result<String, JErr> {
            use std::fmt::Write;
            let mut s = String::new();
            write!(s, "{}", chrono::Local::now().format(&fmt)).map_err(|_| {
                JErr::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: bad format {fmt:?}"),
                )
            })?;
            Ok(s)
        },
    );
    for (name, text) in templates {
        env.add_template_owned(name, text)?;
    }
    Ok(env)
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, keyword arguments as in Python.
fn py_tojson(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<String, minijinja::Error> {
    use minijinja::{Error as JErr, ErrorKind};
    let bad = |m: String| JErr::new(ErrorKind::InvalidOperation, m);
    let ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let indent = match kwargs.get::<Option<minijinja::Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            None => " ".repeat(
                usize::try_from(v.clone()).map_err(|_| bad(format!("tojson: indent {v}")))?,
            ),
        }),
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(s) => {
            return Err(bad(format!(
                "tojson: separators {s:?}: expected two strings"
            )))
        }
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| bad(format!("tojson: {e}")))?;
    let opts = PyJson {
        ascii,
        sort,
        indent,
        item_sep,
        key_sep,
    };
    let mut out = String::new();
    opts.write(&json, 0, &mut out);
    Ok(out)
}

/// Python's `json.dumps` formatting options.
struct PyJson {
    ascii: bool,
    sort: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
}

impl PyJson {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    }

    fn write(&self, v: &serde_json::Value, level: usize, out: &mut String) {
        use serde_json::Value as J;
        match v {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => out.push_str(&i.to_string()),
                (_, Some(u), _) => out.push_str(&u.to_string()),
                (_, _, Some(f)) => out.push_str(&py_float_repr(f)),
                _ => out.push_str(&n.to_string()),
            },
            J::String(s) => self.string(s, out),
            J::Array(a) if a.is_empty() => out.push_str("[]"),
            J::Object(o) if o.is_empty() => out.push_str("{}"),
            J::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.write(x, level + 1, out);
                }
                self.newline(level, out);
                out.push(']');
            }
            J::Object(o) => {
                let mut items: Vec<(&String, &J)> = o.iter().collect();
                if self.sort {
                    items.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, x)) in items.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.string(k, out);
                    out.push_str(&self.key_sep);
                    self.write(x, level + 1, out);
                }
                self.newline(level, out);
                out.push('}');
            }
        }
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ascii && !c.is_ascii()) => {
                    let mut buf = [0u16; 2];
                    for u in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `repr` of a float (shortest round-trip digits; exponent form below 1e-4 and from
/// 1e16 on, as `1e-05`, `1e+16`); `NaN`/`Infinity` as `json.dumps` writes them.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let e = format!("{:e}", f.abs());
    let (mant, exp) = e.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent");
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let n = digits.len() as i32;
    let body = if (-4..16).contains(&exp) {
        if exp < 0 {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else if n <= exp + 1 {
            format!("{digits}{}.0", "0".repeat((exp + 1 - n) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{a}.{b}")
        }
    } else {
        let m = if n > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    };
    if f < 0.0 {
        format!("-{body}")
    } else {
        body
    }
}
