#!/usr/bin/env bash
# usage: run.sh PRESET SEED...   (experiments/stages-2026-12-07/prereg.md): one queue, its seeds in order
cd /work/exp26
export PYTHONPATH=/work/exp26/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
P=$1; shift
for S in "$@"; do
  echo "$P seed $S start $(date -u +%FT%TZ) commit $(git rev-parse HEAD)"
  /usr/bin/time -v nice -n 10 /work/main/.venv/bin/python -m ctxrel study $P train.seed=$S out=runs/$P-s$S > logs/$P-s$S.log 2>&1
  echo "$P seed $S end $(date -u +%FT%TZ)"
done
