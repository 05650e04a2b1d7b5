#!/usr/bin/env bash
# Prepare what bench/gpu_check.sh needs on a GPU machine that has no internet, in .gpu/ (ignored
# by git): a crop store of real BBBC021 cells small enough to travel (default 1,800 cells,
# about 50 MB) and wheels of the dependencies such a machine may lack, for its Python.
#
#   bench/gpu_bundle.sh [--cells 1800] [--python-version 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
cells=1800 pyver=3.12
while [ $# -gt 0 ]; do
  case "$1" in
    --cells) cells=$2; shift 2 ;;
    --python-version) pyver=$2; shift 2 ;;
    *) echo "gpu_bundle: unknown argument $1" >&2; exit 2 ;;
  esac
done
src=${CELLCLR_BBBC021:-../shared/data/bbbc021}/singlecell
py=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/wheels
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
for pkg in pydantic pydantic-core annotated-types typing-inspection tomli-w; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/wheels "$(grep -iE "^$pkg==" <("$py" -m pip freeze) || echo "$pkg")"
done
du -sh .gpu
