#!/usr/bin/env bash
# One command for a CUDA machine that has Python and torch (any version cellclr supports) and no
# internet: the tests marked `cuda`, 200 training steps of ResNet-18 and ResNet-50 at 96 px (bf16,
# or fp16 on GPUs without bf16; channels-last) on a crop store, the peak memory of a step at each
# shipped GPU config's batch size (the shipped *-gpu configs), embedding throughput, and a 1-GPU
# torchrun (NCCL) training; ends with one summary table. About 3-5 minutes on an H100.
#
#   bench/gpu_check.sh --crops STORE [--wheels DIR] [--steps 200] [--smoke]
#
# --wheels DIR: the bundle from bench/gpu_bundle.sh (.gpu/wheels): cellclr and its dependencies
#   are installed from DIR, offline, into a venv in /tmp that sees $PYTHON's torch. Without
#   it, $PYTHON (default python3) must have cellclr installed (pip install --no-index
#   --find-links .gpu/wheels cellclr pytest; without pytest the cuda tests are not run).
# --smoke: a few steps of small models, on whatever device there is (checks this script on a
#   CPU machine).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
crops="" wheels="" steps=200 smoke=0 device=cuda limit="" batch=256 memory_batch=""
while [ $# -gt 0 ]; do
  case "$1" in
    --crops) crops=$(realpath "$2"); shift 2 ;;
    --wheels) wheels=$(realpath "$2"); shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --smoke) smoke=1 steps=2 device=auto limit="--max-cells 128" batch=32 memory_batch="--batch 8"
      shift ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$crops" ] || [ ! -f "$crops/store.json" ]; then
  echo "gpu_check: --crops STORE is needed" >&2
  exit 2
fi
py=${PYTHON:-python3}
scratch=$(mktemp -d /tmp/cellclr-gpu-check.XXXXXX)
summary=$scratch/summary.tsv
results=$scratch/status.tsv
export PYTHONUNBUFFERED=1
step() { echo; echo "== $*"; }
record() { printf '%s\t%s\n' "$1" "$2" >> "$results"; }

