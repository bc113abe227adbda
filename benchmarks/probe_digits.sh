#!/usr/bin/env bash
# Gradient quality of every estimator on digits, at trained weights (issue 3) -> reports/probe_digits/
set -euo pipefail
cd "$(dirname "$0")/.."
neuroplast train --task digits --net 64-256-10 --epochs 5 --batch-size 32 --lr 2e-3 --seed 0 \
  --save runs/digits_probe --overwrite --no-progress
neuroplast probe-gradients --from-run runs/digits_probe --batch-size 32 --out reports/probe_digits \
  --estimators sigmoid:k=4 fast_sigmoid:k=4 triangle:w=1 arctan:alpha=2 rectangular:w=1 gaussian:sigma=0.5 \
  localzo:m=1,delta=0.5,dist=normal localzo:m=5,delta=0.5,dist=normal localzo:m=5,delta=0.5,dist=uniform \
  localzo:m=5,delta=0.5,dist=laplace asgl:alpha=0.25,p=0.5
