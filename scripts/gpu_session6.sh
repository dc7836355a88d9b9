#!/usr/bin/env bash
# Sixth GPU-machine session (issue #5): the eight-case study on a random-weight
# EXAONE-4.0-1.2B-shaped checkpoint with the CUDA build: speed and size columns real, quality
# columns flagged as meaningless. Wall time from /usr/bin/time.
set -uo pipefail
source scripts/gpu_setup.sh
python3 scripts/random_12b.py /tmp/exaone12-random
NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "$NAME"
/usr/bin/time -f "eight_cases wall %e s, max RSS %M KiB" timeout 575 .gpu/run-on-gpu.sh .gpu/eight_cases \
  --model /tmp/exaone12-random --device cuda --random-weights --out "$OUT/eight_cases" \
  "$@" > /tmp/ec.log 2>&1
tail -4 /tmp/ec.log; grep -iE "error|panic" /tmp/ec.log | head -5
cp /tmp/ec.log "$OUT/eight_cases.log"
