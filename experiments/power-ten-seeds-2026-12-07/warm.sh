#!/usr/bin/env bash
# amendment 1's sensitivity check: seeds 0 and 1 again, on the warm model cache
cd /work/exp24
export PYTHONPATH=/work/exp24/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
S=$1
nice -n 5 /work/main/.venv/bin/python -m ctxrel study inversion-real train.seed=$S out=runs/ir-s$S-warm > logs/s$S-warm.log 2>&1
echo "seed $S warm end $(date -u +%FT%TZ) rc $?"
