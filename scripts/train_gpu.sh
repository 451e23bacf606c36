#!/usr/bin/env bash
# The GPU recipe (docs/training.md, "Training on a GPU machine"), from the repository root:
#   scripts/train_gpu.sh pack CONFIG [key=value...]   here: .gpu/run.tar (at most 60 MB)
#   scripts/train_gpu.sh run BUDGET_S [key=value...]  on the GPU machine: $OUT (or .gpu/out)
#                                                     gets model.ckpt, summary.json, metrics.csv
# Then, here: quill stage .gpu/out/model.ckpt --out models/NAME
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/train_gpu.sh pack CONFIG [overrides] | run BUDGET_S [overrides]"
command=${1:-}
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
shift
case "$command" in
  pack)
    config=$1
    shift
    PYTHONPATH=src .venv/bin/python -m quill.training.gpu_recipe pack "$config" .gpu/run.tar "$@"
    ;;
  run)
    budget=$1
    shift
    # the device copies the tree without its parent: stop git at this folder
    GIT_CEILING_DIRECTORIES=$(dirname "$PWD")
    export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MPLBACKEND=Agg GIT_CEILING_DIRECTORIES
    nvidia-smi -L || true
    python3 -m quill.training.gpu_recipe run .gpu/run.tar "$budget" "${OUT:-.gpu/out}" "$@"
    ;;
  *)
    echo "$usage" >&2
    exit 2
    ;;
esac
