"""Our reader on checkpoints written by llm-compressor 0.9.0.2 (the reference tool), on the GPU
machine: llm-compressor quantizes the default model (RTN, GPTQ, AWQ W4A16; W8A8; FP8), then
`exaone-compress dequant` must give exactly the weights compressed-tensors 0.13.0 decompresses
(through transformers 4.57.3), and `exaone-compress logits` on the compressed checkpoint must
match transformers' Exaone4ForCausalLM on those weights.

    python3 scripts/llmc_reader_check.py --bin .gpu/exaone-compress --out $OUT
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Exaone4ForCausalLM
from transformers.utils.quantization_config import CompressedTensorsConfig


def recipes():
    from llmcompressor.modifiers.awq import AWQModifier
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    return {
        "llmc-rtn-w4a16": QuantizationModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"]),
        "llmc-gptq-w4a16": GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"]),
        "llmc-awq-w4a16-asym": AWQModifier(targets=["Linear"], scheme="W4A16_ASYM", ignore=["lm_head"]),
        "llmc-w8a8": QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"]),
        "llmc-fp8-dynamic": QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=["lm_head"]),
    }


def sh(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{p.stderr[-1500:]}")
    return p.stdout


def main():
    from llmcompressor import oneshot
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".gpu/exaone-compress")
    ap.add_argument("--runner", default=".gpu/run-on-gpu.sh")
    ap.add_argument("--model", default="data/default-model")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.model)
    texts = [json.loads(l)["text"] for l in open("data/text/train.jsonl", encoding="utf-8")][:2000]
    joined = tok("\n".join(texts), add_special_tokens=False)["input_ids"]
    ids = [joined[i * 256:(i + 1) * 256] for i in range(64)]
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * 256 for _ in ids]})
    probe = list(range(20, 148))
    rows = []
    for name, recipe in recipes().items():
        row = {"case": name}
        try:
            q, dense = f"/tmp/llmc/{name}", f"/tmp/llmc/{name}-dense"
            model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16)
            t = time.time()
            oneshot(model=model, dataset=ds, recipe=recipe, max_seq_length=256, num_calibration_samples=64)
            row["llmc_s"] = round(time.time() - t, 2)
            model.save_pretrained(q, save_compressed=True)
            tok.save_pretrained(q)
            del model
            sh([a.runner, a.bin, "dequant", "--model", q, "--out", dense, "--overwrite"])
            ours = load_file(f"{dense}/model.safetensors")
            hf = AutoModelForCausalLM.from_pretrained(q, dtype=torch.bfloat16, quantization_config=CompressedTensorsConfig(run_compressed=False))
            sd = {k: v.detach().cpu() for k, v in hf.state_dict().items()}
            n = bad = 0
            for k, v in ours.items():
                if k.endswith("_proj.weight"):
                    n += 1
                    bad += int((sd[k].to(torch.bfloat16).view(torch.int16) != v.view(torch.int16)).any().item())
            row["linears_bit_exact"] = f"{n - bad}/{n}"
            plain = Exaone4ForCausalLM(AutoConfig.from_pretrained(dense)).float().eval()
            plain.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
            plain.tie_weights()
            with torch.no_grad():
                ref = plain(torch.tensor([probe])).logits[0].numpy()
            # one file per run, each replaced if a previous call left it (the CLI refuses to
            # overwrite without --overwrite)
            for key, model_dir in [("dense_logits_rel_err", dense), ("compressed_logits_rel_err_vs_decompressed", q)]:
                o = f"{model_dir}.npy"
                sh([a.runner, a.bin, "logits", "--model", model_dir, "--ids", ",".join(map(str, probe)), "--out", o, "--overwrite"])
                row[key] = float(np.abs(np.load(o) - ref).max() / np.abs(ref).max())
            row["lm_head_in_file"] = "lm_head.weight" in load_file(f"{q}/model.safetensors") if os.path.exists(f"{q}/model.safetensors") else None
        except Exception as e:  # noqa: BLE001 — recorded
            # the end of the message: the failing command's stderr, not its (long) argument list
            row["error"] = f"{type(e).__name__}: {str(e)[-400:]}"
        print(json.dumps(row), flush=True)
        rows.append(row)
    with open(os.path.join(a.out, "llmc_reader_check.json"), "w") as f:
        json.dump({"rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
