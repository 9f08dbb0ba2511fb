#!/bin/bash
# The discovery of issue 19: 5 evolution seeds in the matrix language from the AdamW warm
# start, 1,000 candidates each, then the funnel (one finalist, meta-validation on 5 seeds
# against tuned AdamW, Lion and Muon); random search and constants-only for 2 seeds each.
# Usage: scripts/discovery.sh evolution|random|constants [SEEDS...]   (one thread per search)
set -euo pipefail
algorithm=${1:?evolution, random or constants}; shift
seeds=${*:-0 1 2 3 4}
out=${OUT:-runs/discovery}
mkdir -p "$out"
for s in $seeds; do
  journal="$out/fmnist-mlp-p-$algorithm-seed$s.db"
  args=(--task fmnist-mlp-p --budget 1000 --meta-seeds 5 --finalists 1 --seed "$s"
        --algorithm "$algorithm" --journal "$journal")
  if [ -e "$journal" ]; then args=(--resume "$journal"); fi
  OMP_NUM_THREADS=1 optforge search "${args[@]}"
done
