"""Writes a random-weight EXAONE-4.0-1.2B-shaped checkpoint (bf16, seed 0) with HF
transformers, for the scripts in scripts/gpu/ (through scripts/gpu/random_1_2b.sh):
`python3 scripts/random_12b.py /tmp/exaone12-random`."""
import importlib.util
import sys

import torch
from transformers import Exaone4Config, Exaone4ForCausalLM

spec = importlib.util.spec_from_file_location("gp", "scripts/gpu_parity.py")
gp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gp)
torch.manual_seed(0)
Exaone4ForCausalLM(Exaone4Config(**gp.CFG)).to(torch.bfloat16).save_pretrained(sys.argv[1])
