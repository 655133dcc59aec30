#!/usr/bin/env bash
# usage: run_seed.sh SEED  (the pre-registered form ablation, experiments/forms-2026-12-07/prereg.md)
S=$1
cd /work/exp
export PYTHONPATH=/work/exp/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec nice -n 5 /work/main/.venv/bin/python -m ctxrel study inversion-real train.seed=$S out=runs/forms-s$S \
  'eval.benchmarks=[cf_capitals_moved, forms_capitals_study, forms_capitals_past, forms_capitals_nocause, forms_capitals_mem_second, forms_capitals_mem_none, forms_capitals_stated, forms_capitals_long, forms_people_study, forms_people_past, forms_people_nocause, forms_people_mem_second, forms_people_mem_none, forms_people_long]' \
  eval.every=128 'eval.early=[8,16]'
