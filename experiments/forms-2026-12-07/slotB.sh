#!/usr/bin/env bash
# slot B: after seed 1's training study, score its steps 8 and 128 on the forms; train seed 2; score it.
cd /work/exp
while pgrep -f "train.seed=1 out=runs/forms-s1" >/dev/null; do sleep 20; done
./score_seed.sh 1 8 > logs/s1-8.log 2>&1
./score_seed.sh 1 128 > logs/s1-128.log 2>&1
./train_seed.sh 2 > logs/s2-train.log 2>&1
./score_seed.sh 2 8 > logs/s2-8.log 2>&1
if mkdir locks/s2-128 2>/dev/null; then ./score_seed.sh 2 128 > logs/s2-128.log 2>&1; fi
