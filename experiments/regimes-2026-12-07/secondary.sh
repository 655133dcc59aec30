#!/usr/bin/env bash
# usage: sec.sh biographies|memotrap -- regime A's secondary benchmarks on the saved checkpoints (amendment 1)
cd /work/exp27
export PYTHONPATH=/work/exp27/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CTXREL_DATA=/work/shared/data
B=$1
for S in 0 1 2; do
  echo "$B seed $S start $(date -u +%FT%TZ)"
  if [ "$B" = memotrap ]; then
    /usr/bin/time -v nice -n 5 /work/main/.venv/bin/python -m ctxrel eval --run runs/gemma-base-s$S --benchmark memotrap --limit 60 --skip-invalid eval.mode=generate > logs/sec-$B-s$S.log 2>&1
  else
    /usr/bin/time -v nice -n 5 /work/main/.venv/bin/python -m ctxrel eval --run runs/gemma-base-s$S --benchmark biographies --limit 60 > logs/sec-$B-s$S.log 2>&1
  fi
  echo "$B seed $S end $(date -u +%FT%TZ) rc $?"
done
