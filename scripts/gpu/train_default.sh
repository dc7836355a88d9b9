#!/usr/bin/env bash
# Train the default model with the CUDA build and check it with HF transformers (GPU machine,
# the `device` tool). Expects .gpu/ (CUDA binaries, xz-compressed, and run-on-gpu.sh) and .whl/.
# Writes $OUT/train.log, HF's view of the model (scripts/hf_check_default.py) and
# $OUT/default_model.tgz (data/default-model + reports/default-model).
#   usage: bash scripts/gpu/train_default.sh [STEPS]      (default 2000)
set -uo pipefail
STEPS="${1:-2000}"
source "$(dirname "$0")/setup.sh"
export GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "== $GPU_NAME"
echo "== train the default model ($STEPS steps)"
time .gpu/run-on-gpu.sh .gpu/train_default --overwrite --device cuda --steps "$STEPS" --seed 0 --max-minutes 5 2>&1 \
  | tr '\r' '\n' | grep -v '^\s*$' | grep -v 'train \[' > "$OUT/train.log"; tail -8 "$OUT/train.log"
echo "== HF transformers on the default model"
python3 scripts/hf_check_default.py data/default-model "$OUT" 2>&1 | tail -6
tar czf "$OUT/default_model.tgz" data/default-model reports/default-model
