"""EXAONE-4.0-1.2B-shaped parity and first speed figures on the GPU machine.

transformers writes a random-weight checkpoint of the exact 1.2B shape (bf16), computes its
logits (bf16 and f32) and a greedy continuation; our CUDA binary (`.gpu/exaone-compress`, built
and carried as scripts/README.md says) loads the same directory and does the same. Prints the
relative error of the logits, top-1 agreement, whether the greedy ids agree, and timings.

    python3 scripts/gpu_parity.py [--bin .gpu/exaone-compress] [--out DIR]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
import transformers
from transformers import Exaone4Config, Exaone4ForCausalLM

CFG = dict(
    vocab_size=102400, hidden_size=2048, intermediate_size=4096, num_hidden_layers=30,
    num_attention_heads=32, num_key_value_heads=8, head_dim=64, hidden_act="silu",
    rms_norm_eps=1e-5, max_position_embeddings=65536, rope_theta=1000000.0,
    rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    sliding_window=None, sliding_window_pattern=None, layer_types=["full_attention"] * 30,
    tie_word_embeddings=True, bos_token_id=1, eos_token_id=361, pad_token_id=0,
)


def run(cmd):
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout, p.stderr, file=sys.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return p.stdout, p.stderr, time.time() - t


def compare(name, ours, ref):
    ours, ref = ours.astype(np.float32), ref.astype(np.float32)
    rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
    mean_rel = float(np.abs(ours - ref).mean() / np.abs(ref).mean())
    top1 = float((ours.argmax(-1) == ref.argmax(-1)).mean())
    print(f"{name}: max|diff|/max|ref| = {rel:.3e}, mean|diff|/mean|ref| = {mean_rel:.3e}, top-1 agreement {top1:.4f}")
    return {"max_rel": rel, "mean_rel": mean_rel, "top1": top1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".gpu/exaone-compress")
    ap.add_argument("--runner", default=".gpu/run-on-gpu.sh")
    ap.add_argument("--dir", default="/tmp/exaone12-random")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    a = ap.parse_args()
    dev = "cuda"
    print("transformers", transformers.__version__, "torch", torch.__version__, torch.cuda.get_device_name(0))

    torch.manual_seed(0)
    cfg = Exaone4Config(**CFG)
    model = Exaone4ForCausalLM(cfg).to(torch.bfloat16)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
    model.save_pretrained(a.dir)
    del model
    ids = torch.randint(4, cfg.vocab_size, (1, a.n), generator=torch.Generator().manual_seed(2))
    ids_s = ",".join(map(str, ids[0].tolist()))
    prompt = ids[:, :16]
    res = {"device": torch.cuda.get_device_name(0), "transformers": transformers.__version__}

    # HF: bf16 and f32 logits, greedy, load time, decode speed
    t = time.time()
    hf = Exaone4ForCausalLM.from_pretrained(a.dir, dtype=torch.bfloat16).to(dev).eval()
    torch.cuda.synchronize()
    res["hf_load_s"] = time.time() - t
    with torch.no_grad():
        ref_bf16 = hf(ids.to(dev)).logits[0].float().cpu().numpy()
        greedy_hf = hf.generate(prompt.to(dev), do_sample=False, max_new_tokens=a.new,
                                eos_token_id=361, pad_token_id=0)[0, 16:].tolist()
        torch.cuda.synchronize()
        t = time.time()
        out = hf.generate(prompt.to(dev), do_sample=False, max_new_tokens=a.new, min_new_tokens=a.new,
                          eos_token_id=361, pad_token_id=0)
        torch.cuda.synchronize()
        res["hf_generate_tokens_per_s"] = a.new / (time.time() - t)
    del hf
    torch.cuda.empty_cache()
    hf32 = Exaone4ForCausalLM.from_pretrained(a.dir, dtype=torch.float32).to(dev).eval()
    with torch.no_grad():
        ref_f32 = hf32(ids.to(dev)).logits[0].float().cpu().numpy()
        greedy_hf32 = hf32.generate(prompt.to(dev), do_sample=False, max_new_tokens=a.new, min_new_tokens=a.new,
                                    eos_token_id=361, pad_token_id=0)[0, 16:].tolist()
    del hf32
    torch.cuda.empty_cache()

    # ours
    o_bf16 = os.path.join(a.out, "ours_bf16.npy")
    o_f32 = os.path.join(a.out, "ours_f32.npy")
    _, err, secs = run([a.runner, a.bin, "logits", "--model", a.dir, "--device", "cuda", "--dtype", "bf16",
                        "--ids", ids_s, "--out", o_bf16])
    res["ours_logits_bf16_wall_s"] = secs
    run([a.runner, a.bin, "logits", "--model", a.dir, "--device", "cuda", "--dtype", "f32", "--ids", ids_s, "--out", o_f32])
    res["bf16"] = compare("bf16 (ours CUDA vs HF CUDA)", np.load(o_bf16), ref_bf16)
    res["f32"] = compare("f32  (ours CUDA vs HF CUDA)", np.load(o_f32), ref_f32)
    res["hf_bf16_vs_hf_f32"] = compare("bf16 HF vs f32 HF (the bf16 noise floor)", ref_bf16, ref_f32)
    out, err, _ = run([a.runner, a.bin, "generate", "--model", a.dir, "--device", "cuda", "--dtype", "bf16",
                       "--ids", ",".join(map(str, prompt[0].tolist())), "--greedy", "--print-ids",
                       "--max-new-tokens", str(a.new), "--min-new-tokens", str(a.new)])
    greedy_ours = json.loads(out.strip().splitlines()[-1])
    print(err.strip())
    m = re.search(r"load ([\d.]+) s; prefill (\d+) tokens ([\d.]+) s; decode (\d+) tokens ([\d.]+) s", err)
    if m:
        res["ours_load_s"] = float(m.group(1))
        res["ours_prefill_s"] = float(m.group(3))
        res["ours_decode_tokens_per_s"] = int(m.group(4)) / float(m.group(5))
    out32, _, _ = run([a.runner, a.bin, "generate", "--model", a.dir, "--device", "cuda", "--dtype", "f32",
                       "--ids", ",".join(map(str, prompt[0].tolist())), "--greedy", "--print-ids",
                       "--max-new-tokens", str(a.new), "--min-new-tokens", str(a.new)])
    greedy_ours32 = json.loads(out32.strip().splitlines()[-1])
    res["greedy_f32_identical"] = greedy_ours32 == greedy_hf32
    print("greedy f32 (ours CUDA vs HF CUDA) identical:", greedy_ours32 == greedy_hf32)
    same = next((i for i, (x, y) in enumerate(zip(greedy_ours, greedy_hf)) if x != y), None)
    res["greedy_hf"], res["greedy_ours"] = greedy_hf, greedy_ours
    res["greedy_first_divergence"] = same
    print("greedy HF  :", greedy_hf)
    print("greedy ours:", greedy_ours)
    print("greedy agree:", "all" if same is None else f"first {same} tokens")
    print(json.dumps({k: v for k, v in res.items() if not k.startswith("greedy_")}, indent=1))
    with open(os.path.join(a.out, "gpu_parity.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
