#!/usr/bin/env bash
# The whole GPU path in one command, for a machine with a CUDA device (CI has none): the GPU tests
# (copy stream vs plain copies, fp16 autocast, the pipeline on a GPU actor) and `streamparse bench gpu`
# (CUDA streams on/off x fp32/fp16 on 1080p batches). Writes gpu_check.json next to this repo's root.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
.venv/bin/python -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
.venv/bin/streamparse bench gpu --frames "${FRAMES:-240}" --json gpu_check.json
