#!/usr/bin/env bash
# usage: run.sh SEED...   (experiments/power-ten-seeds-2026-12-07/prereg.md): one slot, its seeds in order
cd /work/exp24
export PYTHONPATH=/work/exp24/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
for S in "$@"; do
  echo "seed $S start $(date -u +%FT%TZ) commit $(git rev-parse HEAD)"
  /usr/bin/time -v nice -n 5 /work/main/.venv/bin/python -m ctxrel study inversion-real train.seed=$S out=runs/ir-s$S \
    > logs/s$S.log 2>&1
  echo "seed $S end $(date -u +%FT%TZ) rc $?"
done
