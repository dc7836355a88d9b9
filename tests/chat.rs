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
