#!/usr/bin/env bash
# README test command: set up everything (idempotent), then run the whole test suite.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k chunk
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
source "$ROOT/scripts/env.sh"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST   # tests never leave loopback, whatever the caller set
cd "$ROOT"
exec python -m pytest "$@"
