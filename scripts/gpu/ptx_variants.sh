#!/usr/bin/env bash
# Kernel variants timed side by side without rebuilding the binaries: each folder .gpu/ptx/NAME/
# holds PTX files (e.g. gemm_w4.ptx, from `nvcc --ptx -arch=compute_80 -O3 -std=c++17`, as
# build.rs makes them, or gemm_w4.sm90.ptx from -arch=compute_90, which a Hopper GPU loads first
# and launches programmatically; scripts/w4_ablations.py writes the W4 GEMM's ablations) that
# replace the built-in modules of the same name (EXAONE_COMPRESS_PTX_DIR,
# src/runtime/launch/mod.rs). For the built-in PTX and each variant: the W4A16 GEMM sweep
# (bench_runtime --gemm-sweep --w4-only; EXAONE_W4_MS=1,16 keeps those row counts only,
# EXAONE_W4_TUNE=1 adds every split count, SWEEP_VARIANTS="builtin NAME …" limits the variants
# swept, SKIP_SWEEP=1 skips it) and, unless SKIP_ENGINE=1, the decode engines
# (ENGINE_VARIANTS="builtin NAME …" limits them) at the batches of DECODE_BATCHES (default 1,16) on a random-weight
# EXAONE-4.0-1.2B-shaped checkpoint and its W4A16 RTN variant, with their numerical checks
# (≈ 2 minutes per variant on an H200; the sweep alone ≈ 30 s, 10 s with EXAONE_W4_MS). The
# tables on stdout; NAME.sweep.txt, NAME.engine.txt and every log in $OUT/logs.tar (the device
# tool returns at most 8 files).
set -uo pipefail
source "$(dirname "$0")/setup.sh"
run() { .gpu/run-on-gpu.sh "$@"; }
nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -1 | tee "$OUT/gpu.txt"
variants=(builtin)
for d in .gpu/ptx/*/; do [ -d "$d" ] && variants+=("$(basename "$d")"); done
with() {  # with NAME CMD...: CMD with variant NAME's PTX
  if [ "$1" = builtin ]; then shift; env -u EXAONE_COMPRESS_PTX_DIR "$@"
  else local v=$1; shift; EXAONE_COMPRESS_PTX_DIR="$PWD/.gpu/ptx/$v" "$@"; fi
}
# logs live outside $OUT and travel as one archive, refreshed after every step (a call cut off by
# its time limit still brings back what ran)
L=/tmp/ptx_logs; rm -rf $L; mkdir -p $L/logs
pack() { tar -C $L -cf "$OUT/logs.tar" logs; }
[ -n "${SKIP_SWEEP:-}" ] && SWEEP_VARIANTS=" "
for v in ${SWEEP_VARIANTS:-${variants[@]}}; do
  echo "== $v: W4A16 sweep"
  with "$v" .gpu/run-on-gpu.sh .gpu/bench_runtime --gemm-sweep --w4-only --device cuda --out "/tmp/sweep-$v" \
    2> "$L/logs/$v.sweep.log" | tee "$L/logs/$v.sweep.txt"
  grep -E "W4A16 checks|FAIL|note:" "$L/logs/$v.sweep.log" | head -8
  pack
done
[ -n "${SKIP_ENGINE:-}" ] && exit 0
source scripts/gpu/random_1_2b.sh
run .gpu/exaone-compress quantize --model "$RANDOM_1_2B" --device cuda --scheme w4a16 --method rtn --out /tmp/r-w4a16 --overwrite 2>&1 | tail -1
for v in ${ENGINE_VARIANTS:-${variants[@]}}; do
  echo "== $v: decode engines"
  with "$v" .gpu/run-on-gpu.sh .gpu/bench_runtime --model "$RANDOM_1_2B" --w4a16 /tmp/r-w4a16 --device cuda \
    --prefill 1x128 --decode-batches "${DECODE_BATCHES:-1,16}" --new-tokens 32 --warmup 2 --repeats 5 \
    --out "/tmp/engine-$v" > "$L/logs/$v.engine.log" 2>&1
  { grep -E "^\| (decode_ms|metric|---)" "/tmp/engine-$v/README.md"; grep -E "^\| (decode engine|W4A16)" "/tmp/engine-$v/README.md"
    tail -5 "$L/logs/$v.engine.log"; } | tee "$L/logs/$v.engine.txt"
  cp "/tmp/engine-$v/README.md" "$L/logs/$v.engine.md" 2>/dev/null
  pack
done
