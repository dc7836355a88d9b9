#!/usr/bin/env bash
# Third GPU-machine session: our reader on llm-compressor 0.9.0.2 checkpoints.
set -uo pipefail
source scripts/gpu_setup.sh
mkdir -p /tmp/llmc
python3 -c "import llmcompressor, datasets; print('llmcompressor', llmcompressor.__version__, 'datasets', datasets.__version__)" 2>&1 | tail -2
python3 scripts/llmc_reader_check.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | grep -E '^\{|Error|error' | tail -12
