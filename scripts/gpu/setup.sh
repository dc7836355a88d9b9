# Sourced first by every script in scripts/gpu/ on the GPU machine (`source "$(dirname "$0")/setup.sh"`):
# moves to the repository root (every path below and in the scripts is relative to it), installs the
# carried wheels (.whl/, if carried) into /tmp/site and unpacks the carried, xz-compressed (alone or tarred together) CUDA
# binaries (.gpu/: the release binaries and run-on-gpu.sh).
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
# the carried binaries live in .gpu/, away from the data they were built beside: name it
export EXAONE_COMPRESS_DATA="$PWD/data"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
# a pure-Python wheel may travel unpacked as NAME.tar.xz (4× smaller than its zip, for the 64 MiB
# a device call carries): its files go where pip --target puts them
if ls .whl/*.tar.xz >/dev/null 2>&1; then
  mkdir -p /tmp/site && for t in .whl/*.tar.xz; do tar -xJf "$t" -C /tmp/site || exit 1; done
  export PYTHONPATH=/tmp/site
fi
# (several binaries in one .tar.xz share their common code in the dictionary: ~40% smaller)
python3 -c "import lzma,glob,os,tarfile
for f in glob.glob('.gpu/*.tar.xz'):
    tarfile.open(f).extractall('.gpu'); os.remove(f)
for f in glob.glob('.gpu/*.xz'):
    open(f[:-3],'wb').write(lzma.open(f).read()); os.remove(f)" || exit 1
chmod +x .gpu/*
