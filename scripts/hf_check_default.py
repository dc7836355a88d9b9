"""HF transformers (4.57.3) on the default model: does it load, and what does it compute?

Writes the reference the Rust tests compare against (tests/default_model.rs):
  default_model_hf.json        tokenizer ids for sample texts (HF's tokenizer), the chat template
                               as HF renders it, greedy continuations
  default_model_hf_logits.npy  f32 logits [n, vocab] for the first sample text

    python3 scripts/hf_check_default.py data/default-model tests/fixtures
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.",
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced no evidence.",
    "[|user|]\n안녕하세요[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\n",
]
CHATS = [
    ([{"role": "user", "content": "안녕하세요"}], False),
    ([{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"}], False),
    ([{"role": "user", "content": "Reply with exactly: OK"}], True),
    ([{"role": "system", "content": "sys"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
      {"role": "user", "content": "Again"}], False),
]


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    res = {"transformers": transformers.__version__, "class": type(model).__name__,
           "tokenizer_class": type(tok).__name__, "encodings": [], "chat": [], "greedy": []}
    for t in TEXTS:
        res["encodings"].append({"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]})
    for msgs, think in CHATS:
        s = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=think)
        res["chat"].append({"messages": msgs, "enable_thinking": think, "text": s})
    ids = torch.tensor([res["encodings"][0]["ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0].float().numpy()
    np.save(os.path.join(out, "default_model_hf_logits.npy"), logits.astype(np.float32))
    for msgs, think in CHATS[:2]:
        p = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, enable_thinking=think,
                                    return_tensors="pt")
        if isinstance(p, dict) or hasattr(p, "input_ids"):
            p = p["input_ids"]
        g = model.generate(p, do_sample=False, max_new_tokens=24)[0, p.shape[1]:].tolist()
        res["greedy"].append({"prompt_ids": p[0].tolist(), "ids": g, "text": tok.decode(g, skip_special_tokens=True)})
    with open(os.path.join(out, "default_model_hf.json"), "w") as f:
        json.dump(res, f, ensure_ascii=False, indent=1)
    print(json.dumps({k: res[k] for k in ("transformers", "class", "tokenizer_class")}))
    for g in res["greedy"]:
        print("greedy:", g["text"])


if __name__ == "__main__":
    main()
