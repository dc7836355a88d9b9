#!/usr/bin/env bash
# Executes the notebooks headless and writes their outputs in place.
# With Jupyter and evcxr_jupyter installed (a ~30-minute build on 2 cores, so CI does not run this):
#   pip install jupyter nbconvert && cargo install evcxr_jupyter && evcxr_jupyter --install
# it runs them in the Rust kernel; without them (an offline machine) it runs the same cells with
# scripts/run_notebooks.py, which compiles them in order as one program with evcxr's semantics.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v jupyter >/dev/null || ! command -v evcxr_jupyter >/dev/null; then
  echo "no jupyter/evcxr_jupyter here: running the cells with scripts/run_notebooks.py" >&2
  exec python3 ../scripts/run_notebooks.py "$@"
fi
# one evcxr build directory for every notebook: the crate and its dependencies (opt-level 2)
# compile once (~25 min on 2 cores), not once per notebook
export EVCXR_TMPDIR="${EVCXR_TMPDIR:-${TMPDIR:-/tmp}/exaone-compress-evcxr}"
mkdir -p "$EVCXR_TMPDIR"
for nb in *.ipynb; do
  start=$(date +%s)
  jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 "$nb"
  echo "$nb: executed in $(( $(date +%s) - start )) s"
done
