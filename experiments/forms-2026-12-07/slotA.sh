#!/usr/bin/env bash
# amendment 1 orchestration, slot A: seed 0's full study is stopped once its step-0 scoring is done (training
# starts), then seed 0 is trained like seeds 1-2 and its steps 8 and 128 are scored on the forms.
cd /work/exp
until grep -q "train:" logs/s0.log; do sleep 10; done
pkill -f "train.seed=0 out=runs/forms-s0"; sleep 5
mv runs/forms-s0 runs/forms-s0-full
./train_seed.sh 0 > logs/s0-train.log 2>&1
./score_seed.sh 0 8 > logs/s0-8.log 2>&1
./score_seed.sh 0 128 > logs/s0-128.log 2>&1
until [ -d runs/forms-s2/checkpoints/step-000128 ] && [ -f runs/forms-s2/train_summary.json -o -f runs/forms-s2/summary.json ]; do sleep 20; done
if mkdir locks/s2-128 2>/dev/null; then ./score_seed.sh 2 128 > logs/s2-128.log 2>&1; fi
