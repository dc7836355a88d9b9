#!/usr/bin/env bash
# Executes the notebooks headless with the Rust kernel and writes their outputs in place.
# Needs Jupyter and evcxr_jupyter (a ~30-minute build on 2 cores, so CI does not run this):
#   pip install jupyter nbconvert && cargo install evcxr_jupyter && evcxr_jupyter --install
set -euo pipefail
cd "$(dirname "$0")"
for nb in *.ipynb; do
  jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1800 "$nb"
done
