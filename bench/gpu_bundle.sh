#!/usr/bin/env bash
# Prepare, in .gpu/ (ignored by git), what bench/gpu_check.sh needs on a GPU machine that has only
# Python and torch, and no internet:
#   .gpu/crops   a crop store of real BBBC021 cells small enough to travel (default 1,800 cells,
#                about 50 MB)
#   .gpu/wheels  a wheel of cellclr and of every package it needs beyond torch (and pytest), for
#                the target machine's Python, pinned to the versions this checkout tests with
#                (bench/bundle_requirements.py)
#
#   bench/gpu_bundle.sh [--cells 1800] [--python-version X.Y] [--glibc 2.28] [--arch x86_64]
#                       [--check]
#
# --python-version: the GPU machine's Python (default: that of $PYTHON, else .venv/bin/python)
# --glibc, --arch: its C library and processor: manylinux wheels up to that glibc are taken
# --check: install the bundle into a fresh venv here, offline (pip install --no-index), next to
#   the torch this machine has, and run bench/gpu_check.sh --smoke in it (same Python only)
#
# On the GPU machine:
#   python -m venv --system-site-packages env        # sees the machine's torch
#   env/bin/pip install --no-index --find-links .gpu/wheels cellclr pytest
#   PYTHON=env/bin/python bench/gpu_check.sh --crops .gpu/crops
# (or bench/gpu_check.sh --crops .gpu/crops --wheels .gpu/wheels, which does that in /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
cells=1800 pyver="" glibc=2.28 arch=x86_64 check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cells) cells=$2; shift 2 ;;
    --python-version) pyver=$2; shift 2 ;;
    --glibc) glibc=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --check) check=1; shift ;;
    *) echo "gpu_bundle: unknown argument $1" >&2; exit 2 ;;
  esac
done
here_ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pyver=${pyver:-$here_ver}
src=${CELLCLR_BBBC021:-../shared/data/bbbc021}/singlecell
rm -rf .gpu && mkdir -p .gpu/wheels

echo "== crops: $cells real cells"
"$py" - "$src" "$cells" <<'PY'
import sys
import numpy as np
import pandas as pd
src, n = sys.argv[1], int(sys.argv[2])
cells = pd.read_csv(f"{src}/cells.csv")
pick = np.sort(np.random.default_rng(0).choice(len(cells), min(n, len(cells)), replace=False))
with np.load(f"{src}/crops.npz") as npz:
    np.savez(".gpu/subset.npz", images=npz["images"][pick])
cells.iloc[pick].to_csv(".gpu/subset.csv", index=False)
PY
"$py" -m cellclr import-crops --images .gpu/subset.npz --cells .gpu/subset.csv \
  --channels DNA,Tubulin,Actin --out .gpu/crops
rm .gpu/subset.npz .gpu/subset.csv

platforms=""  # every manylinux tag the machine accepts (pip takes each one literally)
for minor in $(seq 17 "${glibc#2.}"); do platforms+=" --platform manylinux_2_${minor}_$arch"; done
platforms+=" --platform manylinux2014_$arch"
echo "== wheels for Python $pyver (glibc $glibc, $arch)"
"$py" -m pip wheel -q --no-deps -w .gpu/wheels .  # cellclr itself (builds in isolation: online)
"$py" bench/bundle_requirements.py --python-version "$pyver" > .gpu/requirements.txt
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp $platforms -d .gpu/wheels -r .gpu/requirements.txt
echo "$(ls .gpu/wheels | wc -l) wheels; pins in .gpu/requirements.txt"
du -sh .gpu

if [ $check = 1 ]; then
  if [ "$pyver" != "$here_ver" ]; then
    echo "gpu_bundle: --check needs the bundle for this Python ($here_ver)" >&2
    exit 2
  fi
  venv=$(mktemp -d /tmp/cellclr-bundle-check.XXXXXX)
  echo "== check: a fresh venv in $venv, torch as this machine has it, then the bundle offline"
  base=$("$py" -c 'import sys; print(sys._base_executable)')
  "$base" -m venv "$venv"
  torch_version=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
  "$venv/bin/pip" install -q "torch==$torch_version"
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$venv/bin/pip" install -q --no-index \
    --find-links .gpu/wheels cellclr pytest
  "$venv/bin/pip" check
  PYTHON="$venv/bin/python" bench/gpu_check.sh --crops .gpu/crops --smoke
fi
