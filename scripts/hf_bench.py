"""HF transformers' runtime on a checkpoint, at the points bench_runtime measures ours
(load; forward + log-softmax tokens/s at BxT; greedy decode ms per step at batch B), bf16, sdpa.

    python3 scripts/hf_bench.py MODEL_DIR OUT.json
"""
import json
import statistics
import sys
import threading
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

PREFILL = [(1, 512), (1, 2048), (8, 512), (8, 2048)]
DECODE = [1, 16]
WARMUP, REPEATS, NEW = 2, 5, 64


def stat(v, unit):
    return {"median": statistics.median(v), "spread": max(v) - min(v), "unit": unit}


class MemPeak:
    """Peak device memory in use (whole device, as nvidia-smi), sampled every 2 ms: the same
    measure bench_runtime takes of ours."""

    def __init__(self):
        self.peak = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            time.sleep(0.002)

    def take(self):
        p, self.peak = self.peak, 0
        return p / 2**30


def main():
    path, out = sys.argv[1], sys.argv[2]
    m = {}
    loads = []
    for _ in range(3):
        torch.cuda.synchronize()
        t = time.time()
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").to("cuda").eval()
        torch.cuda.synchronize()
        loads.append(time.time() - t)
        del model
        torch.cuda.empty_cache()
    m["load_s"] = stat(loads, "s")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").to("cuda").eval()
    vocab = model.config.vocab_size
    mem = MemPeak()
    mem.take()
    for b, t in PREFILL:
        x = (torch.arange(b * t).reshape(b, t) * 7919 % (vocab - 4) + 4).cuda()
        v = []
        for run in range(WARMUP + REPEATS):
            torch.cuda.synchronize()
            s = time.time()
            with torch.no_grad():
                lp = torch.log_softmax(model(x).logits.float(), -1)
                lp[:, -1].sum().item()
            if run >= WARMUP:
                v.append(b * t / (time.time() - s))
        m[f"prefill_tok_s_{b}x{t}"] = stat(v, "tokens/s")
        print(f"prefill {b}x{t}: {m[f'prefill_tok_s_{b}x{t}']['median']:.0f} tokens/s", flush=True)
    m["peak_gib_prefill"] = {"median": mem.take(), "spread": None, "unit": "GiB"}
    for b in DECODE:
        x = (torch.arange(b * 128).reshape(b, 128) * 7919 % (vocab - 4) + 4).cuda()
        v = []
        for run in range(WARMUP + REPEATS):
            with torch.no_grad():
                torch.cuda.synchronize()
                s = time.time()
                model.generate(x, do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=0)
                torch.cuda.synchronize()
                total = time.time() - s
            if run >= WARMUP:
                v.append(1e3 * total / NEW)  # includes the 128-token prefill, amortised
        m[f"decode_ms_b{b}"] = stat(v, "ms/step")
        print(f"decode batch {b}: {m[f'decode_ms_b{b}']['median']:.2f} ms/step", flush=True)
    m["peak_gib_decode"] = {"median": mem.take(), "spread": None, "unit": "GiB"}
    mem.stop = True
    mem.thread.join()
    json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
               "device": torch.cuda.get_device_name(0), "metrics": m}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
