"""llm-compressor 0.9.0.2's time to quantize a checkpoint W4A16 (GPTQ, AWQ, RTN), for the
comparison in issue #4: run in the same device call as `exaone-compress quantize` on the same
checkpoint and GPU (scripts/gpu/quantize_speed.sh). Calibration: N seeded random token windows of
length L (the content does not change the work).

    python3 scripts/llmc_time.py --model /tmp/exaone12-random --samples 128 --len 512 --out $OUT/llmc_time.json
"""
import argparse
import json
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer


def recipe(method):
    from llmcompressor.modifiers.awq import AWQModifier
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    return {
        "gptq": lambda: GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"]),
        "awq": lambda: AWQModifier(targets=["Linear"], scheme="W4A16", ignore=["lm_head"]),
        "rtn": lambda: QuantizationModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"]),
    }[method]()


def main():
    from llmcompressor import oneshot
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--len", type=int, default=512)
    ap.add_argument("--methods", default="gptq,awq,rtn")
    ap.add_argument("--out", required=True)
    # oneshot wants a processor when given a dataset; a shape-only checkpoint has none
    ap.add_argument("--tokenizer", default="data/default-model")
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 4096, (a.samples, a.len), generator=g).tolist()
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * a.len for _ in ids]})
    rows = []
    for m in a.methods.split(","):
        # on the GPU from the start: the fastest placement for a model this small
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16).to("cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.time()
        oneshot(model=model, processor=AutoTokenizer.from_pretrained(a.tokenizer), dataset=ds,
                recipe=recipe(m), max_seq_length=a.len, num_calibration_samples=a.samples)
        torch.cuda.synchronize()
        row = {"method": m, "seconds": round(time.time() - t, 2),
               "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
               "gpu": torch.cuda.get_device_name(0), "calib": [a.samples, a.len]}
        print(json.dumps(row), flush=True)
        rows.append(row)
        del model
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump({"llmcompressor": "0.9.0.2", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
