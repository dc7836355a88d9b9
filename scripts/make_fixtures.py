"""Write small random-weight EXAONE 4 checkpoints with HF transformers and record HF's outputs.

These are the reference the Rust model is tested against (tests/parity.rs). Run on a machine with
torch + transformers (the target stack pins transformers 4.57.3; see scripts/README.md for how the
wheels travel to the GPU machine):

    python3 scripts/make_fixtures.py tests/fixtures

Every fixture directory holds an HF model directory plus `reference.json` (input ids, greedy
continuations, versions) and `logits.npy` (f32 [n_ids, vocab], HF's eager f32 forward).
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import Exaone4Config, Exaone4ForCausalLM

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 16.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

COMMON = dict(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=256,
    num_attention_heads=8,
    num_key_value_heads=2,  # GQA: 4 query heads per KV head, as in EXAONE-4.0-1.2B
    head_dim=16,
    hidden_act="silu",
    rms_norm_eps=1e-5,
    max_position_embeddings=65536,
    rope_theta=1000000.0,
    bos_token_id=1,
    eos_token_id=361,
    pad_token_id=0,
)

FIXTURES = {
    # the 1.2B's shape of config: all full attention, llama3 RoPE, tied embeddings
    "full_tied": dict(
        num_hidden_layers=3,
        rope_scaling=LLAMA3,
        sliding_window=None,
        sliding_window_pattern=None,
        layer_types=["full_attention"] * 3,
        tie_word_embeddings=True,
    ),
    # the 32B's kind: 3 sliding layers (window 8, shorter than the test sequence) + 1 full (NoPE),
    # plain RoPE, an untied lm_head
    "hybrid_untied": dict(
        num_hidden_layers=4,
        rope_scaling=None,
        sliding_window=8,
        sliding_window_pattern=4,
        layer_types=["sliding_attention"] * 3 + ["full_attention"],
        tie_word_embeddings=False,
    ),
}


def randomize(model, seed):
    """Non-trivial weights: std 0.1 matrices and norm weights far from 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    if model.config.tie_word_embeddings:
        model.tie_weights()


def record(model, out_dir, seq_len=48, prompt_len=8, new_tokens=24, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    vocab = model.config.vocab_size
    ids = torch.randint(4, vocab, (1, seq_len), generator=g)
    with torch.no_grad():
        logits = model(ids).logits[0].float().numpy()
    np.save(os.path.join(out_dir, "logits.npy"), logits.astype(np.float32))
    prompt = ids[:, :prompt_len]
    greedy = model.generate(prompt, do_sample=False, max_new_tokens=new_tokens, eos_token_id=361,
                            pad_token_id=0)[0, prompt_len:].tolist()
    greedy_min = model.generate(prompt, do_sample=False, max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, eos_token_id=361, pad_token_id=0,
                                )[0, prompt_len:].tolist()
    # random weights rarely emit 361, so stopping is tested with the 6th greedy token as eos:
    # generation must end right after it, and min_new_tokens must mask it until then
    stop_id = greedy[5]
    greedy_stop = model.generate(prompt, do_sample=False, max_new_tokens=new_tokens,
                                 eos_token_id=stop_id, pad_token_id=0)[0, prompt_len:].tolist()
    greedy_stop_min = model.generate(prompt, do_sample=False, max_new_tokens=new_tokens,
                                     min_new_tokens=12, eos_token_id=stop_id, pad_token_id=0,
                                     )[0, prompt_len:].tolist()
    ref = {
        "input_ids": ids[0].tolist(),
        "prompt_len": prompt_len,
        "max_new_tokens": new_tokens,
        "greedy": greedy,
        "greedy_min_new_tokens": greedy_min,
        "stop_id": stop_id,
        "greedy_stop": greedy_stop,
        "greedy_stop_min12": greedy_stop_min,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "attn_implementation": model.config._attn_implementation,
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    for i, (name, extra) in enumerate(FIXTURES.items()):
        torch.manual_seed(i)
        cfg = Exaone4Config(**COMMON, **extra)
        model = Exaone4ForCausalLM(cfg).float().eval()
        model.config._attn_implementation = "eager"
        randomize(model, seed=100 + i)
        out = os.path.join(root, name)
        model.save_pretrained(out, safe_serialization=True)
        # reload from disk so the reference is what the files hold
        model = Exaone4ForCausalLM.from_pretrained(out, torch_dtype=torch.float32,
                                                   attn_implementation="eager").eval()
        record(model, out, seed=i)
        print(name, "written")

    # the same full_tied weights stored as bf16, sharded with an index: the reference logits are
    # HF's f32 forward on the bf16-rounded weights
    src = os.path.join(root, "full_tied")
    model = Exaone4ForCausalLM.from_pretrained(src, torch_dtype=torch.bfloat16)
    out = os.path.join(root, "full_tied_bf16_sharded")
    model.save_pretrained(out, safe_serialization=True, max_shard_size="300KB")
    model = Exaone4ForCausalLM.from_pretrained(out, torch_dtype=torch.float32,
                                               attn_implementation="eager").eval()
    record(model, out, seed=0)
    print("full_tied_bf16_sharded written")


if __name__ == "__main__":
    main()
