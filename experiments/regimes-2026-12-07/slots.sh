#!/usr/bin/env bash
# usage: slots.sh S -- regime B (amendment 2), one queue: study seed S; then seed 2 if no other queue took it, else
# the secondary benchmarks of seeds 0, 1, 2 (each once its study has ended). Ran as `slots.sh 0 &` and `slots.sh 1 &`
cd /work/exp28
export PYTHONPATH=/work/exp28/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CTXREL_DATA=/work/shared/data
PY=/work/main/.venv/bin/python
study() {
  echo "study s$1 start $(date -u +%FT%TZ)"
  /usr/bin/time -v nice -n 5 $PY -m ctxrel study inversion-long train.seed=$1 out=runs/long-s$1 eval.every=256 \
    'eval.early=[8,16,32,128]' 'eval.benchmarks=[cf_capitals_moved]' eval.mode=both > logs/study-s$1.log 2>&1
  echo "study s$1 end $(date -u +%FT%TZ) rc $?"; touch logs/done-s$1
}
secondary() {
  until [ -e logs/done-s$1 ]; do sleep 30; done
  echo "bio s$1 start $(date -u +%FT%TZ)"
  /usr/bin/time -v nice -n 5 $PY -m ctxrel eval --run runs/long-s$1 --benchmark biographies --limit 60 > logs/sec-bio-s$1.log 2>&1
  echo "bio s$1 end $(date -u +%FT%TZ) rc $?"
  echo "memotrap s$1 start $(date -u +%FT%TZ)"
  /usr/bin/time -v nice -n 5 $PY -m ctxrel eval --run runs/long-s$1 --benchmark memotrap --limit 60 --skip-invalid eval.mode=generate > logs/sec-memo-s$1.log 2>&1
  echo "memotrap s$1 end $(date -u +%FT%TZ) rc $?"
}
study $1
if mkdir logs/claim-s2 2>/dev/null; then study 2
else for S in 0 1 2; do secondary $S; done; fi
