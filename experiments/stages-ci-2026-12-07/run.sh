#!/usr/bin/env bash
# usage: run.sh PRESET  -- one slot of prereg.md in this folder: seeds 0, 1, 2 of PRESET with the ci mixture
cd /work/exp27
export PYTHONPATH=/work/exp27/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
for S in 0 1 2; do
  echo "$1-ci seed $S start $(date -u +%FT%TZ) commit $(git rev-parse HEAD)"
  /usr/bin/time -v nice -n 5 /work/main/.venv/bin/python -m ctxrel study "$1" train.seed=$S data.mixture.cs=0.4 \
    data.mixture.ci=0.2 out=runs/$1-ci-s$S > logs/$1-ci-s$S.log 2>&1
  echo "$1-ci seed $S end $(date -u +%FT%TZ)"
done
