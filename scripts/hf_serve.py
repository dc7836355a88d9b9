"""HF transformers' batched greedy `generate` on a serving workload (JSONL of requests with
prompt_ids and max_new_tokens, as `serve_bench --write-workload` writes it): every request in one
left-padded batch (halved on out-of-memory), stop ids off (exactly max_new_tokens each), bf16,
sdpa. Writes the figures as `serve_bench --hf-json` reads them.

    python3 scripts/hf_serve.py MODEL_DIR WORKLOAD.jsonl OUT.json
"""
import json
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    model_dir, workload, out = sys.argv[1:4]
    reqs = [json.loads(l) for l in open(workload) if l.strip()]
    new = max(r["max_new_tokens"] for r in reqs)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    model = model.cuda().eval()
    model.generation_config.eos_token_id = None
    pad = 0

    def batch(rs):
        L = max(len(r["prompt_ids"]) for r in rs)
        ids = torch.full((len(rs), L), pad, dtype=torch.long)
        mask = torch.zeros((len(rs), L), dtype=torch.long)
        for i, r in enumerate(rs):
            p = r["prompt_ids"]
            ids[i, L - len(p):] = torch.tensor(p)
            mask[i, L - len(p):] = 1
        return ids.cuda(), mask.cuda()

    def gen(rs, n):
        ids, mask = batch(rs)
        with torch.no_grad():
            o = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, pad_token_id=pad)
        return (o.shape[1] - ids.shape[1]) * len(rs)

    gen(reqs[:2], 4)  # warm-up
    b = len(reqs)
    while True:
        try:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            tokens = 0
            for i in range(0, len(reqs), b):
                tokens += gen(reqs[i:i + b], new)
            torch.cuda.synchronize()
            secs = time.perf_counter() - t0
            break
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if b == 1:
                raise
            b //= 2
    m = lambda v, u: {"median": v, "spread": None, "unit": u}
    res = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "metrics": {
            "serve_mc_tokens_per_sec": m(tokens / secs, "tokens/s"),
            "serve_mc_secs_per_token": m(secs / tokens, "s"),
            "serve_mc_generation_secs": m(secs, "s"),
            "serve_mc_batch": m(b, "seqs"),
            "serve_mc_peak_gib": m(torch.cuda.max_memory_allocated() / 2**30, "GiB"),
        },
    }
    json.dump(res, open(out, "w"), indent=1)
    print(f"HF generate: {len(reqs)} requests in batches of {b}, {tokens} tokens in {secs:.1f} s = {tokens / secs:.0f} tokens/s")


if __name__ == "__main__":
    main()
