#!/usr/bin/env bash
# The W8A8 GEMMs checked and timed (bench_runtime --gemm-sweep, src/study/bench/gemm.rs): every
# kernel (ours int8 / fp8, cuBLAS int8 + epilogue, cuBLASLt fp8) against an f32 product of the
# same 8-bit operands on the 1.2B's four Linear shapes at M = 1 … 16384 and awkward M/N/K, then µs
# and TOP/s of each beside cuBLAS bf16; then the W4A16 routes the same way (gemm_w4.rs) →
# $OUT/gemm/results.{parquet,csv}, the tables in $OUT/gemm_sweep.txt, every check in
# $OUT/gemm_checks.log (SWEEP_FLAGS=--w8a8-only: the W8A8 part alone). Then (SKIP_SMOKE=1 skips
# it) the default model's W8A8 RTN variant through the candle forward's Int8Linear (now on our
# GEMM) and the decode-engine checks: bench_runtime's smoke run.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
run() { .gpu/run-on-gpu.sh "$@"; }
nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -1 | tee "$OUT/gpu.txt"
run .gpu/bench_runtime --gemm-sweep ${SWEEP_FLAGS:-} --device cuda --out "$OUT/gemm" 2> "$OUT/gemm_checks.log" | tee "$OUT/gemm_sweep.txt"
status=${PIPESTATUS[0]}
echo "checks: $(grep -c ' → ok$' "$OUT/gemm_checks.log") ok, $(grep -c ' → FAIL$' "$OUT/gemm_checks.log") failed (exit $status)"
grep ' → FAIL$' "$OUT/gemm_checks.log" | head -20
tail -3 "$OUT/gemm_checks.log"
# the device tool returns at most 8 files: the sweep travels as one archive
tar -C "$OUT" -cf "$OUT/gemm.tar" gemm gemm_checks.log gemm_sweep.txt && rm -rf "$OUT/gemm"
[ -n "${SKIP_SMOKE:-}" ] && exit $status
run .gpu/exaone-compress quantize --model data/default-model --device cpu --scheme w8a8 --method rtn --out /tmp/d-w8a8 --overwrite 2>&1 | tail -1
run .gpu/bench_runtime --model data/default-model --w8a8 /tmp/d-w8a8 --device cuda \
  --prefill 1x64,2x300 --decode-batches 1,3 --new-tokens 12 --warmup 1 --repeats 2 --out /tmp/smoke 2>&1 | grep -E "^check|W8A8|Error|error" | tail -30
exit $status
