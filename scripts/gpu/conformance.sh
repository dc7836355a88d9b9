#!/usr/bin/env bash
# Our compressed-tensors checkpoints (every scheme) read by compressed-tensors 0.13.0 through
# transformers 4.57.3 (scripts/ct_conformance.py): decompressed weights bit-exact with ours, HF's
# logits beside ours → reports/conformance/. Carry .whl/ and .gpu/.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
echo "== $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "== compressed-tensors conformance"
python3 scripts/ct_conformance.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | grep -v Warning | tail -14
