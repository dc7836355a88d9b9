#!/usr/bin/env bash
# Fifth GPU-machine session: the 1.2B-shape parity again after computing attention scores in f32.
set -uo pipefail
source scripts/gpu_setup.sh
python3 scripts/gpu_parity.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | grep -E "max\||greedy|load " | tail -12
rm -f "$OUT"/ours_*.npy
