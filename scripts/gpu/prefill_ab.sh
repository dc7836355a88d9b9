#!/usr/bin/env bash
# Prefill (forward + log-softmax) of a random-weight EXAONE-4.0-1.2B shape and its W8A8 and FP8
# RTN variants on the candle forward, this tree's binaries run once per VARIANT_ENVS entry
# ("-" for none; e.g. VARIANT_ENVS="- EXAONE_COMPRESS_FLASH_ROWS=128": an A/B of a run-time switch
# with no second binary), ROUNDS times alternately (default 1). Each run checks every kernel
# first (bench_runtime fails on a wrong one) and times PREFILL (default 8x2048) with where its
# time goes (layers, lm_head + log-softmax, the attention kernel), decode batch 1
# only. Before them, unless SKIP_CHECKS=1, the W8A8 numerical checks alone (GEMMs, quantizers and
# the fused quantizing epilogues; ~30 s). ≈ 2 minutes per run on an H200. Summary on stdout; every
# log and report in $OUT/logs.tar.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -1 | tee "$OUT/gpu.txt"
L=/tmp/ab_logs; rm -rf $L; mkdir -p $L/logs
if [ -z "${SKIP_CHECKS:-}" ]; then
  .gpu/run-on-gpu.sh .gpu/bench_runtime --gemm-sweep --checks-only --device cuda --out /tmp/checks \
    > $L/logs/w8a8_checks.log 2>&1
  echo "W8A8 checks: exit $?"
  grep -E "FAIL|no bf16 rows|W8A8 checks" $L/logs/w8a8_checks.log | head -12
fi
source scripts/gpu/random_1_2b.sh
for s in w8a8 fp8; do
  .gpu/run-on-gpu.sh .gpu/exaone-compress quantize --model "$RANDOM_1_2B" --device cuda --scheme $s --method rtn \
    --out /tmp/r-$s --overwrite 2>&1 | tail -1
done
read -ra envs_list <<< "${VARIANT_ENVS:--}"
for round in $(seq "${ROUNDS:-1}"); do
  for i in "${!envs_list[@]}"; do
    e="${envs_list[$i]}"; envs=(); [ "$e" != - ] && read -ra envs <<< "${e//,/ }"
    tag="r${round}-v$i"
    echo "== round $round, ${envs[*]:-defaults}"
    env "${envs[@]}" .gpu/run-on-gpu.sh .gpu/bench_runtime --model "$RANDOM_1_2B" --w8a8 /tmp/r-w8a8 --fp8 /tmp/r-fp8 \
      --device cuda --prefill "${PREFILL:-8x2048}" --decode-batches 1 --new-tokens 8 --warmup 2 --repeats 5 \
      --out $L/logs/$tag --overwrite 2> $L/logs/$tag.log
    echo "exit $?"
    grep -E "prefill .*layers|FAIL|failed|error|check (log-softmax|flash)" $L/logs/$tag.log | head -24
    grep -E "^\| prefill_tok_s|^\| (candle|engine)" $L/logs/$tag/README.md | cut -c1-400 | head -12
    tar -C $L -cf "$OUT/logs.tar" logs
  done
done
