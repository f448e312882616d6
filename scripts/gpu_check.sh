#!/usr/bin/env bash
# The one script a lent GPU machine runs (CI has no GPU), in under 8 minutes on an H100-class card:
#   1. the GPU tests (copy stream vs plain copies, fp16 autocast, the pipeline on a GPU actor);
#   2. `bench gpu` (CUDA streams on/off x fp32/fp16 on 1080p batches);
#   3. `bench model` at 800x1333 with bf16 autocast, R50 and R101 with DCN (the paper's setting;
#      target: R50 >= 10x the paper's 9.8 img/s on an H100);
#   4. `bench pipeline --device cuda` on 3000 frames (target: end to end >= 0.9x model-only);
#   5. `bench archive --device cuda`;
# then one summary (card, driver, the numbers) in $OUT/gpu_check_summary.json and on stdout.
#   bash scripts/gpu_check.sh            # OUT defaults to ./gpu_check
#   PY=/path/to/python FRAMES=3000 bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
SP=("$PY" -m streamparse)
status=0
step() {  # step NAME TIMEOUT_S CMD...: runs CMD, logs to $OUT/NAME.log, records its exit code
  local name="$1" t="$2"; shift 2
  echo "== $name: $*"
  local t0=$SECONDS
  timeout "$t" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >>"$OUT/steps.jsonl"
  tail -n 15 "$OUT/$name.log"
  [ "$rc" = 0 ] || status=1
}
: >"$OUT/steps.jsonl"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/card.txt" 2>&1 || true
step gpu_tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
step bench_gpu 90 "${SP[@]}" bench gpu --frames "${GPU_FRAMES:-240}" --json "$OUT/bench_gpu.json" --no-progress
step bench_model 120 "${SP[@]}" bench model --device cuda --amp bf16 --sizes 800x1333 --reps 20 --no-maskrcnn \
  --variants uniparser_r50_fpn_dcn uniparser_r101_fpn_dcn --json "$OUT/bench_model.json"
step bench_pipeline 150 "${SP[@]}" bench pipeline --device cuda --frames "${FRAMES:-3000}" --no-progress \
  --json "$OUT/bench_pipeline.json"
step bench_archive 120 "${SP[@]}" bench archive --device cuda --no-progress --json "$OUT/bench_archive.json"
"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
card = (out / "card.txt").read_text().strip() if (out / "card.txt").exists() else "?"
s = {"card": card, "steps": [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines() if l.strip()]}
m = load("bench_model.json")
if m:
    s["model_800x1333_bf16"] = {r["model"]: {"img_per_s": round(r["img_per_s@3"], 1), "x_paper": round(r["vs_paper@3"], 1)}
                                for r in m["rows"]}
p = load("bench_pipeline.json")
if p:
    s["pipeline"] = {k: p.get(k) for k in ("model_only_fps", "naive_fps", "e2e_fps", "e2e_vs_model_only", "e2e_vs_naive", "stages_s")}
a = load("bench_archive.json")
if a:
    s["archive"] = {k: v for k, v in a.items() if not isinstance(v, (list, dict))}
g = load("bench_gpu.json")
if g:
    s["gpu"] = g
(out / "gpu_check_summary.json").write_text(json.dumps(s, indent=1))
print(json.dumps(s, indent=1))
EOF
exit $status
