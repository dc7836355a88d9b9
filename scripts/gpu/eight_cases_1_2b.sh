#!/usr/bin/env bash
# The eight-case study on a random-weight EXAONE-4.0-1.2B-shaped checkpoint with the CUDA build:
# speed and size columns real, quality columns flagged as meaningless → reports/eight_cases-1.2B-random/.
# Wall time from /usr/bin/time. Arguments go to eight_cases (e.g. --distill-steps 20). The study
# writes to .gpu/out/eight_cases (a path named by role; it stays on a warm machine), so a run cut
# off by the call's time limit goes on with `--resume` in the next call (a call that carries `.gpu` again
# replaces that progress with this machine's `.gpu`: resume without carrying it); $OUT/eight_cases.tgz
# brings it back.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
[ -f "${RANDOM_1_2B:-.gpu/random-1.2b}/config.json" ] || source scripts/gpu/random_1_2b.sh
RANDOM_1_2B="${RANDOM_1_2B:-.gpu/random-1.2b}"
NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "$NAME"
mkdir -p .gpu/out
/usr/bin/time -f "eight_cases wall %e s, max RSS %M KiB" timeout "${EC_TIMEOUT:-560}" .gpu/run-on-gpu.sh .gpu/eight_cases \
  --model "$RANDOM_1_2B" --device cuda --random-weights --out .gpu/out/eight_cases \
  "$@" >> .gpu/out/eight_cases.log 2>&1
tail -4 .gpu/out/eight_cases.log; grep -iE "error|panic" .gpu/out/eight_cases.log | head -5
cp .gpu/out/eight_cases.log "$OUT/eight_cases.log"
tar -C .gpu/out -czf "$OUT/eight_cases.tgz" --exclude=checkpoints --exclude="*.safetensors" eight_cases
