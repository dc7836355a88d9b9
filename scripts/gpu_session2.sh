#!/usr/bin/env bash
# Second GPU-machine session: compressed-tensors conformance of our checkpoints, and the
# 1.2B-shape parity again with greedy decoding compared in f32 as well.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -c "import lzma,glob,os
for f in glob.glob('.gpu/*.xz'):
    open(f[:-3],'wb').write(lzma.open(f).read()); os.remove(f)" || exit 1
chmod +x .gpu/*
echo "== $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "== compressed-tensors conformance"
python3 scripts/ct_conformance.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | grep -v Warning | tail -14
echo "== 1.2B-shaped parity"
[ -n "${SKIP_PARITY:-}" ] || python3 scripts/gpu_parity.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | grep -E "max\||greedy|load " | tail -12
rm -f "$OUT"/ours_*.npy
