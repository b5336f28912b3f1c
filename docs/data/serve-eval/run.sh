#!/usr/bin/env bash
# The serving strategy (rustc's suggestions first, then up to 4 greedy model attempts with compiler feedback and
# hints: settings.agent defaults) against best-of-4 (suggestions, one greedy attempt, then 4 samples verified
# together), on the 99 frozen eval koans with the CPU default weights (int8). Both strategies run in one
# process on the same koans (paired). Resumable: --out keeps the koans already done; chunks of 24.
# Run from the repository root:  nohup bash docs/data/serve-eval/run.sh > /tmp/serve-eval.log 2>&1 &
set -u
dir=docs/data/serve-eval
for lim in 24 48 72 99; do
  DREAMFIX_MODEL_WEIGHTS=${WEIGHTS:-int8} DREAMFIX_THREADS=2 .venv/bin/python -m service eval \
    --strategy loop-hints --strategy best-of-4 --max-attempts 4 --prompt-lookup \
    --limit "$lim" --resume --out "$dir/serve-int8.json" > "/tmp/serve-eval-$lim.log" 2>&1
  echo "$(date -u +%T) $lim rc=$? load=$(cut -d' ' -f1 /proc/loadavg)" >> "$dir/progress.txt"
done
