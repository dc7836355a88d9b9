#!/usr/bin/env bash
# Our reader on llm-compressor 0.9.0.2 checkpoints (scripts/llmc_reader_check.py): llm-compressor
# quantizes the default model; `exaone-compress dequant` must give exactly compressed-tensors'
# weights → reports/conformance/. Carry .whl/ (with llm-compressor and datasets) and .gpu/.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
mkdir -p /tmp/llmc
python3 -c "import llmcompressor, datasets; print('llmcompressor', llmcompressor.__version__, 'datasets', datasets.__version__)" 2>&1 | tail -2
python3 scripts/llmc_reader_check.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | grep -E '^\{|Error|error' | tail -12
