//! EXAONE 4's chat format, against the exact strings of the model card and the spec.

use exaone_compress::model::tokenizer::apply_chat_template;
use exaone_compress::model::ChatMessage;

#[test]
fn non_reasoning_generation_prompt() {
    let msgs = [
        ChatMessage::system("You are a helpful assistant."),
        ChatMessage::user("Explain how wonderful you are"),
    ];
    assert_eq!(
        apply_chat_template(&msgs, true, false),
        "[|system|]\nYou are a helpful assistant.[|endofturn|]\n[|user|]\nExplain how wonderful you are[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\n"
    );
}

#[test]
fn reasoning_generation_prompt_opens_the_think_block() {
    let msgs = [ChatMessage::user("Reply with exactly: OK")];
    assert_eq!(
        apply_chat_template(&msgs, true, true),
        "[|user|]\nReply with exactly: OK[|endofturn|]\n[|assistant|]\n<think>\n"
    );
}

#[test]
fn earlier_assistant_turns_carry_an_empty_think_block() {
    let msgs = [
        ChatMessage::system("sys"),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello"),
    ];
    assert_eq!(
        apply_chat_template(&msgs, false, false),
        "[|system|]\nsys[|endofturn|]\n[|user|]\nHi[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\nHello[|endofturn|]\n"
    );
}

// ---- the model directory's own template, against transformers' rendering ----

use std::path::{Path, PathBuf};

use exaone_compress::model::chat_template::ChatTemplate;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed fixtures (`scripts/chat_template_fixture.py`), plus any listed in
/// `CHAT_TEMPLATE_FIXTURES` (colon-separated paths: e.g. one made from a real EXAONE-4.0-1.2B
/// directory with `--extra`, not committed).
fn fixture_files() -> Vec<PathBuf> {
    let dir = root().join("tests/fixtures/chat_template");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    if let Ok(extra) = std::env::var("CHAT_TEMPLATE_FIXTURES") {
        files.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    files
}

fn check_fixture(path: &Path) -> usize {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dir = root().join(doc["model_dir"].as_str().unwrap());
    let t = ChatTemplate::from_dir(&dir).unwrap();
    assert!(!t.is_builtin(), "{}: no template found", dir.display());
    let cases = doc["cases"].as_array().unwrap();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let tools: Option<Vec<serde_json::Value>> = c["tools"].as_array().cloned();
        let got = t
            .render_json(
                c["messages"].as_array().unwrap(),
                tools.as_deref(),
                c["add_generation_prompt"].as_bool().unwrap(),
                c["kwargs"].as_object().unwrap(),
            )
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
        let want = c["rendered"].as_str().unwrap();
        assert_eq!(
            got,
            want,
            "{}: case {name} differs from transformers {}",
            path.display(),
            doc["transformers_version"]
        );
    }
    cases.len()
}

#[test]
fn every_fixture_renders_as_transformers_does_byte_for_byte() {
    let files = fixture_files();
    assert!(files.len() >= 3, "{files:?}");
    let n: usize = files.iter().map(|f| check_fixture(f)).sum();
    assert!(n >= 25, "only {n} cases");
}

#[test]
fn the_default_models_template_equals_the_built_in_format() {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/chat_template/default_model.json"))
            .unwrap(),
    )
    .unwrap();
    for c in doc["cases"].as_array().unwrap() {
        let msgs: Vec<ChatMessage> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let think = c["kwargs"]["enable_thinking"].as_bool().unwrap_or(false);
        let agp = c["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            apply_chat_template(&msgs, agp, think),
            c["rendered"].as_str().unwrap(),
            "{}",
            c["name"]
        );
        // and the convenience API over role/content turns
        let t = ChatTemplate::from_dir(&root().join("data/default-model")).unwrap();
        let kw = c["kwargs"].as_object().unwrap();
        assert_eq!(
            t.render(&msgs, agp, kw).unwrap(),
            c["rendered"].as_str().unwrap()
        );
    }
}

#[test]
fn a_directory_without_a_template_falls_back_to_the_built_in_format() {
    let tmp = tempfile::tempdir().unwrap();
    let t = ChatTemplate::from_dir(tmp.path()).unwrap();
    assert!(t.is_builtin());
    let msgs = [ChatMessage::user("Hi")];
    let mut kw = serde_json::Map::new();
    kw.insert("enable_thinking".into(), true.into());
    assert_eq!(
        t.render(&msgs, true, &kw).unwrap(),
        apply_chat_template(&msgs, true, true)
    );
    // the built-in format has no tool section: an error, not silently dropped tools
    let tools = [serde_json::json!({"type": "function"})];
    let m = [serde_json::json!({"role": "user", "content": "Hi"})];
    let e = t.render_json(&m, Some(&tools), true, &kw).unwrap_err();
    assert!(e.to_string().contains("tool"), "{e}");
}

#[test]
fn template_errors_name_the_file_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // raise_exception, as transformers' templates call it
    std::fs::write(
        tmp.path().join("chat_template.jinja"),
        "{% if messages[0].role != 'user' %}{{ raise_exception('first turn must be the user') }}{% endif %}{{ strftime_now('%Y') | length }}",
    )
    .unwrap();
    let t = ChatTemplate::from_dir(tmp.path()).unwrap();
    let e = t
        .render(&[ChatMessage::system("s")], false, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("first turn must be the user") && e.contains("chat_template.jinja"),
        "{e}"
    );
    assert_eq!(
        t.render(&[ChatMessage::user("u")], false, &Default::default())
            .unwrap(),
        "4"
    );
    // a template that does not compile is refused when loaded
    std::fs::write(
        tmp.path().join("chat_template.jinja"),
        "{% for m in messages %}",
    )
    .unwrap();
    let e = ChatTemplate::from_dir(tmp.path())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("chat_template.jinja"), "{e}");
    // named templates without "default"
    std::fs::remove_file(tmp.path().join("chat_template.jinja")).unwrap();
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"chat_template": [{"name": "tool_use", "template": "x"}]}"#,
    )
    .unwrap();
    let e = ChatTemplate::from_dir(tmp.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("default") && e.contains("tokenizer_config.json"),
        "{e}"
    );
}
