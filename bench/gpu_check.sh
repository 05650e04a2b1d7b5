#!/usr/bin/env bash
# One command for a CUDA machine that has torch installed (any version cellclr supports) and no
# internet: installs cellclr without dependencies into a scratch folder, then runs the tests
# marked `cuda`, 200 training steps of ResNet-18 and ResNet-50 at 96 px (bf16, channels-last)
# on a crop store, embedding throughput, and a 1-GPU torchrun (NCCL) training; ends with one
# summary table. About 3-5 minutes on an H200.
#
#   bench/gpu_check.sh --crops STORE [--wheels DIR] [--steps 200] [--smoke]
#
# --wheels DIR: wheels of packages the machine lacks (e.g. pydantic, tomli-w), installed from
#   DIR without an index. bench/gpu_bundle.sh prepares DIR and a real-crop STORE (.gpu/).
# --smoke: a few steps, on whatever device there is (checks this script on a CPU machine).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
crops="" wheels="" steps=200 smoke=0 device=cuda limit="" batch=256
while [ $# -gt 0 ]; do
  case "$1" in
    --crops) crops=$(realpath "$2"); shift 2 ;;
    --wheels) wheels=$(realpath "$2"); shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --smoke) smoke=1 steps=2 device=auto limit="--max-cells 128" batch=32; shift ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$crops" ] && [ -f "$crops/store.json" ] || { echo "gpu_check: --crops STORE is needed" >&2; exit 2; }
py=${PYTHON:-python3}
scratch=$(mktemp -d /tmp/cellclr-gpu-check.XXXXXX)
summary=$scratch/summary.tsv
results=$scratch/status.tsv
export PYTHONUNBUFFERED=1
step() { echo; echo "== $*"; }
record() { printf '%s\t%s\n' "$1" "$2" >> "$results"; }

step "install cellclr (no dependencies) into $scratch/site"
"$py" -m pip install -q --no-deps --no-build-isolation --no-index --target "$scratch/site" "$here" \
  || { echo "gpu_check: pip could not install cellclr" >&2; exit 1; }
if [ -n "$wheels" ]; then
  "$py" -m pip install -q --no-deps --no-index --target "$scratch/site" "$wheels"/*.whl || exit 1
fi
export PYTHONPATH="$scratch/site"
cd "$scratch"  # import cellclr from the scratch install, not from the checkout
"$py" - <<PY || exit 1
import importlib, torch
missing = [m for m in ("numpy", "pandas", "pyarrow", "scipy", "skimage", "tifffile", "tqdm",
                       "pydantic", "tomli_w", "jinja2", "matplotlib", "pytest")
           if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"gpu_check: missing packages {missing}: give them with --wheels DIR")
import cellclr
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"cellclr {cellclr.__version__} from {cellclr.__file__}; torch {torch.__version__}; GPU: {gpu}")
if "$device" == "cuda" and not torch.cuda.is_available():
    raise SystemExit("gpu_check: no CUDA GPU here (use --smoke to check the script on a CPU)")
PY

step "tests marked cuda"
(cd "$here" && "$py" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py -rs)
record "tests -m cuda" "$([ $? -eq 0 ] && echo passed || echo FAILED)"

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
    else:
        print(f"{'embed':6s} {r[1]:9s} {r[2]:>3s} {r[3]:>5s} {r[4]:>9s}")
PY
grep -q FAILED "$results" && exit 1
exit 0
