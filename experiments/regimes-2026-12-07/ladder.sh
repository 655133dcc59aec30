#!/usr/bin/env bash
# usage: ladder.sh LR  -- regime A's learning-rate ladder (experiments/regimes-2026-12-07/prereg.md), the
# inversion-gemma-ladder preset's keys given explicitly (this clone predates the preset file)
cd /work/exp
export PYTHONPATH=/work/exp/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec /work/main/.venv/bin/python -m ctxrel study inversion-gemma train.lr=$1 train.max_steps=32 eval.limit=6 eval.every=32 'eval.early=[]' out=runs/ladder-$1
