#!/usr/bin/env bash
# usage: worker.sh WAITPID JOB...   JOB = multistage:S | multistage-knowpo:S | gemma:S
# Waits for WAITPID (the study this slot is running) to exit, then runs each JOB not yet claimed by the other slot
# (claims/JOB made with mkdir, atomic). Amendment 1 of experiments/stages-2026-12-07 and regimes-2026-12-07.
cd /work/exp27
export PYTHONPATH=/work/exp27/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
W=$1; shift
while kill -0 "$W" 2>/dev/null; do sleep 5; done
mkdir -p claims
for J in "$@"; do
  mkdir "claims/$J" 2>/dev/null || continue
  P=${J%:*}; S=${J#*:}
  echo "$J start $(date -u +%FT%TZ) commit $(git rev-parse HEAD)"
  if [ "$P" = gemma ]; then
    /usr/bin/time -v nice -n 5 /work/main/.venv/bin/python -m ctxrel study inversion-gemma-base train.seed=$S out=runs/gemma-base-s$S \
      eval.every=128 'eval.early=[8,16]' 'eval.benchmarks=[cf_capitals_moved]' eval.mode=both > logs/gemma-base-s$S.log 2>&1
  else
    /usr/bin/time -v nice -n 5 /work/main/.venv/bin/python -m ctxrel study $P train.seed=$S out=runs/$P-s$S > logs/$P-s$S.log 2>&1
  fi
  echo "$J end $(date -u +%FT%TZ) rc $?"
done
