#!/usr/bin/env bash
# usage: train_seed.sh SEED  (amendment 1 of experiments/forms-2026-12-07/prereg.md)
S=$1
cd /work/exp
export PYTHONPATH=/work/exp/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec /work/main/.venv/bin/python -m ctxrel study inversion-real train.seed=$S out=runs/forms-s$S \
  'eval.benchmarks=[cf_capitals_moved]' eval.every=128 'eval.early=[8]'
