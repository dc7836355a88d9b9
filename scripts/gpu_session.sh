#!/usr/bin/env bash
# One GPU-machine session (the `device` tool): install the pinned Python wheels, train the
# default model with the CUDA build, check it with HF transformers, and run the 1.2B-shape
# parity check. Expects .gpu/ (CUDA binaries, xz-compressed, and run-on-gpu.sh) and .whl/.
#   usage: bash scripts/gpu_session.sh STEPS
set -uo pipefail
STEPS="${1:-2000}"
source scripts/gpu_setup.sh
export GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "== $GPU_NAME"
echo "== train the default model ($STEPS steps)"
time .gpu/run-on-gpu.sh .gpu/train_default --device cuda --steps "$STEPS" --seed 0 --max-minutes 5 2>&1 \
  | tr '\r' '\n' | grep -v '^\s*$' | grep -v 'train \[' > "$OUT/train.log"; tail -8 "$OUT/train.log"
echo "== HF transformers on the default model"
python3 scripts/hf_check_default.py data/default-model "$OUT" 2>&1 | tail -6
tar czf "$OUT/default_model.tgz" data/default-model reports/default-model
echo "== 1.2B-shaped parity (ours CUDA vs HF)"
python3 scripts/gpu_parity.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | tail -40
