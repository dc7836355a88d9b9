#!/usr/bin/env bash
# Fourth GPU-machine session: runtime of ours vs HF transformers on a random-weight
# EXAONE-4.0-1.2B-shaped checkpoint, same call, same GPU.
set -uo pipefail
source scripts/gpu_setup.sh
python3 scripts/random_12b.py /tmp/exaone12-random
NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
python3 scripts/hf_bench.py /tmp/exaone12-random /tmp/hf_bench.json 2>&1 | grep -v Warning | tail -8
cp /tmp/hf_bench.json "$OUT/"
.gpu/run-on-gpu.sh .gpu/bench_runtime --model /tmp/exaone12-random --device cuda --hf-json /tmp/hf_bench.json \
  --device-name "$NAME" --out "$OUT/bench" 2>&1 | tail -8
ls "$OUT/bench"
