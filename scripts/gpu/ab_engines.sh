#!/usr/bin/env bash
# Two builds timed side by side on one GPU, to tell a change's effect from the machine's drift:
# the binaries of .gpu/ (this tree's) and, where carried, .gpu/base/bench_runtime.xz (another
# commit's; the carried tree and binaries must fit 64 MiB, so often it cannot travel: then the
# bf16 engine, which a W4A16 change leaves alone, is the run's control). First, unless SKIP_SWEEP=1, this tree's
# W4A16 GEMM sweep at EXAONE_W4_MS (default 1,16) with every tile and split count
# (EXAONE_W4_TUNE=1) and all its checks; then the decode engines (bf16 and W4A16 RTN of a
# random-weight EXAONE-4.0-1.2B shape, with their numerical checks) at DECODE_BATCHES (default
# 1,16), base (if any) and this tree alternately, ROUNDS times (default 1; ≈ 2 minutes per run on an
# H200). VARIANT_ENV="NAME=VALUE …" adds this tree's binary run with those variables set (a
# run-time switch such as EXAONE_COMPRESS_PDL=0: an A/B with no second binary to carry).
# Tables on stdout; every log in $OUT/logs.tar.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
versions=(tree)
if [ -f .gpu/base/bench_runtime.xz ]; then
  xz -d .gpu/base/bench_runtime.xz && chmod +x .gpu/base/bench_runtime && versions=(base tree) || exit 1
fi
[ -n "${VARIANT_ENV:-}" ] && versions=(variant "${versions[@]}")
nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -1 | tee "$OUT/gpu.txt"
L=/tmp/ab_logs; rm -rf $L; mkdir -p $L/logs
pack() { tar -C $L -cf "$OUT/logs.tar" logs; }
if [ -z "${SKIP_SWEEP:-}" ]; then
  echo "== W4A16 sweep (this tree)"
  EXAONE_W4_MS="${EXAONE_W4_MS:-1,16}" EXAONE_W4_TUNE=1 .gpu/run-on-gpu.sh .gpu/bench_runtime --gemm-sweep --w4-only \
    --device cuda --out /tmp/sweep 2> $L/logs/sweep.log | tee $L/logs/sweep.txt
  grep -E "W4A16 checks|FAIL|note:" $L/logs/sweep.log | head -8
  cp /tmp/sweep/results.csv $L/logs/sweep.csv 2>/dev/null
  pack
fi
source scripts/gpu/random_1_2b.sh
.gpu/run-on-gpu.sh .gpu/exaone-compress quantize --model "$RANDOM_1_2B" --device cuda --scheme w4a16 --method rtn \
  --out /tmp/r-w4a16 --overwrite 2>&1 | tail -1
for round in $(seq "${ROUNDS:-1}"); do
  for v in "${versions[@]}"; do
    bin=.gpu/bench_runtime; [ $v = base ] && bin=.gpu/base/bench_runtime
    envs=(); [ $v = variant ] && read -ra envs <<< "$VARIANT_ENV"
    echo "== $v${envs[*]:+ (${envs[*]})}, round $round: decode engines"
    env "${envs[@]}" .gpu/run-on-gpu.sh $bin --model "$RANDOM_1_2B" --w4a16 /tmp/r-w4a16 --device cuda --prefill 1x128 \
      --decode-batches "${DECODE_BATCHES:-1,16}" --new-tokens 32 --warmup 2 --repeats 5 \
      --out "/tmp/engine-$v-$round" > "$L/logs/$v-$round.engine.log" 2>&1
    { grep -E "^\| (decode_ms|metric|---)" "/tmp/engine-$v-$round/README.md"
      grep -E "^\| (decode engine|W4A16|check)" "/tmp/engine-$v-$round/README.md"
      grep -E "FAIL|graph replay" "$L/logs/$v-$round.engine.log"; tail -2 "$L/logs/$v-$round.engine.log"
    } | tee "$L/logs/$v-$round.engine.txt"
    cp "/tmp/engine-$v-$round/README.md" "$L/logs/$v-$round.engine.md" 2>/dev/null
    pack
  done
done
