#!/usr/bin/env bash
cd /work/exp27
export PYTHONPATH=/work/exp27/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false CTXREL_DATA=/work/shared/data
for S in 0 1; do
  echo "memotrap seed $S start $(date -u +%FT%TZ)"
  /usr/bin/time -v nice -n 5 /work/main/.venv/bin/python -m ctxrel eval --run runs/gemma-base-s$S --benchmark memotrap --limit 60 --skip-invalid eval.mode=generate > logs/sec-memotrap-early-s$S.log 2>&1
  echo "memotrap seed $S end $(date -u +%FT%TZ)"
done
