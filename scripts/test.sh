#!/usr/bin/env bash
# The README's test command: set up (idempotent) and run the default test suite (slow tests excluded).
#   bash scripts/test.sh [extra pytest args]      e.g. bash scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
if [ "$#" -eq 0 ]; then set -- -m "not slow and not gpu"; fi
exec .venv/bin/python -m pytest --durations=30 "$@"
