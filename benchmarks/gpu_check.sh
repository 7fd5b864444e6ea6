#!/usr/bin/env bash
# The paper-scale GPU check of issue 11, as one prepared script for a machine with one NVIDIA GPU and ~15 minutes:
#   1. the CUDA-only tests (batched augmentation on the GPU vs the CPU, inputs kept on the GPU, pinned memory);
#   2. bench_paper_shapes.py at batch 16: loader alone (batched on the GPU and MONAI on the CPU), bare step, real
#      loop, ratio real/bare (target >= 0.9), peak GPU memory;
#   3. bench_paper_fold.py: one fold of each model at the paper profile's settings for as many epochs as fit in
#      the budget: s/epoch, peak GPU memory, projected wall time of 4 folds x 300 epochs (target <= 30 min);
#   4. (DRY_RUN=1 only) the paper-shape dry run on the GPU (tests/test_dry_run.py: AMP, GradScaler, channels_last,
#      both Grad-CAMs): about 7 more minutes, so a second call of its own within a 15-minute device budget.
# Steps 1-3 take at most 10 minutes (their timeouts: 120 + 180 + 300 s), one device call.
# Every step's output is kept under $OUT (default /tmp/her2lib_gpu); a failing step does not stop the next.
#
# Usage (repository root):  OUT=/some/dir PY=python3 bash benchmarks/gpu_check.sh
# Python packages: torch, timm, monai, scipy, scikit-learn, pandas, statsmodels (+ papermill, nbformat, nibabel,
# SimpleITK for step 4). On a machine without network, bring the missing ones as wheels first.
set -u
OUT=${OUT:-/tmp/her2lib_gpu}
PY=${PY:-.venv/bin/python}
FOLD_BUDGET_S=${FOLD_BUDGET_S:-100}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() { echo "== $1 ($(date -u +%H:%M:%S))" | tee -a "$OUT/summary.txt"; }

step "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; lscpu | grep 'Model name'; \
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } 2>&1 | tee -a "$OUT/summary.txt"

step "1. CUDA tests"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_batch_augment.py tests/test_train_speed_options.py \
  2>&1 | tail -5 | tee -a "$OUT/summary.txt"

step "2. bench_paper_shapes.py, batch 16"
timeout 180 $PY benchmarks/bench_paper_shapes.py --steps 6 --rounds 3 2>&1 | tee "$OUT/bench_paper_shapes.txt" \
  | grep -E "^(device|dl_|target)" | tee -a "$OUT/summary.txt"

step "3. bench_paper_fold.py, ${FOLD_BUDGET_S} s per model"
timeout $((2 * FOLD_BUDGET_S + 100)) $PY benchmarks/bench_paper_fold.py --epochs 300 --budget-s "$FOLD_BUDGET_S" \
  2>&1 | tee "$OUT/bench_paper_fold.txt" | grep -E "^(device|dl_|projected)" | tee -a "$OUT/summary.txt"

if [ "${DRY_RUN:-0}" = 1 ]; then
  step "4. dry run at the paper's shapes (tests/test_dry_run.py)"
  timeout 480 $PY -m pytest -q -p no:cacheprovider tests/test_dry_run.py 2>&1 | tail -5 | tee -a "$OUT/summary.txt"
fi
step "done"
