"""compressed-tensors conformance of our quantized checkpoints, against the real packages
(transformers 4.57.3 + compressed-tensors 0.13.0), on the GPU machine.

For each scheme, our CUDA binary quantizes the default model and writes a compressed-tensors
checkpoint and its dense dequantized twin (`exaone-compress dequant`). Then transformers loads
the checkpoint (compressed-tensors decompresses it) and we compare, tensor by tensor, the
decompressed weights with ours (bit-exact expected), and HF's logits with ours.

    python3 scripts/ct_conformance.py --bin .gpu/exaone-compress --out $OUT
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import transformers
import compressed_tensors
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, Exaone4ForCausalLM
from transformers.utils.quantization_config import CompressedTensorsConfig

CASES = [
    ("w4a16", "rtn", None),
    ("w4a16-asym", "rtn", None),
    ("w4a16", "gptq", None),
    ("w4a16", "gptq", "static"),
    ("w4a16", "gptq", "group"),
    ("w4a16", "awq", None),
    ("w8a8", "rtn", None),
    ("w8a8", "gptq", None),
    ("fp8", "rtn", None),
]


def sh(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{p.stderr[-2000:]}")
    return p.stdout, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".gpu/exaone-compress")
    ap.add_argument("--runner", default=".gpu/run-on-gpu.sh")
    ap.add_argument("--model", default="data/default-model")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    a = ap.parse_args()
    work = "/tmp/ct"
    os.makedirs(work, exist_ok=True)
    ids = list(range(20, 148))
    rows = []
    for scheme, method, actorder in CASES:
        name = f"{scheme}-{method}" + (f"-{actorder}" if actorder else "")
        q, dense = f"{work}/{name}", f"{work}/{name}-dense"
        row = {"case": name}
        try:
            cmd = [a.runner, a.bin, "quantize", "--model", a.model, "--scheme", scheme, "--method", method,
                   "--out", q, "--overwrite", "--device", a.device]
            if actorder:
                cmd += ["--actorder", actorder]
            t = time.time()
            _, err = sh(cmd)
            row["quantize_s"] = round(time.time() - t, 2)
            sh([a.runner, a.bin, "dequant", "--model", q, "--out", dense, "--overwrite"])
            ours = load_file(f"{dense}/model.safetensors")
            # compressed-tensors decompresses on load
            hf = AutoModelForCausalLM.from_pretrained(
                q, dtype=torch.bfloat16, quantization_config=CompressedTensorsConfig(run_compressed=False))
            sd = {k: v.detach().cpu() for k, v in hf.state_dict().items()}
            n_t = n_bad = 0
            max_diff = 0.0
            for k, v in ours.items():
                if not k.endswith("_proj.weight"):
                    continue
                theirs = sd[k].to(torch.bfloat16)
                n_t += 1
                neq = (theirs.view(torch.int16) != v.to(torch.bfloat16).view(torch.int16)).sum().item()
                n_bad += int(neq > 0)
                max_diff = max(max_diff, (theirs.float() - v.float()).abs().max().item())
            row["linears_compared"] = n_t
            row["linears_not_bit_exact"] = n_bad
            row["max_abs_diff"] = max_diff
            # logits: transformers' Exaone4ForCausalLM in f32 on the weights compressed-tensors
            # decompressed, vs ours on the dense twin
            x = torch.tensor([ids])
            plain = Exaone4ForCausalLM(AutoConfig.from_pretrained(dense)).float().eval()
            missing, _ = plain.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
            plain.tie_weights()
            row["missing_after_decompress"] = [m for m in missing if m != "lm_head.weight"]
            with torch.no_grad():
                ref = plain(x).logits[0].numpy()
            del hf, plain
            o = f"{work}/{name}.npy"
            sh([a.runner, a.bin, "logits", "--model", dense, "--ids", ",".join(map(str, ids)), "--out", o])
            mine = np.load(o)
            row["logits_rel_err"] = float(np.abs(mine - ref).max() / np.abs(ref).max())
            # and as transformers runs it by default (compressed modules), where it can
            try:
                hf2 = AutoModelForCausalLM.from_pretrained(q, dtype=torch.bfloat16).to("cuda")
                with torch.no_grad():
                    hf2(x.to("cuda"))
                row["default_load_runs"] = True
                del hf2
            except Exception as e:  # noqa: BLE001 — recorded, not hidden
                row["default_load_runs"] = f"{type(e).__name__}: {str(e)[:160]}"
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        print(json.dumps(row), flush=True)
        rows.append(row)
    res = {"transformers": transformers.__version__, "compressed_tensors": compressed_tensors.__version__,
           "torch": torch.__version__, "device": torch.cuda.get_device_name(0), "model": a.model, "rows": rows}
    with open(os.path.join(a.out, "ct_conformance.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
