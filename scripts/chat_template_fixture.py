#!/usr/bin/env python3
"""Chat-template fixtures made by the reference: HF transformers' own rendering.

For each template directory below, every case's conversation is rendered with
`AutoTokenizer.from_pretrained(dir).apply_chat_template(messages, tools=..., tokenize=False,
add_generation_prompt=..., **kwargs)` and written, with its inputs and the transformers/jinja2
versions, to tests/fixtures/chat_template/<name>.json. `tests/chat.rs` requires our rendering
(`ChatTemplate::from_dir`) to equal transformers' byte for byte.

Directories without a tokenizer.json (the template-only fixtures) are copied to a temporary
directory beside the default model's tokenizer.json, so transformers loads them as a model
directory: chat_template.jinja first, else tokenizer_config.json's chat_template.

Needs only `pip install transformers jinja2` (no torch). Run from the repository root:
    python scripts/chat_template_fixture.py [--extra NAME=DIR ...]
`--extra` adds a directory (e.g. a real EXAONE-4.0-1.2B download) rendered with the EXAONE
cases; its fixture is written like the others (do not commit templates you may not share).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import jinja2
import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "chat_template")
DEFAULT = os.path.join(ROOT, "data", "default-model")

SYS = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Explain how wonderful you are"}
KO = {"role": "user", "content": "안녕하세요? 한국어로 답해 주세요."}
A1 = {"role": "assistant", "content": "I am EXAONE."}
U2 = {"role": "user", "content": "  And briefly?  "}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city (°C)",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "도시 이름"}},
                "required": ["city"],
            },
        },
    }
]
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Seoul"}}}
    ],
}
RESULT = {"role": "tool", "content": "{\"temp\": 21.5, \"sky\": \"맑음\"}"}
RESULT2 = {"role": "tool", "content": "second result"}
THOUGHT = {"role": "assistant", "content": "<think>\nLet me count.\n</think>\n\nTwo."}
REASONED = {"role": "assistant", "content": "Four.", "reasoning_content": "2+2 is 4."}


def case(name, messages, gen=True, tools=None, **kwargs):
    return {"name": name, "messages": messages, "tools": tools, "add_generation_prompt": gen, "kwargs": kwargs}


BASIC = [
    case("user_only", [U1]),
    case("user_only_no_generation_prompt", [U1], gen=False),
    case("system_user", [SYS, U1]),
    case("korean", [KO]),
    case("multi_turn", [SYS, U1, A1, U2]),
    case("multi_turn_no_generation_prompt", [U1, A1], gen=False),
    case("thinking_on", [U1], enable_thinking=True),
    case("thinking_off", [SYS, U1], enable_thinking=False),
    case("assistant_with_think_block", [U1, THOUGHT, U2], enable_thinking=True),
]
EXAONE = BASIC + [
    case("tools_no_system", [U1], tools=TOOLS),
    case("tools_with_system", [SYS, U1], tools=TOOLS, enable_thinking=True),
    case("tool_call_and_results", [SYS, U1, CALL, RESULT, RESULT2], tools=TOOLS),
    case("reasoning_kept", [U1, REASONED, U2, THOUGHT], gen=False, keep_reasoning=True, skip_think=False),
    case("reasoning_content_field", [U1, REASONED], gen=False, keep_reasoning=True, skip_think=False),
    case("unknown_kwarg_ignored", [U1], enable_thinking=False, some_flag="x"),
]
NAMED = [
    case("default_template", [SYS, U1, A1]),
    case("default_template_no_generation_prompt", [U1], gen=False),
    case("tool_use_template", [U1, A1], tools=TOOLS),
]

SETS = [
    ("default_model", DEFAULT, BASIC),
    ("exaone4_features", os.path.join(FIX, "exaone4_features"), EXAONE),
    ("named", os.path.join(FIX, "named"), NAMED),
]


def load(src):
    if os.path.exists(os.path.join(src, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(src)
    tmp = tempfile.mkdtemp()
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), tmp)
    shutil.copy(os.path.join(DEFAULT, "tokenizer.json"), tmp)
    return AutoTokenizer.from_pretrained(tmp)


def render(tok, c):
    return tok.apply_chat_template(
        c["messages"],
        tools=c["tools"],
        tokenize=False,
        add_generation_prompt=c["add_generation_prompt"],
        **c["kwargs"],
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--extra", action="append", default=[], help="NAME=DIR: another template directory")
    args = ap.parse_args()
    sets = list(SETS)
    for e in args.extra:
        name, d = e.split("=", 1)
        sets.append((name, os.path.abspath(d), EXAONE))
    for name, src, cases in sets:
        tok = load(src)
        out = []
        for c in cases:
            c = dict(c, rendered=render(tok, c))
            out.append(c)
        rel = os.path.relpath(src, ROOT)
        doc = {
            "made_by": "scripts/chat_template_fixture.py",
            "transformers_version": transformers.__version__,
            "jinja2_version": jinja2.__version__,
            "model_dir": rel if not rel.startswith("..") else src,
            "cases": out,
        }
        path = os.path.join(FIX, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"{path}: {len(out)} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
