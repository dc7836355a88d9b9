#!/usr/bin/env bash
# Time to GPTQ/AWQ/RTN-quantize a random-weight EXAONE-4.0-1.2B-shaped checkpoint with 128 × 512
# calibration tokens, ours and llm-compressor 0.9.0.2's (scripts/llmc_time.py), same call, same GPU
# → reports/quantize-speed/. Ours runs twice with SECOND=1 (spread); llm-compressor once (it is
# slow; LLMC_METHODS picks its methods). SKIP_SMOKE=1 skips the smoke test on the default model.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
source scripts/gpu/random_1_2b.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# smoke test on the default model first: a failure here explains everything after it
[ -z "${SKIP_SMOKE:-}" ] && .gpu/run-on-gpu.sh .gpu/exaone-compress quantize --model data/default-model --device cuda --scheme w4a16 --method gptq --out /tmp/q-smoke 2>&1 | tail -2
[ -z "${SKIP_SMOKE:-}" ] && .gpu/run-on-gpu.sh .gpu/exaone-compress quantize --model data/default-model --device cuda --scheme w4a16 --method awq --out /tmp/q-smoke2 2>&1 | tail -2
ours() {
  for m in gptq awq rtn; do
    # calibration flags only where the method calibrates (the CLI refuses them with rtn)
    calib=""; [ "$m" != rtn ] && calib="--calib-samples 128 --calib-len 512"
    /usr/bin/time -f "wall %e s, max RSS %M KiB" .gpu/run-on-gpu.sh .gpu/exaone-compress quantize \
      --model "$RANDOM_1_2B" --device cuda --scheme w4a16 --method $m \
      $calib --out /tmp/q-$m --overwrite 2>&1 \
      | grep -v "^\s*$" | grep -v "output MSE" | tail -3 | sed "s/^/ours $m run $1: /" | tee -a "$OUT/ours.txt"
  done
}
ours 1
timeout 420 python3 scripts/llmc_time.py --model "$RANDOM_1_2B" --samples 128 --len 512 \
  --methods "${LLMC_METHODS:-gptq,awq,rtn}" --out "$OUT/llmc_time.json" > /tmp/llmc.log 2>&1
grep '^{' /tmp/llmc.log | tee "$OUT/llmc.txt"; grep -v '^{' /tmp/llmc.log | tail -5
[ -n "${SECOND:-}" ] && ours 2
