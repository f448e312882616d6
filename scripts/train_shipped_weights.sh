#!/usr/bin/env bash
# Retrain the shipped weights (streamparse/weights/uniparser_small_synth_cihp.pt) from nothing: the ten
# stages of configs/shipped_weights/ (stageKK.yaml: the recipe of base.yaml and what is the stage's own),
# each generating its synthetic images and training from the previous stage; ~773 min on 2 CPU cores. STAGES="8 9 10" runs a subset (earlier work dirs must exist).
# The last stage's export overwrites the shipped file only with OVERWRITE_SHIPPED=1 (else it writes
# work_dirs/shipped_stage10/export.pt). docs/weights.md lists each stage's settings and results.
set -euo pipefail
cd "$(dirname "$0")/.."
SP="${SP:-.venv/bin/streamparse}"
for k in ${STAGES:-1 2 3 4 5 6 7 8 9 10}; do
  cfg=$(printf "configs/shipped_weights/stage%02d.yaml" "$k")
  # the data commands and the train command are stated in the stage file's header
  grep -E '^#   streamparse (synth|train) ' "$cfg" | sed 's/^#   streamparse //' | while read -r cmd; do
    echo "+ streamparse $cmd"
    eval "$SP $cmd"
  done
done
if [[ " ${STAGES:-10} " == *" 10 "* ]]; then
  out=work_dirs/shipped_stage10/export.pt
  if [ "${OVERWRITE_SHIPPED:-0}" = "1" ]; then out=streamparse/weights/uniparser_small_synth_cihp.pt; fi
  "$SP" export work_dirs/shipped_stage10/last.pt "$out" --half
fi
