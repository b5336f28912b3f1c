#!/usr/bin/env bash
# Paired one-shot comparison on the 99 frozen eval koans: float32 vs int8 weights, interleaved by chunks of 12.
cd /work/main
for lim in 12 24 36 48 60 72 84 99; do
  for w in int8 float; do
    DREAMFIX_MODEL_WEIGHTS=$w DREAMFIX_THREADS=2 .venv/bin/dreamfix eval --strategy base --prompt-lookup --limit $lim --resume \
      --out /work/evals/base-$w.json > /work/evals/log-$w-$lim.txt 2>&1
    echo "$(date -u +%T) $w $lim rc=$? load=$(cut -d' ' -f1 /proc/loadavg)" >> /work/evals/progress.txt
  done
done
