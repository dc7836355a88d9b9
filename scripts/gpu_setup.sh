# Sourced by the gpu_session*.sh scripts on the GPU machine: install the carried wheels
# (.whl/, if carried) into /tmp/site and unpack the carried, xz-compressed CUDA binaries (.gpu/).
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
python3 -c "import lzma,glob,os
for f in glob.glob('.gpu/*.xz'):
    open(f[:-3],'wb').write(lzma.open(f).read()); os.remove(f)" || exit 1
chmod +x .gpu/*
