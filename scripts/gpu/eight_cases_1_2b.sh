#!/usr/bin/env bash
# The eight-case study on a random-weight EXAONE-4.0-1.2B-shaped checkpoint with the CUDA build:
# speed and size columns real, quality columns flagged as meaningless → reports/eight_cases-1.2B-random/.
# Wall time from /usr/bin/time. Arguments go to eight_cases (e.g. --distill-steps 20).
set -uo pipefail
source "$(dirname "$0")/setup.sh"
source scripts/gpu/random_1_2b.sh
NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "$NAME"
/usr/bin/time -f "eight_cases wall %e s, max RSS %M KiB" timeout 575 .gpu/run-on-gpu.sh .gpu/eight_cases \
  --model "$RANDOM_1_2B" --device cuda --random-weights --out "$OUT/eight_cases" \
  "$@" > /tmp/ec.log 2>&1
tail -4 /tmp/ec.log; grep -iE "error|panic" /tmp/ec.log | head -5
cp /tmp/ec.log "$OUT/eight_cases.log"
