#!/usr/bin/env bash
# usage: score_seed.sh SEED STEP  (amendment 1): the 13 form benchmarks on one checkpoint of a seed's study
S=$1; T=$(printf "%06d" $2)
cd /work/exp
export PYTHONPATH=/work/exp/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
B=""; for f in capitals_study capitals_past capitals_nocause capitals_mem_second capitals_mem_none capitals_stated capitals_long people_study people_past people_nocause people_mem_second people_mem_none people_long; do B="$B --benchmark forms_$f"; done
exec /work/main/.venv/bin/python -m ctxrel eval --model smollm2-135m-instruct --adapter runs/forms-s$S/checkpoints/step-$T \
  $B --batch-size 32 --max-new-tokens 16 --no-knowledge-filter --out runs/forms-s$S-step$2
