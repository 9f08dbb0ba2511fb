#!/usr/bin/env bash
# Every GPU check and benchmark of issues 11 and 12, as one script for a CUDA machine that
# already has torch + triton (e.g. the H200 image: torch 2.11, Triton 3.6). Results go to
# ${OUT:-runs/gpu}; paste the tables into docs/benchmarks.md with the date and GPU.
#   bash scripts/gpu_check.sh            (about 8 minutes on an H200)
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  >> "$OUT/gpu.txt" 2>&1
# 1. correctness of the Triton Lion and of device fitness on the GPU
$PY -m pytest -q -p no:cacheprovider tests/optim/test_lion_gpu.py tests/optim/test_lion_triton.py \
  tests/optim/test_lion_matrix.py tests/tasks/test_device.py > "$OUT/tests.txt" 2>&1
tail -3 "$OUT/tests.txt"
# 2. the step benchmark (fp32 at three sizes, bf16 params at 512M)
for p in 20e6 512e6 2e9; do
  timeout 300 $PY -m optforge bench step --device cuda --params $p --compiled --rounds 3 \
    --markdown --json "$OUT/step-$p.json" > "$OUT/step-$p.md" 2>&1
  tail -20 "$OUT/step-$p.md"
done
timeout 200 $PY -m optforge bench step --device cuda --params 512e6 --dtype bfloat16 --rounds 3 \
  --no-limit --markdown > "$OUT/step-512e6-bf16.md" 2>&1
# 3. fitness throughput on the GPU at growing K (tier A and B), and a 5-minute search
for k in 256 1024 4096; do
  timeout 300 $PY -m optforge bench eval --device cuda --tiers A,B --k $k --rounds 2 \
    --no-compile --markdown > "$OUT/eval-k$k.md" 2>&1
  tail -8 "$OUT/eval-k$k.md"
done
timeout 420 $PY -m optforge search --task fmnist-mlp-p --device cuda --batch 1024 --minutes 5 \
  --no-funnel --journal "$OUT/search-5min.db" > "$OUT/search-5min.txt" 2>&1
tail -3 "$OUT/search-5min.txt"