if [ -n "$wheels" ]; then
  step "install cellclr from $wheels, offline, into $scratch/env (beside the machine's torch)"
  if "$py" -m venv --without-pip "$scratch/env"; then
    # the venv sees $PYTHON's packages (its torch, its pip) after its own
    "$py" -c 'import site; print("\n".join(site.getsitepackages()))' > "$scratch/parent.pth"
    mv "$scratch/parent.pth" "$("$scratch/env/bin/python" -c \
      'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
    PIP_CONFIG_FILE=/dev/null "$scratch/env/bin/python" -m pip install -q --no-index \
      --find-links "$wheels" cellclr pytest \
      || { echo "gpu_check: pip could not install from $wheels" >&2; exit 1; }
    py=$scratch/env/bin/python
  else  # no venv module (a distribution's bare Python): the wheels as they are, beside it
    echo "gpu_check: no venv here: installing the wheels into $scratch/site instead"
    "$py" -m pip install -q --no-deps --no-index --target "$scratch/site" "$wheels"/*.whl || exit 1
    export PYTHONPATH="$scratch/site"
  fi
fi
cd "$scratch"  # import the installed cellclr, not the checkout
"$py" - <<PY || exit 1
import importlib, torch
missing = [m for m in ("numpy", "pandas", "pyarrow", "scipy", "skimage", "tifffile", "tqdm",
                       "pydantic", "tomli_w", "jinja2", "matplotlib", "cellclr")
           if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"gpu_check: missing packages {missing}: give the bundle with --wheels DIR")
import pydantic, cellclr  # pydantic refuses a pydantic-core of another version here
from cellclr.learning.device import precision
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
kind = precision(torch.device("cuda")) if torch.cuda.is_available() else "fp32"
print(f"cellclr {cellclr.__version__} from {cellclr.__file__}; torch {torch.__version__}; "
      f"pydantic {pydantic.__version__}; GPU: {gpu} ({kind})")
if "$device" == "cuda" and not torch.cuda.is_available():
    raise SystemExit("gpu_check: no CUDA GPU here (use --smoke to check the script on a CPU)")
PY

step "tests marked cuda"
if "$py" -c "import pytest" 2>/dev/null; then
  (cd "$here" && "$py" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py -rs)
  record "tests -m cuda" "$([ $? -eq 0 ] && echo passed || echo FAILED)"
else
  record "tests -m cuda" "not run: no pytest (pip install --no-index --find-links WHEELS pytest)"
fi

for arch in resnet18 resnet50; do
  step "training steps: $arch, 96 px, batch $batch, bf16 + channels-last"
  "$py" "$here/bench/train_step.py" --crops "$crops" --steps "$steps" --summary "$summary" \
    --set model.arch="'$arch'" --set model.stem="'small2'" --set augment.size=96 \
    --set train.batch_size=$batch --set train.device="'$device'" --set train.threads=0
  record "train $arch" "$([ $? -eq 0 ] && echo ok || echo FAILED)"
  step "embedding throughput: $arch"
  "$py" "$here/bench/embed_rate.py" --crops "$crops" --summary "$summary" \
    --set model.arch="'$arch'" --set augment.size=96 --set embed.batch_size=1024 \
    --set embed.device="'$device'" $limit
  record "embed $arch" "$([ $? -eq 0 ] && echo ok || echo FAILED)"
done

for config in "$here"/src/cellclr/configs/*-gpu.toml; do
  name=$(basename "$config" .toml)
  step "peak memory of a training step: $name, its whole batch on one GPU"
  "$py" "$here/bench/peak_memory.py" --config "$config" --summary "$summary" $memory_batch \
    --set train.device="'$device'"
  record "memory $name" "$([ $? -eq 0 ] && echo ok || echo FAILED)"
done

step "torchrun, 1 process, one epoch"
"$py" -m torch.distributed.run --standalone --nproc-per-node 1 -m cellclr train \
  --crops "$crops" --out "$scratch/ddp" --set train.epochs=1 --set train.device="'$device'" \
  --set model.arch="'resnet18'" --set augment.size=96 --set train.batch_size=$batch \
  $([ $smoke = 1 ] && echo "--set model.arch='resnet_small' --set augment.size=32")
"$py" - "$scratch/ddp/stage.json" >> "$results" <<'PY'
import json, sys
try:
    m = json.load(open(sys.argv[1]))
    print(f"torchrun 1 process\tok: {m['processes']} process, backend {m['backend']}, "
          f"device {m['device']}, {m['seconds']} s, loss {m['final_loss']}")
except (OSError, KeyError, ValueError) as e:
    print(f"torchrun 1 process\tFAILED ({e})")
PY

step "summary"
"$py" - "$summary" "$results" <<'PY'
import sys
print(f"{'check':28s} result")
for line in open(sys.argv[2]):
    name, result = line.rstrip("\n").split("\t", 1)
    print(f"{name:28s} {result}")
rows = [line.split("\t") for line in open(sys.argv[1])] if open(sys.argv[1], "a") else []
print()
print(f"{'stage':6s} {'arch':9s} {'px':>3s} {'batch':>5s} {'images/s':>9s} {'step/bound':>10s}"
      f" {'data %':>6s} {'TFLOP/s':>8s} {'bf16 peak':>9s}")
for r in rows:
    r = [v.strip() for v in r]
    if r[0] == "train":
        print(f"{'train':6s} {r[1]:9s} {r[2]:>3s} {r[3]:>5s} {r[4]:>9s} {r[5]:>10s} {r[6]:>6s}"
              f" {r[7]:>8s} {r[8]:>9s}")
    elif r[0] == "embed":
        print(f"{'embed':6s} {r[1]:9s} {r[2]:>3s} {r[3]:>5s} {r[4]:>9s}")
memory = [[v.strip() for v in r] for r in rows if r[0] == "memory"]
if memory:
    print()
    print(f"{'peak memory of a step':24s} {'arch':9s} {'px':>3s} {'batch':>5s} {'GB':>6s}")
    for r in memory:
        print(f"{r[1]:24s} {r[2]:9s} {r[3]:>3s} {r[4]:>5s} {r[5]:>6s} {r[6]}")
PY
grep -q FAILED "$results" && exit 1
exit 0
