"""Writes a random-weight EXAONE-4.0-1.2B-shaped checkpoint (bf16, seed 0) with HF
transformers, for the scripts in scripts/gpu/ (through scripts/gpu/random_1_2b.sh):
`python3 scripts/random_12b.py /tmp/exaone12-random`. With `--hybrid`, the 1.2B's layer shape in
EXAONE 4's hybrid attention instead (as the 32B: three sliding-window layers, then a full one;
8 layers, a 64-token window so that short prompts already cross it), for checking the engines'
sliding-window layers: `python3 scripts/random_12b.py /tmp/exaone-hybrid --hybrid`."""
import importlib.util
import sys

import torch
from transformers import Exaone4Config, Exaone4ForCausalLM

spec = importlib.util.spec_from_file_location("gp", "scripts/gpu_parity.py")
gp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gp)
cfg = dict(gp.CFG)
if "--hybrid" in sys.argv[2:]:
    layers = 8
    cfg.update(num_hidden_layers=layers, sliding_window=64, sliding_window_pattern=4,
               layer_types=["full_attention" if i % 4 == 3 else "sliding_attention" for i in range(layers)])
torch.manual_seed(0)
Exaone4ForCausalLM(Exaone4Config(**cfg)).to(torch.bfloat16).save_pretrained(sys.argv[1])
