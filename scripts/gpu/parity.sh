#!/usr/bin/env bash
# The CUDA build against HF transformers at the exact EXAONE-4.0-1.2B shape (scripts/gpu_parity.py:
# transformers writes a random-weight checkpoint to /tmp/exaone12-random; bf16 logits and greedy ids,
# greedy decoding compared in f32 as well), then ours on that checkpoint: peak GPU memory, prefill of
# 2048 tokens, decode (bf16, batch 1) → reports/gpu-parity/. SKIP_PARITY=1 reuses an existing
# /tmp/exaone12-random and only measures.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
echo "== $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
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
