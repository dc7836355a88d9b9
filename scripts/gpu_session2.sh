#!/usr/bin/env bash
# Second GPU-machine session: compressed-tensors conformance of our checkpoints, and the
# 1.2B-shape parity again with greedy decoding compared in f32 as well.
set -uo pipefail
source scripts/gpu_setup.sh
echo "== $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "== compressed-tensors conformance"
python3 scripts/ct_conformance.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | grep -v Warning | tail -14
echo "== 1.2B-shaped parity"
[ -n "${SKIP_PARITY:-}" ] || python3 scripts/gpu_parity.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | grep -E "max\||greedy|load " | tail -12
rm -f "$OUT"/ours_*.npy
echo "== ours on the 1.2B shape: peak GPU memory, prefill of 2048 tokens, decode (bf16, batch 1)"
if [ -d /tmp/exaone12-random ]; then
  IDS=$(python3 -c "print(','.join(str(4 + (i * 7919) % 100000) for i in range(2048)))")
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits > /tmp/mem0.txt
  (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> /tmp/mem.txt; sleep 0.05; done) & P=$!
  for i in 1 2 3; do
    .gpu/run-on-gpu.sh .gpu/exaone-compress generate --model /tmp/exaone12-random --device cuda --dtype bf16 \
      --ids "$IDS" --greedy --max-new-tokens 128 --min-new-tokens 128 2>&1 | tail -1
  done
  kill $P
  echo "GPU memory used: idle $(cat /tmp/mem0.txt) MiB, peak $(sort -n /tmp/mem.txt | tail -1) MiB"
fi
