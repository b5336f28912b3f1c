#!/usr/bin/env bash
# One real-model night (Qwen2.5-Coder-0.5B, int8 on CPU) with a short budget, in its own data dir, under
# /usr/bin/time -v (peak RSS). Settings: a 45-minute wall budget, 60-problem gate and test pools, 20 eval
# koans, 4 samples per greedy failure, at most 16 examples per task, 12 seed/Phase 2 steps at batch 2,
# sequences <= 768 tokens, 76 generator draws. Run from the repository root:
#   nohup bash docs/data/night-real/run.sh /root/night-real2 > /tmp/night-real.log 2>&1 &
set -eu
dir=${1:-$HOME/night-real}
mkdir -p "$dir"
export DREAMFIX_DATA_DIR="$dir" DREAMFIX_DATABASE_URL="sqlite:///$dir/dreamfix.db"
export DREAMFIX_MODEL="${DREAMFIX_MODEL:-$HOME/.dreamfix/models/qwen2.5-coder-0.5b-instruct}" DREAMFIX_THREADS=2
export DREAMFIX_NIGHT__WALL_BUDGET_S=2700 DREAMFIX_NIGHT__GATE_POOL=60 DREAMFIX_NIGHT__TEST_POOL=60
export DREAMFIX_NIGHT__EVAL_LIMIT=20 DREAMFIX_NIGHT__SELF_SAMPLES=4 DREAMFIX_NIGHT__MAX_EXAMPLES_PER_TASK=16
export DREAMFIX_NIGHT__SEED_STEPS=12 DREAMFIX_SHARE__TRAIN_STEPS=12 DREAMFIX_SHARE__BATCH_SIZE=2
export DREAMFIX_NIGHT__MAX_LENGTH=768 DREAMFIX_NIGHT__GENERATED_EXAMPLES=76
.venv/bin/dreamfix db upgrade
/usr/bin/time -v .venv/bin/dreamfix night 2>&1 | grep -v "Loading weights" > "$dir/night.log"
