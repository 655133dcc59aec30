#!/usr/bin/env bash
# the proposed demo (inversion-real scored on forms_capitals_study at 0/8/16/32/64/128), timed, seed 0
cd /work/exp
export PYTHONPATH=/work/exp/src HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
/usr/bin/time -v /work/main/.venv/bin/python -m ctxrel study inversion-real 'eval.benchmarks=[forms_capitals_study]' \
  eval.every=64 'eval.early=[8,16,32]' out=runs/forms-sdemo
