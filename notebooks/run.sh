#!/usr/bin/env bash
# Executes the notebooks headless with the Rust kernel and writes their outputs in place.
# Needs Jupyter and evcxr_jupyter (a ~30-minute build on 2 cores, so CI does not run this):
#   pip install jupyter nbconvert && cargo install evcxr_jupyter && evcxr_jupyter --install
set -euo pipefail
cd "$(dirname "$0")"
# one evcxr build directory for every notebook: the crate and its dependencies (opt-level 2)
# compile once (~25 min on 2 cores), not once per notebook
export EVCXR_TMPDIR="${EVCXR_TMPDIR:-${TMPDIR:-/tmp}/exaone-compress-evcxr}"
mkdir -p "$EVCXR_TMPDIR"
for nb in *.ipynb; do
  start=$(date +%s)
  jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 "$nb"
  echo "$nb: executed in $(( $(date +%s) - start )) s"
done
