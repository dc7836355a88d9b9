#!/usr/bin/env bash
# The runtime kernels checked and timed, ours vs HF transformers in the same call on the same GPU
# → reports/bench_runtime/ (RUN.md there). A smoke run on the default model first (its numerical
# checks fail loudly; SKIP_SMOKE=1 skips it, SMOKE_ONLY=1 stops after it), then a random-weight
# EXAONE-4.0-1.2B-shaped checkpoint written by transformers here, its W4A16, W8A8 and FP8 RTN
# variants made by our CLI, HF's figures (scripts/hf_bench.py), ours. Arguments go to bench_runtime.
# Duration on an H200 with SKIP_SMOKE=1: over 470 s (2026-12-02, d919541; bench_runtime itself
# 390 s), 587 s in one call (2026-12-03, 62e5236): give it a device call of its own (10 minutes
# at most) on a warm machine, or two: BENCH_PART=hf stops after HF's figures (the checkpoints
# and HF's JSON stay on the machine: .gpu/hf_bench.json, /tmp/r-*), then BENCH_PART=ours in the
# next call on the same warm machine, without carrying `.gpu` again, runs ours on them.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
run() { .gpu/run-on-gpu.sh "$@"; }
NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
if [ -z "${SKIP_SMOKE:-}" ]; then
  for s in w4a16 w8a8; do
    run .gpu/exaone-compress quantize --model data/default-model --device cpu --scheme $s --method rtn --out /tmp/d-$s --overwrite 2>&1 | tail -1
  done
  run .gpu/bench_runtime --model data/default-model --w4a16 /tmp/d-w4a16 --w8a8 /tmp/d-w8a8 --device cuda \
    --prefill 1x64,2x300 --decode-batches 1,3 --new-tokens 12 --warmup 1 --repeats 2 --out /tmp/smoke 2>&1 | tail -30
  cp /tmp/smoke/README.md "$OUT/smoke.md" 2>/dev/null; cp /tmp/hf_bench.json "$OUT/" 2>/dev/null
fi
[ -n "${SMOKE_ONLY:-}" ] && exit 0
if [ "${BENCH_PART:-}" != ours ]; then
  source scripts/gpu/random_1_2b.sh
  for s in w4a16 w8a8 fp8; do
    run .gpu/exaone-compress quantize --model "$RANDOM_1_2B" --device cuda --scheme $s --method rtn --out /tmp/r-$s --overwrite 2>&1 | tail -1
  done
  python3 scripts/hf_bench.py "$RANDOM_1_2B" /tmp/hf_bench.json 2>&1 | grep -v Warning | tail -8
  cp /tmp/hf_bench.json .gpu/hf_bench.json
  [ "${BENCH_PART:-}" = hf ] && exit 0
else
  RANDOM_1_2B="${RANDOM_1_2B:-.gpu/random-1.2b}"
  cp .gpu/hf_bench.json /tmp/hf_bench.json || { echo "BENCH_PART=ours needs BENCH_PART=hf's call first, on this machine" >&2; exit 1; }
fi
run .gpu/bench_runtime --model "$RANDOM_1_2B" --w4a16 /tmp/r-w4a16 --w8a8 /tmp/r-w8a8 --fp8 /tmp/r-fp8 --device cuda \
  --hf-json /tmp/hf_bench.json --device-name "$NAME" --out "$OUT/bench" \
  --command "${SKIP_SMOKE:+SKIP_SMOKE=1 }bash scripts/gpu/bench_runtime.sh $*" "$@" 2>&1 | tail -45
cp /tmp/hf_bench.json "$OUT/bench/" 2>/dev/null
# the device tool returns at most 8 files: the report travels as one archive
tar -C "$OUT" -cf "$OUT/bench.tar" bench && rm -rf "$OUT/bench"
