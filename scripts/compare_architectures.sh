#!/usr/bin/env bash
# Issue 7's architecture comparison: the CTC line model (configs/default.yaml) and the
# reference system's LineCNNTransformer (configs/line_cnn_transformer_hooker.yaml) trained
# from scratch on the same data, with the same seed and the same sample budget, into one
# MLflow experiment; then the table of both runs (val_cer_hooker is the number to compare).
# Usage: scripts/compare_architectures.sh [EPOCHS]   (epochs of 6,000 samples; default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
quill=.venv/bin/quill
epochs="${1:-3}"
common=(--max-epochs "$epochs" --experiment architecture-comparison
    trainer.max_time=null tracking.test_after_fit=false)

"$quill" train --config configs/default.yaml --run-name ctc_line "${common[@]}"
"$quill" train --config configs/line_cnn_transformer_hooker.yaml \
    --run-name line_cnn_transformer "${common[@]}"
"$quill" runs list -e architecture-comparison
