#!/usr/bin/env bash
# README main-job command: set up everything (idempotent), then run one short LIBERO episode
# with the embedded default policy (policy node + sim bridge + recorder) and print a summary.
# Extra arguments go to oat-ros-bringup (see: oat-ros-bringup --help).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
# Init state 40 (no demonstration used it) is one the embedded default policy solves; its success
# rate over many init states is in docs/reports/default_policy. Later --set arguments override.
exec oat-ros-bringup sim --main-job --set sim_bridge.init_state_index=40 "$@"
