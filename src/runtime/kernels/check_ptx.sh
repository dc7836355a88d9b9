#!/usr/bin/env bash
# nvcc-only sanity check of the runtime's kernels, no Rust build needed: every .cu file here must
# compile to PTX for compute_80 (gemm_fp8.cu: compute_89; the *_wgmma.cu units: compute_90a) with the
# flags build.rs uses. Needs a CUDA toolkit's nvcc on PATH.
#     src/runtime/kernels/check_ptx.sh [OUT_DIR]     # OUT_DIR keeps the .ptx files
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
status=0
for cu in "$here"/*.cu; do
  name="$(basename "$cu" .cu)"
  arch=compute_80; [ "$name" = gemm_fp8 ] && arch=compute_89
  case "$name" in *_wgmma) arch=compute_90a ;; esac
  if nvcc --ptx -arch=$arch -O3 -std=c++17 -o "$out/$name.ptx" "$cu"; then
    echo "ok   $name.cu: $(grep -c '^\.visible \.entry' "$out/$name.ptx") kernels"
  else
    echo "FAIL $name.cu" >&2
    status=1
  fi
done
exit $status
