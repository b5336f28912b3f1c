#!/usr/bin/env bash
# Paired one-shot comparison on the 99 frozen eval koans: float32 vs int8 weights, interleaved by chunks of 12
# so that load changes hit both. Resumable: each --out file keeps the koans already done.
# Run from the repository root:  nohup bash docs/data/int8-eval/run.sh [OUT_DIR] > /tmp/int8-eval.log 2>&1 &
# OUT_DIR defaults to docs/data/int8-eval (the 2026-12-04 run, per-call int8 on an AVX-512 VNNI Xeon);
# docs/data/int8-eval/avx2-per-token holds the 2026-12-07 rerun (per-token int8 on an AVX2-only EPYC).
set -u
dir=${1:-docs/data/int8-eval}
mkdir -p "$dir"
for lim in 12 24 36 48 60 72 84 99; do
  for w in int8 float; do
    DREAMFIX_MODEL_WEIGHTS=$w DREAMFIX_THREADS=2 .venv/bin/python -m service eval --strategy base --prompt-lookup \
      --limit "$lim" --resume --out "$dir/base-$w.json" > "/tmp/int8-eval-$w-$lim.log" 2>&1
    echo "$(date -u +%T) $w $lim rc=$? load=$(cut -d' ' -f1 /proc/loadavg)" >> "$dir/progress.txt"
  done
done
