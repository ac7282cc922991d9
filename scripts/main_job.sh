#!/usr/bin/env bash
# README main-job command: set up everything (idempotent), then run one short LIBERO episode
# with the embedded default policy (policy node + sim bridge + recorder) and print a summary.
# Extra arguments go to oat-ros-bringup (see: oat-ros-bringup --help).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec oat-ros-bringup sim --main-job "$@"
