#!/usr/bin/env bash
# Serving-regime speed → reports/serve_bench/ (see experiments/serve_bench.rs): a smoke run on the
# default model (SKIP_SMOKE=1 skips it, SMOKE_ONLY=1 stops after it), then a random-weight
# EXAONE-4.0-1.2B-shaped checkpoint written by transformers here, its W4A16, W8A8 and FP8 RTN variants
# made by our CLI, HF transformers' batched generate on the same requests (scripts/hf_serve.py),
# ours. Arguments go to serve_bench (both the workload writer and the run, so they agree).
set -uo pipefail
source "$(dirname "$0")/setup.sh"
run() { .gpu/run-on-gpu.sh "$@"; }
NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
if [ -z "${SKIP_SMOKE:-}" ]; then
  run .gpu/serve_bench --model data/default-model --device cuda --requests 24 --new-tokens 16 \
    --concurrency 4,16 --repeats 1 --b1-tokens 16 --long-requests 4 --kv-blocks 4096 --out /tmp/smoke 2>&1 | tail -20
  cp /tmp/smoke/README.md "$OUT/smoke.md" 2>/dev/null
fi
[ -n "${SMOKE_ONLY:-}" ] && exit 0
source scripts/gpu/random_1_2b.sh
for s in w4a16 w8a8 fp8; do
  run .gpu/exaone-compress quantize --model "$RANDOM_1_2B" --device cuda --scheme $s --method rtn --out /tmp/r-$s --overwrite 2>&1 | tail -1
done
run .gpu/serve_bench --write-workload /tmp/mc.jsonl --overwrite "$@" 2>&1 | tail -1
python3 scripts/hf_serve.py "$RANDOM_1_2B" /tmp/mc.jsonl /tmp/hf_serve.json 2>&1 | grep -v Warning | tail -3
run .gpu/serve_bench --model "$RANDOM_1_2B" --w4a16 /tmp/r-w4a16 --w8a8 /tmp/r-w8a8 --fp8 /tmp/r-fp8 --device cuda \
  --hf-json /tmp/hf_serve.json --device-name "$NAME" --model-name "random-weight EXAONE-4.0-1.2B shape" \
  --gen-mc 1000 --out "$OUT/serve" --command "${SKIP_SMOKE:+SKIP_SMOKE=1 }bash scripts/gpu/serve_bench.sh $*" "$@" 2>&1 | tee "$OUT/serve.log" | tail -40
cp /tmp/hf_serve.json "$OUT/serve/" 2>/dev/null
# the device tool returns at most 8 files: the report travels as one archive
tar -C "$OUT" -cf "$OUT/serve.tar" serve && rm -rf "$OUT/serve"
