#!/bin/bash
# The study of docs/study.md, one part per call: vit | vit-scale | lm | lm-scale (each
# resumes; the -scale parts need their main part first).
# One thread per part, so two parts can share a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
optforge=${OPTFORGE:-optforge}
P1=docs/data/programs/discovered-evolution-seed1.txt
P2=docs/data/programs/discovered-evolution-seed2.txt
resume() { [ -e "$1/study.db" ] && echo --resume || true; }
best_wd() {  # the best weight decay of optimizer $2 in study $1 (model small, batch $3)
  python3 - "$1" "$2" "${3:-128}" <<'PY'
import sys
from pathlib import Path
from optforge.bench import study, study_report
rows = study.Store(Path(sys.argv[1]) / "study.db").rows()
print(study_report.best(study_report.settings(rows))[("small", int(sys.argv[3]), sys.argv[2])].wd)
PY
}
case "${1:-}" in
vit)  # claims 1-3, 5, 6 and Muon (on tuned AdamW): the full grid at batch 128, model small
  out=docs/data/study-vit
  $optforge study --task fmnist-vit --steps 1000 --seeds 3 --tune-seeds 1 \
    --optimizers lion,adamw,sgd,adafactor,signum-0.9,signum-0.99,lion-0.95-0.98,lion-from-adamw,muon,$P1,$P2 \
    --lr "$P1=1/10:3:4;$P2=1/10:3:4" --out $out $(resume $out) --markdown ;;
vit-scale)  # claim 4: batch 32 and 512, model base; lr re-tuned, wd at the batch-128 best
  out=docs/data/study-vit
  wd="lion=$(best_wd $out lion);adamw=$(best_wd $out adamw)"
  $optforge study --task fmnist-vit --steps 1000 --seeds 3 --tune-seeds 1 --optimizers lion,adamw \
    --batch-size 32,512 --wd "$wd" --out $out --resume --markdown
  $optforge study --task fmnist-vit --steps 1000 --seeds 3 --tune-seeds 1 --optimizers lion,adamw \
    --model-size base --wd "$wd" --out $out --resume --markdown ;;
lm)  # claims 1-3, the LM betas and Muon on a char-level LM (signum's ablation: ViT part)
  out=docs/data/study-lm
  $optforge study --task shakespeare-lm --steps 600 --seeds 3 --tune-seeds 1 \
    --optimizers lion,adamw,sgd,adafactor,lion-0.95-0.98,lion-from-adamw,muon \
    --wd "lion=0.1,1;lion-0.95-0.98=0.1,1;adamw=0.01,0.1;adafactor=0.01,0.1" \
    --out $out $(resume $out) --markdown ;;
lm-scale)  # claim 4 on the LM: batch 16 and 256; lr re-tuned, wd at the batch-64 best
  out=docs/data/study-lm
  wd="lion=$(best_wd $out lion 64);adamw=$(best_wd $out adamw 64)"
  $optforge study --task shakespeare-lm --steps 600 --seeds 3 --tune-seeds 1 \
    --optimizers lion,adamw --batch-size 16,256 --wd "$wd" --out $out --resume --markdown ;;
*) echo "usage: scripts/study.sh vit|vit-scale|lm|lm-scale" >&2; exit 2 ;;
esac
