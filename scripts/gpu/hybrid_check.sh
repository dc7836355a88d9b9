#!/usr/bin/env bash
# The serving engine's sliding-window layers on CUDA: a random-weight checkpoint of the 1.2B's
# layer shape in EXAONE 4's hybrid attention (scripts/random_12b.py --hybrid: three 64-token
# sliding-window layers, then a full one; 8 layers) through serve_bench's small run, whose
# "check serving engine" line compares the engine's logits at every sampled position with the f32
# forward's (src/serve/check.rs) → $OUT/hybrid.log and $OUT/hybrid/.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
HYBRID="${HYBRID:-.gpu/random-hybrid}"
python3 scripts/random_12b.py "$HYBRID" --hybrid
.gpu/run-on-gpu.sh .gpu/serve_bench --model "$HYBRID" --device cuda --requests 24 --new-tokens 32 \
  --concurrency 4,16 --repeats 1 --b1-tokens 16 --long-requests 4 --kv-blocks 4096 \
  --device-name "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
  --model-name "random-weight hybrid (sliding-window) checkpoint" --out "$OUT/hybrid" 2>&1 | tee "$OUT/hybrid.log" | tail -12
# the device tool returns at most 8 files: the report travels as one archive
tar -C "$OUT" -cf "$OUT/hybrid.tar" hybrid && rm -rf "$OUT/hybrid"
