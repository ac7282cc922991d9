#!/usr/bin/env bash
# Reproduce the embedded default policy (oat_ros/assets/default_policy) with one command:
# scripted-expert demonstrations -> OAT tokenizer -> AR policy -> Blockwise tail -> int8
# export into the package. Every stage is resumable and skipped when its output exists, so
# running the script again continues where it stopped. ~1 h on an idle 2-core CPU.
#
#   bash scripts/train_default_policy.sh            # everything
#   TASKS=0,1,2 DEMOS=30 bash scripts/train_default_policy.sh   # other tasks / sizes
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"

SUITE=${SUITE:-libero_object}
TASKS=${TASKS:-0,1}
DEMOS=${DEMOS:-25}                 # successful expert demos per task
DATA=${DATA:-data/demos}
RUN=${RUN:-runs/default_policy}
THREADS=${THREADS:-2}
TOK_STEPS=${TOK_STEPS:-2000}
POLICY_STEPS=${POLICY_STEPS:-3000}
TAIL_STEPS=${TAIL_STEPS:-1500}
OUT=${OUT:-oat_ros/assets/default_policy}

echo "== 1/5 demonstrations: $SUITE tasks $TASKS, $DEMOS per task -> $DATA"
oat-ros-record-demos --suite "$SUITE" --tasks "$TASKS" --episodes-per-task "$DEMOS" \
    --init-states 0-49 --out "$DATA"          # skips tasks whose file exists

CACHE="$RUN/demos64.npz"
mkdir -p "$RUN"
if [ ! -f "$CACHE" ]; then
    echo "== 2/5 reading the demos once (upright, 64x64) -> $CACHE"
    python -m oat_ros.train.demos --data "$DATA" --image-size 64 --out "$CACHE"
fi

echo "== 3/5 tokenizer ($TOK_STEPS steps)"
oat-ros-train-tokenizer --data "$CACHE" --out "$RUN/tok" --steps "$TOK_STEPS" --threads "$THREADS"

echo "== 4/5 policy ($POLICY_STEPS steps)"
oat-ros-train-policy --data "$CACHE" --tokenizer "$RUN/tok" --out "$RUN/pol" \
    --steps "$POLICY_STEPS" --threads "$THREADS"

echo "== 5/5 blockwise tail ($TAIL_STEPS steps), export -> $OUT"
oat-ros-train-tail --data "$CACHE" --policy "$RUN/pol/export" --out "$RUN/tail" \
    --steps "$TAIL_STEPS" --threads "$THREADS"
oat-ros-export --policy "$RUN/tail/export" --storage int8 --inference-only --out "$OUT"
echo "default policy: $OUT ($(du -sh "$OUT" | cut -f1))"
