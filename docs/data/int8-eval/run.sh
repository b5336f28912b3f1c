#!/usr/bin/env bash
# Paired one-shot comparison on the 99 frozen eval koans: float32 vs int8 weights, interleaved by chunks of 12
# so that load changes hit both. Resumable: each --out file keeps the koans already done.
# Run from the repository root:  nohup bash docs/data/int8-eval/run.sh > /tmp/int8-eval.log 2>&1 &
set -u
dir=docs/data/int8-eval
for lim in 12 24 36 48 60 72 84 99; do
  for w in int8 float; do
    DREAMFIX_MODEL_WEIGHTS=$w DREAMFIX_THREADS=2 .venv/bin/python -m service eval --strategy base --prompt-lookup \
      --limit "$lim" --resume --out "$dir/base-$w.json" > "/tmp/int8-eval-$w-$lim.log" 2>&1
    echo "$(date -u +%T) $w $lim rc=$? load=$(cut -d' ' -f1 /proc/loadavg)" >> "$dir/progress.txt"
  done
done
