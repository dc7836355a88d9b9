#!/usr/bin/env bash
# Third GPU-machine session: our reader on llm-compressor 0.9.0.2 checkpoints.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" /tmp/llmc
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -c "import lzma,glob,os
for f in glob.glob('.gpu/*.xz'):
    open(f[:-3],'wb').write(lzma.open(f).read()); os.remove(f)" || exit 1
chmod +x .gpu/*
python3 -c "import llmcompressor, datasets; print('llmcompressor', llmcompressor.__version__, 'datasets', datasets.__version__)" 2>&1 | tail -2
python3 scripts/llmc_reader_check.py --bin .gpu/exaone-compress --runner .gpu/run-on-gpu.sh --out "$OUT" 2>&1 | grep -E '^\{|Error|error' | tail -12
